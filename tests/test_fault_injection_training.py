"""Fault injection at the training level: kills and a full disk in the middle of a run.

What is injected:
- SIGKILL of a training process (``python -c`` with the ``YOLO`` API): one placed inside a
  checkpoint write, after its temp file is complete and before the rename (it always leaves a
  temp file behind), then kills at seeded random moments late in an epoch (60-110% of the time
  the epoch before took), where validation and the writes of results.csv, best.pt and last.pt
  happen;
- a disk that fills up after the first epoch (a small tmpfs as ``project=``; root on Linux only).

What must hold, whatever later changes do to the trainer or the checkpoint writer:
- after every kill, every weights file loads (our format, ``weights_only``) and results.csv holds
  epochs 1..n, each once, in order;
- resuming (or restarting, when no last.pt was written yet) until done trains every epoch: the
  final results.csv has each epoch exactly once, in order, last.pt the final epoch, and no temp
  files are left in the run folder;
- a full disk ends training with one line naming the file that could not be written, and the
  last.pt and best.pt of the epoch before still load.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from system_marks import needs_sigkill

from yoloforge import YOLO
from yoloforge.callbacks import Callback
from yoloforge.checkpoint import CheckpointError, load_checkpoint

EPOCHS = 5
TINY = dict(imgsz=64, batch=4, workers=0, plots=False, seed=0)

# The training process. argv: data, project, progress file (a line at the start and after each
# epoch), kill_at (SIGKILL at the kill_at-th rename of a .pt temp file, 0: never). Resumes from
# weights/last.pt when there is one.
CHILD = """
import os, signal, sys
from pathlib import Path
from yoloforge import YOLO
from yoloforge.callbacks import Callback

data, project, progress, kill_at = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
real_replace, renames = os.replace, [0]

def replace(src, dst, *args, **kwargs):
    if str(dst).endswith(".pt"):
        renames[0] += 1
        if renames[0] == kill_at:  # the temp file is complete; the rename never happens
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace

class Progress(Callback):
    def on_train_start(self, trainer):
        progress.write_text("start\\n")

    def on_epoch_end(self, trainer, row):
        with progress.open("a") as f:
            f.write(f"{row['epoch']}\\n")

last = Path(project) / "k" / "weights" / "last.pt"
if last.exists():
    YOLO(last).train(resume=True, callbacks=[Progress()])
else:
    YOLO("yolov8n.yaml").train(data=data, epochs=EPOCHS, project=project, name="k", exist_ok=True,
                               callbacks=[Progress()], **TINY)
""".replace("EPOCHS", str(EPOCHS)).replace("**TINY", ", ".join(f"{k}={v!r}" for k, v in TINY.items()))


def _epochs_in_csv(run: Path) -> list[int]:
    path = run / "results.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _check_run_folder(run: Path) -> int | None:
    """Every weights file loads; results.csv holds 1..n in order. The epoch last.pt finished (from 1)."""
    for path in sorted((run / "weights").glob("*.pt")):
        ckpt = load_checkpoint(path)  # raises CheckpointError on a torn or foreign file
        assert ckpt.epoch >= 0, path
    epochs = _epochs_in_csv(run)
    assert epochs == list(range(1, len(epochs) + 1)), epochs
    last = run / "weights" / "last.pt"
    return load_checkpoint(last).epoch + 1 if last.exists() else None


def _train(data: Path, project: Path, log, kill_at: int = 0, kill_late: float | None = None) -> int:
    """Run the training process once. With ``kill_late``, SIGKILL it in its second epoch, at that
    fraction of the time its first epoch took (the process may finish first)."""
    progress = project / "progress"
    progress.unlink(missing_ok=True)
    args = [sys.executable, "-c", CHILD, str(data), str(project), str(progress), str(kill_at)]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        if kill_late is not None:
            marks = [_wait_for_line(progress, n, proc) for n in (1, 2)]  # set-up done, one epoch done
            time.sleep(kill_late * (marks[1] - marks[0]))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_for_line(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> float:
    """When ``path`` had ``n`` lines (or the process ended)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            break
        time.sleep(0.01)
    return time.monotonic()


@needs_sigkill
def test_random_kills_then_resume_train_every_epoch_once(shapes_small, tmp_path):
    project, run = tmp_path / "runs", tmp_path / "runs" / "k"
    project.mkdir()
    rng = random.Random(16)
    with (tmp_path / "training.log").open("w") as log:
        # a kill inside the third checkpoint write (epoch 2: best.pt or last.pt) leaves its temp file
        assert _train(shapes_small, project, log, kill_at=3) == -signal.SIGKILL
        assert list((run / "weights").glob(".*.tmp")), "the kill should have left a temp file"
        _check_run_folder(run)
        for _ in range(2):  # kills at random moments late in an epoch, saves included
            if (_check_run_folder(run) or 0) >= EPOCHS:
                break
            _train(shapes_small, project, log, kill_late=rng.uniform(0.6, 1.1))
        for _ in range(2):  # then resume until done
            if (_check_run_folder(run) or 0) >= EPOCHS:
                break
            assert _train(shapes_small, project, log) == 0, (tmp_path / "training.log").read_text()[-3000:]
    assert _check_run_folder(run) == EPOCHS
    assert _epochs_in_csv(run) == list(range(1, EPOCHS + 1))
    assert not list(run.rglob("*.tmp")), list(run.rglob("*.tmp"))
    assert "left by an interrupted write" in (tmp_path / "training.log").read_text()


class _FillDiskAfterFirstEpoch(Callback):
    """Leaves ``room`` bytes free on the run folder's disk once epoch 1 is saved."""

    def __init__(self, room: int):
        self.room = room

    def on_epoch_end(self, trainer, row):
        if row["epoch"] == 1:
            st = os.statvfs(trainer.save_dir)
            with (trainer.save_dir.parent / "filler").open("wb") as f:
                f.truncate(0)
                chunk = b"\0" * 2**20
                for _ in range(max(0, (st.f_bavail * st.f_frsize - self.room) // len(chunk))):
                    f.write(chunk)


def test_full_disk_ends_training_with_one_line_and_keeps_the_last_good_weights(shapes_small, tmpfs):
    small_disk = tmpfs("128m")
    with pytest.raises(CheckpointError) as e:
        YOLO("yolov8n.yaml").train(
            data=str(shapes_small), epochs=2, project=str(small_disk), name="f",
            callbacks=[_FillDiskAfterFirstEpoch(room=2**20)], **TINY,
        )  # fmt: skip
    message = str(e.value)
    assert "\n" not in message and str(small_disk / "f" / "weights") in message
    weights = small_disk / "f" / "weights"
    assert load_checkpoint(weights / "last.pt").epoch == 0
    assert load_checkpoint(weights / "best.pt").epoch == 0
    assert torch.load(weights / "last.pt", weights_only=True)["optimizer"] is not None
    assert not list(weights.glob(".*.tmp"))  # the failed write cleaned up after itself
