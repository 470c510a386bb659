"""Numeric precision of the training step: which autocast dtype and memory format, per device.

``amp=True`` (the default) means mixed precision wherever the hardware computes it natively:
- CUDA: float16 autocast with a gradient scaler, as the reference trains.
- CPU with native bfloat16 (AVX512-BF16 or AMX): bfloat16 autocast and channels_last tensors. On a
  2-core EPYC with AVX512-BF16 the forward and backward step of yolov8n at imgsz 192 runs 1.77x
  faster than float32 (1.53x from bfloat16, the rest from channels_last, which alone gives 1.04x);
  see benchmarks/bench_train_step.py. bfloat16 keeps float32's exponent range: no scaler needed.
- Other CPUs and MPS: float32 (torch emulates bfloat16 there, slower than float32).
The loss and the assigner always run in float32 outside autocast (the head's maps are cast up).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from yoloforge.device import native_bf16


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: torch.dtype | None  # autocast dtype; None: plain float32
    channels_last: bool

    @property
    def scaled(self) -> bool:
        """float16 needs a gradient scaler; bfloat16 and float32 do not."""
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format the model's weights use."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def describe(self) -> str:
        if self.dtype is None:
            return "float32"
        name = {torch.float16: "float16", torch.bfloat16: "bfloat16"}[self.dtype]
        return f"mixed {name}" + (", channels_last" if self.channels_last else "")


def training_precision(device: torch.device, amp: bool, cpu_bf16: bool | None = None) -> Precision:
    """The precision to train in on ``device``; ``cpu_bf16`` overrides the CPU flag check (tests)."""
    if amp and device.type == "cuda":
        return Precision("cuda", torch.float16, channels_last=False)
    if amp and device.type == "cpu" and (native_bf16() if cpu_bf16 is None else cpu_bf16):
        return Precision("cpu", torch.bfloat16, channels_last=True)
    return Precision(device.type, None, channels_last=False)
