"""Detection metrics: COCO-exact mAP, P/R/F1 over confidence, and the confusion matrix.

mAP follows pycocotools' COCOeval (bbox, area "all", no crowd boxes) exactly:
- per image and class, at most ``max_det`` detections (the highest scores; stable order on ties);
- detections in descending score order each take the still-unmatched ground truth (GT) of highest
  IoU >= t, at t = 0.50, 0.55, ..., 0.95 (on equal IoUs the later GT wins, as in COCOeval);
- per class, all detections sorted by score, stably: equal scores keep image order, then their
  order within the image (image order is the processing order here, sorted image ids in COCOeval);
  precision made monotone from the right and sampled at 101 recall points with searchsorted;
- classes without GT are left out of every mean.
Boxes are expected well formed (x2 >= x1, y2 >= y1), as NMS gives them.

P, R and F1 are read at IoU 0.5 as functions of the confidence threshold; the reported P and R
are taken at the confidence that maximises the (lightly smoothed) mean F1 over classes.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from yoloforge.boxes import box_iou
from yoloforge.structures import Detections

# COCOeval builds both grids with linspace, so 0.75 and the recall points compare exactly.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # (T,)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # (R,)
CONF_POINTS = np.linspace(0.0, 1.0, 1000)  # x axis of the P, R and F1 curves
SUMMARY_COLUMNS = ("Class", "Images", "Instances", "Box-P", "Box-R", "Box-F1", "mAP50", "mAP50-95")
F1_SMOOTH = 0.1  # box filter over 10% of the confidence axis before picking the best F1


def _np(x: torch.Tensor | np.ndarray, dtype: type) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _iou_np(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) IoU in float64 (COCOeval computes in double)."""
    return box_iou(torch.from_numpy(a_xyxy), torch.from_numpy(b_xyxy)).numpy()


def rank_within_class(classes: np.ndarray) -> np.ndarray:
    """(N,) class ids in score order -> (N,) rank of each entry among those of its class (0, 1, ...)."""
    order = np.argsort(classes, kind="stable")
    sorted_cls = classes[order]
    group_start = np.searchsorted(sorted_cls, sorted_cls, side="left")
    rank = np.empty(len(classes), dtype=np.int64)
    rank[order] = np.arange(len(classes)) - group_start
    return rank


def greedy_match(iou: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """COCO's greedy matching, for every threshold at once.

    ``iou`` (D, G): detections in descending score order against GT (use a negative IoU for pairs
    that may not match, e.g. different classes). Detection by detection, each takes the unmatched
    GT of highest IoU >= threshold; on equal IoUs the GT of higher index (COCOeval's rule).
    Returns (T, D) int64: the matched GT index, or -1.

    Not a loop per detection: each round commits every detection whose best GT no earlier open
    detection could take (the first open detection always qualifies), then drops detections left
    without candidates. Rounds <= G + 1, usually 1-3.
    """
    match = np.full((len(thresholds), iou.shape[0]), -1, dtype=np.int64)
    if iou.size == 0:
        return match
    # only detections and GT with a pair above the lowest threshold take part (a speed-up only)
    pairs = iou >= thresholds.min()
    dets, gts = np.flatnonzero(pairs.any(1)), np.flatnonzero(pairs.any(0))
    if len(dets):
        local = _greedy_rounds(iou[np.ix_(dets, gts)], thresholds)  # (T, len(dets)), -1 unmatched
        match[:, dets] = np.where(local >= 0, gts[local], -1)
    return match


def _greedy_rounds(iou: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """greedy_match on a (D, G) block where every row and column has a candidate pair."""
    n_det, n_gt = iou.shape
    n_thr = len(thresholds)
    match = np.full((n_thr, n_det), -1, dtype=np.int64)
    allowed = iou[None] >= thresholds[:, None, None]  # (T, D, G)
    gt_free = np.ones((n_thr, n_gt), dtype=bool)
    det_open = np.ones((n_thr, n_det), dtype=bool)
    iou_rev = iou[None, :, ::-1]  # reversed GT axis: argmax then picks the last of equal maxima
    rows = np.arange(n_thr)[:, None]
    det_ids = np.arange(n_det)[None]
    while True:
        cand = allowed & gt_free[:, None, :] & det_open[:, :, None]  # (T, D, G)
        det_open &= cand.any(2)  # no candidate now means never one: unmatched
        if not det_open.any():
            return match
        best = n_gt - 1 - np.where(cand[:, :, ::-1], iou_rev, -np.inf).argmax(2)  # (T, D)
        first_claimant = cand.argmax(1)  # (T, G) first open detection that could take each GT
        commit = det_open & (first_claimant[rows, best] == det_ids)
        t_idx, d_idx = np.nonzero(commit)
        match[t_idx, d_idx] = best[t_idx, d_idx]
        gt_free[t_idx, best[t_idx, d_idx]] = False
        det_open &= ~commit


def smooth(y: np.ndarray, fraction: float) -> np.ndarray:
    """Box filter over ``fraction`` of the length of ``y`` (odd width), edges padded with end values."""
    width = 2 * round(len(y) * fraction / 2) + 1
    padded = np.concatenate((np.full(width // 2, y[0]), y, np.full(width // 2, y[-1])))
    return np.convolve(padded, np.ones(width) / width, mode="valid")


@dataclass
class ImageResult:
    """One image after matching: its kept detections (score order) and its GT classes."""

    scores: np.ndarray  # (D,) float64
    classes: np.ndarray  # (D,) int64
    tp: np.ndarray  # (D, T) bool, true positive at each IoU threshold
    gt_classes: np.ndarray  # (G,) int64


def match_image(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    gt_boxes_xyxy: np.ndarray,
    gt_classes: np.ndarray,
    max_det: int = 100,
) -> ImageResult:
    """Keep the top ``max_det`` detections per class (COCOeval's maxDets) and match them per class."""
    order = np.argsort(-scores, kind="stable")
    order = order[rank_within_class(classes[order]) < max_det]
    boxes_xyxy, scores, classes = boxes_xyxy[order], scores[order], classes[order]
    iou = _iou_np(boxes_xyxy, gt_boxes_xyxy)
    iou[classes[:, None] != gt_classes[None, :]] = -1.0  # match within a class only
    tp = greedy_match(iou, IOU_THRESHOLDS).T >= 0
    return ImageResult(scores, classes, tp, gt_classes)


def precision_at_recall_points(tp: np.ndarray, n_gt: int) -> np.ndarray:
    """COCOeval's accumulate for one class: (N, T) TP flags in score order -> (T, 101) precision."""
    tp_sum = np.cumsum(tp, axis=0).T.astype(float)  # (T, N)
    fp_sum = np.cumsum(~tp, axis=0).T.astype(float)
    recall = tp_sum / n_gt
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    precision = np.flip(np.maximum.accumulate(np.flip(precision, 1), axis=1), 1)  # envelope
    out = np.zeros((tp.shape[1], len(RECALL_POINTS)))
    for t in range(tp.shape[1]):
        idx = np.searchsorted(recall[t], RECALL_POINTS, side="left")
        valid = idx < tp.shape[0]  # recall never reached: precision 0
        out[t, valid] = precision[t, idx[valid]]
    return out


def pr_over_confidence(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall (each (1000,)) of one class when keeping detections with score > x.

    ``scores`` (N,) descending and ``tp`` (N,) at IoU 0.5. Above the top score precision is 1
    (nothing kept, nothing wrong); a class without detections has P = R = 0 everywhere.
    """
    if len(scores) == 0:
        return np.zeros_like(CONF_POINTS), np.zeros_like(CONF_POINTS)
    n_kept = np.searchsorted(-scores, -CONF_POINTS, side="left")  # how many scores > x
    tp_kept = np.concatenate(([0], np.cumsum(tp)))[n_kept]
    precision = np.where(n_kept > 0, tp_kept / np.maximum(n_kept, 1), 1.0)
    return precision, tp_kept / n_gt


@dataclass
class BoxMetrics:
    """Box metrics of a validation. K rows: the classes that have GT, in ``ap_class_index`` order."""

    nc: int
    ap_class_index: np.ndarray  # (K,) class ids
    all_ap: np.ndarray  # (K, 10) AP at IoU 0.50:0.05:0.95
    p: np.ndarray  # (K,) precision at ``conf``
    r: np.ndarray  # (K,) recall at ``conf``
    f1: np.ndarray  # (K,) F1 at ``conf``
    conf: float  # the confidence of best mean F1
    instances: np.ndarray  # (nc,) GT boxes per class
    images: np.ndarray  # (nc,) images containing the class
    pr_curve: np.ndarray  # (K, 101) precision at RECALL_POINTS, IoU 0.5 (the PR curve)
    p_curve: np.ndarray  # (K, 1000) precision at CONF_POINTS, IoU 0.5
    r_curve: np.ndarray  # (K, 1000)
    f1_curve: np.ndarray  # (K, 1000)

    @staticmethod
    def empty(nc: int) -> BoxMetrics:
        k0 = np.zeros(0)
        return BoxMetrics(
            nc, np.zeros(0, dtype=np.int64), np.zeros((0, 10)), k0, k0, k0, 0.0,
            np.zeros(nc, dtype=np.int64), np.zeros(nc, dtype=np.int64),
            np.zeros((0, 101)), np.zeros((0, 1000)), np.zeros((0, 1000)), np.zeros((0, 1000)),
        )  # fmt: skip

    @property
    def ap50(self) -> np.ndarray:
        return self.all_ap[:, 0]

    @property
    def ap(self) -> np.ndarray:
        """(K,) AP50-95 per class."""
        return self.all_ap.mean(1)

    @property
    def map50(self) -> float:
        return float(self.all_ap[:, 0].mean()) if len(self.all_ap) else 0.0

    @property
    def map75(self) -> float:
        return float(self.all_ap[:, 5].mean()) if len(self.all_ap) else 0.0

    @property
    def map(self) -> float:
        return float(self.all_ap.mean()) if len(self.all_ap) else 0.0

    @property
    def mp(self) -> float:
        return float(self.p.mean()) if len(self.p) else 0.0

    @property
    def mr(self) -> float:
        return float(self.r.mean()) if len(self.r) else 0.0

    @property
    def maps(self) -> np.ndarray:
        """(nc,) AP50-95 per class; classes without GT get the overall mAP50-95."""
        out = np.full(self.nc, self.map)
        out[self.ap_class_index] = self.ap
        return out

    def mean_results(self) -> tuple[float, float, float, float]:
        return self.mp, self.mr, self.map50, self.map

    def class_result(self, k: int) -> tuple[float, float, float, float]:
        """P, R, AP50, AP50-95 of row ``k`` (the class ``ap_class_index[k]``)."""
        return float(self.p[k]), float(self.r[k]), float(self.ap50[k]), float(self.ap[k])


def box_metrics(results: list[ImageResult], nc: int) -> BoxMetrics:
    """Accumulate matched images into COCO APs and the P/R/F1 curves (a loop per class only)."""
    gt_classes = np.concatenate([r.gt_classes for r in results]) if results else np.zeros(0, np.int64)
    instances = np.bincount(gt_classes, minlength=nc)
    images = np.zeros(nc, dtype=np.int64)
    for r in results:
        images[np.unique(r.gt_classes)] += 1
    class_ids = np.flatnonzero(instances)
    if len(class_ids) == 0:
        return BoxMetrics.empty(nc)
    scores = np.concatenate([r.scores for r in results])
    classes = np.concatenate([r.classes for r in results])
    tp = np.concatenate([r.tp for r in results])
    # by class, then descending score; both sorts stable, so ties keep image order (COCOeval's)
    order = np.argsort(-scores, kind="stable")
    order = order[np.argsort(classes[order], kind="stable")]
    scores, classes, tp = scores[order], classes[order], tp[order]
    starts = np.searchsorted(classes, class_ids, side="left")
    ends = np.searchsorted(classes, class_ids, side="right")

    k = len(class_ids)
    pr_samples = np.zeros((k, len(IOU_THRESHOLDS), len(RECALL_POINTS)))
    p_curve, r_curve = np.zeros((k, len(CONF_POINTS))), np.zeros((k, len(CONF_POINTS)))
    for i, (c, s, e) in enumerate(zip(class_ids, starts, ends, strict=True)):
        pr_samples[i] = precision_at_recall_points(tp[s:e], instances[c])
        p_curve[i], r_curve[i] = pr_over_confidence(scores[s:e], tp[s:e, 0], instances[c])
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + 1e-16)
    best = int(smooth(f1_curve.mean(0), F1_SMOOTH).argmax())
    return BoxMetrics(
        nc=nc,
        ap_class_index=class_ids,
        all_ap=pr_samples.mean(2),
        p=p_curve[:, best],
        r=r_curve[:, best],
        f1=f1_curve[:, best],
        conf=float(CONF_POINTS[best]),
        instances=instances,
        images=images,
        pr_curve=pr_samples[:, 0],
        p_curve=p_curve,
        r_curve=r_curve,
        f1_curve=f1_curve,
    )


class ConfusionMatrix:
    """(nc + 1, nc + 1) counts; rows = predicted class, columns = true class, index nc = background.

    Per image, detections with score > ``conf`` take, in descending score order, the unmatched
    GT of highest IoU > ``iou`` whatever its class (so confusions between classes show).
    Unmatched GT count in the background row (missed), unmatched detections in the background
    column (false alarms).
    """

    def __init__(self, nc: int, conf: float = 0.25, iou: float = 0.45):
        self.nc, self.conf, self.iou = nc, conf, iou
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def process(
        self,
        boxes_xyxy: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        gt_boxes_xyxy: np.ndarray,
        gt_classes: np.ndarray,
    ) -> None:
        keep = scores > self.conf
        order = np.argsort(-scores[keep], kind="stable")
        boxes_xyxy, classes = boxes_xyxy[keep][order], classes[keep][order]
        iou = _iou_np(boxes_xyxy, gt_boxes_xyxy)
        gt_of_det = greedy_match(iou, np.array([np.nextafter(self.iou, 2.0)]))[0]  # strictly > iou
        matched = gt_of_det >= 0
        np.add.at(self.matrix, (classes[matched], gt_classes[gt_of_det[matched]]), 1)
        np.add.at(self.matrix, (classes[~matched], self.nc), 1)
        missed = np.ones(len(gt_classes), dtype=bool)
        missed[gt_of_det[matched]] = False
        np.add.at(self.matrix, (self.nc, gt_classes[missed]), 1)

    def normalized(self) -> np.ndarray:
        """Each column (true class) divided by its total."""
        return self.matrix / (self.matrix.sum(0, keepdims=True) + 1e-9)


class DetectionEvaluator:
    """Accumulates images, then computes the metrics (detectron2's reset / process / compute).

    Boxes of detections and GT must be in the same pixels (the validator uses original-image
    pixels, as COCO does). ``max_det`` is COCOeval's maxDets: per image and class.
    """

    def __init__(self, nc: int, max_det: int = 100, confusion: ConfusionMatrix | None = None):
        self.nc, self.max_det, self.confusion = nc, max_det, confusion
        self.results: list[ImageResult] = []

    def reset(self) -> None:
        self.results = []
        if self.confusion is not None:
            self.confusion.matrix[:] = 0

    def process(
        self,
        detections: Detections,
        gt_boxes_xyxy: torch.Tensor | np.ndarray,
        gt_classes: torch.Tensor | np.ndarray,
    ) -> None:
        """Add one image: its detections and its (G, 4) GT boxes and (G,) classes."""
        boxes = _np(detections.boxes_xyxy, np.float64).reshape(-1, 4)
        scores = _np(detections.scores, np.float64)
        classes = _np(detections.classes, np.int64)
        gt_boxes = _np(gt_boxes_xyxy, np.float64).reshape(-1, 4)
        gt_cls = _np(gt_classes, np.int64)
        for what, ids in (("GT", gt_cls), ("detection", classes)):
            if len(ids) and (ids.min() < 0 or ids.max() >= self.nc):
                got = sorted(set(ids.tolist()))
                raise ValueError(f"{what} class ids must be in 0..{self.nc - 1}, got {got}")
        self.results.append(match_image(boxes, scores, classes, gt_boxes, gt_cls, self.max_det))
        if self.confusion is not None:
            self.confusion.process(boxes, scores, classes, gt_boxes, gt_cls)

    def compute(self) -> BoxMetrics:
        return box_metrics(self.results, self.nc)


@dataclass
class DetMetrics:
    """What a validation returns: ``box`` metrics plus run information (the reference's shape)."""

    box: BoxMetrics
    names: dict[int, str]
    speed: dict[str, float] = field(default_factory=dict)  # ms per image, by stage
    save_dir: Path | None = None
    confusion_matrix: ConfusionMatrix | None = None
    seen: int = 0  # images validated

    keys = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)")

    @property
    def fitness(self) -> float:
        """What picks best.pt and drives early stopping: 0.1 * mAP50 + 0.9 * mAP50-95."""
        return 0.1 * self.box.map50 + 0.9 * self.box.map

    @property
    def maps(self) -> np.ndarray:
        return self.box.maps

    @property
    def results_dict(self) -> dict[str, float]:
        values = dict(zip(self.keys, self.box.mean_results(), strict=True))
        return {**values, "fitness": self.fitness}

    def summary(self, decimals: int = 5) -> list[dict[str, str | int | float]]:
        """One dict per class with labels (the rows of the printed table), as the reference's:
        Class, Images (containing it), Instances, Box-P, Box-R, Box-F1, mAP50, mAP50-95."""
        box = self.box
        rows = []
        for k, c in enumerate(box.ap_class_index.tolist()):
            p, r, ap50, ap = box.class_result(k)
            values = {"Box-P": p, "Box-R": r, "Box-F1": float(box.f1[k]), "mAP50": ap50, "mAP50-95": ap}
            rows.append(
                {
                    "Class": self.names.get(c, str(c)),
                    "Images": int(box.images[c]),
                    "Instances": int(box.instances[c]),
                    **{key: round(v, decimals) for key, v in values.items()},
                }
            )
        return rows

    def to_csv(self, decimals: int = 5) -> str:
        """``summary()`` as CSV text: a header line, then one line per class."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.summary(decimals))
        return out.getvalue()

    def to_json(self, decimals: int = 5) -> str:
        """``summary()`` as a JSON list of objects."""
        return json.dumps(self.summary(decimals), indent=2)
