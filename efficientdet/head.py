"""Box and class prediction heads, shared across pyramid levels with per-level batch norm."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import SeparableConvBlock, SeparableConvInto, batch_norm


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
    """A PredictionHead for inference: per-level convolutions with their batch norms folded in."""

    def __init__(self, level_convs: nn.ModuleList, header: SeparableConvBlock, outputs_per_anchor: int) -> None:
        super().__init__()
        self.level_convs = level_convs
        self.header = header
        self.outputs_per_anchor = outputs_per_anchor
        self.act = nn.SiLU()

    def use_fused_kernels(self) -> None:
        """Every convolution as a fused kernel, the SiLU after each level convolution fused in; the header
        writes each level's outputs into their place in the result instead of concatenating them."""
        for convs in self.level_convs:
            for block in convs:
                block.use_fused_kernels(silu=True)
        self.header = self.header.fused_into()

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if isinstance(self.header, SeparableConvInto):
            return self._forward_into(features)
        outputs = []
        for feature, convs in zip(features, self.level_convs):
            for conv in convs:
                feature = self.act(conv(feature))
            outputs.append(per_anchor(self.header(feature), self.outputs_per_anchor))
        return torch.cat(outputs, dim=1)

    def _forward_into(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The fused head: SiLUs inside the level kernels, the header writing each level into the result."""
        pixels = [feature.shape[-2] * feature.shape[-1] for feature in features]
        out = features[0].new_empty(features[0].shape[0], sum(pixels), self.header.matrix.shape[1])
        start = 0
        for feature, convs, count in zip(features, self.level_convs, pixels):
            for conv in convs:
                feature = conv(feature)
            self.header(feature, out[:, start:start + count])
            start += count
        return out.reshape(out.shape[0], -1, self.outputs_per_anchor)
