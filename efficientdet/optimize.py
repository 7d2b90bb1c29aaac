"""The fast path: inference-only rewrites of a loaded EfficientDet that leave its outputs unchanged (to
rounding). Each module offers its own rewrite; this only orders them.

- every batch norm folded into the convolution before it (per pyramid level in the heads, whose
  convolutions are shared across levels but whose batch norms are not);
- the BiFPN's fusion weights normalised once;
- weights and activations in channels-last layout;
- on CPU in float32, the network compiled as a oneDNN Graph per input shape (`onednn_graph`), where torch has it;
- on CPU otherwise (bfloat16, or without it), convolutions run as oneDNN kernels with the SiLU that follows them
  fused in, and the box and class heads as one over both heads' channels.
"""

from __future__ import annotations

import copy

import torch

from .layers import onednn_available
from .model import EfficientDet
from .onednn_graph import OneDNNGraphNetwork, onednn_graph_available


@torch.no_grad()
def fold_all_batch_norms(model: EfficientDet) -> EfficientDet:
    """A copy of the model in which every batch norm is folded into the convolution before it."""
    model = copy.deepcopy(model).eval()
    model.fold_batch_norms()
    return model


def optimize_for_inference(model: EfficientDet, device: torch.device, dtype: torch.dtype,
                           onednn_graph: bool = True) -> EfficientDet | OneDNNGraphNetwork:
    """Folded batch norms, channels-last; on CPU (float32 or bfloat16, with `onednn_graph`), a oneDNN Graph compiled
    per input shape, else fused oneDNN kernels; on CUDA, cuDNN
    autotuning, which pays because the canvas size is fixed, and, for a float32 model, cuDNN's convolutions in
    float32 rather than TF32 (torch's default: a 10-bit mantissa), so that float32 means float32 on a GPU as on a
    CPU; float16 is the fast setting there (both process-wide)."""
    model = fold_all_batch_norms(model).to(device, dtype, memory_format=torch.channels_last)
    model.fix_fusion_weights()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if dtype == torch.float32:
            torch.backends.cudnn.allow_tf32 = False
    if device.type == "cpu" and dtype in (torch.float32, torch.bfloat16):
        if onednn_graph and onednn_graph_available():
            return OneDNNGraphNetwork(model)
        if onednn_available():
            model.use_fused_kernels()
    return model
