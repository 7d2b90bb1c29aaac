"""Building blocks with TensorFlow-style "same" padding, named as in the published checkpoints.

Each block offers its own inference rewrites: `fold_batch_norm` (the norm after a convolution becomes
part of its weights) and `fused` (the convolution, with the SiLU after it, as one oneDNN kernel).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding that makes a strided window cover ceil(size / stride) outputs, as TF does."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_padding_2d(x: torch.Tensor, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) "same" padding for a square window over the last two dims of x."""
    return (*same_padding(x.shape[-2], kernel, stride), *same_padding(x.shape[-1], kernel, stride))


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class OneDNNConv2d(nn.Module):
    """A "same"-padded convolution (optionally followed by SiLU) as one oneDNN kernel; CPU float32 only.

    `torch.ops.mkldnn._convolution_pointwise` is the kernel PyTorch's own compiler emits on CPU.
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

    @property
    def packed_shapes(self) -> list[tuple]:
        """The input shapes whose weights are already packed."""
        return [shape for _, shape in self._packed]

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


class SameConv2d(nn.Module):
    """A convolution padded like TensorFlow's "same"; the weights live in `.conv` as in the checkpoints."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias)

    @torch.no_grad()
    def fold_batch_norm(self, norm: nn.BatchNorm2d) -> None:
        """Make this convolution compute norm(conv(x)) with the norm's eval-mode statistics."""
        conv = self.conv
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)

    def fused(self, silu: bool = False) -> OneDNNConv2d:
        """This convolution (and the SiLU after it when `silu`) as one oneDNN kernel."""
        return OneDNNConv2d(self.conv, silu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        top, bottom, left, right = same_padding_2d(x, kernel, stride)
        if top == bottom and left == right:
            return F.conv2d(x, conv.weight, conv.bias, stride, (top, left), 1, conv.groups)
        return conv(F.pad(x, (left, right, top, bottom)))


class SameMaxPool2d(nn.Module):
    """3×3 stride-2 max pooling over a zero-padded input ("same" padding with zeros, not -inf)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = same_padding_2d(x, self.kernel_size, self.stride)
        return F.max_pool2d(F.pad(x, (left, right, top, bottom)), self.kernel_size, self.stride)


class SeparableConvBlock(nn.Module):
    """Depthwise 3×3 then pointwise 1×1 convolution, optionally batch-normalised."""

    def __init__(self, in_channels: int, out_channels: int | None = None, norm: bool = True) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.depthwise_conv = SameConv2d(in_channels, in_channels, 3, groups=in_channels, bias=False)
        self.pointwise_conv = SameConv2d(in_channels, out_channels, 1)
        self.bn = batch_norm(out_channels) if norm else nn.Identity()

    def fold_batch_norm(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            self.pointwise_conv.fold_batch_norm(self.bn)
            self.bn = nn.Identity()

    def use_fused_kernels(self, silu: bool = False) -> None:
        """Both convolutions as oneDNN kernels (batch norm folded first); `silu` fuses a SiLU after them."""
        if isinstance(self.bn, nn.BatchNorm2d):
            raise RuntimeError("fold the batch norm before fusing kernels")
        self.depthwise_conv = self.depthwise_conv.fused()
        self.pointwise_conv = self.pointwise_conv.fused(silu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise_conv(self.depthwise_conv(x)))
