"""Box and class prediction heads, shared across pyramid levels with per-level batch norm."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    SameConv2d,
    SeparableConvBlock,
    batch_norm,
    bias_or_zeros,
    pixel_rows,
)


def per_anchor(feature: torch.Tensor, outputs_per_anchor: int) -> torch.Tensor:
    """(N, C, H, W) header output → (N, H·W·anchors, outputs_per_anchor), ordered row, column, anchor."""
    feature = feature.permute(0, 2, 3, 1)
    return feature.reshape(feature.shape[0], -1, outputs_per_anchor)


class PredictionHead(nn.Module):
    """Separable convolutions shared over levels, batch norm per level, then a per-anchor output layer."""

    def __init__(self, channels: int, repeats: int, num_levels: int, num_anchors: int, outputs_per_anchor: int) -> None:
        super().__init__()
        self.outputs_per_anchor = outputs_per_anchor
        self.conv_list = nn.ModuleList(SeparableConvBlock(channels, norm=False) for _ in range(repeats))
        self.bn_list = nn.ModuleList(
            nn.ModuleList(batch_norm(channels) for _ in range(repeats)) for _ in range(num_levels))
        self.header = SeparableConvBlock(channels, num_anchors * outputs_per_anchor, norm=False)
        self.act = nn.SiLU()

    @torch.no_grad()
    def folded(self) -> FoldedPredictionHead:
        """The same head with each level's batch norms folded into that level's copy of the convolutions."""
        levels = nn.ModuleList()
        for norms in self.bn_list:
            convs = nn.ModuleList()
            for conv, norm in zip(self.conv_list, norms):
                block = copy.deepcopy(conv)
                block.pointwise_conv.fold_batch_norm(norm)
                convs.append(block)
            levels.append(convs)
        return FoldedPredictionHead(levels, copy.deepcopy(self.header), self.outputs_per_anchor)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """(N, anchors, outputs_per_anchor), anchors ordered by level, row, column, then anchor."""
        outputs = []
        for feature, norms in zip(features, self.bn_list):
            for conv, norm in zip(self.conv_list, norms):
                feature = self.act(norm(conv(feature)))
            outputs.append(per_anchor(self.header(feature), self.outputs_per_anchor))
        return torch.cat(outputs, dim=1)


class FoldedPredictionHead(nn.Module):
    """A PredictionHead for inference: per-level convolutions with their batch norms folded in (fused kernels come
    with `merged_with`: the box and class heads as one)."""

    def __init__(self, level_convs: nn.ModuleList, header: SeparableConvBlock, outputs_per_anchor: int) -> None:
        super().__init__()
        self.level_convs = level_convs
        self.header = header
        self.outputs_per_anchor = outputs_per_anchor
        self.act = nn.SiLU()

    @torch.no_grad()
    def merged_with(self, other: FoldedPredictionHead) -> MergedPredictionHeads:
        """This head and another over the same features as one: each level's convolution of both, one kernel."""
        levels = nn.ModuleList(
            nn.ModuleList(merged_separable(first, second) for first, second in zip(mine, theirs))
            for mine, theirs in zip(self.level_convs, other.level_convs))
        header = merged_depthwise(self.header.depthwise_conv, other.header.depthwise_conv)
        return MergedPredictionHeads(levels, header, (self.header.pointwise_conv.conv, other.header.pointwise_conv.conv),
                                     (self.outputs_per_anchor, other.outputs_per_anchor))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        outputs = []
        for feature, convs in zip(features, self.level_convs):
            for conv in convs:
                feature = self.act(conv(feature))
            outputs.append(per_anchor(self.header(feature), self.outputs_per_anchor))
        return torch.cat(outputs, dim=1)


def merged_depthwise(first: SameConv2d, second: SameConv2d) -> SameConv2d:
    """Two bias-free depthwise convolutions as one over both inputs' channels, first's then second's."""
    weight = torch.cat([first.conv.weight, second.conv.weight])
    merged = SameConv2d(weight.shape[0], weight.shape[0], weight.shape[-1], groups=weight.shape[0], bias=False)
    merged.conv.weight = nn.Parameter(weight)
    return merged


def merged_separable(first: SeparableConvBlock, second: SeparableConvBlock) -> SeparableConvBlock:
    """Two folded separable blocks of the same width as one over both inputs' channels: the depthwise convolutions
    side by side, the pointwise ones as the two groups of one grouped convolution."""
    merged = SeparableConvBlock(2 * first.pointwise_conv.conv.in_channels, norm=False, pointwise_groups=2)
    merged.depthwise_conv = merged_depthwise(first.depthwise_conv, second.depthwise_conv)
    pointwise, parts = merged.pointwise_conv.conv, (first.pointwise_conv.conv, second.pointwise_conv.conv)
    pointwise.weight = nn.Parameter(torch.cat([part.weight for part in parts]))
    pointwise.bias = nn.Parameter(torch.cat([part.bias for part in parts]))
    return merged


class MergedPredictionHeads(nn.Module):
    """The box and class heads of an inference model run as one over twice the channels: each level convolution of
    both is one grouped kernel (half the calls, where each oneDNN call has a fixed cost whatever its size). The headers'
    pointwise convolutions, shared by all levels, run once per head over every level's pixels, in anchor order, so
    each head's outputs come out of one product with its bias added inside (fused: a oneDNN linear), not one product
    a level whose bias is first written into the output and read back."""

    def __init__(self, level_convs: nn.ModuleList, header_depthwise: SameConv2d,
                 header_pointwise: tuple[nn.Conv2d, nn.Conv2d], outputs_per_anchor: tuple[int, int]) -> None:
        super().__init__()
        self.level_convs = level_convs
        self.header_depthwise = header_depthwise
        self.header_weights = nn.ParameterList(nn.Parameter(conv.weight.detach().flatten(1).clone(), requires_grad=False)
                                               for conv in header_pointwise)
        self.header_biases = nn.ParameterList(bias_or_zeros(conv) for conv in header_pointwise)
        self.outputs_per_anchor = outputs_per_anchor
        self.act = nn.SiLU()
        self.fused = False

    def use_fused_kernels(self) -> None:
        """Every convolution as a fused kernel, the SiLU after each level convolution fused in."""
        for convs in self.level_convs:
            for block in convs:
                block.use_fused_kernels(silu=True)
        self.header_depthwise = self.header_depthwise.fused()
        self.fused = True

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, anchors, outputs) for each head, as its own PredictionHead would return them."""
        rows = []
        for feature, convs in zip(features, self.level_convs):
            feature = torch.cat([feature, feature], dim=1)
            for conv in convs:
                feature = conv(feature) if self.fused else self.act(conv(feature))
            rows.append(pixel_rows(self.header_depthwise(feature)))
        anchor_rows = torch.cat(rows, dim=1)  # (N, pixels of every level, both heads' channels)
        count, pixels, channels = anchor_rows.shape
        halves = anchor_rows.reshape(count * pixels, channels).chunk(2, dim=1)
        outputs = []
        for half, weight, bias, per_anchor in zip(halves, self.header_weights, self.header_biases,
                                                  self.outputs_per_anchor):
            if self.fused:
                out = torch.ops.mkldnn._linear_pointwise(half, weight, bias, "none", [], "")
            else:
                out = F.linear(half, weight, bias)
            outputs.append(out.reshape(count, -1, per_anchor))
        return tuple(outputs)
