"""Callbacks: every side effect of training beyond the checkpoints (results.csv, plots, loggers, yours).

Subclass ``Callback``, override the events you need and pass instances to the trainer
(``YOLO(...).train(..., callbacks=[MyLogger()])``). The trainer calls, in this order:

    on_train_start(trainer)        once, after set-up, before the first epoch
    on_step_end(trainer, step)     after every training batch (``Step``)
    on_epoch_row(trainer, row)     the epoch's results.csv row, before the checkpoints are written
    on_epoch_end(trainer, row)     the same row, after last.pt / best.pt are written
    on_fit_end(trainer, result)    after the final validation of best.pt (``result``: its metrics)
    on_fit_error(trainer, error)   instead of on_fit_end when training stops on an exception (Ctrl-C,
                                   divergence, a bad image, ...) after on_train_start; it re-raises

Events are plain method calls on ``Callbacks``, a list that calls each callback in turn, on rank 0
only (``trainer.is_main``): other ranks of a multi-process run call nothing. ``standard_callbacks``
gives the ones every run has (results.csv, results.png, the ``loggers=`` setting); the trainer puts
them before the user's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from yoloforge import results_csv

if TYPE_CHECKING:
    from yoloforge.settings import TrainSettings
    from yoloforge.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One training batch done."""

    epoch: int  # 0-based
    batch: int  # 0-based index in the epoch
    batches: int  # batches per epoch
    losses: torch.Tensor  # (3,) box, cls, dfl of this batch (this process)


class Callback:
    def on_train_start(self, trainer: Trainer) -> None:
        """After set-up, before the first epoch; ``trainer.save_dir`` is the run folder."""

    def on_step_end(self, trainer: Trainer, step: Step) -> None:
        """After each training batch (and the optimizer step, when one was due)."""

    def on_epoch_row(self, trainer: Trainer, row: dict[str, float]) -> None:
        """The epoch is trained and validated; ``row`` is its results.csv row. Called before the
        checkpoints are written, so a file written here is never behind last.pt after a kill."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        """After validation and saving; ``row`` is the results.csv row of this epoch."""

    def on_fit_end(self, trainer: Trainer, result: Any) -> None:
        """After the final validation; ``result`` holds its metrics (None when there was none) and
        ``trainer.save_dir`` every file. By default calls ``on_train_end``."""
        self.on_train_end(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        """The moment of ``on_fit_end``, without the result (for callbacks written before it)."""

    def on_fit_error(self, trainer: Trainer, error: BaseException) -> None:
        """Training stopped on ``error`` (``KeyboardInterrupt`` for Ctrl-C or a stop signal), which
        propagates after every callback has seen it: close what ``on_train_start`` opened."""


class Callbacks(list):
    """The trainer's callbacks, in call order; each event calls all of them, on rank 0 only."""

    def __init__(self, callbacks: Iterable[Callback] = ()):
        super().__init__(callbacks)

    def train_start(self, trainer: Trainer) -> None:
        if trainer.is_main:
            for cb in self:
                cb.on_train_start(trainer)

    def step_end(self, trainer: Trainer, step: Step) -> None:
        if trainer.is_main:
            for cb in self:
                cb.on_step_end(trainer, step)

    def epoch_row(self, trainer: Trainer, row: dict[str, float]) -> None:
        if trainer.is_main:
            for cb in self:
                cb.on_epoch_row(trainer, row)

    def epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        if trainer.is_main:
            for cb in self:
                cb.on_epoch_end(trainer, row)

    def fit_end(self, trainer: Trainer, result: Any) -> None:
        if trainer.is_main:
            for cb in self:
                cb.on_fit_end(trainer, result)

    def fit_error(self, trainer: Trainer, error: BaseException) -> None:
        """Every callback sees ``error``; one that fails here is logged, so the error that stopped
        training is the one the user gets."""
        if not trainer.is_main:
            return
        for cb in self:
            try:
                cb.on_fit_error(trainer, error)
            except Exception as e:  # noqa: BLE001 - the training's own error matters more
                log.warning("%s.on_fit_error failed: %s", type(cb).__name__, e)


class ResultsCsv(Callback):
    """results.csv: every epoch's row so far (a resumed run's earlier rows included), rewritten
    atomically each epoch before the checkpoints, so a resume always finds the rows last.pt needs."""

    def on_epoch_row(self, trainer: Trainer, row: dict[str, float]) -> None:
        results_csv.write_rows(trainer.save_dir / "results.csv", trainer.state.rows)


class ResultPlots(Callback):
    """results.png from results.csv once training is done."""

    def on_fit_end(self, trainer: Trainer, result: Any) -> None:
        path = trainer.save_dir / "results.csv"
        if path.is_file():
            from yoloforge.plots import plot_results

            plot_results(path)


def standard_callbacks(settings: TrainSettings) -> list[Callback]:
    """What every run with these settings writes: results.csv, results.png (``plots``), the
    ``loggers`` it names (each checks here that its package is installed) and the run report
    (``report``, last: it reads what the others wrote)."""
    from yoloforge.loggers import build_loggers
    from yoloforge.report.callback import ReportCallback

    out: list[Callback] = [ResultsCsv()]
    if settings.plots:
        out.append(ResultPlots())
    out += build_loggers(settings.loggers)
    return out + [ReportCallback()] if settings.report else out
