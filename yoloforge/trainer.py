"""The trainer: set-up, then epochs of (train, validate, save), then a final validation.

Reading order: ``fit`` is the whole story; each step it calls is a short method below it.
results.csv, results.png, loggers and reports are callbacks (yoloforge.callbacks), called on rank 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from yoloforge import results_csv
from yoloforge.callbacks import Callback, Callbacks, Step, standard_callbacks
from yoloforge.checkpoint import Checkpoint, save_checkpoint, state_to
from yoloforge.data.config import DataConfig, DatasetError, load_data_config
from yoloforge.data.dataset import TrainDataset, ValDataset
from yoloforge.data.letterbox import stride_multiple
from yoloforge.data.loader import build_train_loader, build_val_loader, plan_cpu
from yoloforge.data.scan import scan_split
from yoloforge.device import describe, select_device
from yoloforge.distributed import Distributed, DistributedError, process_group, quiet_unless_main
from yoloforge.loss.loss import DetectionLoss
from yoloforge.model.detector import STRIDES
from yoloforge.model.weights import transfer_state
from yoloforge.model.zoo import build_model
from yoloforge.optim import ModelEMA, Schedule, auto_iterations, build_optimizer, optimizer_step
from yoloforge.precision import training_precision
from yoloforge.run_reader import read_run
from yoloforge.runs import RunFolder
from yoloforge.settings import TrainSettings, to_flat_dict
from yoloforge.structures import Batch
from yoloforge.validator import Validator

log = logging.getLogger(__name__)

BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"


class TrainingDiverged(RuntimeError):
    """The loss, the weights or the validation losses became NaN or infinite; the last good
    weights stay in last.pt and best.pt."""


@dataclass
class StartingPoint:
    """Where training starts: an architecture, optional pretrained weights, or a run to resume."""

    family: str
    size: str
    source: str  # what the user passed as model=
    weights: dict[str, torch.Tensor] | None = None  # pretrained, in our key names
    resume: Checkpoint | None = None
    resume_dir: Path | None = None  # run folder of the resumed last.pt


@dataclass
class TrainState:
    """What changes as training runs, and what a resume restores."""

    epoch: int = 0  # next epoch to run (0-based)
    best_fitness: float | None = None
    epochs_without_improvement: int = 0
    rows: list[dict[str, float]] = field(default_factory=list)
    elapsed: float = 0.0  # seconds of training before this process (resume)

    def update(self, epoch: int, fitness: float | None) -> bool:
        """Epoch ``epoch`` (0-based) is done with this ``fitness`` (None: not validated);
        True when it is the best so far (ties count: the later epoch wins)."""
        self.epoch = epoch + 1
        if fitness is None:
            return False
        improved = self.best_fitness is None or fitness >= self.best_fitness
        if improved:
            self.best_fitness, self.epochs_without_improvement = fitness, 0
        else:
            self.epochs_without_improvement += 1
        return improved

    def out_of_patience(self, patience: int) -> bool:
        """True when ``patience`` > 0 validated epochs in a row brought no improvement."""
        return patience > 0 and self.epochs_without_improvement >= patience


class Trainer:
    def __init__(
        self,
        settings: TrainSettings,
        start: StartingPoint,
        callbacks: list[Callback] | None = None,
    ):
        self.settings = settings
        self.start = start
        self.callbacks = Callbacks([*standard_callbacks(settings), *(callbacks or [])])  # rank 0 calls them
        self.dist = Distributed()  # under torchrun: this process's rank, set by fit()
        self.state = TrainState()
        self.save_dir: Path
        self.final_metrics = None
        self._signalled = False  # SIGINT/SIGTERM seen (several processes: acted on by all together)

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): writes the run folder, prints, fires callbacks."""
        return self.dist.is_main

    # ------------------------------------------------------------------------------------------
    def fit(self):
        """Train, validate every epoch, keep last.pt and best.pt, then validate best.pt.

        However it ends, the run folder is unlocked again, and torch's thread count, cudnn flags
        and the global random states are as they were before.
        """
        with _process_state_kept(), contextlib.ExitStack() as held:
            self._setup(held)
            s = self.settings
            log.info(
                "Image sizes %d train, %d val\nUsing %d dataloader workers\nLogging results to %s\n"
                "Starting training for %d epochs...",
                s.imgsz, s.imgsz, self.workers, self.save_dir, s.epochs,
            )  # fmt: skip
            t0 = time.time() - self.state.elapsed
            try:
                for epoch in range(self.state.epoch, s.epochs):
                    self._maybe_close_mosaic(epoch)
                    train_losses, lrs = self._train_epoch(epoch)
                    final_epoch = epoch + 1 == s.epochs
                    metrics, val_losses = self._validate_epoch(final_epoch)
                    self._check_finite(epoch, val_losses if metrics is not None else None)
                    row = self._record(epoch, time.time() - t0, train_losses, metrics, val_losses, lrs)
                    self.callbacks.epoch_row(self, row)  # results.csv: before the checkpoints
                    stop = self.dist.any(self._after_epoch(epoch, metrics))  # rank 0 decides
                    self.callbacks.epoch_end(self, row)
                    if stop:
                        break
                hours = (time.time() - t0) / 3600
                log.info("\n%d epochs completed in %.3f hours.", self.state.epoch - self._first_epoch, hours)
                self._report_weights()
                self.final_metrics = self._final_validation()
            except BaseException as error:
                try:
                    if isinstance(error, KeyboardInterrupt):
                        self._on_interrupt()
                finally:
                    self.callbacks.fit_error(self, error)
                raise
            self.callbacks.fit_end(self, self.final_metrics)
            return self.final_metrics

    # ------------------------------------------------------------------------------------------
    # set-up

    def _release_loaders(self) -> None:
        """Drop the loaders: their persistent worker processes shut down with them."""
        if getattr(self, "train_loader", None) is not None:
            self.train_loader.close()
        self.train_loader = self.val_loader = None
        self.validator = None
        gc.collect()  # the workers' iterator may sit in a reference cycle; end them now

    def _setup(self, held: contextlib.ExitStack) -> None:
        """Everything before the first epoch. The run folder stays locked until ``held`` closes;
        when set-up fails in a folder this run made, the folder is removed again."""
        s = self.settings = _stride_imgsz(self.settings)  # before anything reads imgsz
        self.device = select_device(s.device)
        self.dist = held.enter_context(process_group(self.device))
        held.enter_context(quiet_unless_main(self.dist))
        if self.dist.enabled:
            held.enter_context(_signals_as_flag(self))
        s = self.settings = self._sized_batch(s)  # batch=-1 / 0.7: measured on the GPU, then an int
        self.batch = _rank_batch(s.batch, self.dist.world_size)
        self.cpu_plan = plan_cpu(self.device, s.workers, self.batch)
        if "OMP_NUM_THREADS" not in os.environ:  # an explicit user choice wins over the plan
            torch.set_num_threads(self.cpu_plan.torch_threads)
        log.info(describe(self.device))
        _seed_everything(s.seed, s.deterministic)
        # what args.yaml and the checkpoints keep; task and mode first, as the reference writes them
        self.args = {"task": "detect", "mode": "train", **to_flat_dict(s)}
        log.info("%s", ", ".join(f"{k}={v}" for k, v in self.args.items()))
        self.run = self._shared_run_folder()
        held.callback(self._release_loaders)  # no loader worker outlives fit(): tune runs many
        if self.run is None:  # ranks other than 0 create nothing
            self._build_parts()
            return
        held.callback(self.run.release)
        try:
            self._build_parts()
            self.callbacks.train_start(self)
        except BaseException:
            self.run.release()
            self.run.discard()
            raise

    def _sized_batch(self, s: TrainSettings) -> TrainSettings:
        """Settings whose batch is a number of images: batch=-1 (60% of the GPU memory) and
        batch=0.7 (that fraction) are measured on each rank's GPU (autobatch.py) and the smallest
        answer times the processes becomes the global batch."""
        if isinstance(s.batch, int) and s.batch >= 1:
            return s
        from yoloforge import autobatch

        autobatch.check_device(s.batch, self.device)
        fraction = autobatch.DEFAULT_FRACTION if s.batch == -1 else float(s.batch)
        nc = 1 if s.single_cls else len(load_data_config(s.data).names)
        probe = build_model(self.start.family, self.start.size, nc=nc).to(self.device)
        mine = autobatch.autobatch(probe, s.imgsz, self.device, fraction, amp=s.amp)
        del probe
        every = self.dist.gather(mine)
        per_rank = self.dist.broadcast(min(every) if every is not None else None)
        return dataclasses.replace(s, batch=per_rank * self.dist.world_size)

    def _shared_run_folder(self) -> RunFolder | None:
        """Rank 0 claims and locks the run folder and tells the others its path; None on them."""
        run = None
        try:
            run = self._take_run_folder() if self.is_main else None
        finally:  # rank 0 failing still answers, so the others do not wait for it
            path = self.dist.broadcast(run.path if run is not None else None)
        if path is None:
            raise DistributedError("rank 0 could not take the run folder (its error is above)")
        self.save_dir, self.weights_dir = path, path / "weights"
        return run

    def _take_run_folder(self) -> RunFolder:
        """The run folder, locked by rank 0, without the temp files of writes a kill cut short."""
        s = self.settings
        if self.start.resume_dir is not None:
            run = RunFolder.resume(self.start.resume_dir)
        else:
            run = RunFolder.claim(s.project, s.name, s.exist_ok)
        if self.is_main:
            run.lock()
            removed = run.remove_stale_temps()
            if removed:
                log.info(
                    "Removed %d temp file(s) left by an interrupted write: %s",
                    len(removed),
                    ", ".join(str(p) for p in removed),
                )
        return run

    def _build_parts(self) -> None:
        s = self.settings
        if self.is_main:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
        self.data: DataConfig = load_data_config(s.data)
        self.names = list(self.data.names)
        if s.single_cls:
            self.names = ["item"]
        self._build_model()
        self._build_data()
        self._build_optimization()
        if self.start.resume is not None:
            self._restore(self.start.resume)
        self.train_model = self._wrap(self.model)
        self._first_epoch = self.state.epoch
        if self.is_main:
            (self.save_dir / "args.yaml").write_text(yaml.safe_dump(self.args, sort_keys=False))

    def _build_model(self) -> None:
        s, start = self.settings, self.start
        model = build_model(start.family, start.size, nc=len(self.names))
        if start.weights is not None and s.pretrained and start.resume is None:
            done, total = transfer_state(model, start.weights)
            log.info("Transferred %d/%d items from pretrained weights", done, total)
        log.info("%s", model.layer_table())
        log.info("%s", model.summary(imgsz=640))
        self.frozen = _freeze(model, s.freeze)
        self.precision = training_precision(self.device, s.amp)
        log.info("Training precision: %s", self.precision.describe())
        # unwrapped: what the EMA, checkpoints and validation read
        self.model = self.precision.model(model.to(self.device))

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls: DistributedDataParallel over several processes
        (built after a resume's restore: it copies rank 0's weights to every rank)."""
        cuda = self.device.type == "cuda"
        if self.settings.sync_bn and not (self.dist.enabled and cuda):
            log.info("sync_bn=True only acts with several CUDA processes; ignored here")
        if not self.dist.enabled:
            return model
        if self.settings.sync_bn and cuda:  # in place: the same parameters, the optimizer keeps them
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if cuda else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def _build_data(self) -> None:
        s = self.settings
        with self.dist.main_first():  # rank 0 writes the label caches, the others then read them
            train_records = scan_split(self.data.train, self.data.names, prefix="train").records
            val_records = scan_split(self.data.val, self.data.names, prefix="val").records
        if s.single_cls:
            train_records = [r.as_single_class() for r in train_records]
            val_records = [r.as_single_class() for r in val_records]
        if not train_records:
            raise DatasetError(f"{self.data.yaml_file}: no usable training images (see the problems above)")
        cache_ram = s.cache == "ram"
        self.train_set = TrainDataset(
            train_records,
            imgsz=s.imgsz,
            augment=s.augment,
            seed=s.seed,
            cache_ram=cache_ram,
            fraction=s.fraction,
            rect=s.rect,
            batch_size=self.batch,
            stride=int(self.model.stride.max()),
            rank=self.dist.rank,  # cache=ram keeps this rank's images only
            world_size=self.dist.world_size,
        )
        if s.rect:
            log.info("rect=True: rectangular training batches of similar aspect ratio, mosaic and mixup off")
        train_records = self.train_set.records
        self.workers = self.cpu_plan.workers
        self.train_loader = build_train_loader(
            self.train_set,
            batch=self.batch,
            workers=self.workers,
            seed=s.seed,
            device=self.device,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        # validation batches of twice this process's batch (as one process: its batch is the global
        # one), dealt whole to the ranks: rank 0 gets the metrics one process gets at that val batch
        rank, world = self.dist.rank, self.dist.world_size
        self.val_set = ValDataset(
            val_records, s.imgsz, batch_size=self.batch * 2, cache_ram=cache_ram, rank=rank, world_size=world
        )
        self.val_loader = build_val_loader(self.val_set, self.workers, self.device, rank, world)
        if s.plots and self.is_main:
            from yoloforge.plots import plot_labels

            classes = np.concatenate([r.classes for r in train_records]) if train_records else np.zeros(0)
            boxes = np.concatenate([r.boxes_cxcywhn for r in train_records]).reshape(-1, 4)
            path = self.save_dir / "labels.jpg"
            log.info("Plotting labels to %s... ", path)
            plot_labels(classes, boxes, self.names, path)

    def _build_optimization(self) -> None:
        s = self.settings
        iterations = auto_iterations(len(self.train_set), s.batch, s.optim.nbs, s.epochs)
        self.optimizer, resolved = build_optimizer(
            self.model, s.optim, nc=len(self.names), iterations=iterations, batch=s.batch
        )
        self.schedule = Schedule.build(s.optim, resolved, s.epochs, len(self.train_loader))
        self.last_opt_step = -1
        self.ema = ModelEMA(self.model)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.scaled)
        self.criterion = self._criterion(self.dist)
        self.validator = self._validator(plots=False, verbose=False, criterion=self._criterion(Distributed()))

    def _criterion(self, dist: Distributed) -> DetectionLoss:
        """The loss; ``dist`` normalises it over the ranks' batches (training, several processes)."""
        return DetectionLoss(
            nc=len(self.names),
            reg_max=self.model.reg_max,
            strides=tuple(int(x) for x in self.model.stride),
            gains=self.settings.loss,
            dist=dist,
        )

    def _validator(self, plots: bool, verbose: bool, criterion=None) -> Validator:
        s = self.settings
        return Validator(
            names=self.names, conf=s.conf, iou=s.iou, max_det=s.max_det, save_dir=self.save_dir,
            plots=plots, verbose=verbose, criterion=criterion, dist=self.dist,
        )  # fmt: skip

    def _restore(self, ckpt: Checkpoint) -> None:
        """Continue the run of ``ckpt``: weights, EMA, optimizer, epoch, best fitness, rows."""
        self.model.load_state_dict(ckpt.train_model or ckpt.model)
        self.ema.ema.load_state_dict(ckpt.model)
        self.ema.updates = ckpt.ema_updates
        if ckpt.optimizer is not None:
            self.optimizer.load_state_dict(ckpt.optimizer)
        rows = [r for r in read_run(self.save_dir).rows() if r["epoch"] <= ckpt.epoch + 1]
        self.state = TrainState(
            epoch=ckpt.epoch + 1,
            best_fitness=ckpt.best_fitness,
            rows=rows,
            elapsed=rows[-1]["time"] if rows else 0.0,
        )
        log.info(
            "Resuming training from %s from epoch %d to %d total epochs",
            self.start.source,
            ckpt.epoch + 2,
            self.settings.epochs,
        )

    # ------------------------------------------------------------------------------------------
    # one epoch

    def _maybe_close_mosaic(self, epoch: int) -> None:
        """Mosaic off for the last ``close_mosaic`` epochs; runs shorter than that keep it on."""
        close = self.settings.augment.close_mosaic
        first_plain = self.settings.epochs - close
        if close and first_plain >= 0 and epoch >= first_plain and self.train_set.mosaic:
            log.info("Closing dataloader mosaic")
            self.train_loader.close_mosaic()

    def _train_epoch(self, epoch: int) -> tuple[torch.Tensor, list[float]]:
        s, model = self.settings, self.model
        model.train()
        _keep_frozen_bn_eval(model, self.frozen)
        self.train_loader.set_epoch(epoch)
        nb = len(self.train_loader)
        self.schedule.start_epoch(self.optimizer, epoch)  # warmup overrides it for its first steps
        accumulate = self.schedule.accumulate
        mean_loss = torch.zeros(3)
        log.info(
            ("\n" + "%11s" * 7), "Epoch", "GPU_mem", "box_loss", "cls_loss", "dfl_loss", "Instances", "Size"
        )
        bar = tqdm(enumerate(self.train_loader), total=nb, bar_format=BAR_FORMAT, disable=not self.is_main)
        for i, batch in bar:
            step = i + nb * epoch
            if step <= self.schedule.warmup_steps:
                accumulate = self.schedule.warmup(self.optimizer, step, epoch)
            stepping = step - self.last_opt_step >= accumulate  # about nbs images per optimizer step
            parts = self._train_step(batch, epoch, i, sync=stepping)
            if stepping:
                optimizer_step(self.optimizer, self.scaler, model, max_norm=10.0)
                self.ema.update(model)
                self.last_opt_step = step
            mean_loss = (mean_loss * i + parts) / (i + 1)
            self.callbacks.step_end(self, Step(epoch, i, nb, parts))
            if self.is_main:  # this rank's losses; results.csv gets the mean over ranks
                bar.set_description(
                    ("%11s" * 2 + "%11.4g" * 5)
                    % (
                        f"{epoch + 1}/{s.epochs}",
                        _gpu_mem(self.device),
                        *mean_loss.tolist(),
                        batch.classes.shape[0],
                        batch.images.shape[-1],
                    )
                )
                if s.plots and epoch == self._first_epoch and i < 3:
                    self._plot_train_batch(batch, i)
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        if self.dist.enabled:
            mean_loss = self.dist.sum(mean_loss) / self.dist.world_size
        return mean_loss, lrs

    def _train_step(self, batch: Batch, epoch: int, i: int, sync: bool = True) -> torch.Tensor:
        """Forward and backward one batch; ``sync=False`` (accumulating, several processes) skips
        DDP's gradient all-reduce: the next synced backward reduces the summed gradients."""
        batch = batch.to(self.device, non_blocking=True)
        images = self.precision.images(batch.images).float() / 255  # (B, 3, H, W) in [0, 1]
        no_sync = self.dist.enabled and not sync
        with self.train_model.no_sync() if no_sync else contextlib.nullcontext():
            with self.precision.autocast():
                feats = self.train_model(images)
            loss = self.criterion(feats, batch)  # float32: the head's maps are cast up
            finite = bool(torch.isfinite(loss.total))
            if self.dist.enabled:
                self._agree_to_go_on(finite, f"at epoch {epoch + 1}, batch {i + 1}")
            if not finite:
                raise TrainingDiverged(self._loss_message(loss, epoch, i))
            self.scaler.scale(loss.total).backward()
        return loss.parts.detach().cpu()

    def _agree_to_go_on(self, finite: bool, where: str) -> None:
        """Several processes: all stop together when any rank's loss is not finite or any rank
        was signalled (SIGINT/SIGTERM), so no rank waits in a collective for one that left."""
        bad, signalled = self.dist.sum(torch.tensor([float(not finite), float(self._signalled)])).tolist()
        if bad and finite:  # the rank whose loss it was raises with the details
            raise TrainingDiverged(
                f"Loss became non-finite in {int(bad)} of {self.dist.world_size} processes {where}. "
                f"Nothing was saved from this epoch; {self._kept_weights(self.state.epoch)}. {TRY_INSTEAD}"
            )
        if signalled and not bad:
            raise KeyboardInterrupt

    def _loss_message(self, loss, epoch: int, i: int) -> str:
        parts = ", ".join(
            f"{n}={v:.4g}" for n, v in zip(("box", "cls", "dfl"), loss.parts.tolist(), strict=True)
        )
        return (
            f"Loss became {loss.total.item()} at epoch {epoch + 1}, batch {i + 1} ({parts}). "
            f"Nothing was saved from this epoch; {self._kept_weights(self.state.epoch)}. {TRY_INSTEAD}"
        )

    def _check_finite(self, epoch: int, val_losses: torch.Tensor | None) -> None:
        """Stop before saving when the weights or the validation losses (None: not validated this
        epoch) are no longer finite: a finite training loss alone does not show divergence."""
        bad = [
            what
            for what, module in (("the training weights", self.model), ("the EMA weights", self.ema.ema))
            if _non_finite(module.state_dict())
        ]
        if val_losses is not None and not torch.isfinite(val_losses).all():
            bad.append(f"the validation losses ({', '.join(f'{v:.4g}' for v in val_losses.tolist())})")
        bad = self.dist.broadcast(bad)  # rank 0 validated: every rank takes its verdict
        if bad:
            raise TrainingDiverged(
                f"Training diverged at epoch {epoch + 1}: {' and '.join(bad)} became NaN or infinite. "
                f"Nothing was saved from this epoch; {self._kept_weights(self.state.epoch)}. {TRY_INSTEAD}"
            )

    def _kept_weights(self, last_good: int) -> str:
        """Which files hold the weights of epoch ``last_good`` (from 1), for the divergence messages."""
        last, best = self.weights_dir / "last.pt", self.weights_dir / "best.pt"
        if not last.exists():
            return "no weights were saved before it"
        also = f", {best} the best one" if best.exists() else ""
        return f"{last} keeps the last good epoch ({last_good}){also}"

    def _validate_epoch(self, final_epoch: bool):
        """Metrics (rank 0; None elsewhere or when not validating) and the validation losses
        (every rank): the ranks validate their shares of the images together."""
        if not (self.settings.val or final_epoch):
            return None, torch.full((3,), float("nan"))
        result = self.validator.run(self.ema.ema, self.val_loader, self.device)
        return result.metrics, result.losses

    def _record(self, epoch, elapsed, train_losses, metrics, val_losses, lrs) -> dict[str, float]:
        box = metrics.box if metrics is not None else None
        row = results_csv.epoch_row(epoch + 1, elapsed, train_losses.tolist(), box, val_losses.tolist(), lrs)
        self.state.rows = [r for r in self.state.rows if r["epoch"] < epoch + 1] + [row]
        return row

    def _after_epoch(self, epoch: int, metrics) -> bool:
        """Update best fitness, save last.pt / best.pt; True when training should stop early."""
        improved = self.state.update(epoch, metrics.fitness if metrics is not None else None)
        if self.is_main:
            self._save(epoch, improved)
        patience = self.settings.patience
        if self.state.out_of_patience(patience):
            log.info(
                "Stopping training early: no improvement in the last %d epochs (best fitness %.4f). "
                "Set patience=0 to train all epochs.",
                patience,
                self.state.best_fitness or 0.0,
            )
            return True
        return False

    # ------------------------------------------------------------------------------------------
    # saving, interruption, the end

    def _checkpoint(self, epoch: int, full: bool) -> Checkpoint:
        return Checkpoint(
            family=self.start.family,
            size=self.start.size,
            nc=len(self.names),
            names=self.names,
            model=state_to(self.ema.ema.state_dict(), None if full else torch.float16),
            train_model=state_to(self.model.state_dict(), None) if full else None,
            optimizer=self.optimizer.state_dict() if full else None,
            ema_updates=int(self.ema.updates),
            epoch=epoch,
            best_fitness=self.state.best_fitness,
            train_args=self.args,
        )

    def _save(self, epoch: int, improved: bool) -> None:
        """last.pt keeps everything a resume needs; best.pt only the weights (fp16 EMA).

        best.pt is written first. A kill between the two writes then leaves last.pt at the
        previous epoch, and the resume trains this epoch again and rewrites best.pt. The other
        way round, last.pt would already hold this epoch's best fitness, so the resume would never
        rewrite best.pt and it would keep an older, worse epoch for good.
        """
        period = self.settings.save_period
        periodic = period > 0 and (epoch + 1) % period == 0
        weights = self._checkpoint(epoch, full=False) if improved or periodic else None  # made once
        files = [(self.weights_dir / "best.pt", weights)] if improved else []
        files.append((self.weights_dir / "last.pt", self._checkpoint(epoch, full=True)))
        if periodic:
            files.append((self.weights_dir / f"epoch{epoch + 1}.pt", weights))
        for path, ckpt in files:  # all checked before any is written
            _refuse_non_finite(ckpt, path, self._kept_weights(epoch))
        for path, ckpt in files:
            save_checkpoint(ckpt, path)

    def _on_interrupt(self) -> None:
        last = self.weights_dir / "last.pt"
        if self.is_main and not last.exists():
            ckpt = self._checkpoint(self.state.epoch - 1, full=True)
            _refuse_non_finite(ckpt, last, "nothing was saved")
            save_checkpoint(ckpt, last)
        if not self.is_main:
            return
        log.warning(
            "\nInterrupted. %s holds the last completed epoch (%d); continue with:\n"
            "  yoloforge train resume=True model=%s",
            last,
            self.state.epoch,
            last,
        )

    def _report_weights(self) -> None:
        why = {
            "last.pt": "with the optimizer and training weights, so this run can be resumed or extended; "
            "`yoloforge strip last.pt` writes a small copy to ship",
            "best.pt": "fp16 weights only, optimizer stripped",
        }
        for name, what in why.items():
            path = self.weights_dir / name
            if path.exists():
                log.info("Saved %s, %.1fMB (%s)", path, path.stat().st_size / 2**20, what)

    def _final_validation(self):
        """best.pt validated by every rank on its share (rank 0 reads it and sends it to the others,
        whose file system may not hold the run folder); the metrics on rank 0, None elsewhere."""
        best = self.weights_dir / "best.pt"
        if not self.dist.broadcast(best.exists()):
            return None
        from yoloforge.checkpoint import load_checkpoint

        log.info("\nValidating %s...", best)
        ckpt = self.dist.broadcast(load_checkpoint(best) if self.is_main else None)
        model = build_model(ckpt.family, ckpt.size, nc=ckpt.nc)
        model.load_state_dict({k: v.float() for k, v in ckpt.model.items()})
        model.to(self.device).eval()
        model.fuse()
        s = self.settings
        result = self._validator(plots=s.plots, verbose=True).run(model, self.val_loader, self.device)
        if not self.is_main:
            return None
        log.info("Results saved to %s", self.save_dir)
        return result.metrics

    def _plot_train_batch(self, batch: Batch, i: int) -> None:
        from yoloforge.draw import save_batch_grid

        save_batch_grid(batch, self.save_dir / f"train_batch{i}.jpg", self.names)


# ----------------------------------------------------------------------------------------------
# helpers

TRY_INSTEAD = "Try a lower lr0, optimizer=auto, amp=False, or check the labels with `yoloforge check`."


def _stride_imgsz(settings: TrainSettings) -> TrainSettings:
    """Settings with imgsz rounded up to the model stride (one warning line when it changes)."""
    imgsz = stride_multiple(settings.imgsz, max(STRIDES), "training at")
    return settings if imgsz == settings.imgsz else dataclasses.replace(settings, imgsz=imgsz)


@contextlib.contextmanager
def _process_state_kept():
    """Give back torch's thread count, the cudnn flags and the global random states on exit."""
    threads = torch.get_num_threads()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    rng = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])


def _rank_batch(batch: int, world_size: int) -> int:
    """Images per process: ``batch`` is the global batch, split evenly across the processes."""
    if batch % world_size:
        raise ValueError(
            f"batch={batch} does not split evenly across {world_size} training processes; "
            f"use a multiple of {world_size}"
        )
    return batch // world_size


@contextlib.contextmanager
def _signals_as_flag(trainer: Trainer):
    """Several processes: SIGINT and SIGTERM (torchrun's stop) set ``trainer._signalled``; the
    ranks then stop together at the next batch and rank 0 keeps a resumable last.pt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum, frame):
        trainer._signalled = True

    trainer._signalled = False
    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _non_finite(state: dict[str, Any]) -> list[str]:
    """Keys of the floating tensors in ``state`` (nested dicts and lists too) holding NaN or inf."""
    bad = []
    items = state.items() if isinstance(state, dict) else enumerate(state)
    for key, value in items:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not torch.isfinite(value).all():
                bad.append(str(key))
        elif isinstance(value, dict | list | tuple):
            bad += [f"{key}.{k}" for k in _non_finite(value)]
    return bad


def _refuse_non_finite(ckpt: Checkpoint, path: Path, kept: str) -> None:
    """TrainingDiverged when ``ckpt`` holds a NaN or infinite tensor (fp16 overflow included)."""
    for part in ("model", "train_model", "optimizer"):
        bad = _non_finite(getattr(ckpt, part) or {})
        if bad:
            raise TrainingDiverged(
                f"Training diverged at epoch {ckpt.epoch + 1}: {path.name} would hold non-finite "
                f"{part} tensors ({bad[0]}{' and more' if len(bad) > 1 else ''}), so it was not written; "
                f"{kept}. {TRY_INSTEAD}"
            )


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _freeze(model: torch.nn.Module, n: int) -> list[torch.nn.Module]:
    """Freeze the first ``n`` numbered blocks (no gradients, BatchNorm statistics kept).

    Logs one line per frozen tensor in the reference's words, the DFL projection included: ours
    is a fixed buffer (``head.dfl.proj``), never trained, where the reference freezes a conv.
    """
    frozen = list(model.blocks[:n]) if n > 0 else []
    frozen_ids = {id(p) for block in frozen for p in block.parameters()}
    for name, p in model.named_parameters():
        if id(p) in frozen_ids:
            p.requires_grad_(False)
            log.info("Freezing layer '%s'", name)
    for name, buffer in model.named_buffers():
        if buffer is model.head.dfl.proj:
            log.info("Freezing layer '%s'", name)
    return frozen


def _keep_frozen_bn_eval(model: torch.nn.Module, frozen: list[torch.nn.Module]) -> None:
    for block in frozen:
        block.eval()


def _gpu_mem(device: torch.device) -> str:
    if device.type != "cuda":
        return "0G"
    return f"{torch.cuda.memory_reserved(device) / 1e9:.3g}G"


def train_settings_for_resume(ckpt: Checkpoint, overrides: dict[str, Any]) -> dict[str, Any]:
    """The settings of the run being resumed, with the few changes a resume may make."""
    allowed = {
        "epochs",
        "device",
        "workers",
        "patience",
        "batch",
        "plots",
        "cache",
        "val",
        "save_period",
        "report",
    }
    bad = sorted(set(overrides) - allowed - {"resume", "model", "data"})
    if bad:
        raise ValueError(
            f"resume=True continues the run with its own settings; '{bad[0]}' cannot change "
            f"(only {', '.join(sorted(allowed))} can). Start a new run instead: drop resume=True."
        )
    # task and mode head args.yaml and train_args as in the reference; they are not settings
    args = {k: v for k, v in ckpt.train_args.items() if k not in ("cfg", "task", "mode")}
    args.update({k: v for k, v in overrides.items() if k in allowed})
    args["resume"] = False
    return args
