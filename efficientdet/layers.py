"""Building blocks with TensorFlow-style "same" padding, named as in the published checkpoints."""

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


class SameConv2d(nn.Module):
    """A convolution padded like TensorFlow's "same"; the weights live in `.conv` as in the checkpoints."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias)

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise_conv(self.depthwise_conv(x)))
