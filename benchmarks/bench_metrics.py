"""Time our COCO metrics against pycocotools' COCOeval on the same detections.

    python benchmarks/bench_metrics.py [--images 500] [--classes 10] [--dets 100] [--repeats 3]

Ours: DetectionEvaluator.process for every image + compute (matching, AP, P/R/F1 curves).
COCOeval: evaluate + accumulate (bbox, maxDets [1, 10, 100]); building its indexes is not timed.
Prints the median of the repeats and the mAP50-95 both report.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yoloforge.metrics import DetectionEvaluator
from yoloforge.structures import Detections


def make_images(n_images: int, nc: int, n_dets: int, seed: int = 0) -> list[tuple]:
    """Per image: (gt_xyxy (G, 4), gt_cls (G,), det_xyxy (n_dets, 4), det_cls, det_scores)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        n_gt = int(rng.integers(1, 15))
        xy = rng.uniform(0, 500, (n_gt, 2))
        gt = np.c_[xy, xy + rng.uniform(10, 200, (n_gt, 2))]
        gt_cls = rng.integers(0, nc, n_gt)
        near = rng.integers(0, n_gt, n_dets // 2)  # half the detections near a GT, half anywhere
        jitter = rng.normal(0, 0.1, (len(near), 4)) * (gt[near, 2:] - gt[near, :2]).mean(1, keepdims=True)
        xy = rng.uniform(0, 500, (n_dets - len(near), 2))
        boxes = np.r_[gt[near] + jitter, np.c_[xy, xy + rng.uniform(10, 200, (len(xy), 2))]]
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        cls = np.r_[gt_cls[near], rng.integers(0, nc, len(xy))]
        images.append((gt, gt_cls, boxes, cls, rng.random(n_dets)))
    return images


def run_ours(images: list[tuple], nc: int) -> float:
    evaluator = DetectionEvaluator(nc, max_det=100)
    for gt, gt_cls, boxes, cls, scores in images:
        dets = Detections(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(cls))
        evaluator.process(dets, gt, gt_cls)
    return evaluator.compute().map


def coco_inputs(images: list[tuple], nc: int) -> tuple[COCO, COCO]:
    gt_json: dict = {"images": [], "categories": [{"id": c} for c in range(nc)], "annotations": []}
    results = []
    for i, (gt, gt_cls, boxes, cls, scores) in enumerate(images):
        gt_json["images"].append({"id": i})
        for (x1, y1, x2, y2), c in zip(gt, gt_cls, strict=True):
            ann_id = len(gt_json["annotations"]) + 1
            gt_json["annotations"].append(
                {"id": ann_id, "image_id": i, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1]}
                | {"area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            )
        for (x1, y1, x2, y2), c, s in zip(boxes, cls, scores, strict=True):
            results.append(
                {"image_id": i, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
            )
    coco_gt = COCO()
    coco_gt.dataset = gt_json
    coco_gt.createIndex()
    return coco_gt, coco_gt.loadRes(results)


def run_cocoeval(coco_gt: COCO, coco_dt: COCO) -> tuple[float, float]:
    """Returns (seconds for evaluate + accumulate, mAP50-95)."""
    ev = COCOeval(coco_gt, coco_dt, "bbox")
    start = time.perf_counter()
    ev.evaluate()
    ev.accumulate()
    seconds = time.perf_counter() - start
    precision = ev.eval["precision"][:, :, :, 0, 2]
    return seconds, float(precision[precision > -1].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = make_images(args.images, args.classes, args.dets)
    ours_s, coco_s = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours_map = run_ours(images, args.classes)
        ours_s.append(time.perf_counter() - start)
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints progress
            coco_gt, coco_dt = coco_inputs(images, args.classes)
            seconds, coco_map = run_cocoeval(coco_gt, coco_dt)
        coco_s.append(seconds)
    ours_med, coco_med = statistics.median(ours_s), statistics.median(coco_s)
    print(
        f"{args.images} images, {args.classes} classes, {args.dets} detections each, median of {args.repeats}"
    )
    print(f"  yoloforge DetectionEvaluator  {ours_med:8.3f} s   mAP50-95 {ours_map:.6f}")
    print(f"  pycocotools COCOeval          {coco_med:8.3f} s   mAP50-95 {coco_map:.6f}")
    print(f"  speed-up {coco_med / ours_med:.1f}x, |mAP difference| {abs(ours_map - coco_map):.2e}")


if __name__ == "__main__":
    main()
