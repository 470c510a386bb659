"""run_reader: one reader of a run folder (args, results.csv columns, weights, pictures, confusion)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_plots import COLUMNS, write_results_csv

from yoloforge import plots
from yoloforge.results_csv import epoch_row, write_rows
from yoloforge.run_reader import CONFUSION_JSON, read_results, read_run, write_confusion


def test_read_results_strips_padded_names(tmp_path):
    write_results_csv(tmp_path / "results.csv", epochs=3)
    data = read_results(tmp_path / "results.csv")
    assert list(data) == COLUMNS
    assert data["epoch"].tolist() == [1, 2, 3]
    assert data["train/box_loss"][0] == pytest.approx(1 + 0.01 * len("train/box_loss"))


def test_a_partial_run_folder(tmp_path):
    """What yoloforge writes reads back: unvalidated epochs are NaN, rows() round-trips for resume."""
    rows = [
        epoch_row(e, 10.0 * e, [1.0, 2.0, 3.0], None, [4.0, 5.0, 6.0], [0.01, 0.01, 0.01]) for e in (1, 2)
    ]
    write_rows(tmp_path / "results.csv", rows)
    (tmp_path / "args.yaml").write_text("epochs: 5\nimgsz: 64\n")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "last.pt").write_bytes(b"x")
    (tmp_path / "labels.jpg").write_bytes(b"x")
    run = read_run(tmp_path)
    assert run.args == {"epochs": 5, "imgsz": 64}
    assert run.epochs == 2 and run.column("time").tolist() == [10.0, 20.0]
    assert np.isnan(run.column("metrics/mAP50(B)")).all()
    assert np.isnan(run.column("not/a/column")).all() and len(run.column("not/a/column")) == 2
    assert list(run.weights) == ["last.pt"] and list(run.pictures) == ["labels.jpg"]
    assert run.confusion is None and run.problems == []
    back = run.rows()
    assert [r["epoch"] for r in back] == [1, 2] and back[1]["val/cls_loss"] == 5.0


def test_empty_folder_and_unreadable_files(tmp_path):
    run = read_run(tmp_path)
    assert run.epochs == 0 and run.args == {} and run.rows() == []
    (tmp_path / "args.yaml").write_text("epochs: [\n")
    (tmp_path / CONFUSION_JSON).write_text('{"names": ["a"], "matrix": [[1]]}')
    (tmp_path / "results.csv").write_text("")
    run = read_run(tmp_path)
    assert run.args == {} and run.confusion is None and run.epochs == 0
    assert len(run.problems) == 3 and all(str(tmp_path) in p for p in run.problems)
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        read_run(tmp_path / "missing")


def test_confusion_matrix_round_trip(tmp_path):
    matrix = np.array([[5, 1, 2], [0, 7, 1], [1, 0, 0]])
    write_confusion(tmp_path / CONFUSION_JSON, matrix, ["cat", "dog"], 0.25, 0.45)
    cm = read_run(tmp_path).confusion
    assert cm.names == ["cat", "dog"] and cm.matrix.tolist() == matrix.tolist()
    assert (cm.conf, cm.iou) == (0.25, 0.45)


def test_plot_results_reads_through_the_reader(tmp_path):
    write_results_csv(tmp_path / "results.csv", epochs=4)
    (tmp_path / "results.csv").write_text((tmp_path / "results.csv").read_text() + "5" + ",x" * 14 + "\n")
    last = {k: v[-1] for k, v in read_results(tmp_path / "results.csv").items()}
    assert last["epoch"] == 5 and math.isnan(last["train/box_loss"])  # cells that are not numbers: NaN
    assert plots.plot_results(tmp_path / "results.csv").is_file()
    with pytest.raises(ValueError, match="no results to plot"):
        plots.plot_results(tmp_path / "none.csv")
