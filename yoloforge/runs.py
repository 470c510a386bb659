"""Run folders: runs/detect/train, train2, train3, ... and the one training process that holds one."""

from __future__ import annotations

import logging
from pathlib import Path

from filelock import FileLock, Timeout

from yoloforge.checkpoint import remove_stale_temps

log = logging.getLogger(__name__)

LOCK_NAME = ".yoloforge.lock"  # held by the training process writing the folder
SETUP_FILES = ("args.yaml", "labels.jpg", LOCK_NAME)  # what a training set-up writes before epoch 1


class RunFolderError(ValueError):
    """A run folder that cannot be used or written; the message names it and what to do."""


def next_run_dir(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """``project/name`` if free (or ``exist_ok``), else the first free ``project/name{2,3,...}``.

    The folder is created here, so two runs started together never share one.
    """
    return _make_run_dir(Path(project) / name, exist_ok)[0]


def _make_run_dir(base: Path, exist_ok: bool) -> tuple[Path, bool]:
    """The run folder and whether this call created it."""
    candidate, n = base, 2
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate, True
        except FileExistsError:
            if exist_ok and candidate == base:
                return base, False
            candidate = base.with_name(f"{base.name}{n}")
            n += 1


class RunFolder:
    """The run folder of one training process, locked while it trains.

    ``claim`` makes a new folder (or takes an ``exist_ok`` one), ``resume`` takes the folder of a
    run to continue; both lock it, so a second process on the same folder stops with one line
    instead of both writing last.pt. ``release`` unlocks; ``discard`` removes a folder this run
    made when set-up failed before writing anything but its set-up files.
    """

    def __init__(self, path: Path, created: list[Path]):
        self.path = path
        self.created = created  # folders this run made: the run folder, then new parents upwards
        self._lock: FileLock | None = None

    @classmethod
    def claim(cls, project: str | Path, name: str, exist_ok: bool) -> RunFolder:
        base = Path(project) / name
        new_parents = [p for p in base.parents if not p.exists()]  # deepest first
        path, created = _make_run_dir(base, exist_ok)
        return cls(path, [path, *new_parents] if created else [])

    @classmethod
    def resume(cls, path: Path) -> RunFolder:
        return cls(path, [])

    def lock(self) -> None:
        """Take the folder for this process (non-blocking); RunFolderError when another holds it."""
        lock = FileLock(self.path / LOCK_NAME, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunFolderError(
                f"{self.path} is in use by another training process (it holds {LOCK_NAME}); "
                "wait for that run to end, or train into a new folder (another name=, or exist_ok=False)"
            ) from None
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def remove_stale_temps(self) -> list[Path]:
        """Delete temp files left by writes that a kill cut short (checkpoints, results.csv).

        Only call this while holding the lock: then no other process is writing them.
        """
        stale = remove_stale_temps(self.path / "weights")
        leftovers = sorted(self.path.glob(".results.*.tmp"))  # results_csv.write_rows
        for path in leftovers:
            path.unlink(missing_ok=True)
        return [*stale, *leftovers]

    def discard(self) -> bool:
        """After a failed set-up: remove the folder when this run made it and it holds nothing but
        set-up files (and an empty weights/). True when it was removed; anything else stays."""
        if not self.created:
            return False
        for name in SETUP_FILES:
            (self.path / name).unlink(missing_ok=True)
        for folder in [self.path / "weights", *self.created]:
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:  # not empty: it holds something set-up did not write, so it stays
                break
        return not self.path.exists()
