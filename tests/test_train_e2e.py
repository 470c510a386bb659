"""End to end on a small copy of the demo data: train, the run folder, resume, fine-tune.

Tiny images and few epochs: these check that every piece is wired and every file is written, not
accuracy (benchmarks/ measures that).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from yoloforge import YOLO
from yoloforge.callbacks import Callback
from yoloforge.data.demo import ensure_shapes
from yoloforge.results_csv import COLUMNS

TINY = dict(imgsz=64, batch=4, workers=0, plots=True, seed=0)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return ensure_shapes(tmp_path_factory.mktemp("shapes"), n_train=16, n_val=8)


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_train_writes_the_run_folder(shapes, tmp_path):
    model = YOLO("yolov8n.yaml")
    metrics = model.train(data=str(shapes), epochs=2, project=str(tmp_path), name="train", **TINY)
    run = tmp_path / "train"
    for name in [
        "weights/best.pt",
        "weights/last.pt",
        "args.yaml",
        "results.csv",
        "results.png",
        "labels.jpg",
        "train_batch0.jpg",
        "train_batch1.jpg",
        "train_batch2.jpg",
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "PR_curve.png",
        "F1_curve.png",
        "P_curve.png",
        "R_curve.png",
        "val_batch0_labels.jpg",
        "val_batch0_pred.jpg",
    ]:
        assert (run / name).is_file(), name
    for name in ("best.pt", "last.pt"):  # our checkpoints load without unpickling code
        ckpt = torch.load(run / "weights" / name, weights_only=True)
        assert ckpt["format"] == "yoloforge" and ckpt["arch"]["nc"] == 3
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["epochs"] == 2 and args["imgsz"] == 64 and args["hsv_h"] == 0.015
    rows = _rows(run)
    assert tuple(rows[0]) == COLUMNS and [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["train/box_loss"]) > 0 for r in rows)
    assert 0 <= metrics.box.map <= metrics.box.map50 <= 1
    assert model.ckpt_path == str(run / "weights" / "best.pt")  # the object now holds best.pt


class _StopAfter(Callback):
    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, trainer, row):
        if row["epoch"] >= self.epochs:
            raise KeyboardInterrupt


def test_interrupt_then_resume_runs_every_epoch_once(shapes, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        YOLO("yolov8n.yaml").train(
            data=str(shapes),
            epochs=3,
            project=str(tmp_path),
            name="r",
            callbacks=[_StopAfter(1)],
            **{**TINY, "plots": False},
        )
    last = tmp_path / "r" / "weights" / "last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    YOLO(last).train(resume=True)
    assert [int(r["epoch"]) for r in _rows(tmp_path / "r")] == [1, 2, 3]
    assert not (tmp_path / "r2").exists()  # resume continues in the same folder
    # a finished run can be extended with more epochs
    YOLO(last).train(resume=True, epochs=4)
    assert [int(r["epoch"]) for r in _rows(tmp_path / "r")] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="already finished"):
        YOLO(last).train(resume=True)


def test_sigkill_after_first_epoch_then_resume(shapes, tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal
        from yoloforge import YOLO
        from yoloforge.callbacks import Callback

        class Kill(Callback):
            def on_epoch_end(self, trainer, row):
                os.kill(os.getpid(), signal.SIGKILL)

        YOLO("yolov8n.yaml").train(data={str(shapes)!r}, epochs=2, project={str(tmp_path)!r}, name="k",
                                   imgsz=64, batch=4, workers=0, plots=False, callbacks=[Kill()])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    last = tmp_path / "k" / "weights" / "last.pt"
    YOLO(last).train(resume=True)
    assert [int(r["epoch"]) for r in _rows(tmp_path / "k")] == [1, 2]


def test_fine_tune_from_last_makes_a_new_run(shapes, tmp_path):
    first = YOLO("yolov8n.yaml")
    first.train(data=str(shapes), epochs=1, project=str(tmp_path), name="train", **{**TINY, "plots": False})
    cwd = os.getcwd()
    YOLO(tmp_path / "train" / "weights" / "last.pt").train(
        data=str(shapes), epochs=1, project=str(tmp_path), name="train", **{**TINY, "plots": False}
    )
    assert os.getcwd() == cwd
    assert (tmp_path / "train2" / "weights" / "best.pt").is_file()
    assert [int(r["epoch"]) for r in _rows(tmp_path / "train2")] == [1]
