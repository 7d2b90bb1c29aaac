"""What a SageMaker instance type tells: whether it has a GPU, how many GPUs and vCPUs."""

from __future__ import annotations

import re


def is_gpu_instance(instance_type: str) -> bool:
    """ml.p3.2xlarge, ml.g5.xlarge … have NVIDIA GPUs."""
    return instance_type.removeprefix("ml.")[:1] in ("p", "g")


def instance_vcpus(instance_type: str) -> int:
    """vCPUs of an ml.<family>.<size> instance: medium 1, large 2, xlarge 4, Nxlarge 4N."""
    size = instance_type.rsplit(".", 1)[-1]
    fixed = {"medium": 1, "large": 2}
    if size in fixed:
        return fixed[size]
    match = re.fullmatch(r"(\d*)xlarge", size)
    if not match:
        raise ValueError(f"{instance_type}: not an ml.<family>.<size> instance type")
    return 4 * int(match[1] or 1)


# The sizes with several GPUs, per family (every other size of a GPU family has one).
MULTI_GPU_SIZES = {
    "p3": {"8xlarge": 4, "16xlarge": 8}, "p3dn": {"24xlarge": 8}, "g4dn": {"12xlarge": 4, "metal": 8},
    "g5": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, "g6": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g6e": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, "p4d": {"24xlarge": 8}, "p4de": {"24xlarge": 8},
    "p5": {"48xlarge": 8}, "p5e": {"48xlarge": 8}, "p5en": {"48xlarge": 8},
}


def instance_gpus(instance_type: str) -> int:
    """NVIDIA GPUs of an instance type: 0 on CPU instances, 1 unless the size is one with several."""
    if not is_gpu_instance(instance_type):
        return 0
    family, _, size = instance_type.removeprefix("ml.").partition(".")
    return MULTI_GPU_SIZES.get(family, {}).get(size, 1)
