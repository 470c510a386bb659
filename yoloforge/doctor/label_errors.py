"""Likely label errors, from a trained model's detections compared with the labels (written here:
cleanlab, the best-known library for this, is AGPL).

For each image the model predicts at a low confidence (per-class NMS, so an object keeps a box for
each class the model considers), then:
- overlooked: a confident detection (>= ``CONFIDENT``) that overlaps no label (IoU < ``FREE_IOU``):
  an object without a label (the guide: partial labelling will not work). Score: its confidence;
  one item per object (its best class).
- swapped: a label whose object (IoU >= ``MATCH_IOU``) the model reads as another class,
  confidently and with more confidence than as the label's class. Score: the difference.
- badly_located: a label that no detection of its class overlaps well (IoU < ``MATCH_IOU``) while a
  confident one of its class overlaps it a little (a shifted or loose box), or none overlaps it at
  all (a box on nothing). Score: 1 - IoU with the model's best box, times that box's confidence
  (0.5 without one).
A model trained on these very images may have learnt their errors: one trained on other images (or
on the other half of a split) finds more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from yoloforge.boxes import box_iou
from yoloforge.doctor.geometry import MAX_ITEMS, box_item
from yoloforge.doctor.report import OK, WARN, Finding, LabelledImage

CONFIDENT = 0.25  # the predictor's default conf: a detection users would see
MATCH_IOU = 0.5
FREE_IOU = 0.3
TOUCH_IOU = 0.1
FLAGGED_SHARE = 0.01  # more flagged labels than this share of all labels: warn (ours)


@dataclass(frozen=True)
class ImageDetections:
    """The model's detections of one image, best first, in original-image pixels."""

    boxes_xyxy: np.ndarray  # (M, 4) float32
    scores: np.ndarray  # (M,) float32
    classes: np.ndarray  # (M,) int64


def model_imgsz(model: str) -> int | None:
    """The image size a checkpoint was trained at, when it says."""
    from yoloforge.loading import load_model

    args = load_model(model).train_args or {}
    imgsz = args.get("imgsz")
    if isinstance(imgsz, list | tuple):
        imgsz = max(imgsz)
    return imgsz if isinstance(imgsz, int) and not isinstance(imgsz, bool) else None


def predict_all(
    model: str,
    paths: Sequence[str],
    nc: int,
    imgsz: int,
    conf: float,
    batch: int,
    device: str,
    progress: bool,
) -> list[ImageDetections]:
    """Run ``model`` over every image through the predictor (the ``yoloforge predict`` path)."""
    from yoloforge.data.config import DatasetError
    from yoloforge.loading import load_model
    from yoloforge.predictor import Predictor
    from yoloforge.settings import PredictSettings, build

    loaded = load_model(model)
    if len(loaded.names) != nc:
        raise DatasetError(
            f"model={model} has {len(loaded.names)} classes but the dataset has {nc}; "
            "give the model trained on this dataset"
        )
    settings = build(
        PredictSettings,
        {
            "imgsz": imgsz,
            "conf": conf,
            "batch": batch,
            "device": device,
            "verbose": False,
        },
    )
    predictor = Predictor(loaded.model, loaded.names, settings)
    out = []
    bar = tqdm(total=len(paths), desc="doctor: predicting", unit="img", disable=not progress, leave=False)
    for result in predictor.stream([Path(p) for p in paths]):
        boxes = result.boxes.cpu()
        out.append(
            ImageDetections(boxes.xyxy.numpy(), boxes.conf.numpy(), boxes.cls.numpy().astype(np.int64))
        )
        bar.update()
    bar.close()
    return out


def label_error_findings(
    images: Sequence[LabelledImage], detections: Sequence[ImageDetections], names: list[str]
) -> list[Finding]:
    overlooked, swapped, badly = [], [], []
    for image, det in zip(images, detections, strict=True):
        labels = image.boxes_xyxy
        iou = box_iou(torch.from_numpy(labels), torch.from_numpy(det.boxes_xyxy)).numpy()  # (N, M)
        overlooked += _overlooked(image, det, iou, names)
        for k in range(len(labels)):
            kind, item = _judge_label(image, k, det, iou[k], names)
            if kind == "swapped":
                swapped.append(item)
            elif kind == "badly_located":
                badly.append(item)
    n_labels = sum(len(image.record.classes) for image in images)
    return [
        _finding("overlooked", overlooked, n_labels, "objects the model finds with no label: label them"),
        _finding("swapped", swapped, n_labels, "labels the model reads as another class: check their class"),
        _finding(
            "badly_located", badly, n_labels, "labels no detection of their class fits: redraw them tightly"
        ),
    ]


def _overlooked(image: LabelledImage, det: ImageDetections, iou: np.ndarray, names: list[str]) -> list[dict]:
    free = iou.max(0) < FREE_IOU if iou.size else np.ones(len(det.scores), bool)
    candidates = np.flatnonzero(free & (det.scores >= CONFIDENT))  # best first, as the predictor sorts
    boxes = torch.from_numpy(det.boxes_xyxy)
    kept: list[int] = []
    for j in candidates:  # one item per object: its other-class boxes are the same object
        if kept and box_iou(boxes[j : j + 1], boxes[kept]).max() >= MATCH_IOU:
            continue
        kept.append(int(j))
    return [
        {
            "image": image.path,
            "split": image.split,
            "box_xyxy": [round(float(v), 1) for v in det.boxes_xyxy[j]],
            "class": names[int(det.classes[j])],
            "score": round(float(det.scores[j]), 3),
        }
        for j in kept
    ]


def _judge_label(
    image: LabelledImage, k: int, det: ImageDetections, iou_k: np.ndarray, names: list[str]
) -> tuple[str, dict]:
    """'ok', 'swapped' or 'badly_located', with the item (label k of the image, the model's box)."""
    cls = int(image.record.classes[k])
    same = det.classes == cls
    fits = iou_k >= MATCH_IOU
    best_same = float(det.scores[same & fits].max(initial=0.0))
    other = np.flatnonzero(~same & fits)
    if other.size and det.scores[other].max() >= CONFIDENT and det.scores[other].max() > best_same:
        j = other[np.argmax(det.scores[other])]
        score = float(det.scores[j]) - best_same
        return "swapped", _with_model(image, k, det, j, names, score, float(iou_k[j]))
    if best_same > 0:
        return "ok", {}
    touching = np.flatnonzero(same & (iou_k >= TOUCH_IOU) & (det.scores >= CONFIDENT))
    if touching.size:
        j = touching[np.argmax(iou_k[touching])]
        score = (1 - float(iou_k[j])) * float(det.scores[j])
        return "badly_located", _with_model(image, k, det, j, names, score, float(iou_k[j]))
    if not (iou_k >= TOUCH_IOU).any():  # nothing at all where the label is
        return "badly_located", box_item(image, k, names, score=0.5, iou=0.0)
    return "ok", {}  # a weak or other-class detection: the model is unsure, not the label wrong


def _with_model(
    image: LabelledImage, k: int, det: ImageDetections, j: int, names: list[str], score: float, iou: float
) -> dict:
    return box_item(
        image,
        k,
        names,
        score=round(score, 3),
        iou=round(iou, 3),
        model_box_xyxy=[round(float(v), 1) for v in det.boxes_xyxy[j]],
        model_class=names[int(det.classes[j])],
        model_conf=round(float(det.scores[j]), 3),
    )


def _finding(check: str, items: list[dict], n_labels: int, advice: str) -> Finding:
    items.sort(key=lambda item: -item["score"])
    share = round(len(items) / n_labels, 4) if n_labels else 0.0
    target = f"<= {FLAGGED_SHARE:.0%} of labels (ours)"
    if share <= FLAGGED_SHARE:
        return Finding(check, OK, share, target, f"{len(items)} found", items[:MAX_ITEMS])
    message = f"{len(items)} {advice}, highest scores first"
    return Finding(check, WARN, share, target, message, items[:MAX_ITEMS])
