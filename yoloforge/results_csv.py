"""results.csv: one row per epoch, with the column names users' tools and tutorials read."""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yoloforge.runs import RunFolderError

COLUMNS = (
    "epoch",
    "time",
    "train/box_loss",
    "train/cls_loss",
    "train/dfl_loss",
    "metrics/precision(B)",
    "metrics/recall(B)",
    "metrics/mAP50(B)",
    "metrics/mAP50-95(B)",
    "val/box_loss",
    "val/cls_loss",
    "val/dfl_loss",
    "lr/pg0",
    "lr/pg1",
    "lr/pg2",
)
LOSS_NAMES = ("box", "cls", "dfl")


def epoch_row(
    epoch: int,
    elapsed: float,
    train_losses: Sequence[float],
    box: Any | None,
    val_losses: Sequence[float],
    lrs: Sequence[float],
) -> dict[str, float]:
    """One row: ``epoch`` counted from 1, seconds since the start, the three mean training losses,
    the box metrics (``metrics.DetMetrics.box``; None when this epoch was not validated: NaN),
    the three validation losses and the lr of each parameter group."""
    nan = float("nan")
    return {
        "epoch": epoch,
        "time": elapsed,
        **{f"train/{k}_loss": float(v) for k, v in zip(LOSS_NAMES, train_losses, strict=True)},
        "metrics/precision(B)": box.mp if box else nan,
        "metrics/recall(B)": box.mr if box else nan,
        "metrics/mAP50(B)": box.map50 if box else nan,
        "metrics/mAP50-95(B)": box.map if box else nan,
        **{f"val/{k}_loss": float(v) for k, v in zip(LOSS_NAMES, val_losses, strict=True)},
        **{f"lr/pg{k}": float(lr) for k, lr in enumerate(lrs)},
    }


def read_rows(path: str | Path) -> list[dict[str, float]]:
    """Rows of an existing results.csv (empty when there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [
            {k.strip(): float(v) for k, v in row.items() if k and v not in (None, "")}
            for row in csv.DictReader(f)
        ]


def write_rows(path: str | Path, rows: list[dict[str, float]]) -> None:
    """Write every row atomically, so a crash never leaves half a line for a later resume to trip on."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_fmt(k, row.get(k, float("nan"))) for k in COLUMNS])
    path = Path(path)
    # not mkstemp: its files are 0600; os.open with 0o666 gives an ordinary file under the umask
    tmp = path.parent / f".results.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise _unwritable(path, e) from None
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):  # a full disk, a read-only folder: one line, not a traceback
            raise _unwritable(path, e) from None
        raise


def _unwritable(path: Path, e: OSError) -> RunFolderError:
    return RunFolderError(
        f"{path}: could not be written ({e.strerror or e}); free space there (or fix its "
        "permissions), then resume the run from its weights/last.pt"
    )


def _fmt(key: str, value: float) -> str:
    if key == "epoch":
        return str(int(value))
    if key == "time":
        return f"{value:.3f}"
    return f"{value:.6g}"
