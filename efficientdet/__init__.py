"""EfficientDet D0–D8 in PyTorch, compatible with the Yet-Another-EfficientDet-Pytorch checkpoints."""

from .config import EFFICIENTDET_CONFIGS, EfficientDetConfig, get_config
from .detector import Detection, Detector
from .download import download_weights, weights_url
from .labels import COCO_LABELS
from .model import EfficientDet
from .untrained import untrained_state_dict
from .weights import CheckpointError, load_state_dict

__all__ = [
    "COCO_LABELS",
    "EFFICIENTDET_CONFIGS",
    "CheckpointError",
    "Detection",
    "Detector",
    "EfficientDet",
    "EfficientDetConfig",
    "download_weights",
    "get_config",
    "load_state_dict",
    "untrained_state_dict",
    "weights_url",
]
