"""The network replayed as CUDA graphs: one capture per batch size at model load, then one launch per batch.

At batch 1 the network is launch-bound on a GPU (hundreds of small kernels), and the canvas size is fixed,
so each batch size's kernels can be recorded once, with static input and output buffers, and replayed.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable

import torch
from torch import nn

WARM_UP_PASSES = 3  # eager passes on a side stream before capturing: cuDNN picks its kernels there


class GraphedNetwork:
    """Calls `model` through CUDA graphs captured for `batch_sizes`; a batch is padded up to the next captured
    size, and a batch larger than every captured size runs eagerly. Thread-safe: replays are serialised (they
    share buffers) and their outputs are copied out before the next."""

    def __init__(self, model: nn.Module, example: torch.Tensor, batch_sizes: Iterable[int]) -> None:
        if example.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.model = model
        self.sizes = sorted(set(batch_sizes))
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        self._lock = threading.Lock()
        # One memory pool for every graph: replays never overlap (the lock) and their outputs are copied out
        # before the next, so the graphs may reuse each other's memory. Largest first, which sizes the pool.
        self._pool = torch.cuda.graph_pool_handle()
        memory_format = torch.channels_last if example.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        for size in reversed(self.sizes):
            self._graphs[size] = self._capture(example[:1].expand(size, -1, -1, -1).clone(memory_format=memory_format))

    def _capture(self, static_input: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]:
        side = torch.cuda.Stream(static_input.device)
        side.wait_stream(torch.cuda.current_stream(static_input.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(WARM_UP_PASSES):
                self.model(static_input)
        torch.cuda.current_stream(static_input.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # captured on the input's device, whichever GPU is current (a model server's worker need not be on the first)
        with torch.inference_mode(), torch.cuda.device(static_input.device), torch.cuda.graph(graph, pool=self._pool):
            static_output = tuple(self.model(static_input))
        return graph, static_input, static_output

    def captured_size(self, count: int) -> int | None:
        """The captured batch size a batch of `count` images runs as, or None (eager)."""
        index = bisect.bisect_left(self.sizes, count)
        return self.sizes[index] if index < len(self.sizes) else None

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = batch.shape[0]
        size = self.captured_size(count)
        if size is None:
            with torch.inference_mode():
                return tuple(self.model(batch))
        graph, static_input, static_output = self._graphs[size]
        with self._lock, torch.inference_mode():
            static_input[:count].copy_(batch)
            graph.replay()
            return tuple(output[:count].clone() for output in static_output)
