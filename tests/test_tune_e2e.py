"""`yoloforge tune` end to end on tiny generated data: the tune folder, a kill then resume, the best
hyperparameters as cfg=, and the same search on a local Ray instance.

One epoch per trial at imgsz 64: these check the wiring and the files, not what the search finds
(benchmarks/bench_tune.py measures that).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from system_marks import needs_sigkill

from yoloforge.cli import main

TINY = ["epochs=1", "imgsz=64", "batch=4", "workers=0", "model=yolov8n.yaml"]


def _rows(folder: Path) -> list[dict[str, str]]:
    path = folder / "tune_results.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def three_trials(shapes_small, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("tune")
    assert main(["tune", f"data={shapes_small}", "iterations=3", f"project={project}", *TINY]) == 0
    return project / "tune"


def test_three_trials_leave_the_tune_folder(three_trials):
    rows = _rows(three_trials)
    assert [r["iteration"] for r in rows] == ["1", "2", "3"]
    assert all(0 <= float(r["metrics/mAP50-95(B)"]) <= 1 for r in rows)
    assert len({r["lr0"] + r["mosaic"] + r["box"] for r in rows}) == 3  # each trial tried something new
    for name in (
        "best_hyperparameters.yaml",
        "tune_fitness.png",
        "tune_scatter_plots.png",
        "weights/best.pt",
    ):
        assert (three_trials / name).is_file(), name
    assert sorted(p.name for p in (three_trials / "trials").iterdir()) == ["trial1", "trial2", "trial3"]
    assert not list((three_trials / "trials").rglob("*.pt"))  # only the best trial's weights are kept


def test_best_hyperparameters_train_with_cfg(three_trials, shapes_small, tmp_path):
    best = yaml.safe_load((three_trials / "best_hyperparameters.yaml").read_text())
    assert best["optimizer"] == "SGD"  # optimizer=auto would ignore the tuned lr0 and momentum
    cfg = str(three_trials / "best_hyperparameters.yaml")
    assert (
        main(["train", f"data={shapes_small}", f"cfg={cfg}", f"project={tmp_path}", "plots=False", *TINY])
        == 0
    )
    args = yaml.safe_load((tmp_path / "train" / "args.yaml").read_text())
    assert args["lr0"] == pytest.approx(best["lr0"]) and args["optimizer"] == "SGD"


@needs_sigkill
def test_a_killed_search_resumes_to_exactly_the_asked_trials(shapes_small, tmp_path):
    """Killed (SIGKILL) right after trial 2 was recorded; resume=True with iterations=4 ends at 4 rows."""
    command = [sys.executable, "-m", "yoloforge", "tune", f"data={shapes_small}", "iterations=3",
               f"project={tmp_path}", *TINY]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while len(_rows(tmp_path / "tune")) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(_rows(tmp_path / "tune"))
    assert done in (2, 3)  # trial 3 may have finished before the kill landed
    assert (
        main(["tune", f"data={shapes_small}", "iterations=4", "resume=True", f"project={tmp_path}", *TINY])
        == 0
    )
    rows = _rows(tmp_path / "tune")
    assert [r["iteration"] for r in rows] == ["1", "2", "3", "4"]
    assert not (tmp_path / "tune2").exists()


def test_resume_without_an_earlier_search_is_one_line(tmp_path, capsys):
    assert main(["tune", "data=shapes", "model=yolov8n.yaml", "resume=True", f"project={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "no earlier search" in err and len(err.splitlines()) == 1


def test_ray_tune_runs_two_trials_on_a_local_instance(shapes_small, tmp_path):
    pytest.importorskip("ray", reason='the tune extra: pip install -e ".[tune]"')
    args = ["tune", f"data={shapes_small}", "tuner=ray", "iterations=2", f"project={tmp_path}", *TINY]
    assert main(args) == 0
    folder = tmp_path / "tune"
    rows = _rows(folder)
    assert [r["iteration"] for r in rows] == ["1", "2"]
    assert float(rows[0]["lr0"]) == pytest.approx(0.01)  # Ray's first trial is the starting point
    assert (folder / "best_hyperparameters.yaml").is_file() and (folder / "weights" / "best.pt").is_file()
