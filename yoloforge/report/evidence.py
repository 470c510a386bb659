"""What the report knows beyond results.csv: a validation of best.pt (per-class AP, the F1-best
confidence, the confusion matrix) and label statistics (objects per class, background images, object
sizes). Each comes from the trainer's own objects at the end of training, or is rebuilt from the
run folder; when that is not possible the reason is kept as a note."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yoloforge.run_reader import ConfusionData, Run
from yoloforge.structures import ImageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassResult:
    """One class of a validation (the rows of the printed table)."""

    name: str
    images: int
    instances: int
    precision: float
    recall: float
    ap50: float
    ap: float  # AP50-95


@dataclass
class Validation:
    """A validation of best.pt; precision, recall and F1 are class means at ``conf``."""

    classes: list[ClassResult]
    conf: float  # the confidence of best mean F1
    precision: float
    recall: float
    f1: float
    images: int
    confusion: ConfusionData | None
    source: str  # how it was obtained, in words


@dataclass
class LabelStats:
    """Labels of the training and validation splits as the run saw them."""

    names: list[str]
    train_instances: np.ndarray  # (nc,) objects per class in the training split
    train_images: int
    train_backgrounds: int  # training images without objects
    val_side_px: np.ndarray  # (nc,) median object side sqrt(w * h) in network-input pixels, NaN if none
    imgsz: int


def validation_from_metrics(metrics, source: str) -> Validation | None:
    """From a ``metrics.DetMetrics`` (the trainer's final validation, or ``YOLO.val()``)."""
    if metrics is None:
        return None
    box, names = metrics.box, metrics.names
    classes = []
    for k, c in enumerate(box.ap_class_index.tolist()):
        p, r, ap50, ap = box.class_result(k)
        classes.append(
            ClassResult(names.get(c, str(c)), int(box.images[c]), int(box.instances[c]), p, r, ap50, ap)
        )
    cm = metrics.confusion_matrix
    confusion = None
    if cm is not None:
        confusion = ConfusionData([names[c] for c in range(len(names))], cm.matrix.copy(), cm.conf, cm.iou)
    f1 = float(box.f1.mean()) if len(box.f1) else 0.0
    return Validation(classes, box.conf, box.mp, box.mr, f1, int(metrics.seen), confusion, source)


def validate_best(run: Run, notes: list[str]) -> Validation | None:
    """Validate the run's best.pt on its own data (a few seconds to minutes), or say why not."""
    best = run.weights.get("best.pt")
    if best is None:
        notes.append("No weights/best.pt in the run folder: no per-class AP, confusions or threshold.")
        return None
    if not run.args.get("data"):
        notes.append("args.yaml names no data=: best.pt could not be validated for per-class AP.")
        return None
    from yoloforge.api import YOLO

    keys = ("data", "imgsz", "batch", "single_cls", "device")
    given = {k: run.args[k] for k in keys if run.args.get(k) not in (None, "")}
    log.info("Report: validating %s on %s for per-class results...", best, given["data"])
    with tempfile.TemporaryDirectory() as tmp:  # its pictures are not wanted: the run has its own
        try:
            metrics = YOLO(str(best)).val(
                **given, workers=0, plots=True, project=tmp, name="val", verbose=False
            )
        except (ValueError, OSError, RuntimeError, ImportError) as e:
            notes.append(f"best.pt could not be validated ({str(e).splitlines()[0]}): no per-class results.")
            return None
    return validation_from_metrics(metrics, f"validation of {best} by this report")


def label_stats(
    names: Sequence[str], train: Sequence[ImageRecord], val: Sequence[ImageRecord], imgsz: int
) -> LabelStats:
    nc = len(names)
    classes = [r.classes for r in train if len(r.classes)]
    counts = np.bincount(np.concatenate(classes), minlength=nc)[:nc] if classes else np.zeros(nc, np.int64)
    sides: list[list[float]] = [[] for _ in range(nc)]
    for r in val:
        h, w = r.shape
        gain = imgsz / max(h, w)  # letterbox: the longer side becomes imgsz
        for c, (bw, bh) in zip(r.classes.tolist(), r.boxes_cxcywhn[:, 2:].tolist(), strict=True):
            if 0 <= c < nc:
                sides[c].append(float(np.sqrt(bw * w * bh * h)) * gain)
    medians = np.array([np.median(s) if s else np.nan for s in sides])
    backgrounds = sum(r.is_background for r in train)
    return LabelStats(list(names), counts, len(train), backgrounds, medians, imgsz)


def label_stats_for_run(run: Run, notes: list[str]) -> LabelStats | None:
    """Scan the run's dataset (args.yaml's data=; the label cache makes this quick), or say why not."""
    from yoloforge.data.config import DatasetError, load_data_config
    from yoloforge.data.scan import scan_split

    data, imgsz = run.args.get("data"), run.args.get("imgsz")
    if not data or not imgsz:
        notes.append("args.yaml names no data= or imgsz=: no label statistics (objects per class, sizes).")
        return None
    try:
        config = load_data_config(str(data))
        train = scan_split(config.train, config.names, prefix="train", progress=False, max_logged=0).records
        val = scan_split(config.val, config.names, prefix="val", progress=False, max_logged=0).records
    except (DatasetError, OSError, ValueError) as e:
        notes.append(f"The dataset {data} could not be read ({str(e).splitlines()[0]}): no label statistics.")
        return None
    return label_stats(config.names, train, val, int(imgsz))


def folder_validation(run: Run) -> Validation | None:
    """Without weights or data: only the confusion matrix saved beside its picture, if any."""
    if run.confusion is None:
        return None
    return Validation(
        [], float("nan"), float("nan"), float("nan"), float("nan"), 0, run.confusion, str(run.path)
    )
