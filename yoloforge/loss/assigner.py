"""Task-aligned assignment of anchors to ground-truth boxes (TOOD, Feng et al. 2021, arXiv:2108.07755).

Each ground truth (GT) picks, among the anchors whose centre lies inside it, the ``topk`` anchors
with the best alignment ``score**alpha * iou**beta``, where ``score`` is the predicted probability of
the GT's class and ``iou`` the CIoU (clamped at 0) of the predicted box with the GT, as the reference
trainer computes it for YOLOv8 / YOLO11. An anchor chosen by several GTs keeps the GT it overlaps
most. Targets of positives are soft: ``alignment / max alignment of the GT * max IoU of the GT``.

Shapes: B images, M GTs per image (padded to the largest count; ``gt_mask`` marks real ones),
A anchors over all levels, C classes. Everything is in input pixels here.

The steps are plain functions, each testable alone; ``TaskAlignedAssigner`` chains them:
    1. ``candidates_in_gts``       which anchor centres lie inside which GT       (B, M, A) bool
    2. ``alignment_metrics``       alignment and IoU of each candidate pair       (B, M, A) x 2
    3. ``select_topk``             the topk best aligned candidates of each GT    (B, M, A) bool
    4. ``resolve_multiple``        one GT per anchor: the one of highest IoU      (B, A)
    5. ``gather_targets``          label, box and one-hot score of each anchor    (B, A, ...)
    6. ``normalise_scores``        soft class targets scaled per GT               (B, A, C)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from yoloforge.boxes import ciou

EPS = 1e-9  # guards divisions by a GT's best alignment, and the "strictly inside" test


@dataclass
class PaddedTargets:
    """Ground truths of a batch, padded to the same count per image."""

    classes: torch.Tensor  # (B, M) int64, 0 in padding
    boxes_xyxy: torch.Tensor  # (B, M, 4) float, input pixels, 0 in padding
    mask: torch.Tensor  # (B, M) bool, True for real GTs


@dataclass
class Assignment:
    """What the assigner hands the loss: one target per anchor."""

    labels: torch.Tensor  # (B, A) int64, GT class (meaningless where not fg)
    boxes_xyxy: torch.Tensor  # (B, A, 4) float, input pixels, the assigned GT box
    scores: torch.Tensor  # (B, A, C) float, soft one-hot class targets, 0 for background
    fg_mask: torch.Tensor  # (B, A) bool, True for positive anchors
    gt_idx: torch.Tensor  # (B, A) int64, index of the assigned GT in its image (0 where not fg)


def pad_targets(
    batch_idx: torch.Tensor, classes: torch.Tensor, boxes_xyxy: torch.Tensor, batch_size: int
) -> PaddedTargets:
    """Flat targets (M_total,) tied to images by ``batch_idx`` -> per-image padded (B, M, ...).

    M is the largest GT count of one image (0 when the whole batch has no GT). The order of the
    GTs of an image is kept.
    """
    device = boxes_xyxy.device
    batch_idx = batch_idx.long().to(device)
    counts = torch.bincount(batch_idx, minlength=batch_size)  # (B,)
    m = int(counts.max()) if batch_idx.numel() else 0
    out_classes = torch.zeros((batch_size, m), dtype=torch.long, device=device)
    out_boxes = torch.zeros((batch_size, m, 4), dtype=boxes_xyxy.dtype, device=device)
    mask = torch.zeros((batch_size, m), dtype=torch.bool, device=device)
    if m:
        # position of each GT within its image: rank among the GTs with the same batch_idx
        order = torch.argsort(batch_idx, stable=True)
        starts = torch.cumsum(counts, 0) - counts  # (B,) first flat position of each image
        slot = torch.empty_like(batch_idx)
        slot[order] = torch.arange(batch_idx.numel(), device=device) - starts[batch_idx[order]]
        out_classes[batch_idx, slot] = classes.long().to(device)
        out_boxes[batch_idx, slot] = boxes_xyxy
        mask[batch_idx, slot] = True
    return PaddedTargets(out_classes, out_boxes, mask)


def candidates_in_gts(
    anchor_points: torch.Tensor, gt_boxes_xyxy: torch.Tensor, gt_mask: torch.Tensor, min_side: float = 0.0
) -> torch.Tensor:
    """Step 1: anchors whose centre lies strictly inside a GT box.

    anchor_points (A, 2) pixels; gt_boxes_xyxy (B, M, 4) pixels; gt_mask (B, M) -> (B, M, A) bool.
    GT sides shorter than ``min_side`` are widened to it about the box centre first, so that tiny
    objects still get candidates (the reference uses its middle stride, 16 px, here).
    """
    boxes = gt_boxes_xyxy
    if min_side > 0:
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        size = boxes[..., 2:] - boxes[..., :2]
        size = torch.where(size < min_side, torch.full_like(size, min_side), size)
        boxes = torch.cat((centre - size / 2, centre + size / 2), -1)
    x, y = anchor_points.unbind(-1)  # (A,) each
    x1, y1, x2, y2 = boxes[..., None].unbind(-2)  # (B, M, 1) each
    inside = (x - x1 > EPS) & (y - y1 > EPS) & (x2 - x > EPS) & (y2 - y > EPS)  # (B, M, A)
    return inside & gt_mask[..., None]


def alignment_metrics(
    pd_scores: torch.Tensor,
    pd_boxes_xyxy: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_boxes_xyxy: torch.Tensor,
    candidates: torch.Tensor,
    alpha: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2: alignment ``score**alpha * iou**beta`` and IoU of every candidate (GT, anchor) pair.

    pd_scores (B, A, C) probabilities; pd_boxes_xyxy (B, A, 4) pixels; gt_classes (B, M);
    gt_boxes_xyxy (B, M, 4) pixels; candidates (B, M, A) bool -> align (B, M, A), iou (B, M, A),
    both 0 outside the candidates. IoU is CIoU clamped at 0; only candidate pairs are computed.
    """
    b, m, a = candidates.shape
    img, gt, anchor = candidates.nonzero(as_tuple=True)  # (N,) each
    scores = pd_scores[img, anchor, gt_classes[img, gt]]  # (N,)
    ious = ciou(gt_boxes_xyxy[img, gt], pd_boxes_xyxy[img, anchor]).clamp(min=0)  # (N,)
    align = torch.zeros((b, m, a), dtype=pd_scores.dtype, device=pd_scores.device)
    overlaps = torch.zeros((b, m, a), dtype=pd_boxes_xyxy.dtype, device=pd_boxes_xyxy.device)
    align[img, gt, anchor] = scores.pow(alpha) * ious.pow(beta)
    overlaps[img, gt, anchor] = ious
    return align, overlaps


def select_topk(
    align: torch.Tensor, candidates: torch.Tensor, gt_mask: torch.Tensor, topk: int
) -> torch.Tensor:
    """Step 3: the ``topk`` anchors of highest alignment per GT, kept only if they are candidates.

    align (B, M, A); candidates (B, M, A) bool; gt_mask (B, M) -> (B, M, A) bool.
    A GT with fewer than ``topk`` candidates keeps all of them.
    """
    k = min(topk, align.shape[-1])
    top_idx = align.topk(k, dim=-1).indices  # (B, M, k)
    chosen = torch.zeros_like(candidates).scatter_(-1, top_idx, True)
    return chosen & candidates & gt_mask[..., None]


def resolve_multiple(
    positives: torch.Tensor, overlaps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 4: an anchor positive for several GTs keeps only the GT of highest IoU with its box.

    positives (B, M, A) bool; overlaps (B, M, A) -> gt_idx (B, A) int64, fg_mask (B, A) bool and
    the updated positives (B, M, A) bool. As in the reference, the IoU maximum is taken over every
    GT the anchor is a candidate of.
    """
    # (max(dim).indices, the first maximum like argmax, is several times faster than argmax on CPU)
    multiple = positives.sum(1, keepdim=True) > 1  # (B, 1, A)
    best = torch.zeros_like(positives).scatter_(1, overlaps.max(1, keepdim=True).indices, True)  # (B, M, A)
    positives = torch.where(multiple, best, positives)
    fg, gt_idx = positives.to(torch.uint8).max(1)  # (B, A) each; gt_idx 0 where no GT
    return gt_idx, fg.bool(), positives


def gather_targets(
    targets: PaddedTargets, gt_idx: torch.Tensor, fg_mask: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 5: each anchor's label (B, A), box (B, A, 4) and one-hot score (B, A, C) (0 if not fg)."""
    labels = targets.classes.gather(1, gt_idx)  # (B, A)
    boxes = targets.boxes_xyxy.gather(1, gt_idx[..., None].expand(-1, -1, 4))  # (B, A, 4)
    b, a = labels.shape
    one_hot = torch.zeros((b, a, num_classes), dtype=boxes.dtype, device=boxes.device)
    one_hot.scatter_(-1, labels[..., None], fg_mask[..., None].to(boxes.dtype))  # (B, A, C)
    return labels, boxes, one_hot


def normalise_scores(
    one_hot: torch.Tensor, align: torch.Tensor, overlaps: torch.Tensor, positives: torch.Tensor
) -> torch.Tensor:
    """Step 6: soft targets. For a positive anchor of GT g: align / max align of g * max IoU of g.

    one_hot (B, A, C); align, overlaps (B, M, A); positives (B, M, A) bool -> (B, A, C) float.
    The best aligned anchor of a GT thus gets the GT's best IoU as its class target.
    """
    align = align * positives
    max_iou = (overlaps * positives).amax(-1, keepdim=True)  # (B, M, 1)
    scale = max_iou / (align.amax(-1, keepdim=True) + EPS)  # (B, M, 1)
    per_anchor = (align * scale).sum(1)  # (B, A): an anchor is positive for one GT at most
    return one_hot * per_anchor[..., None]


@dataclass(frozen=True)
class TaskAlignedAssigner:
    """Chains the steps above. Defaults are those of YOLOv8 / YOLO11 training."""

    num_classes: int
    topk: int = 10
    alpha: float = 0.5
    beta: float = 6.0
    min_side: float = 16.0  # GT sides below this (pixels) are widened when looking for candidates

    @torch.no_grad()
    def __call__(
        self,
        pd_scores: torch.Tensor,
        pd_boxes_xyxy: torch.Tensor,
        anchor_points: torch.Tensor,
        targets: PaddedTargets,
    ) -> Assignment:
        """pd_scores (B, A, C) probabilities; pd_boxes_xyxy (B, A, 4) and anchor_points (A, 2) in
        input pixels; targets padded per image (pixels). Returns one target per anchor."""
        b, a, _ = pd_scores.shape
        if targets.mask.shape[1] == 0:
            return self._background(b, a, pd_scores)
        candidates = candidates_in_gts(anchor_points, targets.boxes_xyxy, targets.mask, self.min_side)
        align, overlaps = alignment_metrics(
            pd_scores, pd_boxes_xyxy, targets.classes, targets.boxes_xyxy, candidates, self.alpha, self.beta
        )
        positives = select_topk(align, candidates, targets.mask, self.topk)
        gt_idx, fg_mask, positives = resolve_multiple(positives, overlaps)
        labels, boxes, one_hot = gather_targets(targets, gt_idx, fg_mask, self.num_classes)
        scores = normalise_scores(one_hot, align, overlaps, positives)
        return Assignment(labels, boxes, scores, fg_mask, gt_idx)

    def _background(self, b: int, a: int, like: torch.Tensor) -> Assignment:
        """Every anchor is background (no GT in the whole batch)."""
        device = like.device
        return Assignment(
            labels=torch.zeros((b, a), dtype=torch.long, device=device),
            boxes_xyxy=torch.zeros((b, a, 4), dtype=like.dtype, device=device),
            scores=torch.zeros((b, a, self.num_classes), dtype=like.dtype, device=device),
            fg_mask=torch.zeros((b, a), dtype=torch.bool, device=device),
            gt_idx=torch.zeros((b, a), dtype=torch.long, device=device),
        )
