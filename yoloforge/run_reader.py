"""One reader of a run folder, finished or partial: what plots, the report and resume know of a run.

``read_run("runs/detect/train")`` returns a ``Run``: args.yaml, the results.csv columns as float
arrays (parsed by results_csv, the one owner of that format), the weights and pictures present,
and the confusion matrix numbers when the final validation saved them (confusion_matrix.json,
written here too, beside confusion_matrix.png). Nothing in the folder is required; what is missing
or unreadable is simply absent (and, when unreadable, named in ``problems``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from yoloforge import results_csv
from yoloforge.files import write_text_atomic

CONFUSION_JSON = "confusion_matrix.json"
PICTURES = (".png", ".jpg")


@dataclass
class ConfusionData:
    """(nc + 1, nc + 1) counts, rows = predicted class, columns = true class, last index = background."""

    names: list[str]
    matrix: np.ndarray
    conf: float  # detections above this score were counted
    iou: float  # a detection matched a true box above this IoU


@dataclass
class Run:
    """What a run folder holds. ``columns`` maps each results.csv column to its (E,) values per epoch
    (NaN where a cell is empty, e.g. an epoch that was not validated)."""

    path: Path
    args: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, Path] = field(default_factory=dict)  # "best.pt", "last.pt", "epoch5.pt", ...
    pictures: dict[str, Path] = field(default_factory=dict)  # "results.png", "PR_curve.png", ...
    confusion: ConfusionData | None = None
    problems: list[str] = field(default_factory=list)  # files present but unreadable, one line each

    @property
    def epochs(self) -> int:
        """Epochs recorded in results.csv."""
        return len(self.columns.get("epoch", ()))

    def column(self, name: str) -> np.ndarray:
        """One column by name; all NaN when results.csv lacks it."""
        values = self.columns.get(name)
        return values if values is not None else np.full(self.epochs, math.nan)

    def rows(self) -> list[dict[str, float]]:
        """results.csv as rows again (what resume keeps and appends to)."""
        names = list(self.columns)
        return [{k: float(self.columns[k][i]) for k in names} for i in range(self.epochs)]


def read_results(csv_path: str | Path) -> dict[str, np.ndarray]:
    """results.csv columns by name, in file order (empty when there is no file)."""
    header, rows = results_csv.read_table(csv_path)
    return {name: np.array([row.get(name, math.nan) for row in rows], dtype=float) for name in header}


def read_run(folder: str | Path) -> Run:
    """Everything a run folder holds that the readers use; a missing folder is a FileNotFoundError."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder (give e.g. runs/detect/train)")
    run = Run(path)
    run.args = _read_args(path / "args.yaml", run.problems)
    try:
        run.columns = read_results(path / "results.csv")
    except ValueError as e:
        run.problems.append(str(e))
    weights = path / "weights"
    run.weights = {p.name: p for p in sorted(weights.glob("*.pt"))} if weights.is_dir() else {}
    run.pictures = {p.name: p for p in sorted(path.iterdir()) if p.suffix in PICTURES and p.is_file()}
    run.confusion = _read_confusion(path / CONFUSION_JSON, run.problems)
    return run


def _read_args(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        args = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        problems.append(f"{path}: not readable as YAML ({str(e).splitlines()[0]})")
        return {}
    if not isinstance(args, dict):
        problems.append(f"{path}: expected key: value lines")
        return {}
    return args


def write_confusion(
    path: str | Path, matrix: np.ndarray, names: Sequence[str], conf: float, iou: float
) -> Path:
    """confusion_matrix.json: the counts behind confusion_matrix.png, for the report and your tools."""
    data = {
        "names": list(names),
        "rows": "predicted class (last: background, i.e. a false alarm)",
        "columns": "true class (last: background, i.e. a missed object)",
        "conf": conf,
        "iou": iou,
        "matrix": np.asarray(matrix).astype(int).tolist(),
    }
    path = Path(path)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return path


def _read_confusion(path: Path, problems: list[str]) -> ConfusionData | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = [str(n) for n in data["names"]]
        matrix = np.asarray(data["matrix"], dtype=np.int64)
        if matrix.shape != (len(names) + 1, len(names) + 1):
            raise ValueError(f"matrix of shape {matrix.shape} for {len(names)} names")
        return ConfusionData(names, matrix, float(data["conf"]), float(data["iou"]))
    except (ValueError, KeyError, TypeError) as e:
        problems.append(f"{path}: not a confusion matrix file ({e}); validate best.pt again to rewrite it")
        return None
