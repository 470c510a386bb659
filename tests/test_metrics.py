"""Metrics: hand-computed matching and AP, invariants, and parity with pycocotools' COCOeval."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from yoloforge.metrics import (
    CONF_POINTS,
    IOU_THRESHOLDS,
    BoxMetrics,
    ConfusionMatrix,
    DetectionEvaluator,
    DetMetrics,
    greedy_match,
    match_image,
    pr_over_confidence,
    precision_at_recall_points,
    rank_within_class,
    smooth,
)
from yoloforge.structures import Detections

# ---------------------------------------------------------------------------------------------
# matching


def coco_loop_match(iou: np.ndarray, thr: float) -> np.ndarray:
    """COCOeval.evaluateImg's inner loops, transcribed literally (no crowd, nothing ignored)."""
    n_det, n_gt = iou.shape
    gt_taken = np.zeros(n_gt, bool)
    out = np.full(n_det, -1)
    for d in range(n_det):
        best, m = min(thr, 1 - 1e-10), -1
        for g in range(n_gt):
            if gt_taken[g] or iou[d, g] < best:
                continue
            best, m = iou[d, g], g
        if m >= 0:
            gt_taken[m], out[d] = True, m
    return out


def test_greedy_match_is_greedy_not_optimal():
    # det 0 (best score) takes GT 0; det 1 then finds nothing, although a 2-match assignment exists
    iou = np.array([[0.9, 0.6], [0.8, 0.0]])
    assert greedy_match(iou, np.array([0.5])).tolist() == [[0, -1]]


def test_greedy_match_takes_highest_iou_and_last_on_ties():
    iou = np.array([[0.6, 0.75], [0.9, 0.0]])
    assert greedy_match(iou, np.array([0.7])).tolist() == [[1, 0]]
    assert greedy_match(np.array([[0.7, 0.7, 0.2]]), np.array([0.5])).tolist() == [[1]]


def test_greedy_match_per_threshold():
    match = greedy_match(np.array([[0.72]]), IOU_THRESHOLDS)
    assert (match[:, 0] >= 0).tolist() == [True] * 5 + [False] * 5  # 0.50 ... 0.70 match
    assert greedy_match(np.zeros((0, 3)), IOU_THRESHOLDS).shape == (10, 0)
    assert (greedy_match(np.ones((2, 0)), IOU_THRESHOLDS) == -1).all()


def test_greedy_match_equals_coco_loop_on_random_crowds():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n_det, n_gt = rng.integers(1, 12), rng.integers(1, 8)
        iou = np.round(rng.random((n_det, n_gt)), 1)  # coarse values: many ties
        iou[rng.random(iou.shape) < 0.2] = -1  # pairs of different classes
        got = greedy_match(iou, IOU_THRESHOLDS)
        for t, thr in enumerate(IOU_THRESHOLDS):
            np.testing.assert_array_equal(got[t], coco_loop_match(iou, thr))


def test_rank_within_class():
    assert rank_within_class(np.array([2, 0, 2, 2, 0, 1])).tolist() == [0, 0, 1, 2, 1, 0]


def test_match_image_keeps_max_det_per_class():
    boxes = np.tile([[0.0, 0, 10, 10]], (6, 1))
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    classes = np.array([0, 0, 0, 1, 1, 1])
    result = match_image(boxes, scores, classes, np.zeros((0, 4)), np.zeros(0, np.int64), max_det=2)
    assert result.classes.tolist() == [0, 0, 1, 1]
    assert result.scores.tolist() == [0.9, 0.8, 0.6, 0.5]
    assert not result.tp.any()


def test_match_image_matches_within_class_only():
    gt = np.array([[0.0, 0, 10, 10]])
    boxes = np.array([[0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    result = match_image(boxes, np.array([0.9, 0.8]), np.array([1, 0]), gt, np.array([0]))
    assert result.tp[:, 0].tolist() == [False, True]


# ---------------------------------------------------------------------------------------------
# AP and curves


def test_precision_at_recall_points_hand_computed():
    # TP, FP, TP for 2 GT: precision 1, 1/2, 2/3 -> envelope 1, 2/3, 2/3; recall 1/2, 1/2, 1
    tp = np.array([[True], [False], [True]])
    q = precision_at_recall_points(tp, n_gt=2)[0]
    np.testing.assert_allclose(q[:51], 1.0)  # recall points 0.00 ... 0.50 (1 - 2e-16: COCO's eps)
    np.testing.assert_allclose(q[51:], 2 / 3)
    assert q.mean() == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_precision_at_recall_points_unreached_recall_is_zero():
    q = precision_at_recall_points(np.array([[True]]), n_gt=4)[0]  # recall 0.25 at most
    np.testing.assert_allclose(q[:26], 1.0)
    assert not q[26:].any()
    assert not precision_at_recall_points(np.zeros((0, 10), bool), n_gt=3).any()


def test_pr_over_confidence_hand_computed():
    scores, tp = np.array([0.9, 0.6, 0.3]), np.array([True, False, True])
    p, r = pr_over_confidence(scores, tp, n_gt=4)
    at = {x: int(np.argmin(np.abs(CONF_POINTS - x))) for x in (0.1, 0.5, 0.7, 0.95)}
    assert (p[at[0.1]], r[at[0.1]]) == pytest.approx((2 / 3, 0.5))  # all three kept
    assert (p[at[0.5]], r[at[0.5]]) == pytest.approx((0.5, 0.25))
    assert (p[at[0.7]], r[at[0.7]]) == pytest.approx((1.0, 0.25))
    assert (p[at[0.95]], r[at[0.95]]) == pytest.approx((1.0, 0.0))  # nothing kept
    p0, r0 = pr_over_confidence(np.zeros(0), np.zeros(0, bool), n_gt=2)
    assert not p0.any() and not r0.any()


def test_smooth_keeps_constants_and_length():
    y = np.full(1000, 0.3)
    np.testing.assert_allclose(smooth(y, 0.1), y)
    step = np.r_[np.zeros(500), np.ones(500)]
    out = smooth(step, 0.1)
    assert out.shape == (1000,) and out[0] == 0 and out[-1] == 1 and 0 < out[500] < 1


def evaluate(images, nc, max_det=100) -> BoxMetrics:
    ev = DetectionEvaluator(nc, max_det)
    for gt_boxes, gt_cls, boxes, cls, scores in images:
        ev.process(
            Detections(torch.as_tensor(boxes), torch.as_tensor(scores), torch.as_tensor(cls)),
            gt_boxes,
            gt_cls,
        )
    return ev.compute()


def test_perfect_detections_give_map_one_and_best_f1_one():
    gt = np.array([[0.0, 0, 20, 20], [30, 30, 60, 50]])
    images = [(gt, np.array([0, 1]), gt, np.array([0, 1]), np.array([0.9, 0.8]))] * 3
    m = evaluate(images, nc=3)
    assert (m.map, m.map50, m.map75, m.mp, m.mr) == pytest.approx((1.0, 1.0, 1.0, 1.0, 1.0))
    assert m.ap_class_index.tolist() == [0, 1]
    assert m.instances.tolist() == [3, 3, 0] and m.images.tolist() == [3, 3, 0]
    np.testing.assert_allclose(m.maps, 1.0)  # class 2 has no GT: it gets the mean
    assert m.conf < 0.8 and m.f1.tolist() == pytest.approx([1.0, 1.0])  # F1 is 1 below the lowest score


def test_box_iou_level_sets_map75():
    gt = np.array([[0.0, 0, 100, 100]])
    det = np.array([[0.0, 0, 100, 70]])  # IoU 0.7: a match at 0.50 ... 0.70 only
    m = evaluate([(gt, np.array([0]), det, np.array([0]), np.array([0.5]))], nc=1)
    assert (m.map50, m.map75, m.map) == pytest.approx((1.0, 0.0, 0.5))


def test_class_with_gt_but_no_detections_counts_as_zero():
    gt = np.array([[0.0, 0, 20, 20], [30, 30, 60, 50]])
    det = gt[:1]
    m = evaluate([(gt, np.array([0, 1]), det, np.array([0]), np.array([0.9]))], nc=2)
    assert m.ap.tolist() == pytest.approx([1.0, 0.0]) and m.map == pytest.approx(0.5)
    assert m.p.tolist()[1] == 0 and m.r.tolist()[1] == 0


def test_no_ground_truth_at_all_gives_zeros():
    det = np.array([[0.0, 0, 20, 20]])
    m = evaluate([(np.zeros((0, 4)), np.zeros(0, np.int64), det, np.array([0]), np.array([0.9]))], nc=2)
    assert (m.map, m.map50, m.mp, m.mr) == (0, 0, 0, 0) and m.maps.tolist() == [0, 0]
    assert DetectionEvaluator(2).compute().map == 0


def test_evaluator_rejects_bad_class_ids_and_resets():
    ev = DetectionEvaluator(2, confusion=ConfusionMatrix(2))
    with pytest.raises(ValueError, match="GT class ids must be in 0..1"):
        ev.process(Detections.empty(), np.zeros((1, 4)), np.array([2]))
    dets = Detections(torch.zeros((1, 4)), torch.ones(1), torch.tensor([5]))
    with pytest.raises(ValueError, match="detection class ids must be in 0..1, got \\[5\\]"):
        ev.process(dets, np.zeros((0, 4)), np.zeros(0, np.int64))
    ev.process(Detections.empty(), np.array([[0.0, 0, 5, 5]]), np.array([1]))
    assert len(ev.results) == 1 and ev.confusion.matrix.sum() == 1
    ev.reset()
    assert ev.results == [] and ev.confusion.matrix.sum() == 0


def test_det_metrics_fitness_and_results_dict():
    gt = np.array([[0.0, 0, 100, 100]])
    det = np.array([[0.0, 0, 100, 70]])
    box = evaluate([(gt, np.array([0]), det, np.array([0]), np.array([0.5]))], nc=1)
    metrics = DetMetrics(box=box, names={0: "a"})
    assert metrics.fitness == pytest.approx(0.1 * 1.0 + 0.9 * 0.5)
    assert list(metrics.results_dict) == [
        "metrics/precision(B)",
        "metrics/recall(B)",
        "metrics/mAP50(B)",
        "metrics/mAP50-95(B)",
        "fitness",
    ]
    assert metrics.results_dict["metrics/mAP50-95(B)"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# confusion matrix


def test_confusion_matrix_hand_computed():
    cm = ConfusionMatrix(nc=2)  # rows predicted, columns true, index 2 = background
    gt = np.array([[0.0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    gt_cls = np.array([0, 1, 1])
    boxes = np.array([[0.0, 0, 10, 10], [20, 20, 30, 30], [80, 80, 90, 90], [50, 50, 60, 60]])
    scores = np.array([0.9, 0.8, 0.5, 0.1])  # the last one is below conf 0.25: ignored
    classes = np.array([0, 0, 1, 1])
    cm.process(boxes, scores, classes, gt, gt_cls)
    expected = [
        [1, 1, 0],  # predicted 0: one right, one that was a 1
        [0, 0, 1],  # predicted 1: a false alarm
        [0, 1, 0],  # background: the third GT was missed
    ]
    assert cm.matrix.tolist() == expected
    np.testing.assert_allclose(cm.normalized().sum(0), [1, 1, 1])
    cm.process(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64))
    assert cm.matrix.sum() == 4


def test_confusion_matrix_iou_is_strict_and_one_to_one():
    cm = ConfusionMatrix(nc=1, iou=0.5)
    gt = np.array([[0.0, 0, 10, 10]])
    boxes = np.array([[0.0, 0, 10, 5], [0.0, 0, 10, 10], [0.0, 0, 10, 10]])  # IoU 0.5, 1, 1
    cm.process(boxes[:1], np.array([0.9]), np.array([0]), gt, np.array([0]))
    assert cm.matrix.tolist() == [[0, 1], [1, 0]]  # IoU exactly 0.5 is not a match
    cm.matrix[:] = 0
    cm.process(boxes[1:], np.array([0.9, 0.8]), np.array([0, 0]), gt, np.array([0]))
    assert cm.matrix.tolist() == [[1, 1], [0, 0]]  # the duplicate is a false alarm


# ---------------------------------------------------------------------------------------------
# parity with pycocotools


def random_dataset(seed: int, n_images: int = 150, nc: int = 6):
    """Jittered GT copies, class mix-ups, false positives, coarse scores (many ties), duplicate
    GT and detection boxes, images without GT or without detections, one image over max_det,
    a class never in the GT (nc - 1) and classes that may get no detection."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_images):
        n_gt = 0 if i % 10 == 0 else int(rng.integers(0, 8))
        xy = rng.uniform(0, 400, (n_gt, 2))
        gt = np.concatenate([xy, xy + rng.uniform(5, 150, (n_gt, 2))], 1)
        gt_cls = rng.integers(0, nc - 1, n_gt)
        if n_gt > 1 and i % 7 == 0:
            gt[1], gt_cls[1] = gt[0], gt_cls[0]
        copies = rng.integers(0, 3, n_gt)
        boxes = np.repeat(gt, copies, 0)
        boxes += rng.normal(0, 1, boxes.shape) * 0.08 * (boxes[:, 2:] - boxes[:, :2]).mean(1, keepdims=True)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)  # valid boxes, as NMS gives
        cls = np.repeat(gt_cls, copies)
        cls = np.where(rng.random(len(cls)) < 0.1, rng.integers(0, nc, len(cls)), cls)
        n_fp = 150 if i % 13 == 0 else int(rng.integers(0, 10))
        xy = rng.uniform(0, 400, (n_fp, 2))
        boxes = np.concatenate([boxes, np.c_[xy, xy + rng.uniform(5, 150, (n_fp, 2))]])
        cls = np.concatenate([cls, np.zeros(n_fp, np.int64) if i % 13 == 0 else rng.integers(0, nc, n_fp)])
        if len(boxes) > 2 and i % 5 == 0:
            boxes[-1], cls[-1] = boxes[0], cls[0]
        scores = np.round(rng.random(len(boxes)), 2)
        if i % 17 == 0:
            boxes, cls, scores = boxes[:0], cls[:0], scores[:0]
        images.append((gt, gt_cls, boxes, cls, scores))
    return images, nc


def cocoeval_per_class(images, nc, max_det):
    """Per-class AP (K,) at the 10 IoUs from pycocotools (-1 for classes without GT)."""
    coco_mod = pytest.importorskip("pycocotools.coco")
    cocoeval_mod = pytest.importorskip("pycocotools.cocoeval")
    gt_json = {"images": [], "categories": [{"id": c} for c in range(nc)], "annotations": []}
    results = []
    for i, (gt, gt_cls, boxes, cls, scores) in enumerate(images):
        gt_json["images"].append({"id": i})
        for (x1, y1, x2, y2), c in zip(gt, gt_cls, strict=True):
            ann = {"image_id": i, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1]}
            ann.update(id=len(gt_json["annotations"]) + 1, area=(x2 - x1) * (y2 - y1), iscrowd=0)
            gt_json["annotations"].append(ann)
        for (x1, y1, x2, y2), c, s in zip(boxes, cls, scores, strict=True):
            results.append(
                {"image_id": i, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_mod.COCO()
        coco_gt.dataset = gt_json
        coco_gt.createIndex()
        ev = cocoeval_mod.COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        ev.params.maxDets = [1, 10, max_det] if max_det > 10 else [1, 2, max_det]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, 2]  # (T, R, K) at area 'all', maxDets max_det
    return precision.mean(1).T  # (K, T); -1 rows for classes without GT


@pytest.mark.parametrize(("seed", "max_det"), [(0, 100), (1, 100), (2, 5)])
def test_map_equals_cocoeval(seed, max_det):
    images, nc = random_dataset(seed)
    theirs = cocoeval_per_class(images, nc, max_det)
    ours = evaluate(images, nc, max_det)
    has_gt = theirs[:, 0] > -1
    assert ours.ap_class_index.tolist() == np.flatnonzero(has_gt).tolist()
    np.testing.assert_allclose(ours.all_ap, theirs[has_gt], atol=1e-12)
    assert ours.map == pytest.approx(theirs[has_gt].mean(), abs=1e-4)
    assert ours.map50 == pytest.approx(theirs[has_gt, 0].mean(), abs=1e-4)
    assert ours.map75 == pytest.approx(theirs[has_gt, 5].mean(), abs=1e-4)
    assert 0.05 < ours.map < 0.95  # the data is neither trivial nor hopeless
