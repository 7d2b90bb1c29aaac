"""Inference-only rewrites of a loaded EfficientDet that leave its outputs unchanged (to rounding).

- every batch norm folded into the convolution before it (per pyramid level in the heads, whose
  convolutions are shared across levels but whose batch norms are not);
- weights and activations in channels-last layout;
- on CPU in float32, convolutions run as oneDNN convolutions with the SiLU that follows them fused
  in (`torch.ops.mkldnn._convolution_pointwise`, the kernel PyTorch's own compiler emits on CPU).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import EfficientNetTrunk, MBConvBlock
from .bifpn import BiFPNCell
from .head import PredictionHead
from .layers import SameConv2d, SeparableConvBlock, same_padding_2d
from .model import EfficientDet


@torch.no_grad()
def fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing norm(conv(x)) with eval-mode batch-norm statistics."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    folded = copy.deepcopy(conv)
    folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    folded.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)
    return folded


def _fold_into(wrapper: SameConv2d, norm: nn.BatchNorm2d) -> None:
    wrapper.conv = fold_batch_norm(wrapper.conv, norm)


def _fold_heads(head: PredictionHead) -> None:
    levels = []
    for norms in head.bn_list:
        convs = nn.ModuleList()
        for conv, norm in zip(head.conv_list, norms):
            block = copy.deepcopy(conv)
            _fold_into(block.pointwise_conv, norm)
            convs.append(block)
        levels.append(convs)
    head.level_convs = nn.ModuleList(levels)
    head.bn_list = nn.ModuleList(nn.ModuleList(nn.Identity() for _ in norms) for norms in head.bn_list)


@torch.no_grad()
def fold_all_batch_norms(model: EfficientDet) -> EfficientDet:
    """A copy of the model in which every batch norm is folded into the convolution before it."""
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if isinstance(module, EfficientNetTrunk):
            _fold_into(module._conv_stem, module._bn0)
            module._bn0 = nn.Identity()
        elif isinstance(module, MBConvBlock):
            if module.expands:
                _fold_into(module._expand_conv, module._bn0)
                module._bn0 = nn.Identity()
            _fold_into(module._depthwise_conv, module._bn1)
            _fold_into(module._project_conv, module._bn2)
            module._bn1, module._bn2 = nn.Identity(), nn.Identity()
        elif isinstance(module, SeparableConvBlock) and isinstance(module.bn, nn.BatchNorm2d):
            _fold_into(module.pointwise_conv, module.bn)
            module.bn = nn.Identity()
        elif isinstance(module, BiFPNCell) and module.first:
            for name in ("p3_down_channel", "p4_down_channel", "p5_down_channel", "p4_down_channel_2",
                         "p5_down_channel_2", "p5_to_p6"):
                sequence = getattr(module, name)
                _fold_into(sequence[0], sequence[1])
                sequence[1] = nn.Identity()
        elif isinstance(module, PredictionHead):
            _fold_heads(module)
    return model


class OneDNNConv2d(nn.Module):
    """A "same"-padded convolution (optionally followed by SiLU) as one oneDNN kernel; CPU float32 only.

    TensorFlow pads a stride-2 convolution of an even-sized input one more pixel after than before.
    Instead of copying the input into a padded tensor, the kernel is grown by a leading row and
    column of zeros, which makes the padding symmetric: the same sums, without the copy.
    Weights are reordered into oneDNN's blocked layout once per input shape, not on every call.
    """

    def __init__(self, conv: nn.Conv2d, silu: bool) -> None:
        super().__init__()
        weight = conv.weight.detach()
        self.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last), requires_grad=False)
        self.grown_weight = nn.Parameter(F.pad(weight, (1, 0, 1, 0)).contiguous(memory_format=torch.channels_last),
                                         requires_grad=False) if conv.stride[0] > 1 else None
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.kernel, self.stride, self.groups = conv.kernel_size[0], conv.stride[0], conv.groups
        self.attr = "swish" if silu else "none"
        self._packed: dict[tuple, torch.Tensor] = {}

    def _packed_weight(self, weight: torch.Tensor, grown: bool, padding: list[int], shape: torch.Size) -> torch.Tensor:
        key = (grown, tuple(shape))
        packed = self._packed.get(key)
        if packed is None:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight, padding, [self.stride] * 2, [1, 1], self.groups, list(shape))
            self._packed[key] = packed
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = same_padding_2d(x, self.kernel, self.stride)
        grown = (top, left) == (bottom - 1, right - 1) and self.grown_weight is not None
        if grown:
            top, left = bottom, right
        elif top != bottom or left != right:
            x = F.pad(x, (left, right, top, bottom))
            top = left = 0
        weight = self._packed_weight(self.grown_weight if grown else self.weight, grown, [top, left], x.shape)
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, self.bias, [top, left], [self.stride] * 2, [1, 1], self.groups, self.attr, [], "")


def _onednn(wrapper: SameConv2d, silu: bool = False) -> OneDNNConv2d:
    return OneDNNConv2d(wrapper.conv, silu)


def use_onednn_kernels(model: EfficientDet) -> EfficientDet:
    """Swap the (batch-norm-folded) convolutions for oneDNN ones, fusing the SiLU after them."""
    for module in list(model.modules()):
        if isinstance(module, EfficientNetTrunk):
            module._conv_stem, module._stem_act = _onednn(module._conv_stem, silu=True), nn.Identity()
        elif isinstance(module, MBConvBlock):
            if module.expands:
                module._expand_conv, module._expand_act = _onednn(module._expand_conv, silu=True), nn.Identity()
            module._depthwise_conv, module._depthwise_act = _onednn(module._depthwise_conv, silu=True), nn.Identity()
            module._project_conv = _onednn(module._project_conv)
        elif isinstance(module, PredictionHead):
            for convs in module.level_convs:
                for block in convs:
                    block.depthwise_conv = _onednn(block.depthwise_conv)
                    block.pointwise_conv = _onednn(block.pointwise_conv, silu=True)
            module.header.depthwise_conv = _onednn(module.header.depthwise_conv)
            module.header.pointwise_conv = _onednn(module.header.pointwise_conv)
            module.act = nn.Identity()
        elif isinstance(module, BiFPNCell):
            for block in module.children():
                if isinstance(block, SeparableConvBlock):
                    block.depthwise_conv = _onednn(block.depthwise_conv)
                    block.pointwise_conv = _onednn(block.pointwise_conv)
    return model


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def optimize_for_inference(model: EfficientDet, device: torch.device, dtype: torch.dtype) -> EfficientDet:
    """The fast path: folded batch norms, channels-last, and fused oneDNN kernels on CPU float32;
    on CUDA, cuDNN autotuning (process-wide), which pays because the canvas size is fixed."""
    model = fold_all_batch_norms(model).to(device, dtype, memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if device.type == "cpu" and dtype == torch.float32 and onednn_available():
        model = use_onednn_kernels(model)
    return model
