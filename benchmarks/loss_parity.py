"""Compare yoloforge's DetectionLoss (and assigner) with the reference trainer's, on random head maps.

Run in the separate environment where the reference is installed (never imported by yoloforge/tests):
    YOLO_OFFLINE=1 PYTHONPATH=. /tmp/peer/bin/python benchmarks/loss_parity.py
Add --time for the wall time of both (CPU, one thread). Prints, for several random batches,
both (box, cls, dfl) triples, the largest relative difference,
whether the foreground masks agree, and the gradients' largest difference.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch
from ultralytics.utils.loss import v8DetectionLoss
from ultralytics.utils.tal import TaskAlignedAssigner as RefAssigner

from yoloforge.boxes import make_anchors, xyxy_to_cxcywh
from yoloforge.loss.assigner import TaskAlignedAssigner, pad_targets
from yoloforge.loss.loss import DetectionLoss
from yoloforge.structures import Batch

REG_MAX = 16
STRIDES = (8, 16, 32)


class _FakeDetect(torch.nn.Module):
    """Just the attributes the reference loss reads from a model."""

    def __init__(self, nc: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        head = SimpleNamespace(stride=torch.tensor(STRIDES, dtype=torch.float32), nc=nc, reg_max=REG_MAX)
        self.model = [head]
        self.args = SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)


def random_batch(gen: torch.Generator, b: int, size: int, max_gt: int) -> Batch:
    classes, boxes, idx = [], [], []
    for i in range(b):
        n = int(torch.randint(0, max_gt + 1, (1,), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * size * 0.8
        wh = torch.rand(n, 2, generator=gen) * size * 0.5 + 2
        boxes.append(torch.cat((xy, (xy + wh).clamp(max=size)), 1))
        classes.append(torch.randint(0, 3, (n,), generator=gen))
        idx.append(torch.full((n,), i))
    return Batch(
        images=torch.zeros(b, 3, size, size, dtype=torch.uint8),
        classes=torch.cat(classes),
        boxes_xyxy=torch.cat(boxes),
        batch_idx=torch.cat(idx),
    )


def compare(seed: int, nc: int, b: int, size: int, max_gt: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    # odd seeds: flat distributions (boxes of ~15 cells a side) and confident-ish classes, so that
    # IoUs are larger and the sum of target scores exceeds 1; even seeds: noisy maps
    scale, cls_bias = (0.1, 1.0) if seed % 2 else (2.0, -4.0)
    feats = []
    for s in STRIDES:
        f = torch.randn(b, 4 * REG_MAX + nc, size // s, size // s, generator=gen) * scale
        f[:, 4 * REG_MAX :] += cls_bias
        feats.append(f.requires_grad_())
    batch = random_batch(gen, b, size, max_gt)

    ours = DetectionLoss(nc, REG_MAX, STRIDES)(feats, batch)
    ours.total.backward()
    grads_ours = [f.grad.clone() for f in feats]
    for f in feats:
        f.grad = None

    ref_loss = v8DetectionLoss(_FakeDetect(nc))
    flat = torch.cat([f.flatten(2) for f in feats], 2)
    preds = {"boxes": flat[:, : 4 * REG_MAX], "scores": flat[:, 4 * REG_MAX :], "feats": feats}
    ref_batch = {
        "batch_idx": batch.batch_idx.float(),
        "cls": batch.classes.float()[:, None],
        "bboxes": xyxy_to_cxcywh(batch.boxes_xyxy) / size,
    }
    ref_total, ref_parts = ref_loss(preds, ref_batch)
    ref_total.sum().backward()
    ref_parts = torch.stack(list(ref_parts.values()))
    grad_diff = max((g - f.grad).abs().max().item() for g, f in zip(grads_ours, feats, strict=True))
    rel = ((ours.parts - ref_parts).abs() / ref_parts.abs().clamp(min=1e-6)).max().item()
    print(
        f"seed {seed}: ours {ours.parts.tolist()}  reference {ref_parts.tolist()}  "
        f"max rel diff {rel:.2e}  max grad diff {grad_diff:.2e}"
    )
    return rel


def compare_assigner(seed: int, nc: int, b: int, size: int, max_gt: int) -> bool:
    """Predicted boxes of plausible sizes around each anchor: IoUs are large, many positives."""
    gen = torch.Generator().manual_seed(seed)
    batch = random_batch(gen, b, size, max_gt)
    shapes = [(size // s, size // s) for s in STRIDES]
    points, strides = make_anchors(shapes, list(STRIDES))
    anchors_px = points * strides  # (A, 2)
    dist = (torch.rand(b, len(points), 4, generator=gen) * 6 + 0.5) * strides  # (B, A, 4) pixels
    pd_boxes = torch.cat((anchors_px - dist[..., :2], anchors_px + dist[..., 2:]), -1)
    pd_scores = torch.rand(b, len(points), nc, generator=gen)
    targets = pad_targets(batch.batch_idx, batch.classes, batch.boxes_xyxy, b)

    ours = TaskAlignedAssigner(nc, min_side=STRIDES[1])(pd_scores, pd_boxes, anchors_px, targets)
    ref = RefAssigner(topk=10, num_classes=nc, alpha=0.5, beta=6.0, stride=list(STRIDES))
    mask_gt = targets.mask[..., None].float()
    _, ref_boxes, ref_scores, ref_fg, ref_idx = ref(
        pd_scores, pd_boxes, anchors_px, targets.classes[..., None].float(), targets.boxes_xyxy, mask_gt
    )
    same = (
        torch.equal(ours.fg_mask, ref_fg)
        and torch.equal(ours.gt_idx[ref_fg], ref_idx[ref_fg].long())
        and torch.allclose(ours.scores, ref_scores.float(), atol=1e-6)
        and torch.allclose(ours.boxes_xyxy[ref_fg], ref_boxes[ref_fg])
    )
    print(
        f"assigner seed {seed}: {int(ref_fg.sum())} positives, target score sum "
        f"{float(ref_scores.sum()):.2f} (ours {float(ours.scores.sum()):.2f}), identical: {same}"
    )
    return same


def time_both(b: int, size: int, nc: int, max_gt: int, repeats: int) -> None:
    """Median wall time of loss forward + backward, ours and the reference's, on the same inputs."""
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(b, 4 * REG_MAX + nc, size // s, size // s, generator=gen) for s in STRIDES]
    for f in feats:
        f[:, 4 * REG_MAX :] -= 6.0  # class logits near the head's initial bias
        f.requires_grad_()
    batch = random_batch(gen, b, size, max_gt)
    ours = DetectionLoss(nc, REG_MAX, STRIDES)
    ref = v8DetectionLoss(_FakeDetect(nc))
    flat = lambda: torch.cat([f.flatten(2) for f in feats], 2)  # noqa: E731
    ref_batch = {
        "batch_idx": batch.batch_idx.float(),
        "cls": batch.classes.float()[:, None],
        "bboxes": xyxy_to_cxcywh(batch.boxes_xyxy) / size,
    }

    def run_ours() -> None:
        ours(feats, batch).total.backward()

    def run_ref() -> None:
        x = flat()
        preds = {"boxes": x[:, : 4 * REG_MAX], "scores": x[:, 4 * REG_MAX :], "feats": feats}
        ref(preds, ref_batch)[0].sum().backward()

    runs = {"yoloforge": run_ours, "reference": run_ref}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):  # interleaved, so that load from other processes hits both alike
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    for name, t in times.items():
        print(
            f"{name:>9}: loss forward + backward, batch {b}, imgsz {size}, nc {nc}, "
            f"{len(batch.classes)} GTs: median {statistics.median(t) * 1000:.1f} ms of {repeats}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--time", action="store_true", help="also time both at batch 8, imgsz 640, nc 80")
    args = parser.parse_args()
    torch.set_num_threads(1)
    worst = max(compare(seed, nc=3, b=4, size=args.size, max_gt=8) for seed in range(args.runs))
    print(f"worst relative difference of (box, cls, dfl) over {args.runs} batches: {worst:.2e}")
    same = [compare_assigner(seed, nc=3, b=4, size=args.size, max_gt=8) for seed in range(args.runs)]
    print(f"assignments identical in {sum(same)}/{len(same)} batches")
    if args.time:
        time_both(b=8, size=640, nc=80, max_gt=20, repeats=9)


if __name__ == "__main__":
    main()
