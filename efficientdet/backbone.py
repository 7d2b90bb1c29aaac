"""EfficientNet feature extractor (B0–B7) that returns the P3, P4 and P5 feature maps."""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn

from .config import B0_STAGES, STEM_CHANNELS, BackboneConfig
from .layers import SameConv2d, batch_norm

WIDTH_DIVISOR = 8


def round_channels(channels: int, width: float) -> int:
    """Scale a channel count by the width multiplier, rounded to a multiple of 8 (never down by >10 %)."""
    scaled = channels * width
    rounded = max(WIDTH_DIVISOR, int(scaled + WIDTH_DIVISOR / 2) // WIDTH_DIVISOR * WIDTH_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += WIDTH_DIVISOR
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation; residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 expand_ratio: int, se_ratio: float) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        if expand_ratio != 1:
            self._expand_conv = SameConv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = batch_norm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = batch_norm(hidden)
        squeezed = max(1, int(in_channels * se_ratio))
        self._se_reduce = SameConv2d(hidden, squeezed, 1)
        self._se_expand = SameConv2d(squeezed, hidden, 1)
        self._project_conv = SameConv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = batch_norm(out_channels)
        self._expand_act = nn.SiLU()
        self._depthwise_act = nn.SiLU()
        self.expands = expand_ratio != 1
        self.residual = stride == 1 and in_channels == out_channels
        self.stride = stride

    def fold_batch_norms(self) -> None:
        if self.expands:
            self._expand_conv.fold_batch_norm(self._bn0)
            self._bn0 = nn.Identity()
        self._depthwise_conv.fold_batch_norm(self._bn1)
        self._project_conv.fold_batch_norm(self._bn2)
        self._bn1, self._bn2 = nn.Identity(), nn.Identity()

    def use_fused_kernels(self) -> None:
        """Expand, depthwise and project convolutions as oneDNN kernels, the SiLUs fused in (after folding)."""
        if self.expands:
            self._expand_conv, self._expand_act = self._expand_conv.fused(silu=True), nn.Identity()
        self._depthwise_conv, self._depthwise_act = self._depthwise_conv.fused(silu=True), nn.Identity()
        self._project_conv = self._project_conv.fused()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expands:
            x = self._expand_act(self._bn0(self._expand_conv(x)))
        x = self._depthwise_act(self._bn1(self._depthwise_conv(x)))
        squeezed = F.adaptive_avg_pool2d(x, 1)
        squeezed = self._se_expand(F.silu(self._se_reduce(squeezed)))
        x = torch.sigmoid(squeezed) * x
        x = self._bn2(self._project_conv(x))
        if self.residual:
            x = x + inputs
        return x


class EfficientNetTrunk(nn.Module):
    """Stem and MBConv blocks of EfficientNet; the classification top is not part of EfficientDet."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        stem = round_channels(STEM_CHANNELS, config.width)
        self._conv_stem = SameConv2d(3, stem, 3, stride=2, bias=False)
        self._bn0 = batch_norm(stem)
        self._stem_act = nn.SiLU()
        blocks = []
        for stage in B0_STAGES:
            in_channels = round_channels(stage.in_channels, config.width)
            out_channels = round_channels(stage.out_channels, config.width)
            for index in range(round_repeats(stage.repeats, config.depth)):
                blocks.append(MBConvBlock(
                    in_channels if index == 0 else out_channels, out_channels, stage.kernel,
                    stage.stride if index == 0 else 1, stage.expand_ratio, stage.se_ratio))
        self._blocks = nn.ModuleList(blocks)

    def fold_batch_norms(self) -> None:
        self._conv_stem.fold_batch_norm(self._bn0)
        self._bn0 = nn.Identity()
        for block in self._blocks:
            block.fold_batch_norms()

    def use_fused_kernels(self) -> None:
        self._conv_stem, self._stem_act = self._conv_stem.fused(silu=True), nn.Identity()
        for block in self._blocks:
            block.use_fused_kernels()

    def downsampling_blocks(self) -> list[int]:
        """Indices of the blocks that halve the resolution."""
        return [i for i, block in enumerate(self._blocks) if block.stride == 2]

    def forward(self, x: torch.Tensor, keep: Collection[int]) -> list[torch.Tensor]:
        """The outputs of the blocks whose indices are in `keep`, in order."""
        x = self._stem_act(self._bn0(self._conv_stem(x)))
        features = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in keep:
                features.append(x)
        return features


class EfficientNetBackbone(nn.Module):
    """Runs the trunk and keeps the outputs at strides 8, 16 and 32 (P3, P4, P5)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.model = EfficientNetTrunk(config)
        # A stride-8/16 feature is the last output before the next down-sampling block; P5 is the final output.
        downsampling = self.model.downsampling_blocks()
        self.feature_indices = (downsampling[2] - 1, downsampling[3] - 1, len(self.model._blocks) - 1)

    def fold_batch_norms(self) -> None:
        self.model.fold_batch_norms()

    def use_fused_kernels(self) -> None:
        self.model.use_fused_kernels()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x, self.feature_indices)
