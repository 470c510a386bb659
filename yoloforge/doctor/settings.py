"""The doctor's settings: ``yoloforge doctor data=config.yaml [model=best.pt] [imgsz=] [strict=True]``.

Built by ``yoloforge.settings.build`` like every mode's settings, so a typo or a bad value stops with
one line naming the key, and ``yoloforge doctor --help`` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from yoloforge.settings import Bounds


def _s(default: Any, help: str, bounds: Bounds | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": None, "bounds": bounds})


@dataclass(frozen=True)
class DoctorSettings:
    data: str = _s("", "dataset config yaml, or 'shapes'")
    model: str = _s("", "trained checkpoint (.pt): also rank likely label errors")
    imgsz: int = _s(0, "training image size; 0: the model's, else 640", Bounds(low=32, also=(0,)))
    conf: float = _s(0.05, "lowest detection confidence the model reports", Bounds(0, 1, low_open=True))
    batch: int = _s(8, "images per prediction batch", Bounds(low=1))
    device: str = _s("", "cpu, 0 or mps; empty = first GPU if there is one, else cpu")
    min_px: int = _s(8, "smallest box size to find: sqrt(area), pixels at imgsz", Bounds(low=1))
    strict: bool = _s(False, "exit code 1 when any check fails (for CI)")
    project: str = _s("runs", "parent folder of the run folder")
    name: str = _s("doctor", "run folder name (doctor, doctor2, ...)")
    progress: bool = _s(True, "show progress bars")
