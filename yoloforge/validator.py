"""Validation: run a model over a loader, post-process, measure (metrics.py), print, save, plot.

Used every epoch by the trainer (plots off, with its loss to get validation losses) and by
``YOLO(w).val()`` / ``yoloforge val``. No training state lives here.

Model contract: ``model.features(images)`` -> raw head maps (what the loss takes) and
``model.decode(maps)`` -> (B, 4 + nc, A) cx, cy, w, h in input pixels + sigmoid scores. A model
without ``features`` (an exported-model wrapper) is simply called and must return the decoded tensor.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from yoloforge.boxes import non_max_suppression
from yoloforge.distributed import Distributed
from yoloforge.metrics import CONF_POINTS, RECALL_POINTS, ConfusionMatrix, DetectionEvaluator, DetMetrics
from yoloforge.run_reader import CONFUSION_JSON, write_confusion
from yoloforge.settings import ValSettings
from yoloforge.structures import Batch, Detections, Letterbox

log = logging.getLogger(__name__)

HEADER = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "Box(P", "R", "mAP50", "mAP50-95)")
ROW = "%22s" + "%11i" * 2 + "%11.3g" * 4
BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"
STAGES = ("preprocess", "inference", "loss", "postprocess")
PLOT_BATCHES = 3  # val_batch0..2_{labels,pred}.jpg
PLOT_CONF = 0.25  # predictions drawn on val_batch*_pred.jpg (else an image's top PLOT_TOP)
PLOT_TOP = 3


@dataclass
class ValResult:
    metrics: DetMetrics | None  # None on ranks other than 0 (several processes)
    losses: torch.Tensor | None  # (3,) mean box, cls, dfl loss over batches; None without a criterion
    speed: dict[str, float]  # ms per image for each of STAGES


class StageTimer:
    """Seconds spent per stage; waits for CUDA so each stage is charged its own GPU work."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[stage] += time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def ms_per_image(self, images: int) -> dict[str, float]:
        return {k: 1000 * v / max(images, 1) for k, v in self.seconds.items()}


def coco_json_rows(path: str, detections: Detections) -> list[dict]:
    """COCO results entries of one image: image_id = file stem (int when numeric), category_id =
    class index, bbox = [x, y, w, h] in the pixels of ``detections`` (3 decimals), score (5)."""
    stem = Path(path).stem
    image_id: int | str = int(stem) if stem.isnumeric() else stem
    boxes = detections.boxes_xyxy.double().cpu()
    boxes[:, 2:] -= boxes[:, :2]
    return [
        {"image_id": image_id, "category_id": c, "bbox": [round(v, 3) for v in box], "score": round(s, 5)}
        for box, c, s in zip(
            boxes.tolist(), detections.classes.tolist(), detections.scores.double().tolist(), strict=True
        )
    ]


def for_display(detections: Detections) -> Detections:
    """The detections worth drawing: score >= PLOT_CONF, or the image's best PLOT_TOP if none is."""
    keep = detections.scores >= PLOT_CONF
    if not keep.any():
        keep = torch.arange(len(detections), device=keep.device) < PLOT_TOP  # best first already
    return Detections(detections.boxes_xyxy[keep], detections.scores[keep], detections.classes[keep])


def _input_dtype(model: torch.nn.Module) -> torch.dtype:
    """float16 for a model converted to half, else float32 (autocast handles half=True)."""
    first = next(model.parameters(), None) if hasattr(model, "parameters") else None
    return torch.float16 if first is not None and first.dtype == torch.float16 else torch.float32


def _memory_format(model: torch.nn.Module) -> torch.memory_format:
    """channels_last when the model's convolutions are (CPU training and CPU validation make them
    so): the batch then goes in that layout too, not converted at the first convolution."""
    modules = model.modules() if isinstance(model, torch.nn.Module) else iter(())
    conv = next((m for m in modules if isinstance(m, torch.nn.Conv2d)), None)
    if conv is not None and conv.weight.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _to_original(letterbox: Letterbox | None, boxes_xyxy: torch.Tensor) -> torch.Tensor:
    return boxes_xyxy if letterbox is None else letterbox.to_original(boxes_xyxy)


class Validator:
    """Measures a detector on a loader of ``Batch`` objects (the model contract: module docstring).

    ``names`` (list or dict by class id) sets the class count. ``criterion``: the trainer's
    DetectionLoss, called as ``criterion(feats, batch).parts`` for validation losses.
    ``save_dir`` is needed when ``plots`` or ``save_json``.

    ``dist`` (several processes): each rank runs its share of the batches, as
    ``loader.build_val_loader(rank=, world_size=)`` deals them (rank r: batches r, r + w, ...); rank 0
    gathers the per-image results, puts them back in one-process order and computes the metrics,
    identical to one process's; the loss sums are added over the ranks, so every rank gets the
    validation losses. Only rank 0 prints, plots and writes.
    """

    def __init__(
        self,
        names: Sequence[str] | Mapping[int, str],
        *,
        conf: float = ValSettings.conf,
        iou: float = ValSettings.iou,
        max_det: int = ValSettings.max_det,
        single_cls: bool = ValSettings.single_cls,
        plots: bool = ValSettings.plots,
        save_json: bool = ValSettings.save_json,
        save_dir: str | Path | None = None,
        verbose: bool = ValSettings.verbose,
        half: bool = ValSettings.half,
        criterion: Callable | None = None,
        progress: bool = True,
        dist: Distributed | None = None,
    ):
        names = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
        self.names = {0: "item" if len(names) != 1 else names[0]} if single_cls else names
        self.nc = len(self.names)
        self.conf, self.iou, self.max_det, self.single_cls = conf, iou, max_det, single_cls
        self.plots, self.save_json, self.verbose, self.half = plots, save_json, verbose, half
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.criterion, self.progress = criterion, progress
        self.dist = dist or Distributed()
        if (plots or save_json) and self.save_dir is None:
            raise ValueError("Validator: plots=True or save_json=True needs a save_dir")

    def run(
        self, model: torch.nn.Module, loader: Iterable[Batch | None], device: torch.device | str
    ) -> ValResult:
        device = torch.device(device)
        confusion = ConfusionMatrix(self.nc) if self.plots else None
        evaluator = DetectionEvaluator(self.nc, self.max_det, confusion)
        timer = StageTimer(device)
        layout = (_input_dtype(model), _memory_format(model))  # the batches' dtype and layout, looked up once
        loss_sum, n_batches, seen, json_rows = torch.zeros(3, device=device), 0, 0, []
        starts: list[tuple[int, int]] = []  # (results, json rows) before each batch: for merging ranks
        main = self.dist.is_main
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        if not self.progress and main:
            log.info(HEADER)  # otherwise the bar shows it
        try:
            bar = tqdm(loader, desc=HEADER, bar_format=BAR_FORMAT, disable=not (self.progress and main))
            for i, batch in enumerate(bar):
                starts.append((len(evaluator.results), len(json_rows)))
                if batch is None:  # every image of it failed to decode (the dataset warned)
                    continue
                with torch.no_grad():
                    dets, dets_original, losses = self._step(model, batch, device, timer, layout)
                for j, det in enumerate(dets_original):
                    self._update(evaluator, batch, j, det, json_rows)
                if self.plots and main and i < PLOT_BATCHES:
                    self._plot_batch(i, batch, dets)
                if losses is not None:
                    loss_sum += losses
                n_batches, seen = n_batches + 1, seen + len(batch)
        finally:
            if hasattr(model, "train"):
                model.train(was_training)
        speed = timer.ms_per_image(seen)  # this rank's
        if self.dist.enabled:
            totals = self.dist.sum(torch.cat((loss_sum, loss_sum.new_tensor([n_batches, seen]))))
            loss_sum, n_batches, seen = totals[:3], int(totals[3]), int(totals[4])
            json_rows = self._merge_ranks(evaluator, json_rows, starts)
        losses = (loss_sum / max(n_batches, 1)).cpu() if self.criterion is not None else None
        if not main:
            return ValResult(None, losses, speed)
        metrics = DetMetrics(evaluator.compute(), self.names, speed, self.save_dir, evaluator.confusion, seen)
        self._print(metrics)
        self._save(metrics, json_rows)
        return ValResult(metrics, losses, speed)

    def _merge_ranks(
        self, evaluator: DetectionEvaluator, json_rows: list[dict], starts: list[tuple[int, int]]
    ) -> list[dict]:
        """Rank 0: every rank's images in ``evaluator`` (and JSON rows) in one-process order, the
        confusion matrices added. Global batch g is local batch g // w of rank g % w."""
        bounds = [*starts, (len(evaluator.results), len(json_rows))]
        pairs = zip(bounds, bounds[1:], strict=False)  # one per batch of this rank (a rank may have none)
        mine = [(evaluator.results[r0:r1], json_rows[j0:j1]) for (r0, j0), (r1, j1) in pairs]
        matrix = evaluator.confusion.matrix if evaluator.confusion is not None else None
        ranks = self.dist.gather((mine, matrix))
        if ranks is None:
            return json_rows
        w = len(ranks)
        n = sum(len(batches) for batches, _ in ranks)
        ordered = [ranks[g % w][0][g // w] for g in range(n)]
        evaluator.results = [r for results, _ in ordered for r in results]
        if evaluator.confusion is not None:
            evaluator.confusion.matrix = sum(m for _, m in ranks)
        return [row for _, rows in ordered for row in rows]

    # ------------------------------------------------------------------------------------------
    # one batch

    def _step(
        self,
        model: torch.nn.Module,
        batch: Batch,
        device: torch.device,
        timer: StageTimer,
        layout: tuple[torch.dtype, torch.memory_format],
    ) -> tuple[list[Detections], list[Detections], torch.Tensor | None]:
        """Detections in input and in original pixels, and the (3,) loss parts (None without criterion)."""
        dtype, memory_format = layout
        with timer("preprocess"):
            on_device = batch.to(device, non_blocking=True)
            images = on_device.images.to(dtype) / 255  # (B, 3, H, W) in [0, 1]
            images = images.contiguous(memory_format=memory_format)
        amp = torch.autocast(device.type, dtype=torch.float16, enabled=self.half and device.type == "cuda")
        with timer("inference"), amp:
            feats, preds = self._infer(model, images)
        losses = None
        if self.criterion is not None:
            if feats is None:
                raise ValueError("Validator: validation losses need a model with features() (not an export)")
            with timer("loss"):
                losses = self.criterion(feats, on_device).parts.detach().float()
        with timer("postprocess"):
            dets = self._postprocess(preds)
            letterboxes = batch.letterboxes or [None] * len(dets)
            dets_original = [
                Detections(_to_original(lb, d.boxes_xyxy), d.scores, d.classes)
                for lb, d in zip(letterboxes, dets, strict=True)
            ]
        return dets, dets_original, losses

    @staticmethod
    def _infer(model: torch.nn.Module, images: torch.Tensor) -> tuple[list | None, torch.Tensor]:
        """(raw maps or None, (B, 4 + nc, A) float32 decoded output)."""
        if hasattr(model, "features"):
            feats = model.features(images)
            return feats, model.decode(feats).float()
        preds = model(images)
        if isinstance(preds, list | tuple):
            preds = preds[0]
        return None, torch.as_tensor(preds).float()

    def _postprocess(self, preds: torch.Tensor) -> list[Detections]:
        """(B, 4 + nc, A) -> per image detections in input pixels (multi-label NMS, as the reference)."""
        if not self.single_cls and preds.shape[1] - 4 != self.nc:
            raise ValueError(
                f"the model predicts {preds.shape[1] - 4} classes but the dataset has {self.nc}; "
                "validate on the dataset the model was trained for (or single_cls=True)"
            )
        dets = non_max_suppression(
            preds, self.conf, self.iou, self.max_det, agnostic=self.single_cls, multi_label=True
        )
        if self.single_cls:
            dets = [Detections(d.boxes_xyxy, d.scores, torch.zeros_like(d.classes)) for d in dets]
        return dets

    def _update(
        self, evaluator: DetectionEvaluator, batch: Batch, i: int, det: Detections, json_rows: list[dict]
    ) -> None:
        """Image ``i`` of the batch into the evaluator, both sides in original-image pixels."""
        mine = batch.batch_idx == i
        gt_classes = batch.classes[mine]
        if self.single_cls:
            gt_classes = torch.zeros_like(gt_classes)
        letterbox = batch.letterboxes[i] if batch.letterboxes else None
        gt_boxes = _to_original(letterbox, batch.boxes_xyxy[mine].float())
        evaluator.process(det, gt_boxes, gt_classes)
        if self.save_json:
            json_rows.extend(coco_json_rows(batch.paths[i], det))

    def _plot_batch(self, i: int, batch: Batch, dets: list[Detections]) -> None:
        from yoloforge.draw import save_batch_grid

        save_batch_grid(batch, self.save_dir / f"val_batch{i}_labels.jpg", self.names)
        shown = [for_display(d) for d in dets]
        save_batch_grid(batch, self.save_dir / f"val_batch{i}_pred.jpg", self.names, detections=shown)

    # ------------------------------------------------------------------------------------------
    # the end: table, files, plots

    def _print(self, metrics: DetMetrics) -> None:
        box = metrics.box
        log.info(ROW % ("all", metrics.seen, box.instances.sum(), *box.mean_results()))
        if box.instances.sum() == 0:
            log.warning("no labels found in the validation set: metrics need labelled images")
        if self.verbose and self.nc > 1:
            for k, c in enumerate(box.ap_class_index):
                log.info(ROW % (self.names[c], box.images[c], box.instances[c], *box.class_result(k)))
        if self.verbose:
            s = metrics.speed
            log.info(
                "Speed: %.1fms preprocess, %.1fms inference, %.1fms loss, %.1fms postprocess per image",
                *(s[k] for k in STAGES),
            )

    def _save(self, metrics: DetMetrics, json_rows: list[dict]) -> None:
        if self.save_json:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            path = self.save_dir / "predictions.json"
            path.write_text(json.dumps(json_rows))
            log.info("Saving %s (%d predictions)", path, len(json_rows))
        if self.plots:
            self._plot_metrics(metrics)

    def _plot_metrics(self, metrics: DetMetrics) -> None:
        from yoloforge import plots  # matplotlib loads only when plots are asked for

        box, out = metrics.box, self.save_dir
        names = [self.names[c] for c in range(self.nc)]
        for normalize, file in ((False, "confusion_matrix.png"), (True, "confusion_matrix_normalized.png")):
            plots.plot_confusion_matrix(metrics.confusion_matrix.matrix, names, out / file, normalize)
        cm = metrics.confusion_matrix  # its numbers beside the pictures, for the run report
        write_confusion(out / CONFUSION_JSON, cm.matrix, names, cm.conf, cm.iou)
        rows = [self.names[c] for c in box.ap_class_index]
        plots.plot_pr_curve(RECALL_POINTS, box.pr_curve, box.ap50, rows, out / "PR_curve.png")
        for values, file, label in (
            (box.f1_curve, "F1_curve.png", "F1"),
            (box.p_curve, "P_curve.png", "Precision"),
            (box.r_curve, "R_curve.png", "Recall"),
        ):
            plots.plot_mc_curve(CONF_POINTS, values, rows, out / file, label)
