"""The CPU network (float32 or bfloat16) as a oneDNN Graph: traced once per input shape by TorchScript, whose oneDNN
fuser hands the graph to oneDNN Graph, which fuses each convolution with what follows it and prepares every fused
partition once. Eager torch builds a oneDNN kernel's descriptor on every convolution call, tens of microseconds around
kernels of a few: what made the eager network slower than OpenVINO's compiled one on CPUs without AVX-512
(docs/benchmarks.md#g-ours-against-onnx-runtime-and-openvino). The same arithmetic as the folded network, summed
in another order.
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings

import torch
from torch import nn

from .model import EfficientDet

log = logging.getLogger(__name__)

# The largest canvas compiled by default, per precision (docs/benchmarks.md, the code's choices). float32, D0-D4: the
# graph was the faster up to 1280 px (D5, D6), measured, but a one-thread worker's load with it took 40 s at D5 and
# 68 s at D6 against 19 s at D4, too much of TorchServe's 120 s start-up on a busy machine. bfloat16, D0-D1: from
# 768 px (D2) the eager bfloat16 network, whose gates and small products stay float32, was the faster.
MAX_INPUT_SIZE = {torch.float32: 1024, torch.bfloat16: 640}

# The profiling executor runs a traced graph as written on its first call, records shapes and layouts on it, and
# hands the fused graph to oneDNN on the next: both happen at compile time, not during a request.
WARM_UP_PASSES = 3


def onednn_graph_available() -> bool:
    """Whether this torch has TorchScript's oneDNN Graph fuser (x86 builds with oneDNN)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.jit, "enable_onednn_fusion")


class OneDNNGraphNetwork(nn.Module):
    """Runs a folded, channels-last EfficientDet (float32 or bfloat16) as one traced oneDNN Graph per input shape,
    compiled by `compile_for` (`Detector.warm_up` does it at load for its batch sizes). A batch of a size not
    compiled runs image by image through the one-image graph where there is one (Ray Serve merges requests into
    batches of every size up to REQUEST_BATCH_SIZE: no compile of seconds inside a request, and on CPU one image a
    pass is the faster, docs/benchmarks.md); otherwise its shape is compiled at its first batch. Should tracing or
    oneDNN refuse a shape, it logs why and runs batches of that shape through an eager copy of the model with its
    fused kernels; the other shapes keep their graphs (oneDNN may refuse one input size and take the others).
    Thread-safe: compiling is serialised, and a compiled graph runs in several threads at once."""

    def __init__(self, model: EfficientDet) -> None:
        super().__init__()
        model.use_onednn_graph_ops()
        model.requires_grad_(False)  # its weights become the traced graph's constants
        self.model = model
        self.compiled: dict[tuple, torch.jit.ScriptFunction] = {}
        self.refused: set[tuple] = set()  # shapes that would not compile, run by `eager`
        self.eager: EfficientDet | None = None
        self._lock = threading.Lock()

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = _shape_key(batch)
        graph = self.compiled.get(key)
        if graph is not None:
            return graph(batch)
        if key in self.refused:
            return self.eager(batch)
        if len(batch) > 1 and _shape_key(batch[:1]) in self.compiled:
            outputs = [self.compiled[_shape_key(image)](image) for image in batch.split(1)]
            return tuple(torch.cat(parts) for parts in zip(*outputs))
        graph = self.compile_for(batch)
        return self.eager(batch) if graph is None else graph(batch)

    def compile_for(self, batch: torch.Tensor) -> torch.jit.ScriptFunction | None:
        """The graph for batches of this one's shape, compiled now if it is not yet; None where compiling failed."""
        key = _shape_key(batch)
        with self._lock:
            if key not in self.compiled and key not in self.refused:
                self._compile(key, batch)
            return self.compiled.get(key)

    def _compile(self, key: tuple, batch: torch.Tensor) -> None:
        torch.jit.enable_onednn_fusion(True)  # process-wide; nothing else here runs TorchScript
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                example = batch.clone()  # cloned outside inference mode: not an inference tensor, which tracing records
                warnings.simplefilter("ignore")  # the tracer's notes on shapes read as numbers: fixed per graph
                self.model(example)  # an eager pass first fills the modules' per-shape caches: constants to the trace
                # the forward traced as a function, its weights constants: what freezing a traced module gives, without
                # a script module built for each of the network's ~600 submodules (a third of the compile)
                model = self.model
                graph = torch.jit.trace(lambda images: model(images), example, check_trace=False)
                for _ in range(WARM_UP_PASSES):
                    graph(example)
        except RuntimeError as error:
            log.warning("the oneDNN Graph compile failed for input %s (%s); batches of that shape run eagerly",
                        "×".join(map(str, key[0])), str(error).strip().splitlines()[-1])
            if self.eager is None:
                self.eager = self._eager_copy()
            self.refused.add(key)
            return
        self.compiled[key] = graph

    def _eager_copy(self) -> EfficientDet:
        """The model with its fused kernels, for the shapes oneDNN Graph refused: a copy, so that the model itself
        stays in the ops that later shapes are traced in."""
        eager = copy.deepcopy(self.model)
        eager.use_onednn_graph_ops(False)
        eager.use_fused_kernels()
        return eager


def _shape_key(batch: torch.Tensor) -> tuple:
    return tuple(batch.shape), batch.dtype, batch.is_contiguous(memory_format=torch.channels_last)
