"""The report at the end of every training (``report=False`` turns it off)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from yoloforge.callbacks import Callback
from yoloforge.report.build import build_report, console_lines, write_report
from yoloforge.report.evidence import label_stats, validation_from_metrics
from yoloforge.run_reader import read_run

if TYPE_CHECKING:
    from yoloforge.trainer import Trainer

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    """Writes report.html, report.md and report.json into the run folder and prints its sentences.

    Uses what the trainer already has: the final validation of best.pt and the scanned labels, so
    nothing is validated or scanned twice."""

    def on_train_end(self, trainer: Trainer) -> None:
        run = read_run(trainer.save_dir)
        validation = validation_from_metrics(trainer.final_metrics, "the final validation of best.pt")
        train_set, val_set = getattr(trainer, "train_set", None), getattr(trainer, "val_set", None)
        labels = None
        if train_set is not None and val_set is not None:
            labels = label_stats(trainer.names, train_set.records, val_set.records, trainer.settings.imgsz)
        report = build_report(run, validation, labels, validate=False)
        try:
            files = write_report(report)
        except OSError as e:  # a full disk: the training's own files are saved; say so in one line
            log.warning("Report not written (%s); the run is complete: `yoloforge report %s`", e, run.path)
            return
        log.info(
            "\n%s", "\n".join([*console_lines(report), f"Report: {files.html} (report=False turns it off)"])
        )
