"""A finding: one thing the run's numbers show, in a sentence, with the numbers and what to try."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

KINDS = (
    "converging",
    "still_improving",
    "overfitting",
    "unstable",
    "weak_class",
    "confusion",
    "background_fp",
    "small_objects",
    "localisation",
    "threshold",
)


@dataclass
class Finding:
    kind: str  # one of KINDS
    sentence: str  # what the numbers show, each number in it also in ``evidence``
    advice: str  # what to try, as the tuning guide advises
    evidence: dict[str, Any] = field(default_factory=dict)  # the numbers, by name
    epoch: int | None = None  # where it applies (onset of overfitting, best epoch, ...)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"finding kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "epoch": self.epoch,
            "evidence": {k: _plain(v) for k, v in self.evidence.items()},
            "advice": self.advice,
            "sentence": self.sentence,
        }


def _plain(value: Any) -> Any:
    """JSON-ready: numpy numbers to Python ones, floats to 6 significant digits, NaN to None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.6g}")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
