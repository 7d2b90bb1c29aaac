"""The EfficientDet network: EfficientNet backbone, BiFPN, box and class heads."""

from __future__ import annotations

import torch
from torch import nn

from .backbone import EfficientNetBackbone
from .bifpn import BiFPNCell
from .config import EfficientDetConfig
from .head import MergedPredictionHeads, PredictionHead
from .layers import SameConv2d


class EfficientDet(nn.Module):
    """Maps a normalised (N, 3, S, S) batch to per-anchor box regression and class logits.

    Module names follow the published Yet-Another-EfficientDet-Pytorch checkpoints, so their
    state dicts load with strict=True.
    """

    def __init__(self, config: EfficientDetConfig, num_classes: int = 90, num_anchors: int = 9) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.bifpn = nn.Sequential(*(BiFPNCell(config, first=i == 0) for i in range(config.fpn_repeats)))
        levels = len(config.levels)
        self.regressor = PredictionHead(config.fpn_channels, config.head_repeats, levels, num_anchors, 4)
        self.classifier = PredictionHead(config.fpn_channels, config.head_repeats, levels, num_anchors, num_classes)
        self.backbone_net = EfficientNetBackbone(config.backbone_config)
        self.heads: MergedPredictionHeads | None = None

    def fold_batch_norms(self) -> None:
        """Fold every batch norm into the convolution before it (eval-mode statistics; inference only)."""
        self.backbone_net.fold_batch_norms()
        for cell in self.bifpn:
            cell.fold_batch_norms()
        self.regressor = self.regressor.folded()
        self.classifier = self.classifier.folded()

    def fix_fusion_weights(self) -> None:
        """Compute the BiFPN's normalised fusion weights once (inference only)."""
        for cell in self.bifpn:
            cell.fix_fusion_weights()

    def use_onednn_graph_ops(self, on: bool = True) -> None:
        """After folding and `fix_fusion_weights`, before tracing for oneDNN Graph: the BiFPN's fusions in ops it
        fuses, strided convolutions without a padded copy of their input."""
        for cell in self.bifpn:
            cell.use_onednn_graph_ops(on)
        for module in self.modules():
            if isinstance(module, SameConv2d):
                module.use_grown_kernel(on)

    def use_fused_kernels(self) -> None:
        """After folding: convolutions as oneDNN kernels with their SiLU fused in, the box and class heads as one
        (CPU, float32 or bfloat16)."""
        self.backbone_net.use_fused_kernels()
        for cell in self.bifpn:
            cell.use_fused_kernels()
        self.heads = self.regressor.merged_with(self.classifier)
        del self.regressor, self.classifier
        self.heads.use_fused_kernels()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (regression (N, A, 4) as dy, dx, dh, dw; class logits (N, A, num_classes))."""
        features = self.bifpn(self.backbone_net(images))
        if self.heads is not None:
            return self.heads(features)
        return self.regressor(features), self.classifier(features)
