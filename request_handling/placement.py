"""Where and in which precision a server's model runs, decided once at load from the settings and the device:
the one home of the serving's device and precision rules (the network's own, such as float32 meaning float32 on
cuDNN, are `efficientdet.optimize`'s)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .settings import Settings

log = logging.getLogger("efficientdet.serving")


def serving_device(gpu_id: int | None = None) -> str:
    """The device a model server's worker runs its model on: the GPU the server gave it (TorchServe's `gpu_id`: on
    an instance of several GPUs it spreads its workers over them), else the current GPU, else the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    return "cuda" if gpu_id is None else f"cuda:{gpu_id}"


def warm_up_batch_sizes(batch_size: int, device: str) -> set[int]:
    """The batch sizes warmed up at load: 1 and BATCH_SIZE; on a GPU also the powers of two between, each a
    CUDA graph that a partial batch is padded up to."""
    sizes = {1, batch_size}
    if torch.device(device).type == "cuda":
        sizes |= {2 ** k for k in range(batch_size.bit_length()) if 2 ** k < batch_size}
    return sizes


@dataclass(frozen=True)
class Placement:
    """The model's device and precision, and where a request's JPEGs are decoded.

    - `float16`: USE_FLOAT16, on a GPU; `bfloat16`: CPU_PRECISION=bfloat16, on a CPU (each ignored, with a warning
      at load, on the other kind of device); float32 otherwise.
    - `device_jpeg_decode`: JPEGs decoded by the device's decoder (nvJPEG on a GPU), by default on a GPU; never
      with a reduced decode, which only the CPU decoder does.
    - `reduced_jpeg_side`: JPEG_REDUCED_DECODE's target, the network's input side, or None for full decodes.
    """

    device: str
    float16: bool
    bfloat16: bool
    cuda_graphs: bool
    device_jpeg_decode: bool
    reduced_jpeg_side: int | None

    @classmethod
    def of(cls, settings: Settings, device: str) -> Placement:
        on_gpu = torch.device(device).type == "cuda"
        device_decode = on_gpu if settings.device_jpeg_decode is None else settings.device_jpeg_decode
        return cls(device, settings.use_float16 and on_gpu, settings.cpu_bfloat16 and not on_gpu,
                   settings.cuda_graphs and on_gpu, device_decode and not settings.jpeg_reduced_decode,
                   settings.input_size if settings.jpeg_reduced_decode else None)

    def warn_about_ignored(self, settings: Settings) -> None:
        """A log line for each precision setting that does not apply on this device."""
        if settings.cpu_bfloat16 and not self.bfloat16:
            log.warning("CPU_PRECISION=bfloat16 applies on CPU only; on %s, USE_FLOAT16 sets the precision",
                        self.device)
        if settings.use_float16 and not self.float16:
            log.warning("USE_FLOAT16 applies on a GPU only; on %s the network runs in %s", self.device,
                        "bfloat16" if self.bfloat16 else "float32")
