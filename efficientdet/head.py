"""Box and class prediction heads, shared across pyramid levels with per-level batch norm."""

from __future__ import annotations

import torch
from torch import nn

from .layers import SeparableConvBlock, batch_norm


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
        self.level_convs: nn.ModuleList | None = None  # per-level convolutions once batch norms are folded in

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """(N, anchors, outputs_per_anchor), anchors ordered by level, row, column, then anchor."""
        outputs = []
        for level, (feature, norms) in enumerate(zip(features, self.bn_list)):
            convs = self.conv_list if self.level_convs is None else self.level_convs[level]
            for conv, norm in zip(convs, norms):
                feature = self.act(norm(conv(feature)))
            feature = self.header(feature).permute(0, 2, 3, 1)
            outputs.append(feature.reshape(feature.shape[0], -1, self.outputs_per_anchor))
        return torch.cat(outputs, dim=1)
