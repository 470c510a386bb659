"""Faults in training over several processes: 2 gloo processes under torchrun, one killed.

SIGKILL to rank 1 after the first epoch: rank 0 must not wait for it forever; torchrun ends the run
with an error naming the failed rank within 60 s. Then ``resume=True`` from last.pt in one process
(2 -> 1: the batch stays the global batch) completes the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from system_marks import needs_proc

from yoloforge.checkpoint import load_checkpoint
from yoloforge.distributed import launch_command
from yoloforge.results_csv import read_rows

EPOCHS = 4
pytestmark = needs_proc  # finds the rank's process through /proc


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's child process running ``rank``, found through /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def _wait_for(what, timeout: float, step: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = what()
        if found:
            return found
        time.sleep(step)
    return None


def test_killing_one_rank_ends_the_run_within_a_minute_and_resume_in_one_process_completes_it(
    shapes_small: Path, tmp_path: Path
):
    args = ["train", f"data={shapes_small}", "model=yolov8n.yaml", "device=cpu", "workers=0", "imgsz=64"]
    args += ["batch=4", f"epochs={EPOCHS}", "plots=False", "val=False", f"project={tmp_path}"]
    log = tmp_path / "torchrun.log"
    with open(log, "w") as out:
        launcher = subprocess.Popen(launch_command(2, args), stdout=out, stderr=subprocess.STDOUT)
    try:
        last = tmp_path / "train" / "weights" / "last.pt"
        assert _wait_for(last.exists, 120), log.read_text()[-3000:]
        victim = _rank_pid(launcher.pid, 1)
        assert victim is not None and launcher.poll() is None, log.read_text()[-3000:]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        code = launcher.wait(timeout=90)
        took = time.monotonic() - killed
    finally:
        if launcher.poll() is None:
            launcher.kill()
    text = log.read_text()
    assert code != 0 and took < 60, f"exit {code} after {took:.0f} s\n{text[-3000:]}"
    assert "local_rank: 1" in text and "SIGKILL" in text  # torchrun names the failed rank
    done_before = load_checkpoint(last).epoch + 1
    assert done_before < EPOCHS, "the run ended before the kill: nothing to resume"

    resume = [sys.executable, "-m", "yoloforge", "train", "resume=True", f"model={last}", "workers=0"]
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}  # as torchrun's processes: fast on a busy machine
    done = subprocess.run(resume, capture_output=True, text=True, timeout=240, env=one_thread)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = read_rows(tmp_path / "train" / "results.csv")
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    assert load_checkpoint(last).epoch == EPOCHS - 1
    assert f"from epoch {done_before + 1} to {EPOCHS}" in done.stdout + done.stderr
