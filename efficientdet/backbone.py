"""EfficientNet feature extractor (B0–B7) that returns the P3, P4 and P5 feature maps."""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn

from .config import B0_STAGES, STEM_CHANNELS, BackboneConfig
from .layers import GatedPointwiseConv, SameConv2d, batch_norm, bias_or_zeros, pointwise_matrix

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


def squeeze_and_excite(x: torch.Tensor, reduce: nn.Module, expand: nn.Module) -> torch.Tensor:
    """Scale each channel by a gate computed from the channel means."""
    squeezed = expand(F.silu(reduce(F.adaptive_avg_pool2d(x, 1))))
    return torch.sigmoid(squeezed) * x


def channel_means(x: torch.Tensor) -> torch.Tensor:
    """(N, C) float32 means of a float32 (N, C, H, W) map: torch's reduction, which sums in a tree (error growing with
    log(H·W)).

    Not a matrix product with a row of 1 / (H·W): that sums the pixels one after another, and over a map whose last
    third is constant letterbox padding its error is large enough to break the fast path's equivalence rule.
    """
    return x.mean((2, 3), dtype=torch.float32)


def mean_bands(x: torch.Tensor) -> int:
    """How many row bands a bfloat16 map's channel means are pooled over: two per thread where the height allows.
    A channels-last pooling runs one output pixel per thread, so a single band would leave every thread but one
    idle."""
    return math.gcd(x.shape[-2], 2 * torch.get_num_threads())


def band_means(x: torch.Tensor, bands: int) -> torch.Tensor:
    """(N, bands·C) float32: each channel's mean over each of `bands` row bands of a bfloat16 (N, C, H, W) map, band
    after band. Average pooling accumulates in float32 and rounds each mean to bfloat16 (what it loses is that
    rounding)."""
    n, c, height, width = x.shape
    pooled = F.avg_pool2d(x, (height // bands, width))
    return pooled.permute(0, 2, 3, 1).reshape(n, bands * c).float()


class ChannelGate(nn.Module):
    """Squeeze-and-excitation's gate alone, (N, C) in the input's dtype: sigmoid(expand(silu(reduce(channel
    means)))), on matrix products in float32 whatever the network's dtype (for vectors this short, MKL's float32
    product costs less than oneDNN's bfloat16 call), the sigmoid writing the input's dtype.

    bfloat16 maps are averaged over row bands (`band_means`, read while the depthwise convolution's output is still in
    cache), and the mean across the bands is part of the reduce product: its matrix, divided by the band count,
    repeated once per band, so the bands need no reduction of their own. docs/benchmarks.md has the measurements.
    """

    def __init__(self, reduce: nn.Conv2d, expand: nn.Conv2d) -> None:
        super().__init__()
        self.reduce, self.reduce_bias = (nn.Parameter(tensor.float(), requires_grad=False)
                                         for tensor in (pointwise_matrix(reduce), bias_or_zeros(reduce)))
        self.expand, self.expand_bias = (nn.Parameter(tensor.float(), requires_grad=False)
                                         for tensor in (pointwise_matrix(expand), bias_or_zeros(expand)))
        self._reduce_per_band: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16:
            bands = mean_bands(x)
            reduced = torch.addmm(self.reduce_bias, band_means(x, bands), self._reduce_over_bands(bands))
        else:
            reduced = torch.addmm(self.reduce_bias, channel_means(x), self.reduce)
        excited = torch.addmm(self.expand_bias, F.silu(reduced, inplace=True), self.expand)
        return torch.sigmoid(excited, out=excited.new_empty(excited.shape, dtype=x.dtype))

    def _reduce_over_bands(self, bands: int) -> torch.Tensor:
        """The reduce matrix for `band_means` rows: the mean across the bands, then the reduce product."""
        matrix = self._reduce_per_band.get(bands)
        if matrix is None:
            matrix = self._reduce_per_band[bands] = (self.reduce / bands).repeat(bands, 1)
        return matrix


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

    def fused(self) -> FusedMBConvBlock:
        """After folding: the same block with expand and depthwise convolutions as oneDNN kernels, the SiLUs
        after them fused in, and the squeeze-and-excitation gate folded into the project convolution's weights
        (with the residual added there too) instead of scaling the widest tensor of the block."""
        return FusedMBConvBlock(self._expand_conv.fused(silu=True) if self.expands else None,
                                self._depthwise_conv.fused(silu=True),
                                ChannelGate(self._se_reduce.conv, self._se_expand.conv),
                                self._project_conv.gated(), self.residual, self.stride)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expands:
            x = F.silu(self._bn0(self._expand_conv(x)))
        x = F.silu(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(squeeze_and_excite(x, self._se_reduce, self._se_expand)))
        if self.residual:
            x = x + inputs
        return x


class FusedMBConvBlock(nn.Module):
    """An MBConvBlock for inference: batch norms folded, convolutions with their activations fused."""

    def __init__(self, expand: nn.Module | None, depthwise: nn.Module, gate: ChannelGate,
                 project: GatedPointwiseConv, residual: bool, stride: int) -> None:
        super().__init__()
        self.expand, self.depthwise, self.gate, self.project = expand, depthwise, gate, project
        self.residual, self.stride = residual, stride

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs if self.expand is None else self.expand(inputs)
        x = self.depthwise(x)
        return self.project(x, self.gate(x), inputs if self.residual else None)


def run_blocks(x: torch.Tensor, blocks: nn.ModuleList, keep: Collection[int]) -> list[torch.Tensor]:
    """The outputs of the blocks whose indices are in `keep`, in order."""
    features = []
    for index, block in enumerate(blocks):
        x = block(x)
        if index in keep:
            features.append(x)
    return features


class EfficientNetTrunk(nn.Module):
    """Stem and MBConv blocks of EfficientNet; the classification top is not part of EfficientDet."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        stem = round_channels(STEM_CHANNELS, config.width)
        self._conv_stem = SameConv2d(3, stem, 3, stride=2, bias=False)
        self._bn0 = batch_norm(stem)
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

    def fused(self) -> FusedEfficientNetTrunk:
        """After folding: the stem and every block as oneDNN kernels with their SiLUs fused in."""
        return FusedEfficientNetTrunk(self._conv_stem.fused(silu=True), [block.fused() for block in self._blocks])

    def pyramid_blocks(self) -> tuple[int, int, int]:
        """The blocks whose outputs are P3, P4 and P5: the last before the third and fourth down-sampling
        blocks (strides 8 and 16), and the last block (stride 32)."""
        downsampling = [i for i, block in enumerate(self._blocks) if block.stride == 2]
        return downsampling[2] - 1, downsampling[3] - 1, len(self._blocks) - 1

    def forward(self, x: torch.Tensor, keep: Collection[int]) -> list[torch.Tensor]:
        """The outputs of the blocks whose indices are in `keep`, in order."""
        return run_blocks(F.silu(self._bn0(self._conv_stem(x))), self._blocks, keep)


class FusedEfficientNetTrunk(nn.Module):
    """An EfficientNetTrunk for inference: batch norms folded, convolutions with their activations fused."""

    def __init__(self, stem: nn.Module, blocks: list[FusedMBConvBlock]) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, keep: Collection[int]) -> list[torch.Tensor]:
        return run_blocks(self.stem(x), self.blocks, keep)


class EfficientNetBackbone(nn.Module):
    """Runs the trunk and keeps the outputs at strides 8, 16 and 32 (P3, P4, P5)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.model = EfficientNetTrunk(config)
        self.feature_indices = self.model.pyramid_blocks()

    def fold_batch_norms(self) -> None:
        self.model.fold_batch_norms()

    def use_fused_kernels(self) -> None:
        self.model = self.model.fused()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x, self.feature_indices)
