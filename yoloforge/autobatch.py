"""``batch=-1`` and ``batch=0.7``: the largest batch that fits a fraction of the GPU's memory.

The peak memory (``torch.cuda.max_memory_allocated``) of one training forward and backward pass is
measured at a few batch sizes, a line ``bytes = fixed + per_image * batch`` is fitted to the
measurements by least squares, and the batch whose line stays within the budget is taken: 60% of
the GPU's memory for ``batch=-1`` (the reference's default, leaving room for the optimizer step,
the loss's assigner on crowded images and fragmentation), the given fraction for ``batch=0.7``.
The fitting is plain arithmetic on (batch, bytes) pairs, so it is tested on any machine with made-up
measurements; only ``measure_cuda`` needs a GPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

DEFAULT_FRACTION = 0.6  # batch=-1
PROBE_BATCHES = (1, 2, 4, 8, 16)
MAX_BATCH = 1024


class AutoBatchError(ValueError):
    """The batch cannot be sized from memory here; the message says what to give instead."""


@dataclass(frozen=True)
class MemoryLine:
    """Peak bytes of a training step as a function of the batch: ``fixed + per_image * batch``."""

    fixed: float
    per_image: float

    def batch_within(self, budget: float, most: int = MAX_BATCH) -> int:
        """The largest batch in [1, most] whose predicted bytes stay within ``budget``."""
        return int(min(most, max(1, math.floor((budget - self.fixed) / self.per_image))))


def fit_line(batches: Sequence[int], peak_bytes: Sequence[float]) -> MemoryLine:
    """Least-squares line through (batch, bytes); at least two batch sizes, growing memory."""
    if len(set(batches)) < 2:
        raise AutoBatchError(
            f"autobatch needs memory measured at two batch sizes or more, got {list(batches)}"
        )
    per_image, fixed = np.polyfit(np.asarray(batches, float), np.asarray(peak_bytes, float), 1)
    if not per_image > 0:
        raise AutoBatchError(
            f"autobatch measured memory that does not grow with the batch ({list(peak_bytes)} bytes at "
            f"batches {list(batches)}); give the batch as a number of images, e.g. batch=16"
        )
    return MemoryLine(float(fixed), float(per_image))


def choose_batch(
    measure: Callable[[int], float | None],
    budget: float,
    probes: Sequence[int] = PROBE_BATCHES,
) -> tuple[int, MemoryLine]:
    """The batch for ``budget`` bytes from ``measure(batch)`` (peak bytes, None when it ran out of
    memory); probing stops at the first batch that does not fit. Returns (batch, fitted line)."""
    seen: list[tuple[int, float]] = []
    for b in probes:
        used = measure(b)
        if used is None:
            break
        seen.append((b, used))
    if len(seen) < 2:
        raise AutoBatchError(
            f"autobatch: the GPU ran out of memory at batch {probes[len(seen)]}; "
            "use a smaller imgsz or model, or give a batch, e.g. batch=1"
        )
    line = fit_line(*zip(*seen, strict=True))
    batch = line.batch_within(budget)
    if len(seen) < len(probes):  # a probe ran out of memory: never above the batch that failed
        batch = min(batch, probes[len(seen)] - 1)
    return batch, line


def check_device(batch: float, device: torch.device) -> None:
    """AutoBatchError (one line) unless ``device`` is a CUDA GPU."""
    if device.type != "cuda":
        raise AutoBatchError(
            f"batch={batch} sizes the batch from the GPU's memory, which needs a CUDA device "
            f"(device={device.type}); give a number of images instead, e.g. batch=16"
        )


def measure_cuda(
    model: torch.nn.Module, imgsz: int, device: torch.device, amp: bool
) -> Callable[[int], float | None]:
    """``measure(batch)``: peak bytes of a forward and backward pass of ``model`` on ``batch``
    blank imgsz x imgsz images on ``device`` (under autocast when ``amp``), None when out of memory."""

    def measure(batch: int) -> float | None:
        images = None
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            images = torch.zeros(batch, 3, imgsz, imgsz, device=device)
            with torch.autocast("cuda", enabled=amp):
                outputs = model(images)
            sum(o.float().sum() for o in outputs).backward()
            torch.cuda.synchronize(device)
            return float(torch.cuda.max_memory_allocated(device))
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            del images
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    return measure


def autobatch(
    model: torch.nn.Module,
    imgsz: int,
    device: torch.device,
    fraction: float = DEFAULT_FRACTION,
    amp: bool = True,
) -> int:
    """Images per batch for one process training ``model`` at ``imgsz`` on the CUDA ``device``
    within ``fraction`` of its memory (less when other processes already hold some of it)."""
    check_device(fraction, device)
    free, total = torch.cuda.mem_get_info(device)
    ours = torch.cuda.memory_reserved(device)
    budget = min(fraction * total, free + ours)
    was_training = model.training
    model.train()
    try:
        batch, line = choose_batch(measure_cuda(model, imgsz, device, amp), budget)
    finally:
        model.train(was_training)
    log.info(
        "AutoBatch: batch %d for %s at imgsz %d: %.2fG of %.2fG (%.0f%%), %.1fM per image",
        batch, device, imgsz, (line.fixed + line.per_image * batch) / 2**30, total / 2**30,
        100 * fraction, line.per_image / 2**20,
    )  # fmt: skip
    return batch
