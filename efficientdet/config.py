"""One configuration table for the EfficientDet family (compound coefficients 0–8)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneConfig:
    """EfficientNet-B{n} scaling: width and depth multipliers of the B0 stages."""

    name: str
    width: float
    depth: float
    feature_channels: tuple[int, int, int]  # channels of P3, P4, P5 as the backbone emits them


@dataclass(frozen=True)
class StageConfig:
    """One stage of EfficientNet-B0 before scaling."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int
    se_ratio: float = 0.25


B0_STAGES: tuple[StageConfig, ...] = (
    StageConfig(1, 3, 1, 1, 32, 16),
    StageConfig(2, 3, 2, 6, 16, 24),
    StageConfig(2, 5, 2, 6, 24, 40),
    StageConfig(3, 3, 2, 6, 40, 80),
    StageConfig(3, 5, 1, 6, 80, 112),
    StageConfig(4, 5, 2, 6, 112, 192),
    StageConfig(1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32

BACKBONES: dict[int, BackboneConfig] = {
    0: BackboneConfig("efficientnet-b0", 1.0, 1.0, (40, 112, 320)),
    1: BackboneConfig("efficientnet-b1", 1.0, 1.1, (40, 112, 320)),
    2: BackboneConfig("efficientnet-b2", 1.1, 1.2, (48, 120, 352)),
    3: BackboneConfig("efficientnet-b3", 1.2, 1.4, (48, 136, 384)),
    4: BackboneConfig("efficientnet-b4", 1.4, 1.8, (56, 160, 448)),
    5: BackboneConfig("efficientnet-b5", 1.6, 2.2, (64, 176, 512)),
    6: BackboneConfig("efficientnet-b6", 1.8, 2.6, (72, 200, 576)),
    7: BackboneConfig("efficientnet-b7", 2.0, 3.1, (80, 224, 640)),
}

DEFAULT_ANCHOR_RATIOS: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))
DEFAULT_ANCHOR_SCALES: tuple[float, ...] = (2**0, 2 ** (1.0 / 3.0), 2 ** (2.0 / 3.0))


@dataclass(frozen=True)
class EfficientDetConfig:
    """Everything that differs between D0 and D8."""

    compound_coef: int
    backbone: int  # EfficientNet-B{backbone}
    fpn_channels: int
    fpn_repeats: int
    head_repeats: int
    input_size: int
    max_level: int  # pyramid levels are P3..P{max_level}
    anchor_scale: float
    weighted_fusion: bool

    min_level: int = 3

    @property
    def name(self) -> str:
        return f"efficientdet-d{self.compound_coef}"

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(range(self.min_level, self.max_level + 1))

    @property
    def size_multiple(self) -> int:
        """Input sizes must be multiples of the coarsest stride."""
        return 2**self.max_level

    @property
    def backbone_config(self) -> BackboneConfig:
        return BACKBONES[self.backbone]


EFFICIENTDET_CONFIGS: dict[int, EfficientDetConfig] = {
    0: EfficientDetConfig(0, backbone=0, fpn_channels=64, fpn_repeats=3, head_repeats=3, input_size=512, max_level=7, anchor_scale=4.0, weighted_fusion=True),
    1: EfficientDetConfig(1, backbone=1, fpn_channels=88, fpn_repeats=4, head_repeats=3, input_size=640, max_level=7, anchor_scale=4.0, weighted_fusion=True),
    2: EfficientDetConfig(2, backbone=2, fpn_channels=112, fpn_repeats=5, head_repeats=3, input_size=768, max_level=7, anchor_scale=4.0, weighted_fusion=True),
    3: EfficientDetConfig(3, backbone=3, fpn_channels=160, fpn_repeats=6, head_repeats=4, input_size=896, max_level=7, anchor_scale=4.0, weighted_fusion=True),
    4: EfficientDetConfig(4, backbone=4, fpn_channels=224, fpn_repeats=7, head_repeats=4, input_size=1024, max_level=7, anchor_scale=4.0, weighted_fusion=True),
    5: EfficientDetConfig(5, backbone=5, fpn_channels=288, fpn_repeats=7, head_repeats=4, input_size=1280, max_level=7, anchor_scale=4.0, weighted_fusion=True),
    6: EfficientDetConfig(6, backbone=6, fpn_channels=384, fpn_repeats=8, head_repeats=5, input_size=1280, max_level=7, anchor_scale=4.0, weighted_fusion=False),
    7: EfficientDetConfig(7, backbone=6, fpn_channels=384, fpn_repeats=8, head_repeats=5, input_size=1536, max_level=7, anchor_scale=5.0, weighted_fusion=False),
    8: EfficientDetConfig(8, backbone=7, fpn_channels=384, fpn_repeats=8, head_repeats=5, input_size=1536, max_level=8, anchor_scale=4.0, weighted_fusion=False),
}


def get_config(compound_coef: int) -> EfficientDetConfig:
    """The configuration of EfficientDet-D{compound_coef}; ValueError outside 0–8."""
    if compound_coef not in EFFICIENTDET_CONFIGS:
        raise ValueError(f"compound coefficient must be one of 0-8, got {compound_coef!r}")
    return EFFICIENTDET_CONFIGS[compound_coef]


MAX_INPUT_SIZE = 2048  # 4/3 of the largest published size (1536); 4096 exhausts memory at the first pass


def validate_input_size(config: EfficientDetConfig, input_size: int) -> int:
    """Return input_size if the network can take it (a multiple of the coarsest stride, at most MAX_INPUT_SIZE)."""
    multiple = config.size_multiple
    if isinstance(input_size, bool) or not isinstance(input_size, int) or not 0 < input_size <= MAX_INPUT_SIZE \
            or input_size % multiple:
        raise ValueError(f"input size for {config.name} must be a multiple of {multiple} from {multiple} to "
                         f"{MAX_INPUT_SIZE}, got {input_size!r}")
    return input_size
