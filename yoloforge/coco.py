"""Checking our numbers with the COCO reference evaluator (pycocotools, the ``dev`` extra).

``ground_truth(records, names)`` writes a split's labels as COCO ground truth whose image ids are
file stems, the ids ``val(save_json=True)`` gives its predictions.json rows, so
``cocoeval(gt, predictions)`` scores any tool's predictions of that split the same way.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from yoloforge.structures import ImageRecord


def image_id(path: str | Path) -> int | str:
    """The COCO image id of an image file: its stem, as an int when it is a number."""
    stem = Path(path).stem
    return int(stem) if stem.isnumeric() else stem


def ground_truth(records: list[ImageRecord], names: list[str]) -> dict[str, Any]:
    """COCO ground truth of ``records`` in original pixels; category_id = class index."""
    images, annotations = [], []
    for rec in records:
        h, w = rec.shape
        images.append({"id": image_id(rec.path), "file_name": Path(rec.path).name, "height": h, "width": w})
        for cls, (cx, cy, bw, bh) in zip(rec.classes.tolist(), rec.boxes_cxcywhn.tolist(), strict=True):
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id(rec.path),
                    "category_id": int(cls),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n} for i, n in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def cocoeval(gt: dict[str, Any], predictions: list[dict[str, Any]], max_dets: int = 100) -> dict[str, float]:
    """mAP50-95, mAP50 and mAP75 by pycocotools' COCOeval (bbox) of ``predictions`` against ``gt``.

    Image ids are renumbered 1..N (pycocotools sorts them, so they must be of one type).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    number = {img["id"]: k + 1 for k, img in enumerate(gt["images"])}
    gt = {
        **gt,
        "images": [{**img, "id": number[img["id"]]} for img in gt["images"]],
        "annotations": [{**a, "image_id": number[a["image_id"]]} for a in gt["annotations"]],
    }
    preds = [{**p, "image_id": number[p["image_id"]]} for p in predictions if p["image_id"] in number]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(preds) if preds else COCO()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": float(ev.stats[0]), "map50": float(ev.stats[1]), "map75": float(ev.stats[2])}
