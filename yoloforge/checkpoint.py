"""Our checkpoint format: a dict of plain Python values and tensors.

It loads with ``torch.load(path, weights_only=True)``, so opening a checkpoint never runs pickled
code. Files are written atomically: a temp file in the same folder, flushed and fsynced, then
renamed over the target, so a crash mid-write leaves the previous file intact.

Layout (``FORMAT_VERSION`` 1)::

    format        "yoloforge"           marks the file as ours
    version       1                     format version
    yoloforge     "0.1.0"               package version that wrote it
    arch          {"family", "size", "nc"}
    names         [class names]
    model         state_dict            weights to run: the EMA when training has one
    train_model   state_dict | None     raw training weights (resume only)
    optimizer     state_dict | None
    ema_updates   int                   EMA update count (resume)
    epoch         int                   last completed epoch (0-based), -1 when none
    best_fitness  float | None
    train_args    {key: value}          flat training settings
    date          ISO time
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT = "yoloforge"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    family: str
    size: str
    nc: int
    names: list[str]
    model: dict[str, torch.Tensor]
    train_model: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    ema_updates: int = 0
    epoch: int = -1
    best_fitness: float | None = None
    train_args: dict[str, Any] = field(default_factory=dict)
    date: str = ""

    def to_dict(self) -> dict[str, Any]:
        from yoloforge import __version__

        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "yoloforge": __version__,
            "arch": {"family": self.family, "size": self.size, "nc": int(self.nc)},
            "names": list(self.names),
            "model": self.model,
            "train_model": self.train_model,
            "optimizer": self.optimizer,
            "ema_updates": int(self.ema_updates),
            "epoch": int(self.epoch),
            "best_fitness": None if self.best_fitness is None else float(self.best_fitness),
            "train_args": _plain(self.train_args),
            "date": self.date or datetime.datetime.now().isoformat(timespec="seconds"),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Checkpoint:
        arch = d["arch"]
        return Checkpoint(
            family=arch["family"],
            size=arch["size"],
            nc=int(arch["nc"]),
            names=list(d["names"]),
            model=d["model"],
            train_model=d.get("train_model"),
            optimizer=d.get("optimizer"),
            ema_updates=int(d.get("ema_updates", 0)),
            epoch=int(d.get("epoch", -1)),
            best_fitness=d.get("best_fitness"),
            train_args=dict(d.get("train_args") or {}),
            date=d.get("date", ""),
        )


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file."""


def _plain(value: Any) -> Any:
    """Reduce settings to types weights_only loading accepts (tuples become lists, paths strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write ``ckpt`` atomically to ``path`` (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt.to_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_plain(path: str | Path) -> dict[str, Any] | None:
    """Load ``path`` with ``weights_only=True``; None when the file needs objects we do not admit.

    Our checkpoints always load this way. A file written by another trainer (which pickles whole
    modules) does not, and is then handed to the restricted importer in ``model.weights``.
    """
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception:
        return None
    return obj if isinstance(obj, dict) else None


def is_ours(obj: dict[str, Any] | None) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load one of our checkpoints (weights_only). Raises CheckpointError naming the file otherwise."""
    obj = read_plain(path)
    if not is_ours(obj):
        raise CheckpointError(f"{path}: not a yoloforge checkpoint")
    if int(obj.get("version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer yoloforge (format {obj['version']}); "
            "upgrade with pip install -U yoloforge"
        )
    try:
        return Checkpoint.from_dict(obj)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint ({e})") from None


def state_to(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Detached CPU copy of a state dict; floating tensors cast to ``dtype`` when given."""
    out = {}
    for k, v in state.items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.clone()
    return out
