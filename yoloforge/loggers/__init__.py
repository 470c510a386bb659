"""Experiment trackers as callbacks (``loggers=tensorboard,mlflow``): one module each, both optional.

Each logger checks when it is built that its package is installed, so a missing one stops a run
before set-up with one line naming the extra to install.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable
from pathlib import Path

from yoloforge.callbacks import Callback

TRACK_EXTRA = 'pip install "yoloforge[track]"'


def require(module: str, logger: str) -> None:
    """ImportError (one line naming the extra) when ``module`` is not installed."""
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"loggers={logger} needs {module}, which is not installed; {TRACK_EXTRA}")


def build_loggers(names: Iterable[str]) -> list[Callback]:
    """The logger callbacks of ``names`` (settings.LOGGERS), in that order."""
    out: list[Callback] = []
    for name in names:
        if name == "tensorboard":
            from yoloforge.loggers.tensorboard import TensorBoardLogger

            out.append(TensorBoardLogger())
        elif name == "mlflow":
            from yoloforge.loggers.mlflow import MLflowLogger

            out.append(MLflowLogger())
        else:
            raise ValueError(f"loggers={name}: not a logger; choose from tensorboard, mlflow")
    return out


def finite_values(row: dict[str, float]) -> dict[str, float]:
    """The columns of a results.csv row worth plotting: all but ``epoch``, NaN (not validated) left out."""
    return {k: float(v) for k, v in row.items() if k != "epoch" and math.isfinite(float(v))}


def run_images(save_dir: Path, patterns: Iterable[str]) -> list[Path]:
    """The images of the run folder matching ``patterns`` (train_batch*.jpg, ...), sorted by name."""
    return sorted({p for pattern in patterns for p in save_dir.glob(pattern) if p.is_file()})
