"""Box formats, IoU and the post-processing that turns raw model output into detections.

Formats: ``xyxy`` corners, ``cxcywh`` centre and size; both in pixels unless a name says ``n``.
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torchvision

from yoloforge.structures import Detections

log = logging.getLogger(__name__)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre/size -> corners."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) corners -> centre/size."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_area(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]).clamp(min=0) * (
        boxes_xyxy[..., 3] - boxes_xyxy[..., 1]
    ).clamp(min=0)


def box_iou(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (N, 4) and (M, 4) boxes -> (N, M). Empty boxes give IoU 0, never NaN."""
    lt = torch.maximum(a_xyxy[:, None, :2], b_xyxy[None, :, :2])
    rb = torch.minimum(a_xyxy[:, None, 2:], b_xyxy[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a_xyxy)[:, None] + box_area(b_xyxy)[None, :] - inter
    return inter / union.clamp(min=1e-12)


def ciou(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of matching (..., 4) box pairs (Zheng et al. 2020, arXiv:1911.08287)."""
    ax1, ay1, ax2, ay2 = a_xyxy.unbind(-1)
    bx1, by1, bx2, by2 = b_xyxy.unbind(-1)
    aw, ah = ax2 - ax1, ay2 - ay1 + eps
    bw, bh = bx2 - bx1, by2 - by1 + eps
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0) * (
        torch.minimum(ay2, by2) - torch.maximum(ay1, by1)
    ).clamp(min=0)
    union = aw * ah + bw * bh - inter + eps
    iou = inter / union
    # smallest enclosing box diagonal and centre distance, both squared
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((bx1 + bx2 - ax1 - ax2) ** 2 + (by1 + by2 - ay1 - ay2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(bw / bh) - torch.atan(aw / ah)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def non_max_suppression(
    preds: torch.Tensor,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    classes: tuple[int, ...] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_candidates: int = 30000,
    time_limit: float | None = None,
) -> list[Detections]:
    """Turn model output (B, 4 + nc, A) (cxcywh pixels, sigmoid scores) into detections per image.

    Class-aware NMS (torchvision's batched_nms). ``multi_label`` keeps every class above ``conf``
    for a box, otherwise only its best class. Work is never capped silently: when more than
    ``max_candidates`` boxes pass the threshold, the best ones are kept and a warning says so;
    ``time_limit`` (seconds, None = none) stops early with a warning.
    """
    if not 0 <= conf <= 1 or not 0 <= iou <= 1:
        raise ValueError(f"conf={conf} and iou={iou} must be between 0 and 1")
    nc = preds.shape[1] - 4
    preds = preds.transpose(1, 2)  # (B, A, 4 + nc)
    out: list[Detections] = []
    start = time.perf_counter()
    for i, p in enumerate(preds):
        boxes = cxcywh_to_xyxy(p[:, :4])
        scores = p[:, 4:]
        if multi_label and nc > 1:
            anchor, cls = (scores > conf).nonzero(as_tuple=True)
            score = scores[anchor, cls]
            boxes = boxes[anchor]
        else:
            score, cls = scores.max(1)
            keep = score > conf
            boxes, score, cls = boxes[keep], score[keep], cls[keep]
        if classes is not None:
            keep = torch.isin(cls, torch.tensor(classes, device=cls.device))
            boxes, score, cls = boxes[keep], score[keep], cls[keep]
        if score.numel() > max_candidates:
            log.warning(
                "NMS: %d boxes above conf=%g in image %d; keeping the best %d. Raise conf to avoid this.",
                score.numel(),
                conf,
                i,
                max_candidates,
            )
            top = score.topk(max_candidates).indices
            boxes, score, cls = boxes[top], score[top], cls[top]
        group = torch.zeros_like(cls) if agnostic else cls
        keep = torchvision.ops.batched_nms(boxes.float(), score.float(), group, iou)[:max_det]
        out.append(Detections(boxes[keep].float(), score[keep].float(), cls[keep].long()))
        if time_limit is not None and time.perf_counter() - start > time_limit and i + 1 < len(preds):
            log.warning(
                "NMS time limit %.1fs exceeded: %d of %d images of this batch have no detections.",
                time_limit,
                len(preds) - i - 1,
                len(preds),
            )
            out.extend(Detections.empty(preds.device) for _ in range(len(preds) - i - 1))
            break
    return out


def make_anchors(
    feat_shapes: list[tuple[int, int]], strides: list[int], offset: float = 0.5, device=None, dtype=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points at cell centres of each feature map, in feature-grid units.

    ``feat_shapes`` are (H, W) per level, P3 first. Returns ``anchor_points`` (A, 2) as (x, y) in
    grid cells of its level and ``stride_tensor`` (A, 1); multiply them to get input pixels.
    Order: level by level, each row-major, the layout of the model's eval output.
    """
    points, stride_list = [], []
    for (h, w), s in zip(feat_shapes, strides, strict=True):
        sx = torch.arange(w, device=device, dtype=dtype) + offset
        sy = torch.arange(h, device=device, dtype=dtype) + offset
        gy, gx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((gx, gy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), s, device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_list)


def dist_to_xyxy(distance: torch.Tensor, anchor_points: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """(left, top, right, bottom) distances from anchor points -> xyxy boxes."""
    lt, rb = distance.chunk(2, dim)
    return torch.cat((anchor_points - lt, anchor_points + rb), dim)


def dist_to_cxcywh(distance: torch.Tensor, anchor_points: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """(left, top, right, bottom) distances from anchor points -> centre/size boxes."""
    lt, rb = distance.chunk(2, dim)
    x1y1, x2y2 = anchor_points - lt, anchor_points + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)


def xyxy_to_dist(anchor_points: torch.Tensor, boxes_xyxy: torch.Tensor, reg_max: int) -> torch.Tensor:
    """xyxy boxes -> (left, top, right, bottom) distances, clamped to the DFL range [0, reg_max - 1)."""
    x1y1, x2y2 = boxes_xyxy.chunk(2, -1)
    return torch.cat((anchor_points - x1y1, x2y2 - anchor_points), -1).clamp(0, reg_max - 1 - 0.01)
