"""Hyperparameter evolution (tune.py) over injected trials: the folder, resume, mutation, inputs.

The trials here are functions of the hyperparameters (no training), so the search itself is tested
in milliseconds; a real end-to-end search on the demo data is in test_tune_e2e.py.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from yoloforge.tune import (
    DEFAULT_SPACE,
    INTEGER_KEYS,
    METRIC_COLUMNS,
    Evolution,
    TrialResult,
    TuneError,
    clip_to_space,
    fitness_of,
    load_space,
    mutate,
    parse_fitness,
)

START = {"lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "close_mosaic": 10, "mosaic": 1.0, "mixup": 0.0}
SPACE = {k: DEFAULT_SPACE[k] for k in START}


def landscape(hyp: dict[str, float]) -> dict[str, float]:
    """A smooth made-up response with its best at lr0 = 0.03, momentum = 0.9."""
    score = math.exp(-(((math.log10(hyp["lr0"]) - math.log10(0.03)) / 0.5) ** 2)) * (
        1 - abs(hyp["momentum"] - 0.9)
    )
    return dict(zip(METRIC_COLUMNS, (score, score, score, score * 0.6), strict=True))


class FakeTrials:
    def __init__(self, root: Path, stop_at: int | None = None):
        self.root, self.stop_at, self.seen = root, stop_at, []

    def __call__(self, hyp: dict[str, float], index: int) -> TrialResult:
        if index == self.stop_at:
            raise KeyboardInterrupt
        self.seen.append(dict(hyp))
        run = self.root / f"trial{index + 1}"
        (run / "weights").mkdir(parents=True)
        (run / "weights" / "best.pt").write_text(f"weights of trial {index + 1}")
        return TrialResult(landscape(hyp), run / "weights" / "best.pt", run)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _evolution(tmp_path: Path, trials, iterations: int, plots: bool = True) -> Evolution:
    return Evolution(
        space=SPACE, start=START, iterations=iterations, save_dir=tmp_path / "tune", trial=trials,
        log=lambda line: None, plots=plots,
    )  # fmt: skip


def test_three_trials_leave_the_tune_folder(tmp_path):
    (tmp_path / "tune").mkdir()
    trials = FakeTrials(tmp_path / "tune" / "trials")
    best = _evolution(tmp_path, trials, 3).run()
    folder = tmp_path / "tune"
    rows = _rows(folder / "tune_results.csv")
    assert [r["iteration"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["iteration", "fitness", *METRIC_COLUMNS, *SPACE]
    assert {k: float(rows[0][k]) for k in START} == pytest.approx(START)  # trial 1 is the start
    assert float(rows[0]["fitness"]) == pytest.approx(fitness_of(landscape(START), (0, 0, 0.1, 0.9)))
    assert best["fitness"] == max(float(r["fitness"]) for r in rows)
    hyp = yaml.safe_load((folder / "best_hyperparameters.yaml").read_text())
    assert set(hyp) == set(SPACE) and isinstance(hyp["close_mosaic"], int)
    assert hyp["lr0"] == pytest.approx(best["lr0"])
    best_trial = int(best["iteration"])
    assert (folder / "weights" / "best.pt").read_text() == f"weights of trial {best_trial}"
    assert not any((folder / "trials").rglob("*.pt"))  # other trials' weights are not kept
    for png in ("tune_fitness.png", "tune_scatter_plots.png"):
        assert (folder / png).stat().st_size > 10_000


def test_a_killed_search_resumes_to_exactly_the_uninterrupted_trials(tmp_path):
    whole = FakeTrials(tmp_path / "a" / "trials")
    Evolution(SPACE, START, 4, tmp_path / "a", whole, log=lambda line: None, plots=False).run()

    (tmp_path / "b").mkdir()
    first = FakeTrials(tmp_path / "b" / "trials", stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        Evolution(SPACE, START, 3, tmp_path / "b", first, log=lambda line: None, plots=False).run()
    assert len(_rows(tmp_path / "b" / "tune_results.csv")) == 2  # trials 1 and 2 are kept
    rest = FakeTrials(tmp_path / "b" / "trials")
    Evolution(SPACE, START, 4, tmp_path / "b", rest, log=lambda line: None, plots=False).run()
    rows = _rows(tmp_path / "b" / "tune_results.csv")
    assert [r["iteration"] for r in rows] == ["1", "2", "3", "4"]  # none lost, none twice
    assert len(rest.seen) == 2  # only trials 3 and 4 ran again
    assert first.seen + rest.seen == whole.seen  # the same children as without the kill


def test_evolution_climbs_a_landscape(tmp_path):
    (tmp_path / "tune").mkdir()
    best = _evolution(tmp_path, FakeTrials(tmp_path / "tune" / "trials"), 40, plots=False).run()
    assert best["fitness"] > 1.5 * fitness_of(landscape(START), (0, 0, 0.1, 0.9))


def test_mutation_stays_in_the_space_and_changes_something():
    rows = [
        {"fitness": f, **clip_to_space({**START, "lr0": lr}, SPACE)} for f, lr in ((0.5, 0.01), (0.2, 0.05))
    ]
    rng = np.random.default_rng(0)
    for _ in range(200):
        child = mutate(rows, SPACE, rng)
        assert set(child) == set(SPACE)
        for name, (low, high) in SPACE.items():
            assert low <= child[name] <= high
        assert all(float(child[k]).is_integer() for k in INTEGER_KEYS & child.keys())
        assert any(child[k] != rows[0][k] for k in SPACE) or any(child[k] != rows[1][k] for k in SPACE)


def test_space_file_and_fitness_weights_are_checked(tmp_path):
    known = list(DEFAULT_SPACE) + ["epochs"]
    good = tmp_path / "space.yaml"
    good.write_text("lr0: [0.001, 0.02]\nmosaic: [0.5, 1]\n")
    assert load_space(good, known) == {"lr0": (0.001, 0.02), "mosaic": (0.5, 1.0)}
    for text, message in (
        ("lr00: [0, 1]\n", "'lr00' is not a training setting"),
        ("lr0: 0.01\n", "lr0 must be \\[low, high\\]"),
        ("lr0: [0.1, 0.01]\n", "low <= high"),
        ("- lr0\n", "expected a mapping"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(TuneError, match=message):
            load_space(bad, known)
    with pytest.raises(TuneError, match="file not found"):
        load_space(tmp_path / "missing.yaml", known)
    assert parse_fitness(None) == (0.0, 0.0, 0.1, 0.9)
    assert parse_fitness("0,0,1,0") == (0.0, 0.0, 1.0, 0.0)
    for bad_weights in ("1,2", "a,b,c,d", "0,0,0,0", "0,0,-1,2"):
        with pytest.raises(TuneError, match="four weights"):
            parse_fitness(bad_weights)
