"""results.csv: one row per epoch, with the column names users' tools and tutorials read."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yoloforge.files import write_text_atomic
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


def read_table(path: str | Path) -> tuple[list[str], list[dict[str, float]]]:
    """The header (names stripped of the padding some writers add) and the rows of a results.csv;
    empty cells and cells that are not numbers are left out of a row. No file: ([], [])."""
    path = Path(path)
    if not path.is_file():
        return [], []
    with path.open(newline="") as f:
        lines = list(csv.reader(f))
    if not lines:
        raise ValueError(f"{path}: empty results file (no header line); delete it or train again")
    header = [name.strip() for name in lines[0]]
    rows = []
    for line in lines[1:]:
        row = {}
        for name, cell in zip(header, line, strict=False):
            try:
                row[name] = float(cell)
            except ValueError:  # empty or not a number
                continue
        if row:
            rows.append(row)
    return header, rows


def read_rows(path: str | Path) -> list[dict[str, float]]:
    """Rows of an existing results.csv (empty when there is none)."""
    return read_table(path)[1]


def write_rows(path: str | Path, rows: list[dict[str, float]]) -> None:
    """Write every row atomically, so a crash never leaves half a line for a later resume to trip on."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_fmt(k, row.get(k, float("nan"))) for k in COLUMNS])
    path = Path(path)
    try:
        write_text_atomic(path, buf.getvalue())
    except OSError as e:  # a full disk, a read-only folder: one line, not a traceback
        raise _unwritable(path, e) from None


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
