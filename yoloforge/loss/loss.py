"""The detection loss of YOLOv8 / YOLO11: CIoU box loss, DFL and BCE class loss on task-aligned targets.

Normalised as the reference trainer does, so the logged ``box_loss``, ``cls_loss`` and ``dfl_loss``
read the same: each term is summed over anchors and divided by the sum of the soft class targets
(at least 1), then multiplied by its gain (box 7.5, cls 0.5, dfl 1.5). The scalar to backward is
the sum of the three times the batch size, which, with accumulation to the nominal batch of 64 and
the reference's learning rates, gives the same training dynamics.

Several processes (``dist``, DistributedDataParallel): each rank's scalar is normalised by the
target scores of all ranks and scaled so that DDP's average of the ranks' gradients equals the
gradient one process computes on the global batch, exactly rather than on average.

Units: the model predicts, per anchor and side (left, top, right, bottom), a distribution over
``reg_max`` bins of the distance from the anchor centre in *stride units* (grid cells of its level).
Box and DFL losses work in those units; the assigner works in input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from yoloforge.boxes import ciou, dist_to_xyxy, make_anchors, xyxy_to_dist
from yoloforge.distributed import Distributed
from yoloforge.loss.assigner import Assignment, TaskAlignedAssigner, pad_targets
from yoloforge.settings import LossSettings
from yoloforge.structures import Batch


@dataclass
class LossOutput:
    total: torch.Tensor  # () the scalar to backward: (box + cls + dfl) * batch size
    parts: torch.Tensor  # (3,) detached box, cls, dfl after gains: what is logged


@dataclass
class Predictions:
    """Head output flattened over levels, anchors ordered P3, P4, P5, each row-major."""

    dist_logits: torch.Tensor  # (B, A, 4 * reg_max) float32, bins of left, top, right, bottom
    cls_logits: torch.Tensor  # (B, A, nc) float32
    anchor_points: torch.Tensor  # (A, 2) grid units of each anchor's level (cell centres)
    strides: torch.Tensor  # (A, 1) pixels per grid unit


def flatten_feats(
    feats: Sequence[torch.Tensor], nc: int, reg_max: int, strides: Sequence[int]
) -> Predictions:
    """Per-level maps (B, 4 * reg_max + nc, H_i, W_i) -> float32 predictions over all anchors."""
    flat = torch.cat([f.float().flatten(2) for f in feats], 2).transpose(1, 2)  # (B, A, 4 * reg_max + nc)
    if flat.shape[-1] != 4 * reg_max + nc:
        raise ValueError(f"head maps have {flat.shape[-1]} channels, expected 4 * {reg_max} + nc={nc}")
    anchor_points, stride_tensor = make_anchors(
        [tuple(f.shape[2:]) for f in feats], list(strides), device=flat.device, dtype=flat.dtype
    )
    dist_logits, cls_logits = flat.split((4 * reg_max, nc), -1)
    return Predictions(dist_logits, cls_logits, anchor_points, stride_tensor)


def expected_distances(dist_logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """(..., 4 * reg_max) bin logits -> (..., 4) expected distances: softmax over bins, dot (0..reg_max-1)."""
    probs = dist_logits.unflatten(-1, (4, reg_max)).softmax(-1)  # (..., 4, reg_max)
    bins = torch.arange(reg_max, dtype=probs.dtype, device=probs.device)
    return probs @ bins


def dfl(dist_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss (Li et al. 2020, arXiv:2006.04388), mean over the 4 sides.

    dist_logits (N, 4, reg_max); target (N, 4) distances in [0, reg_max - 1) -> (N,). Cross-entropy
    towards the two bins around the target, weighted by closeness: a target of 2.3 asks for
    0.7 of bin 2 and 0.3 of bin 3.
    """
    left = target.long()  # (N, 4) lower bin
    w_left = left + 1 - target  # weight of the lower bin
    logp = dist_logits.log_softmax(-1)  # (N, 4, reg_max)
    logp_left = logp.gather(-1, left[..., None]).squeeze(-1)
    logp_right = logp.gather(-1, (left + 1)[..., None]).squeeze(-1)
    return -(logp_left * w_left + logp_right * (1 - w_left)).mean(-1)


class DetectionLoss:
    """``DetectionLoss(nc)(model.features(images), batch) -> LossOutput``.

    ``strides`` are the model's (``model.stride.tolist()``); gains come from ``LossSettings``.
    """

    def __init__(
        self,
        nc: int,
        reg_max: int = 16,
        strides: Sequence[int] = (8, 16, 32),
        gains: LossSettings | None = None,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
        dist: Distributed | None = None,
    ) -> None:
        self.nc = nc
        self.dist = dist or Distributed()
        self.reg_max = reg_max
        self.strides = [int(s) for s in strides]
        self.gains = gains or LossSettings()
        # tiny GTs are widened to the middle stride when looking for candidate anchors, as the reference
        min_side = self.strides[1] if len(self.strides) > 1 else self.strides[0]
        self.assigner = TaskAlignedAssigner(nc, topk=topk, alpha=alpha, beta=beta, min_side=min_side)

    def __call__(self, feats: Sequence[torch.Tensor], batch: Batch) -> LossOutput:
        # Under autocast the head maps may be half precision: the loss is always float32.
        with torch.autocast(feats[0].device.type, enabled=False):
            return self._loss(feats, batch)

    def _loss(self, feats: Sequence[torch.Tensor], batch: Batch) -> LossOutput:
        preds = flatten_feats(feats, self.nc, self.reg_max, self.strides)
        b = preds.cls_logits.shape[0]
        device = preds.cls_logits.device
        pred_boxes = dist_to_xyxy(expected_distances(preds.dist_logits, self.reg_max), preds.anchor_points)
        # (B, A, 4) xyxy, grid units of each anchor's level

        targets = pad_targets(batch.batch_idx, batch.classes, batch.boxes_xyxy.to(device).float(), b)
        assigned = self.assigner(
            preds.cls_logits.detach().sigmoid(),
            pred_boxes.detach() * preds.strides,  # pixels
            preds.anchor_points * preds.strides,  # pixels
            targets,
        )
        score_sum = assigned.scores.sum()  # stays on the device: no host sync

        cls_loss = F.binary_cross_entropy_with_logits(preds.cls_logits, assigned.scores, reduction="sum")
        box_loss, dfl_loss = self._box_losses(preds, pred_boxes, assigned)
        sums = torch.stack((box_loss, cls_loss, dfl_loss))
        gains = torch.tensor([self.gains.box, self.gains.cls, self.gains.dfl], device=device)
        parts = sums / score_sum.clamp(min=1) * gains  # this rank's: what is logged
        if not self.dist.enabled:
            return LossOutput(total=parts.sum() * b, parts=parts.detach())
        return LossOutput(total=self._distributed_total(sums, gains, score_sum, b), parts=parts.detach())

    def _distributed_total(
        self, sums: torch.Tensor, gains: torch.Tensor, score_sum: torch.Tensor, b: int
    ) -> torch.Tensor:
        """This rank's share of the one-process scalar on the global batch, times the world size.

        One process: ``B * sum_r(sums_r) / S`` (B images, S target scores, over all ranks r). DDP
        averages the ranks' gradients, so rank r backwards ``w * B * sums_r / S``.
        """
        w = self.dist.world_size
        both = self.dist.sum(torch.stack((score_sum.detach(), score_sum.new_tensor(float(b)))))
        total_scores, global_batch = both[0].clamp(min=1), both[1]
        return (sums / total_scores * gains).sum() * global_batch * w

    def _box_losses(
        self, preds: Predictions, pred_boxes: torch.Tensor, assigned: Assignment
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sums over positive anchors of (1 - CIoU) and DFL, each weighted by the anchor's target score.

        Zero (and still in the graph) when there is no positive anchor.
        """
        fg = assigned.fg_mask  # (B, A)
        weight = assigned.scores[fg].sum(-1)  # (N,)
        strides = preds.strides.expand(fg.shape[0], -1, -1)[fg]  # (N, 1)
        target_boxes = assigned.boxes_xyxy[fg] / strides  # (N, 4) xyxy grid units
        box_loss = ((1.0 - ciou(pred_boxes[fg], target_boxes)) * weight).sum()

        anchor_points = preds.anchor_points.expand(fg.shape[0], -1, -1)[fg]  # (N, 2) grid units
        target_dist = xyxy_to_dist(anchor_points, target_boxes, self.reg_max)  # (N, 4) in [0, reg_max - 1)
        dist_logits = preds.dist_logits[fg].unflatten(-1, (4, self.reg_max))  # (N, 4, reg_max)
        dfl_loss = (dfl(dist_logits, target_dist) * weight).sum()
        return box_loss, dfl_loss
