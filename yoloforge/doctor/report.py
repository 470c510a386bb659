"""What the doctor hands back: one ``Finding`` per check, gathered in a ``DoctorReport``.

A finding's ``value`` is the measured figure, ``target`` the guide's figure (or ours, where the guide
gives none), ``message`` the first thing to do, and ``items`` the images (and boxes) concerned, worst
first. ``items`` are plain JSON-ready dicts: ``{"image": path, "split": "train", "box_xyxy": [...]}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoloforge.structures import ImageRecord

OK, WARN, FAIL = "ok", "warn", "fail"
CHECKS = (  # the order of the console table, the page and doctor.json
    "leakage",
    "images_per_class",
    "instances_per_class",
    "backgrounds",
    "imbalance",
    "duplicates",
    "small_objects",
    "border_boxes",
    "double_labels",
    "degenerate_boxes",
    "overlooked",
    "swapped",
    "badly_located",
    "variety",
)


@dataclass(frozen=True)
class Finding:
    check: str  # one of CHECKS
    severity: str  # OK, WARN or FAIL
    value: Any  # the measured figure (a number, or a small dict of numbers)
    target: str  # the figure to reach, e.g. ">= 1500"
    message: str  # what was found and the first thing to do
    items: list[dict[str, Any]] = field(default_factory=list)  # worst first

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "value": self.value,
            "target": self.target,
            "message": self.message,
            "items": self.items,
        }


@dataclass(frozen=True)
class LabelledImage:
    """One usable image of a split, with its labels in pixels."""

    split: str  # "train", "val" or "test"
    record: ImageRecord

    @property
    def path(self) -> str:
        return self.record.path

    @property
    def shape(self) -> tuple[int, int]:
        return self.record.shape  # (height, width)

    @property
    def boxes_xyxy(self) -> np.ndarray:
        """(N, 4) float32 pixels of the original image."""
        h, w = self.record.shape
        cx, cy, bw, bh = (self.record.boxes_cxcywhn * np.array([w, h, w, h], np.float32)).T
        return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)


@dataclass
class DoctorReport:
    """Every finding of one doctor run, and where its files are."""

    data: Path  # the dataset config
    names: list[str]
    imgsz: int
    model: str  # "" without model=
    save_dir: Path
    findings: list[Finding]
    n_images: dict[str, int]  # usable images per split

    @property
    def failed(self) -> bool:
        return any(f.severity == FAIL for f in self.findings)

    @property
    def html(self) -> Path:
        return self.save_dir / "doctor.html"

    @property
    def json(self) -> Path:
        return self.save_dir / "doctor.json"

    def finding(self, check: str) -> Finding | None:
        return next((f for f in self.findings if f.check == check), None)

    def __getitem__(self, check: str) -> Finding:
        found = self.finding(check)
        if found is None:
            raise KeyError(f"no '{check}' finding (checks run: {', '.join(f.check for f in self.findings)})")
        return found
