"""Callbacks: the events a user callback receives, in order; rank 0 only; the standard ones first."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import torch

from yoloforge import YOLO
from yoloforge.callbacks import Callback, Callbacks, ResultPlots, ResultsCsv, Step, standard_callbacks
from yoloforge.settings import TrainSettings, build


def _csv_epochs(run: Path) -> list[int]:
    with (run / "results.csv").open() as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def _last_epoch(run: Path) -> int | None:
    last = run / "weights" / "last.pt"
    return torch.load(last, weights_only=True)["epoch"] + 1 if last.exists() else None


class Recorder(Callback):
    """Writes down every event, with what the run folder held at that moment."""

    def __init__(self):
        self.events: list[tuple] = []

    def on_train_start(self, trainer):
        self.events.append(("train_start",))

    def on_step_end(self, trainer, step):
        self.events.append(("step_end", step.epoch, step.batch, step.batches, tuple(step.losses.shape)))

    def on_epoch_row(self, trainer, row):
        run = trainer.save_dir
        self.events.append(("epoch_row", row["epoch"], _csv_epochs(run)[-1], _last_epoch(run)))

    def on_epoch_end(self, trainer, row):
        run = trainer.save_dir
        self.events.append(("epoch_end", row["epoch"], _csv_epochs(run)[-1], _last_epoch(run)))

    def on_fit_end(self, trainer, result):
        self.events.append(("fit_end", result is trainer.final_metrics and result is not None))
        super().on_fit_end(trainer, result)

    def on_train_end(self, trainer):  # the older event still comes, after on_fit_end's own work
        self.events.append(("train_end",))


def test_a_user_callback_receives_the_events_in_order(shapes_small, tmp_path):
    recorder = Recorder()
    YOLO("yolov8n.yaml").train(
        data=str(shapes_small), epochs=2, imgsz=64, batch=4, workers=0, plots=False, val=False,
        project=str(tmp_path), name="c", callbacks=[recorder],
    )  # fmt: skip
    steps = [[("step_end", epoch, i, 4, (3,)) for i in range(4)] for epoch in (0, 1)]  # 16 images, batch 4
    assert recorder.events == [
        ("train_start",),
        *steps[0],
        ("epoch_row", 1, 1, None),  # results.csv holds the row already, last.pt not yet
        ("epoch_end", 1, 1, 1),  # and now last.pt too
        *steps[1],
        ("epoch_row", 2, 2, 1),
        ("epoch_end", 2, 2, 2),
        ("fit_end", True),
        ("train_end",),
    ]


@dataclass
class FakeTrainer:
    is_main: bool
    calls: list[str] = field(default_factory=list)


class Named(Callback):
    def __init__(self, name: str):
        self.name = name

    def on_train_start(self, trainer):
        trainer.calls.append(f"{self.name}.train_start")

    def on_step_end(self, trainer, step):
        trainer.calls.append(f"{self.name}.step_end")

    def on_epoch_row(self, trainer, row):
        trainer.calls.append(f"{self.name}.epoch_row")

    def on_epoch_end(self, trainer, row):
        trainer.calls.append(f"{self.name}.epoch_end")

    def on_fit_end(self, trainer, result):
        trainer.calls.append(f"{self.name}.fit_end")

    def on_fit_error(self, trainer, error):
        trainer.calls.append(f"{self.name}.fit_error")


def _every_event(callbacks: Callbacks, trainer: FakeTrainer) -> None:
    callbacks.train_start(trainer)
    callbacks.step_end(trainer, Step(epoch=0, batch=0, batches=1, losses=torch.zeros(3)))
    callbacks.epoch_row(trainer, {"epoch": 1})
    callbacks.epoch_end(trainer, {"epoch": 1})
    callbacks.fit_end(trainer, None)


def test_rank_0_calls_every_callback_in_list_order_and_other_ranks_call_nothing():
    callbacks = Callbacks([Named("a"), Named("b")])
    main, other = FakeTrainer(is_main=True), FakeTrainer(is_main=False)
    _every_event(callbacks, main)
    _every_event(callbacks, other)
    events = ("train_start", "step_end", "epoch_row", "epoch_end", "fit_end")
    assert main.calls == [f"{name}.{event}" for event in events for name in "ab"]
    assert other.calls == []


class Broken(Callback):
    def on_fit_error(self, trainer, error):
        raise OSError("the tracking server is gone")


def test_fit_error_reaches_every_callback_even_when_one_fails_there(caplog):
    callbacks = Callbacks([Named("a"), Broken(), Named("b")])
    main, other = FakeTrainer(is_main=True), FakeTrainer(is_main=False)
    callbacks.fit_error(main, RuntimeError("planted"))
    callbacks.fit_error(other, RuntimeError("planted"))
    assert main.calls == ["a.fit_error", "b.fit_error"] and other.calls == []
    assert "Broken.on_fit_error failed: the tracking server is gone" in caplog.text


def test_a_callback_overrides_only_what_it_needs():
    trainer = FakeTrainer(is_main=True)
    _every_event(Callbacks([Callback()]), trainer)  # the base class does nothing, on every event
    assert trainer.calls == []


def test_standard_callbacks_follow_the_settings_and_come_before_the_users():
    from yoloforge.loggers.mlflow import MLflowLogger
    from yoloforge.loggers.tensorboard import TensorBoardLogger
    from yoloforge.report.callback import ReportCallback
    from yoloforge.trainer import StartingPoint, Trainer

    kinds = [type(cb) for cb in standard_callbacks(build(TrainSettings, {"plots": False, "report": False}))]
    assert kinds == [ResultsCsv]
    settings = build(TrainSettings, {"loggers": "mlflow,tensorboard"})
    assert [type(cb) for cb in standard_callbacks(settings)] == [
        ResultsCsv, ResultPlots, MLflowLogger, TensorBoardLogger, ReportCallback,
    ]  # fmt: skip
    mine = Named("mine")
    trainer = Trainer(settings, StartingPoint("yolov8", "n", "yolov8n.yaml"), callbacks=[mine])
    assert isinstance(trainer.callbacks, Callbacks)
    assert [type(cb) for cb in trainer.callbacks][:5] == [
        ResultsCsv,
        ResultPlots,
        MLflowLogger,
        TensorBoardLogger,
        ReportCallback,
    ]
    assert trainer.callbacks[-1] is mine
