"""Run folders: runs/detect/train, train2, train3, ..."""

from __future__ import annotations

from pathlib import Path


def next_run_dir(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """``project/name`` if free (or ``exist_ok``), else the first free ``project/name{2,3,...}``.

    The folder is created here, so two runs started together never share one.
    """
    base = Path(project) / name
    if exist_ok:
        base.mkdir(parents=True, exist_ok=True)
        return base
    candidate, n = base, 2
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            candidate = base.with_name(f"{name}{n}")
            n += 1
