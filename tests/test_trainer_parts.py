"""The trainer's bookkeeping without training: best fitness, patience, the results.csv row."""

from __future__ import annotations

import math
from types import SimpleNamespace

from yoloforge.results_csv import COLUMNS, epoch_row
from yoloforge.trainer import TrainState


def test_best_fitness_and_patience():
    st = TrainState()
    assert st.update(0, 0.5) and st.best_fitness == 0.5 and st.epoch == 1
    assert not st.update(1, 0.4) and st.epochs_without_improvement == 1
    assert not st.update(2, None) and st.epochs_without_improvement == 1  # not validated: no count
    assert not st.out_of_patience(2)
    assert not st.update(3, 0.49) and st.out_of_patience(2) and not st.out_of_patience(0)
    assert st.update(4, 0.5) and st.epochs_without_improvement == 0  # a tie is the newer best
    assert st.epoch == 5


def test_epoch_row_has_every_column():
    box = SimpleNamespace(mp=0.9, mr=0.8, map50=0.7, map=0.5)
    row = epoch_row(3, 12.5, [1.0, 2.0, 3.0], box, [4.0, 5.0, 6.0], [0.1, 0.2, 0.3])
    assert tuple(row) == COLUMNS
    assert row["train/cls_loss"] == 2.0 and row["val/dfl_loss"] == 6.0 and row["lr/pg2"] == 0.3
    assert row["metrics/mAP50-95(B)"] == 0.5 and row["epoch"] == 3
    empty = epoch_row(1, 0.0, [1, 1, 1], None, [math.nan] * 3, [0.1] * 3)
    assert math.isnan(empty["metrics/mAP50(B)"]) and math.isnan(empty["val/box_loss"])
