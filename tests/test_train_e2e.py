"""End to end on a small copy of the demo data: train, the run folder, resume, fine-tune.

Tiny images and few epochs: these check that every piece is wired and every file is written, not
accuracy (benchmarks/ measures that).
"""

from __future__ import annotations

import csv
import logging
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from system_marks import needs_sigkill

from yoloforge import YOLO
from yoloforge.callbacks import Callback
from yoloforge.results_csv import COLUMNS

TINY = dict(imgsz=64, batch=4, workers=0, plots=True, seed=0)


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "results.csv").open() as f:
        return list(csv.DictReader(f))


FIXTURES = Path(__file__).parent / "fixtures" / "reference"


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_tutorial_code_from_a_reference_checkpoint(shapes_small, tmp_path, monkeypatch):
    """The tutorial's two steps as written: train from yolov8n.pt, then fine-tune from last.pt."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(FIXTURES / "yolov8n.pt", "yolov8n.pt")  # written by ultralytics (80 classes)
    data = yaml.safe_load(shapes_small.read_text())
    Path("config.yaml").write_text(
        f"path: {data['path']}\ntrain: images/train\nval: images/val\nnc: 3\n"
        "names:\n  0: circle\n  1: square\n  2: triangle\n"
    )
    lines = _Lines()
    logging.getLogger("yoloforge").addHandler(lines)
    try:
        model = YOLO("yolov8n.pt")
        results = model.train(data="config.yaml", epochs=3, **TINY)
    finally:
        logging.getLogger("yoloforge").removeHandler(lines)
    text = "\n".join(lines.lines)
    for expected in [
        "yoloforge 0.1.0 Python-",
        "task=detect, mode=train, model=yolov8n.pt, data=config.yaml, epochs=3",
        "Freezing layer 'head.dfl.proj'",
        "YOLOv8n summary:",
        "Transferred 318/354 items from pretrained weights",
        "train: Scanning ",
        "16 images, ",
        "Starting training for 3 epochs...",
        "box_loss   cls_loss   dfl_loss  Instances       Size",
        "3 epochs completed in ",
        "weights/best.pt",
        "so this run can be resumed or extended; `yoloforge strip last.pt` writes a small copy to ship",
        "                   all          8         23",
        "circle",
        "triangle",
        "Speed: ",
        "ms preprocess, ",
        "Results saved to runs/detect/train",
    ]:
        assert expected in text, expected
    run = Path("runs/detect/train")
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
        assert ckpt["names"] == ["circle", "square", "triangle"]
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert list(args)[:4] == ["task", "mode", "model", "data"] and args["task"] == "detect"
    assert args["epochs"] == 3 and args["imgsz"] == 64 and args["hsv_h"] == 0.015
    rows = _rows(run)
    assert tuple(rows[0]) == COLUMNS and [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(float(r["train/box_loss"]) > 0 and float(r["lr/pg0"]) > 0 for r in rows)
    assert 0 <= results.box.map <= results.box.map50 <= 1
    assert model.ckpt_path == str(run / "weights" / "best.pt")  # the object now holds best.pt
    assert model.names == {0: "circle", 1: "square", 2: "triangle"}

    # fine-tuning: a new run from last.pt's weights
    YOLO("./runs/detect/train/weights/last.pt").train(
        data="config.yaml", epochs=1, **{**TINY, "plots": False}
    )
    assert [int(r["epoch"]) for r in _rows(Path("runs/detect/train2"))] == [1]


class _StopAfter(Callback):
    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, trainer, row):
        if row["epoch"] >= self.epochs:
            raise KeyboardInterrupt


def test_interrupt_then_resume_runs_every_epoch_once(shapes_small, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        YOLO("yolov8n.yaml").train(
            data=str(shapes_small),
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


@needs_sigkill
def test_sigkill_after_first_epoch_then_resume(shapes_small, tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal
        from yoloforge import YOLO
        from yoloforge.callbacks import Callback

        class Kill(Callback):
            def on_epoch_end(self, trainer, row):
                os.kill(os.getpid(), signal.SIGKILL)

        YOLO("yolov8n.yaml").train(data={str(shapes_small)!r}, epochs=2, project={str(tmp_path)!r}, name="k",
                                   imgsz=64, batch=4, workers=0, plots=False, callbacks=[Kill()])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    last = tmp_path / "k" / "weights" / "last.pt"
    YOLO(last).train(resume=True)
    assert [int(r["epoch"]) for r in _rows(tmp_path / "k")] == [1, 2]


class _PoisonLossAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer, row):
        real = trainer.criterion

        def nan_loss(feats, batch):
            out = real(feats, batch)
            out.total = out.total * float("nan")
            return out

        trainer.criterion = nan_loss


def test_nan_loss_stops_with_a_clear_message_and_keeps_good_weights(shapes_small, tmp_path):
    from yoloforge.trainer import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"Loss became nan at epoch 2, batch 1 .*last\.pt keeps"):
        YOLO("yolov8n.yaml").train(
            data=str(shapes_small), epochs=2, project=str(tmp_path), name="n",
            callbacks=[_PoisonLossAfterFirstEpoch()], **{**TINY, "plots": False},
        )  # fmt: skip
    last = torch.load(tmp_path / "n" / "weights" / "last.pt", weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert [int(r["epoch"]) for r in _rows(tmp_path / "n")] == [1]


class _BatchShapes(Callback):
    """Records the input shape of every training batch the loader gives."""

    def on_train_start(self, trainer):
        self.shapes = {tuple(b.images.shape[-2:]) for b in trainer.train_loader}


def test_rect_training_uses_rectangular_batches(write_image, tmp_path):
    data = tmp_path / "wide_tall"
    for k in range(8):
        hw = (48, 96) if k % 2 else (96, 48)  # wide and tall images, one box each
        write_image(data / "images" / f"{k}.png", hw=hw, value=40 + 20 * k)
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "labels" / f"{k}.txt").write_text(f"{k % 2} 0.5 0.5 0.4 0.3\n")
    config = data / "config.yaml"
    config.write_text("path: .\ntrain: images\nval: images\nnames: [a, b]\n")
    seen = _BatchShapes()
    YOLO("yolov8n.yaml").train(
        data=str(config), epochs=1, rect=True, project=str(tmp_path), name="rect",
        callbacks=[seen], **{**TINY, "plots": False, "imgsz": 96},
    )  # fmt: skip
    assert seen.shapes == {(64, 96), (96, 64)}  # sorted by aspect: wide batches, then tall ones
    assert len(_rows(tmp_path / "rect")) == 1


def _weights_are_finite(weights: Path) -> None:
    """Every .pt in ``weights`` loads, and all its floating tensors are finite."""
    files = sorted(weights.glob("*.pt"))
    assert files
    for path in files:
        ckpt = torch.load(path, weights_only=True)
        for part in ("model", "train_model"):
            for key, v in (ckpt[part] or {}).items():
                assert not v.is_floating_point() or torch.isfinite(v).all(), f"{path.name} {part} {key}"


def test_divergence_stops_before_saving_and_keeps_finite_weights(shapes_small, tmp_path):
    """SGD at lr0=1e6 without warmup: in epoch 2 the weights explode and the validation losses are
    NaN while the training loss stays finite (before the check, the run ended "successfully" with
    thousands of inf values in best.pt). It must stop there and keep the last good epoch."""
    from yoloforge.trainer import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"epoch 2: .*(last\.pt keeps|nothing was saved)") as e:
        YOLO("yolov8n.yaml").train(
            data=str(shapes_small), epochs=2, project=str(tmp_path), name="d",
            optimizer="SGD", lr0=1e6, warmup_epochs=0, **{**TINY, "plots": False},
        )  # fmt: skip
    message = str(e.value)
    assert "\n" not in message and "lower lr0" in message and "optimizer=auto" in message
    _weights_are_finite(tmp_path / "d" / "weights")
    saved = torch.load(tmp_path / "d" / "weights" / "last.pt", weights_only=True)["epoch"] + 1
    assert [int(r["epoch"]) for r in _rows(tmp_path / "d")] == list(range(1, saved + 1))


def test_imgsz_is_rounded_up_to_the_stride_once(shapes_small, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="yoloforge"):
        YOLO("yolov8n.yaml").train(
            data=str(shapes_small), epochs=1, project=str(tmp_path), name="s", val=False,
            fraction=0.25, **{**TINY, "plots": False, "imgsz": 150},
        )  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if "stride" in r.getMessage()]
    assert warnings == ["imgsz=150 is not a multiple of the stride 32; training at imgsz=160"]
    assert yaml.safe_load((tmp_path / "s" / "args.yaml").read_text())["imgsz"] == 160
    for name in ("last.pt", "best.pt"):
        assert torch.load(tmp_path / "s" / "weights" / name, weights_only=True)["train_args"]["imgsz"] == 160


def test_train_gives_back_threads_cudnn_flags_and_random_state(shapes_small, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = YOLO("yolov8n.yaml")
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        with pytest.raises(KeyboardInterrupt):  # however fit() ends
            model.train(
                data=str(shapes_small), epochs=2, project=str(tmp_path), name="t",
                callbacks=[_StopAfter(1)], **{**TINY, "plots": False},
            )  # fmt: skip
        assert torch.get_num_threads() == 1
        assert torch.backends.cudnn.deterministic is False and torch.backends.cudnn.benchmark is True
        assert torch.equal(torch.rand(3), expected)  # training drew from its own seeded stream
    finally:
        torch.set_num_threads(threads)


class _TrainAgainInside(Callback):
    """Starts a second run on the same folder while the first one holds it."""

    def __init__(self, **train_args):
        self.train_args, self.error = train_args, None

    def on_train_start(self, trainer):
        try:
            YOLO("yolov8n.yaml").train(**self.train_args)
        except Exception as e:
            self.error = e


def test_a_second_run_on_a_busy_folder_stops_with_one_line(shapes_small, tmp_path):
    from filelock import FileLock

    from yoloforge.runs import LOCK_NAME, RunFolderError

    args = dict(data=str(shapes_small), epochs=1, project=str(tmp_path), name="x", exist_ok=True)
    second = _TrainAgainInside(**args, **{**TINY, "plots": False})
    YOLO("yolov8n.yaml").train(**args, val=False, callbacks=[second], **{**TINY, "plots": False})
    assert isinstance(second.error, RunFolderError)
    assert str(tmp_path / "x") in str(second.error) and "\n" not in str(second.error)
    assert (tmp_path / "x" / "weights" / "last.pt").is_file()  # the first run went on
    lock = FileLock(tmp_path / "x" / LOCK_NAME, timeout=0)
    lock.acquire()  # the first run let go of the folder when it ended
    lock.release()


def test_a_failed_start_leaves_no_new_run_folder(tmp_path):
    from yoloforge.data.config import DatasetError

    with pytest.raises(DatasetError):
        YOLO("yolov8n.yaml").train(data=str(tmp_path / "missing.yaml"), project=str(tmp_path / "p"), **TINY)
    assert not (tmp_path / "p").exists()  # neither the run folder nor the project folder it made

    kept = tmp_path / "p" / "train"  # a folder that was there before stays, stale temp files go
    (kept / "weights").mkdir(parents=True)
    (kept / "notes.txt").write_text("mine")
    (kept / "weights" / ".last.pt.abc123xy.tmp").write_bytes(b"half a checkpoint")
    with pytest.raises(DatasetError):
        YOLO("yolov8n.yaml").train(data=str(tmp_path / "missing.yaml"), project=str(tmp_path / "p"),
                                   exist_ok=True, **TINY)  # fmt: skip
    assert (kept / "notes.txt").is_file() and not list(kept.rglob("*.tmp"))


def test_no_loader_worker_outlives_train(shapes_small, tmp_path):
    """Repeated train() calls in one process (tune) must not pile up loader worker processes."""
    import multiprocessing

    before = {p.pid for p in multiprocessing.active_children()}
    model = YOLO("yolov8n.yaml")
    model.train(
        data=str(shapes_small), epochs=1, project=str(tmp_path), **{**TINY, "workers": 2, "plots": False}
    )
    assert model.trainer.save_dir.is_dir()
    left = [p for p in multiprocessing.active_children() if p.pid not in before]
    assert left == []
