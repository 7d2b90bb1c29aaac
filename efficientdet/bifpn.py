"""Bidirectional feature pyramid (BiFPN) cells."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import EfficientDetConfig
from .layers import SameConv2d, SameMaxPool2d, SeparableConvBlock, batch_norm

FUSION_EPS = 1e-4


def normalised_fusion_weights(weights: torch.Tensor) -> torch.Tensor:
    """BiFPN's fast normalised fusion: ReLU'd weights divided by their sum (+ a small epsilon)."""
    weights = F.relu(weights)
    return weights / (torch.sum(weights, dim=0) + FUSION_EPS)


def lateral(in_channels: int, out_channels: int) -> nn.Sequential:
    """1×1 convolution + batch norm that brings a backbone feature to the pyramid width."""
    return nn.Sequential(SameConv2d(in_channels, out_channels, 1), batch_norm(out_channels))


class BiFPNCell(nn.Module):
    """One BiFPN layer: a top-down pass then a bottom-up pass over levels P3..Pmax.

    The first cell also builds its inputs from the backbone's P3–P5: lateral 1×1 convolutions,
    and extra levels obtained by max-pooling P5.
    """

    def __init__(self, config: EfficientDetConfig, first: bool) -> None:
        super().__init__()
        channels = config.fpn_channels
        self.levels = config.levels
        self.first = first
        self.weighted = config.weighted_fusion
        top = self.levels[-1]
        for level in reversed(self.levels[:-1]):
            self.add_module(f"conv{level}_up", SeparableConvBlock(channels))
        for level in self.levels[1:]:
            self.add_module(f"conv{level}_down", SeparableConvBlock(channels))
        self.downsample = SameMaxPool2d()
        if first:
            c3, c4, c5 = config.backbone_config.feature_channels
            self.p3_down_channel = lateral(c3, channels)
            self.p4_down_channel = lateral(c4, channels)
            self.p5_down_channel = lateral(c5, channels)
            self.p5_to_p6 = nn.Sequential(SameConv2d(c5, channels, 1), batch_norm(channels), SameMaxPool2d())
            self.p4_down_channel_2 = lateral(c4, channels)
            self.p5_down_channel_2 = lateral(c5, channels)
        # Fusion weights exist in every published checkpoint (for P3..P7), used only with weighted fusion.
        for level in range(3, 7):
            self.register_parameter(f"p{level}_w1", nn.Parameter(torch.ones(2)))
        for level in range(4, 8):
            self.register_parameter(f"p{level}_w2", nn.Parameter(torch.ones(3 if level < 7 else 2)))
        self.top = top
        self.fixed_fusion_weights: dict[str, list[float]] = {}
        self.graph_ops = False

    def fold_batch_norms(self) -> None:
        for block in self.children():
            if isinstance(block, SeparableConvBlock):
                block.fold_batch_norm()
        for sequence in self._laterals():
            sequence[0].fold_batch_norm(sequence[1])
            sequence[1] = nn.Identity()

    def _laterals(self) -> tuple[nn.Sequential, ...]:
        """The first cell's 1×1 convolutions (each with its batch norm) that bring backbone features in."""
        return (self.p3_down_channel, self.p4_down_channel, self.p5_down_channel,
                self.p4_down_channel_2, self.p5_down_channel_2, self.p5_to_p6) if self.first else ()

    def use_fused_kernels(self) -> None:
        """The separable and lateral convolutions as fused kernels (after folding)."""
        for block in self.children():
            if isinstance(block, SeparableConvBlock):
                block.use_fused_kernels()
        for sequence in self._laterals():
            if not isinstance(sequence[1], nn.Identity):
                raise RuntimeError("fold the batch norms before fusing kernels")
            sequence[0] = sequence[0].fused()

    def fix_fusion_weights(self) -> None:
        """Inference: each fusion's normalised weights computed once, as numbers, rather than on every call."""
        self.fixed_fusion_weights = {name: normalised_fusion_weights(weight).tolist()
                                     for name, weight in self.named_parameters(recurse=False)}

    def use_onednn_graph_ops(self, on: bool = True) -> None:
        """Inference, before tracing for oneDNN Graph (after `fix_fusion_weights`): fusions in the ops it fuses into
        the convolutions before them."""
        self.graph_ops = on

    def _fuse(self, name: str, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.graph_ops:
            return self._fuse_for_graph(name, inputs)
        if not self.weighted:
            fused = inputs[0] + inputs[1]
            for x in inputs[2:]:
                fused += x
        elif self.fixed_fusion_weights:
            weights = self.fixed_fusion_weights[name]
            fused = inputs[0] * weights[0]
            for w, x in zip(weights[1:], inputs[1:]):
                fused.add_(x, alpha=w)
        else:
            weights = normalised_fusion_weights(getattr(self, name))
            fused = weights[0] * inputs[0]
            for w, x in zip(weights[1:], inputs[1:]):
                fused = fused + w * x
        return F.silu(fused, inplace=True)

    def _fuse_for_graph(self, name: str, inputs: list[torch.Tensor]) -> torch.Tensor:
        """`_fuse` with products and sums out of place (an in-place op ends a oneDNN Graph partition) and SiLU as
        x·sigmoid(x) (silu itself is no post-op there): the same values to float32 rounding."""
        weights = self.fixed_fusion_weights[name] if self.weighted else None
        fused = inputs[0] * weights[0] if weights else inputs[0]
        for i, x in enumerate(inputs[1:], start=1):
            fused = fused + (x * weights[i] if weights else x)
        return fused * torch.sigmoid(fused)

    def _inputs(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.first:
            return features
        p3, p4, p5 = features
        inputs = [self.p3_down_channel(p3), self.p4_down_channel(p4), self.p5_down_channel(p5), self.p5_to_p6(p5)]
        while len(inputs) < len(self.levels):
            inputs.append(self.downsample(inputs[-1]))
        return inputs

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        inputs = self._inputs(features)
        levels = self.levels
        top_down = {levels[-1]: inputs[-1]}
        for i in reversed(range(len(levels) - 1)):
            level = levels[i]
            upsampled = F.interpolate(top_down[level + 1], scale_factor=2.0, mode="nearest")
            fused = self._fuse(f"p{level}_w1", [inputs[i], upsampled])
            top_down[level] = getattr(self, f"conv{level}_up")(fused)
        if self.first:
            inputs = list(inputs)
            inputs[1] = self.p4_down_channel_2(features[1])
            inputs[2] = self.p5_down_channel_2(features[2])
        outputs = [top_down[levels[0]]]
        for i in range(1, len(levels)):
            level = levels[i]
            downsampled = self.downsample(outputs[-1])
            parts = [inputs[i], downsampled] if level == self.top else [inputs[i], top_down[level], downsampled]
            outputs.append(getattr(self, f"conv{level}_down")(self._fuse(f"p{level}_w2", parts)))
        return outputs
