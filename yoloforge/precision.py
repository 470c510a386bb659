"""Numeric precision of the training step: which autocast dtype and memory format, per device.

``amp=True`` (the default) means mixed precision wherever the hardware computes it natively:
- CUDA: float16 autocast with a gradient scaler, as the reference trains.
- CPU with native bfloat16 (AVX512-BF16 or AMX): bfloat16 autocast and channels_last tensors. On a
  2-core EPYC with AVX512-BF16 the forward and backward step of yolov8n at imgsz 192 runs 1.77x
  faster than float32 (1.53x from bfloat16, the rest from channels_last, which alone gives 1.04x);
  see benchmarks/bench_train_step.py. bfloat16 keeps float32's exponent range: no scaler needed.
- Other CPUs: float32 (torch emulates bfloat16 there, 10x slower than float32), channels_last.
- MPS, and CUDA with ``amp=False``: float32.
channels_last is a memory layout, not a precision: the same float32 arithmetic (to rounding), and on
every CPU measured the faster layout for the step (1.17x at imgsz 128 and 1.42x at 192 on a 2-core
AVX2 EPYC, 1.04x on the AVX512 one), so CPU training always uses it, ``amp=False`` included.
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
        layout = ", channels_last" if self.channels_last else ""
        if self.dtype is None:
            return "float32" + layout
        name = {torch.float16: "float16", torch.bfloat16: "bfloat16"}[self.dtype]
        return f"mixed {name}{layout}"


def training_precision(device: torch.device, amp: bool, cpu_bf16: bool | None = None) -> Precision:
    """The precision to train in on ``device``; ``cpu_bf16`` overrides the CPU flag check (tests)."""
    if amp and device.type == "cuda":
        return Precision("cuda", torch.float16, channels_last=False)
    if device.type == "cpu":
        bf16 = amp and (native_bf16() if cpu_bf16 is None else cpu_bf16)
        return Precision("cpu", torch.bfloat16 if bf16 else None, channels_last=True)
    return Precision(device.type, None, channels_last=False)
