"""Task-aligned assigner: each step on hand-computed cases of 3 anchors and 1-2 GTs.

Anchors are cell centres of one stride-8 row: (4, 4), (12, 4), (20, 4) pixels.
"""

from __future__ import annotations

import math

import pytest
import torch

from yoloforge.loss.assigner import (
    PaddedTargets,
    TaskAlignedAssigner,
    alignment_metrics,
    candidates_in_gts,
    normalise_scores,
    pad_targets,
    resolve_multiple,
    select_topk,
)

ANCHORS = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0]])  # (A=3, 2) pixels


def targets(boxes: list[list[float]], classes: list[int]) -> PaddedTargets:
    """One image with the given GTs."""
    return PaddedTargets(
        classes=torch.tensor([classes]),
        boxes_xyxy=torch.tensor([boxes]),
        mask=torch.ones((1, len(boxes)), dtype=torch.bool),
    )


def scaled_box(box: list[float], area_ratio: float) -> list[float]:
    """The box shrunk about its centre to ``area_ratio`` of its area, same aspect ratio: IoU = area_ratio
    and CIoU = IoU (same centre, same shape)."""
    x1, y1, x2, y2 = box
    cx, cy, k = (x1 + x2) / 2, (y1 + y2) / 2, math.sqrt(area_ratio) / 2
    return [cx - (x2 - x1) * k, cy - (y2 - y1) * k, cx + (x2 - x1) * k, cy + (y2 - y1) * k]


def test_pad_targets_keeps_order_per_image():
    padded = pad_targets(
        batch_idx=torch.tensor([1, 0, 1]),
        classes=torch.tensor([5, 6, 7]),
        boxes_xyxy=torch.tensor([[1.0, 1, 2, 2], [3, 3, 4, 4], [5, 5, 6, 6]]),
        batch_size=3,
    )
    assert padded.classes.tolist() == [[6, 0], [5, 7], [0, 0]]
    assert padded.mask.tolist() == [[True, False], [True, True], [False, False]]
    assert padded.boxes_xyxy[1].tolist() == [[1, 1, 2, 2], [5, 5, 6, 6]]
    assert padded.boxes_xyxy[0, 1].tolist() == [0, 0, 0, 0]


def test_pad_targets_empty_batch():
    padded = pad_targets(torch.zeros(0), torch.zeros(0), torch.zeros((0, 4)), batch_size=2)
    assert padded.boxes_xyxy.shape == (2, 0, 4) and padded.mask.shape == (2, 0)


def test_candidates_are_centres_strictly_inside():
    gts = torch.tensor([[[0.0, 0, 16, 8], [4, 0, 12, 8], [0, 0, 24, 8]]])  # (1, 3, 4)
    mask = torch.tensor([[True, True, False]])  # third is padding
    inside = candidates_in_gts(ANCHORS, gts, mask)
    assert inside.tolist() == [[[True, True, False], [False, False, False], [False, False, False]]]
    # (4, 0, 12, 8): anchors (4, 4) and (12, 4) lie on its left and right edges: not inside


def test_tiny_gt_is_widened_to_min_side():
    gts = torch.tensor([[[13.0, 1, 15, 3]]])  # 2 x 2 px, centre (14, 2): holds no anchor centre
    mask = torch.tensor([[True]])
    assert candidates_in_gts(ANCHORS, gts, mask).tolist() == [[[False, False, False]]]
    # widened to 16 x 16 about its centre: (6, -6, 22, 10) holds (12, 4) and (20, 4)
    assert candidates_in_gts(ANCHORS, gts, mask, min_side=16).tolist() == [[[False, True, True]]]


def test_alignment_is_score_pow_alpha_times_ciou_pow_beta():
    gt = [0.0, 0, 16, 8]
    pd_boxes = torch.tensor([[gt, [0.0, 0, 8, 8], [0.0, 0, 8, 8]]])  # (1, 3, 4)
    pd_scores = torch.tensor([[[0.0, 0.64], [0.0, 0.25], [0.0, 0.81]]])  # (1, 3, C=2)
    candidates = torch.tensor([[[True, True, False]]])
    align, iou = alignment_metrics(
        pd_scores, pd_boxes, torch.tensor([[1]]), torch.tensor([[gt]]), candidates, alpha=0.5, beta=6.0
    )
    # anchor 0: same box, CIoU 1; align = 0.64 ** 0.5 = 0.8
    # anchor 1: (0, 0, 8, 8) vs (0, 0, 16, 8): IoU 0.5; centres 4 px apart: rho^2 / c^2 = 16 / 320;
    #   v = 4 / pi^2 * (atan 2 - atan 1)^2 = 0.0419565, a = v / (v + 0.5) = 0.0774167
    #   CIoU = 0.5 - 0.05 - v * a = 0.4467519; align = 0.25 ** 0.5 * CIoU ** 6 = 0.5 * 0.0079506
    # anchor 2: not a candidate: 0 although its score is high
    assert iou[0, 0].tolist() == pytest.approx([1.0, 0.4467519, 0.0], abs=1e-6)
    assert align[0, 0].tolist() == pytest.approx([0.8, 0.0039753, 0.0], abs=1e-6)


def test_alignment_clamps_negative_ciou_at_zero():
    gt = [0.0, 0, 8, 8]
    far = [40.0, 0, 48, 8]  # disjoint: IoU 0, CIoU < 0
    align, iou = alignment_metrics(
        torch.ones((1, 1, 1)), torch.tensor([[far]]), torch.tensor([[0]]), torch.tensor([[gt]]),
        torch.ones((1, 1, 1), dtype=torch.bool), alpha=0.5, beta=6.0,
    )  # fmt: skip
    assert iou.item() == 0.0 and align.item() == 0.0


def test_select_topk_keeps_best_candidates_of_real_gts():
    align = torch.tensor([[[0.1, 0.5, 0.0, 0.0, 0.2], [0.3, 0.0, 0.0, 0.0, 0.0]]])  # (1, 2, 5)
    candidates = torch.tensor([[[True, True, False, False, True], [True, False, False, False, False]]])
    gt_mask = torch.tensor([[True, False]])  # second GT is padding
    assert select_topk(align, candidates, gt_mask, topk=2)[0, 0].tolist() == [False, True, False, False, True]
    # fewer candidates than topk: all of them
    assert select_topk(align, candidates, gt_mask, topk=10)[0, 0].tolist() == [True, True, False, False, True]
    assert not select_topk(align, candidates, gt_mask, topk=2)[0, 1].any()


def test_anchor_of_two_gts_keeps_the_one_of_highest_iou():
    positives = torch.tensor([[[True, True, False], [False, True, True]]])  # (1, M=2, A=3)
    overlaps = torch.tensor([[[0.9, 0.3, 0.0], [0.0, 0.6, 0.8]]])
    gt_idx, fg, positives = resolve_multiple(positives, overlaps)
    assert gt_idx.tolist() == [[0, 1, 1]]
    assert fg.tolist() == [[True, True, True]]
    assert positives.tolist() == [[[True, False, False], [False, True, True]]]


def test_scores_are_alignment_over_best_alignment_times_best_iou():
    align = torch.tensor([[[0.2, 0.1, 0.05]]])  # (1, 1, 3)
    overlaps = torch.tensor([[[0.6, 0.9, 0.3]]])
    positives = torch.tensor([[[True, True, False]]])
    one_hot = torch.tensor([[[0, 1], [0, 1], [0, 0]]])  # (1, 3, 2): class 1, anchor 2 is background
    scores = normalise_scores(one_hot, align, overlaps, positives)
    # best alignment 0.2, best IoU among positives 0.9 (not that of the best aligned anchor)
    torch.testing.assert_close(scores[0], torch.tensor([[0, 0.9], [0, 0.45], [0, 0]]))


def test_assigner_one_gt_topk_two():
    gt = [0.0, 0, 24, 8]  # holds all three anchors
    pd_boxes = torch.tensor([[scaled_box(gt, 0.25), scaled_box(gt, 0.5), scaled_box(gt, 0.25)]])
    pd_scores = torch.tensor([[[1.0, 0.0], [0.64, 0.0], [0.25, 0.0]]])  # class 0
    assigner = TaskAlignedAssigner(num_classes=2, topk=2, min_side=0)
    out = assigner(pd_scores, pd_boxes, ANCHORS, targets([gt], [0]))
    # align = sqrt(score) * IoU^6: [1 * 0.25^6, 0.8 * 0.5^6, 0.5 * 0.25^6] = [0.000244, 0.0125, 0.000122]
    # top 2: anchors 1 and 0. Scores: align / 0.0125 * best IoU 0.5 -> [0.009766, 0.5, 0]
    assert out.fg_mask.tolist() == [[True, True, False]]
    assert out.scores[0, :, 0].tolist() == pytest.approx([0.25**6 / 0.0125 * 0.5, 0.5, 0.0], abs=1e-6)
    assert out.scores[0, :, 1].tolist() == [0.0, 0.0, 0.0]
    assert out.labels[0, :2].tolist() == [0, 0]
    assert out.boxes_xyxy[0, 0].tolist() == gt


def test_assigner_two_gts_share_an_anchor():
    gt_a, gt_b = [0.0, 0, 16, 8], [8.0, 0, 24, 8]  # anchor (12, 4) lies in both
    # anchor 1 predicts (6, 0, 22, 8): IoU 80 / 176 with A, 112 / 144 with B -> B
    pd_boxes = torch.tensor([[gt_a, [6.0, 0, 22, 8], gt_b]])
    pd_scores = torch.full((1, 3, 2), 0.5)
    out = TaskAlignedAssigner(num_classes=2, topk=2, min_side=0)(
        pd_scores, pd_boxes, ANCHORS, targets([gt_a, gt_b], [0, 1])
    )
    assert out.fg_mask.tolist() == [[True, True, True]]
    assert out.gt_idx.tolist() == [[0, 1, 1]]
    assert out.labels.tolist() == [[0, 1, 1]]
    assert out.boxes_xyxy[0, 1].tolist() == gt_b
    assert (out.scores.sum(-1) > 0).tolist() == [[True, True, True]]


def test_background_image_and_empty_batch():
    assigner = TaskAlignedAssigner(num_classes=2, min_side=0)
    gt = [0.0, 0, 16, 8]
    two = pad_targets(torch.tensor([0]), torch.tensor([1]), torch.tensor([gt]), batch_size=2)
    pd_boxes = torch.tensor([gt, gt, gt]).expand(2, -1, -1)
    out = assigner(torch.full((2, 3, 2), 0.5), pd_boxes, ANCHORS, two)
    assert out.fg_mask.tolist() == [[True, True, False], [False, False, False]]
    assert out.scores[1].abs().sum() == 0

    none = pad_targets(torch.zeros(0), torch.zeros(0), torch.zeros((0, 4)), batch_size=2)
    out = assigner(torch.full((2, 3, 2), 0.5), pd_boxes, ANCHORS, none)
    assert not out.fg_mask.any() and out.scores.shape == (2, 3, 2) and out.scores.abs().sum() == 0
