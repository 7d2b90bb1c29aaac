"""What a SageMaker instance type tells: whether it has a GPU, how many vCPUs."""

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
