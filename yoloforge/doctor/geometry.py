"""Label geometry: boxes too small to find at the training imgsz, boxes on the image border, double
labels (near-identical boxes of one class on one object) and degenerate boxes.

A box's size is the square root of its area (COCO's small / medium / large are areas too), in
pixels of the network input: the original image letterboxed so its long side is ``imgsz``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from yoloforge.boxes import box_iou
from yoloforge.doctor.report import OK, WARN, Finding, LabelledImage

MAX_ITEMS = 1000  # items kept per finding, worst first
SMALL_SHARE = 0.01  # more small boxes than this: warn (ours)
REACH = 0.95  # the suggested imgsz brings this share of boxes to min_px
BORDER_PX = 1.0  # an edge within this many pixels of the image edge touches it
BORDER_SHARE = 0.3  # more border boxes than this: warn (ours)
DOUBLE_IOU = 0.9  # two boxes of one class overlapping this much label one object twice
DEGENERATE_PX = 2.0  # a box side under this many original pixels
DEGENERATE_ASPECT = 20.0  # or a box this elongated


def box_item(image: LabelledImage, k: int, names: list[str], **extra) -> dict:
    box = image.boxes_xyxy[k]
    cls = int(image.record.classes[k])
    return {
        "image": image.path,
        "split": image.split,
        "box_xyxy": [round(float(v), 1) for v in box],
        "class": names[cls],
        **extra,
    }


def small_objects_finding(
    images: Sequence[LabelledImage], names: list[str], imgsz: int, min_px: int
) -> Finding:
    sizes, where = [], []
    for i, image in enumerate(images):
        gain = imgsz / max(image.shape)
        b = image.boxes_xyxy
        sizes.append(
            np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)) * gain
        )
        where += [(i, k) for k in range(len(b))]
    size = np.concatenate(sizes) if sizes else np.zeros(0)
    target = f"< {SMALL_SHARE:.0%} under {min_px} px (ours)"
    if not size.size:
        return Finding("small_objects", OK, 0.0, target, "no labelled boxes")
    small = np.flatnonzero(size < min_px)
    share = round(len(small) / size.size, 4)
    order = small[np.argsort(size[small], kind="stable")][:MAX_ITEMS]
    items = [box_item(images[where[j][0]], where[j][1], names, px=round(float(size[j]), 1)) for j in order]
    if share <= SMALL_SHARE:
        message = f"{len(small)} of {size.size} boxes under {min_px} px at imgsz={imgsz}"
        return Finding("small_objects", OK, share, target, message, items)
    low = float(np.quantile(size, 1 - REACH))
    better = math.ceil(imgsz * min_px / max(low, 1e-3) / 32) * 32
    message = (
        f"{share:.0%} of boxes are under {min_px} px at imgsz={imgsz}: train and predict at a larger size, "
        f"imgsz={better} brings {REACH:.0%} of them to {min_px} px (the guide: native or higher resolution)"
    )
    return Finding("small_objects", WARN, share, target, message, items)


def border_boxes_finding(images: Sequence[LabelledImage], names: list[str]) -> Finding:
    items, n_boxes = [], 0
    for image in images:
        h, w = image.shape
        b = image.boxes_xyxy
        n_boxes += len(b)
        touch = (
            (b[:, 0] <= BORDER_PX)
            | (b[:, 1] <= BORDER_PX)
            | (b[:, 2] >= w - BORDER_PX)
            | (b[:, 3] >= h - BORDER_PX)
        )
        items += [box_item(image, int(k), names) for k in np.flatnonzero(touch)]
    share = round(len(items) / n_boxes, 4) if n_boxes else 0.0
    target = f"<= {BORDER_SHARE:.0%} (ours)"
    if share <= BORDER_SHARE:
        message = f"{len(items)} of {n_boxes} boxes touch the image border"
        return Finding("border_boxes", OK, share, target, message, items[:MAX_ITEMS])
    message = (
        f"{share:.0%} of boxes touch the image border: check that labels were not clipped by a conversion, "
        "and that cut-off objects are labelled as they appear"
    )
    return Finding("border_boxes", WARN, share, target, message, items[:MAX_ITEMS])


def double_labels_finding(images: Sequence[LabelledImage], names: list[str]) -> Finding:
    items = []
    for image in images:
        classes = image.record.classes
        if len(classes) < 2:
            continue
        boxes = torch.from_numpy(image.boxes_xyxy)
        iou = box_iou(boxes, boxes).numpy()
        same = (classes[:, None] == classes[None, :]) & np.triu(np.ones_like(iou, bool), 1)
        for a, b in zip(*np.nonzero(same & (iou >= DOUBLE_IOU)), strict=True):
            other = [round(float(v), 1) for v in image.boxes_xyxy[b]]
            items.append(box_item(image, int(a), names, other_box_xyxy=other, iou=round(float(iou[a, b]), 3)))
    items.sort(key=lambda item: -item["iou"])
    return _counted(
        "double_labels",
        items,
        target=f"0 pairs with IoU >= {DOUBLE_IOU}",
        none="no object is labelled twice",
        some=f"{len(items)} objects labelled twice (same class, IoU >= {DOUBLE_IOU}): "
        "delete one box of each pair",
    )


def degenerate_boxes_finding(images: Sequence[LabelledImage], names: list[str]) -> Finding:
    items = []
    for image in images:
        b = image.boxes_xyxy
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        aspect = np.maximum(w, h) / np.maximum(np.minimum(w, h), 1e-6)
        bad = (np.minimum(w, h) < DEGENERATE_PX) | (aspect > DEGENERATE_ASPECT)
        items += [
            box_item(image, int(k), names, wh=[round(float(w[k]), 1), round(float(h[k]), 1)])
            for k in np.flatnonzero(bad)
        ]
    items.sort(key=lambda item: min(item["wh"]))
    return _counted(
        "degenerate_boxes",
        items,
        target=f"0 boxes thinner than {DEGENERATE_PX:g} px or longer than {DEGENERATE_ASPECT:g}:1",
        none="no degenerate boxes",
        some=f"{len(items)} boxes are slivers or a pixel wide: "
        "fix or delete them (usually a slip of the mouse)",
    )


def _counted(check: str, items: list[dict], target: str, none: str, some: str) -> Finding:
    """A check whose target is zero items: OK without any, else a warning listing the worst first."""
    if not items:
        return Finding(check, OK, 0, target, none)
    return Finding(check, WARN, len(items), target, some, items[:MAX_ITEMS])
