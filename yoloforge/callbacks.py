"""Callbacks: side effects (loggers, plots, reports) hooked onto the trainer's events.

Subclass ``Callback`` and override the events you need; pass instances to the trainer
(``YOLO(...).train(..., callbacks=[MyLogger()])``). The trainer calls events on rank 0 only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yoloforge.trainer import Trainer


class Callback:
    def on_train_start(self, trainer: Trainer) -> None:
        """After set-up, before the first epoch."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """After validation and saving; ``row`` is the results.csv row of this epoch."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the final validation; ``trainer.save_dir`` holds every file."""


def fire(callbacks: list[Callback], event: str, *args: Any) -> None:
    for cb in callbacks:
        getattr(cb, event)(*args)
