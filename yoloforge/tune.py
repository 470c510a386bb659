"""Hyperparameter evolution: train, score, mutate the best so far, repeat (the advanced guide's last step).

    tuner = Evolution(space=DEFAULT_SPACE, iterations=300, save_dir=Path("runs/detect/tune"),
                      trial=train_one_trial)
    best = tuner.run()

Trial 1 trains with the starting hyperparameters (the defaults, or ``cfg=``); every later trial is a
mutation of a parent drawn from the best trials so far, fitness-weighted. Each finished trial is one
row of ``tune_results.csv`` (fitness, the four metrics, every hyperparameter of the space), written
atomically after the trial, so a killed tuner loses at most the trial it was running, and a rerun
with ``resume=True`` carries on from the rows it finds: none lost, none run twice. A trial's
mutation is drawn from (seed, trial number) alone, so an interrupted search continues exactly as an
uninterrupted one would have.

Trials themselves are injected (``trial(hyperparameters, index) -> TrialResult``): the default
trains a fresh model in a folder of its own (``trials/trialN``) and keeps only the best trial's
weights.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from yoloforge.files import write_text_atomic

METRIC_COLUMNS = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)")
DEFAULT_FITNESS = (0.0, 0.0, 0.1, 0.9)  # weights of METRIC_COLUMNS: 0.1 x mAP50 + 0.9 x mAP50-95

# name -> (low, high): the ranges a mutation may reach. Integers are rounded after mutation.
DEFAULT_SPACE: dict[str, tuple[float, float]] = {
    "lr0": (1e-5, 1e-1),
    "lrf": (1e-4, 1.0),
    "momentum": (0.6, 0.98),
    "weight_decay": (0.0, 1e-3),
    "warmup_epochs": (0.0, 5.0),
    "warmup_momentum": (0.0, 0.95),
    "box": (1.0, 20.0),
    "cls": (0.2, 4.0),
    "dfl": (0.4, 6.0),
    "hsv_h": (0.0, 0.1),
    "hsv_s": (0.0, 0.9),
    "hsv_v": (0.0, 0.9),
    "degrees": (0.0, 45.0),
    "translate": (0.0, 0.9),
    "scale": (0.0, 0.95),
    "shear": (0.0, 10.0),
    "perspective": (0.0, 0.001),
    "flipud": (0.0, 1.0),
    "fliplr": (0.0, 1.0),
    "mosaic": (0.0, 1.0),
    "mixup": (0.0, 1.0),
    "close_mosaic": (0.0, 10.0),
}
INTEGER_KEYS = frozenset({"close_mosaic"})


class TuneError(ValueError):
    """A bad search space, fitness or tune folder; the message names the file or key."""


@dataclass(frozen=True)
class TrialResult:
    metrics: dict[str, float]  # METRIC_COLUMNS -> value
    weights: Path | None = None  # the trial's best.pt, if it kept one
    run_dir: Path | None = None


@dataclass(frozen=True)
class Mutation:
    """How a child differs from its parent: each gene changes with probability ``probability`` by a
    factor exp-like around 1 (``1 + sigma * N(0, 1) * U(0, 1)``, kept in [0.3, 3]); parents are
    drawn from the ``parents`` fittest trials, the fitter the likelier."""

    parents: int = 5
    probability: float = 0.8
    sigma: float = 0.2


# ----------------------------------------------------------------------------------------------
# the search space and fitness


def load_space(path: str | Path, known: Sequence[str]) -> dict[str, tuple[float, float]]:
    """A ``space.yaml`` of ``name: [low, high]``; names must be training settings (``known``)."""
    from yoloforge.settings import read_yaml_mapping

    path, layout = Path(path), "setting: [low, high], e.g. lr0: [0.001, 0.1]"
    data = read_yaml_mapping(path, "space", layout, error=TuneError)
    if not data:
        raise TuneError(f"space={path}: expected a mapping of {layout}")
    space = {}
    for name, bounds in data.items():
        if name not in known:
            raise TuneError(f"space={path}: '{name}' is not a training setting that can be tuned")
        try:
            low, high = (float(v) for v in bounds)
        except (TypeError, ValueError):
            raise TuneError(f"space={path}: {name} must be [low, high], got {bounds!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise TuneError(f"space={path}: {name} needs finite low <= high, got [{low}, {high}]")
        space[str(name)] = (low, high)
    return space


def parse_fitness(value: str | Sequence[float] | None) -> tuple[float, float, float, float]:
    """Weights of P, R, mAP50, mAP50-95: '0,0,0.1,0.9' or a sequence of four numbers."""
    if value is None or value == "":
        return DEFAULT_FITNESS
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        weights = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        weights = ()
    if len(weights) != 4 or not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise TuneError(
            f"fitness={value!r}: give four weights >= 0 for P, R, mAP50, mAP50-95, e.g. fitness=0,0,0.1,0.9"
        )
    return weights  # type: ignore[return-value]


def fitness_of(metrics: Mapping[str, float], weights: Sequence[float]) -> float:
    values = [float(metrics.get(k, float("nan"))) for k in METRIC_COLUMNS]
    values = [0.0 if not math.isfinite(v) else v for v in values]
    return float(sum(w * v for w, v in zip(weights, values, strict=True)))


# ----------------------------------------------------------------------------------------------
# mutation


def clip_to_space(hyp: Mapping[str, float], space: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    out = {}
    for name, (low, high) in space.items():
        v = min(max(float(hyp[name]), low), high)
        out[name] = float(round(v)) if name in INTEGER_KEYS else float(f"{v:.5g}")
    return out


def mutate(
    rows: Sequence[Mapping[str, float]],
    space: Mapping[str, tuple[float, float]],
    rng: np.random.Generator,
    how: Mutation = Mutation(),
) -> dict[str, float]:
    """A child of the fittest finished trials (``rows`` hold 'fitness' and every key of ``space``)."""
    ranked = sorted(rows, key=lambda r: r["fitness"], reverse=True)[: how.parents]
    fitness = np.array([r["fitness"] for r in ranked], dtype=np.float64)
    weights = fitness - fitness.min() + 1e-6  # the least fit parent still has a small chance
    parent = ranked[rng.choice(len(ranked), p=weights / weights.sum())]
    names = list(space)
    genes = np.array([float(parent[n]) for n in names])
    factors = np.ones(len(names))
    while np.all(factors == 1):  # a child identical to its parent would waste a trial
        changes = rng.random(len(names)) < how.probability
        factors = (1 + changes * rng.standard_normal(len(names)) * rng.random(len(names)) * how.sigma).clip(
            0.3, 3.0
        )
    child = dict(zip(names, genes * factors, strict=True))
    for name in names:  # a gene at 0 cannot grow by a factor: let it jump into its range sometimes
        low, high = space[name]
        if genes[names.index(name)] == 0 and high > 0 and rng.random() < how.probability * how.sigma:
            child[name] = low + (high - low) * rng.random() * how.sigma
    return clip_to_space(child, space)


# ----------------------------------------------------------------------------------------------
# tune_results.csv


def results_columns(space: Mapping[str, Any]) -> list[str]:
    return ["iteration", "fitness", *METRIC_COLUMNS, *space]


def read_results(path: Path, space: Mapping[str, Any]) -> list[dict[str, float]]:
    """Finished trials of an earlier run of this search (empty when none)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in results_columns(space) if c not in (reader.fieldnames or [])]
        if missing:
            raise TuneError(
                f"{path}: has no column '{missing[0]}'; resume with the search space it was started with"
            )
        try:
            return [{k: float(v) for k, v in row.items() if k} for row in reader]
        except (TypeError, ValueError) as e:
            raise TuneError(f"{path}: damaged row ({e}); remove the last line to resume") from None


def write_results(path: Path, rows: Sequence[Mapping[str, float]], space: Mapping[str, Any]) -> None:
    """Every row, atomically: a kill never leaves half a line."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = results_columns(space)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([int(row[c]) if c == "iteration" else f"{row[c]:.6g}" for c in columns])
    write_text_atomic(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------
# the search


TrialFn = Callable[[dict[str, float], int], TrialResult]


@dataclass
class Evolution:
    """The search loop over injected trials; files go to ``save_dir``."""

    space: dict[str, tuple[float, float]]
    start: dict[str, float]  # hyperparameters of trial 1 (clipped into the space)
    iterations: int
    save_dir: Path
    trial: TrialFn
    fitness_weights: Sequence[float] = DEFAULT_FITNESS
    seed: int = 0
    mutation: Mutation = Mutation()
    keep_weights: bool = False  # keep every trial's weights, not just the best trial's
    plots: bool = True
    fixed: Mapping[str, Any] = field(default_factory=dict)  # settings every trial shares that
    # best_hyperparameters.yaml must carry to mean the same in train (e.g. optimizer)
    log: Callable[[str], None] = print

    @property
    def csv_path(self) -> Path:
        return self.save_dir / "tune_results.csv"

    def run(self) -> dict[str, float]:
        """Run trials until ``iterations`` are in tune_results.csv; returns the best row."""
        rows = read_results(self.csv_path, self.space)
        if rows:
            self.log(f"Resuming the search in {self.save_dir}: {len(rows)} of {self.iterations} trials done")
        for index in range(len(rows), self.iterations):
            hyp = self._next_hyperparameters(rows, index)
            self.log(
                f"Trial {index + 1}/{self.iterations}: " + ", ".join(f"{k}={v:g}" for k, v in hyp.items())
            )
            result = self.trial(dict(hyp), index)
            row = {
                "iteration": float(index + 1),
                "fitness": fitness_of(result.metrics, self.fitness_weights),
                **{k: float(result.metrics.get(k, float("nan"))) for k in METRIC_COLUMNS},
                **hyp,
            }
            row = {k: float(f"{v:.6g}") for k, v in row.items()}  # as the csv holds it, for resume
            rows.append(row)
            write_results(self.csv_path, rows, self.space)  # the trial counts from here on
            self._after_trial(rows, row, result)
        if not rows:
            raise TuneError(f"iterations={self.iterations}: nothing to run")
        best = max(rows, key=lambda r: r["fitness"])
        self.log(
            f"Best trial {int(best['iteration'])} of {len(rows)}: fitness {best['fitness']:.5f}; "
            f"{self.save_dir / 'best_hyperparameters.yaml'} trains with cfg="
        )
        return best

    def _next_hyperparameters(self, rows: list[dict[str, float]], index: int) -> dict[str, float]:
        if index == 0 or not rows:
            return clip_to_space(self.start, self.space)
        rng = np.random.default_rng([self.seed, index])  # the same child whether or not the run was resumed
        return mutate(rows, self.space, rng, self.mutation)

    def _after_trial(self, rows: list[dict[str, float]], row: dict[str, float], result: TrialResult) -> None:
        best = max(rows, key=lambda r: r["fitness"])
        is_best = best is row
        self.write_best(best, len(rows))  # its header counts the trials so far
        if is_best and result.weights is not None and result.weights.is_file():
            target = self.save_dir / "weights" / "best.pt"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(result.weights, target)
        if not self.keep_weights and result.run_dir is not None:
            shutil.rmtree(result.run_dir / "weights", ignore_errors=True)
        self.plot(rows)
        mark = " (best so far)" if is_best else ""
        self.log(
            f"Trial {int(row['iteration'])}: fitness {row['fitness']:.5f}{mark}; "
            f"best {best['fitness']:.5f} at trial {int(best['iteration'])}"
        )

    def plot(self, rows: Sequence[Mapping[str, float]]) -> None:
        """tune_fitness.png and tune_scatter_plots.png of the trials so far."""
        if self.plots:
            from yoloforge.plots import plot_tune_fitness, plot_tune_scatter

            plot_tune_fitness(rows, self.save_dir / "tune_fitness.png")
            plot_tune_scatter(rows, list(self.space), self.save_dir / "tune_scatter_plots.png")

    def write_best(self, best: Mapping[str, float], trials: int) -> None:
        """best_hyperparameters.yaml: the space's values of ``best``, usable as ``cfg=`` in train."""
        values = {**self.fixed}
        values.update({k: (int(best[k]) if k in INTEGER_KEYS else float(best[k])) for k in self.space})
        header = (
            f"# Best of {trials} trials so far: trial {int(best['iteration'])}, "
            f"fitness {best['fitness']:.5f}\n"
            + "".join(f"# {k}: {best[k]:.5g}\n" for k in METRIC_COLUMNS)
            + "# Train with: yoloforge train cfg=best_hyperparameters.yaml data=...\n"
        )
        write_text_atomic(
            self.save_dir / "best_hyperparameters.yaml", header + yaml.safe_dump(values, sort_keys=False)
        )


def yolo_trial(model: str, train_args: Mapping[str, Any], trials_dir: Path) -> TrialFn:
    """Trials that each train a fresh ``YOLO(model)`` with ``train_args`` and the trial's
    hyperparameters, in ``trials_dir/trialN`` (a trial that a kill interrupted starts over)."""

    def run(hyp: dict[str, float], index: int) -> TrialResult:
        from yoloforge.api import YOLO

        run_dir = trials_dir / f"trial{index + 1}"
        shutil.rmtree(run_dir, ignore_errors=True)
        settings = {**train_args, **hyp, "project": str(trials_dir), "name": run_dir.name, "exist_ok": False}
        for key in INTEGER_KEYS & settings.keys():
            settings[key] = int(settings[key])
        metrics = YOLO(model).train(**settings)
        values = dict(zip(METRIC_COLUMNS, metrics.box.mean_results(), strict=True)) if metrics else {}
        weights = run_dir / "weights" / "best.pt"
        return TrialResult(values, weights if weights.is_file() else None, run_dir)

    return run


# ----------------------------------------------------------------------------------------------
# the entry point: YOLO(...).tune(...) and `yoloforge tune`


def tune_folder(project: str | Path, name: str, resume: bool) -> Path:
    """A new ``project/name`` (tune, tune2, ...), or with ``resume`` the search to continue:
    ``project/name`` when it holds tune_results.csv, else the latest such folder named name*."""
    from yoloforge.runs import next_run_dir

    if not resume:
        return next_run_dir(project, name)
    named = Path(project) / name
    if (named / "tune_results.csv").is_file():
        return named
    found = [p.parent for p in Path(project).glob(f"{name}*/tune_results.csv")]
    if not found:
        raise TuneError(
            f"resume=True: no earlier search in {Path(project) / name}* (no tune_results.csv); "
            "drop resume=True to start one"
        )
    return max(found, key=lambda p: (p / "tune_results.csv").stat().st_mtime)


def run_tune(
    model: str, overrides: Mapping[str, Any], log: Callable[[str], None] = print
) -> dict[str, float]:
    """Search training hyperparameters for ``model``: tune settings (``TuneSettings``) and train
    settings (every other key, passed to each trial) in one flat mapping, as users type them."""
    from yoloforge.settings import TrainSettings, TuneSettings, build, flat_fields, to_flat_dict

    tune_keys = flat_fields(TuneSettings)
    settings = build(TuneSettings, {k: v for k, v in overrides.items() if k in tune_keys})
    train_overrides = {k: v for k, v in overrides.items() if k not in tune_keys}
    train = to_flat_dict(build(TrainSettings, {"model": model, **train_overrides}))  # checks every key now
    known = [k for k in flat_fields(TrainSettings) if k not in ("model", "data", "cfg", "resume")]
    space = load_space(settings.space, known) if settings.space else dict(DEFAULT_SPACE)
    fixed: dict[str, Any] = {}
    if train["optimizer"] == "auto" and {"lr0", "momentum"} & space.keys():
        fixed["optimizer"] = "SGD"
        log("tune: optimizer=auto would ignore lr0 and momentum; the trials use optimizer=SGD "
            "(pass optimizer=AdamW to search with AdamW)")  # fmt: skip
    elif train["optimizer"] != "auto":
        fixed["optimizer"] = train["optimizer"]
    trial_args = {k: v for k, v in train_overrides.items() if k not in space and k not in ("model", "cfg")}
    trial_args.setdefault("plots", False)
    trial_args.setdefault("report", False)  # the tune folder has its own summary; trials need none
    trial_args.update(fixed)
    if Path(str(trial_args.get("data", ""))).is_file():  # Ray runs trials in folders of their own
        trial_args["data"] = str(Path(trial_args["data"]).resolve())
    if Path(model).is_file():
        model = str(Path(model).resolve())
    save_dir = tune_folder(settings.project, settings.name, settings.resume)
    log(f"tune: {settings.iterations} trials of {len(space)} hyperparameters, results in {save_dir}")
    evolution = Evolution(
        space=space,
        start={k: float(train[k]) for k in space},
        iterations=settings.iterations,
        save_dir=save_dir,
        trial=yolo_trial(model, trial_args, save_dir / "trials"),
        fitness_weights=parse_fitness(settings.fitness),
        seed=int(train["seed"]),
        keep_weights=settings.keep_weights,
        plots=settings.plots,
        fixed=fixed,
        log=log,
    )
    if settings.tuner == "ray":
        from yoloforge.tune_ray import RayPlan, run_ray

        plan = RayPlan(
            settings.ray_address, settings.cpu_per_trial, settings.gpu_per_trial, settings.grace_period
        )
        return run_ray(evolution, model, trial_args, plan)
    return evolution.run()
