"""The same search on Ray Tune: trials spread over a local Ray instance or a cluster, with ASHA
stopping the weak ones early from each epoch's fitness.

Ray is an optional extra (``pip install "yoloforge[tune]"``). Trials train fresh models exactly as
the evolution's do (``tune.yolo_trial``'s settings), each in its own run folder under the tune
folder; the results land in the same ``tune_results.csv`` and ``best_hyperparameters.yaml``, and
the best trial's weights in ``weights/best.pt``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoloforge.tune import INTEGER_KEYS, METRIC_COLUMNS, Evolution, clip_to_space, fitness_of, write_results

RAY_EXTRA = 'pip install "yoloforge[tune]"'
SHORT = dict(zip(METRIC_COLUMNS, ("precision", "recall", "mAP50", "mAP50-95"), strict=True))


@dataclass(frozen=True)
class RayPlan:
    """Where and how Ray runs the trials."""

    address: str = ""  # an existing cluster ('auto', 'ray://host:10001'); '' starts a local instance
    cpu_per_trial: float = 1.0
    gpu_per_trial: float = 0.0
    grace_period: int = 1  # epochs every trial runs before ASHA may stop it


def require_ray():
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ImportError(f"tuner=ray needs Ray Tune, which is not installed; {RAY_EXTRA}") from None
    return ray, tune


def param_space(space: Mapping[str, tuple[float, float]], tune: Any) -> dict[str, Any]:
    """The evolution's bounds as Ray distributions: log-uniform where a range spans decades."""
    out = {}
    for name, (low, high) in space.items():
        if low == high:
            out[name] = low
        elif name in INTEGER_KEYS:
            out[name] = tune.randint(int(low), int(high) + 1)
        elif low > 0 and high / low >= 100:
            out[name] = tune.loguniform(low, high)
        else:
            out[name] = tune.uniform(low, high)
    return out


def _trainable(
    model: str, train_args: Mapping[str, Any], trials_dir: Path, weights: Sequence[float]
) -> Callable:
    """The function each Ray trial runs: train one fresh model, report fitness after every epoch."""

    def run(config: dict[str, Any]) -> None:
        from ray import tune

        from yoloforge.api import YOLO
        from yoloforge.callbacks import Callback

        class Report(Callback):
            best = -math.inf
            best_values: dict[str, float] = {}

            def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> None:
                values = {k: float(row.get(k, math.nan)) for k in METRIC_COLUMNS}
                fitness = fitness_of(values, weights)
                if fitness >= self.best:
                    self.best, self.best_values = fitness, values
                tune.report(
                    {
                        "epoch": int(row["epoch"]),
                        "fitness": fitness,
                        "best_fitness": self.best,
                        **{f"best_{SHORT[k]}": v for k, v in self.best_values.items()},
                        "run_dir": str(trainer.save_dir),
                    }
                )

        hyp = {k: (int(v) if k in INTEGER_KEYS else float(v)) for k, v in config.items()}
        name = f"trial_{tune.get_context().get_trial_id()}"
        settings = {**train_args, **hyp, "project": str(trials_dir), "name": name, "exist_ok": False}
        YOLO(model).train(callbacks=[Report()], **settings)

    return run


def run_ray(
    evolution: Evolution, model: str, train_args: Mapping[str, Any], plan: RayPlan
) -> dict[str, float]:
    """Run ``evolution.iterations`` trials of ``evolution.space`` on Ray; returns the best row."""
    ray, tune = require_ray()
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    save_dir = evolution.save_dir.resolve()
    trials_dir = save_dir / "trials"
    trials_dir.mkdir(parents=True, exist_ok=True)
    started_here = not ray.is_initialized()
    if started_here:
        if plan.address:
            ray.init(address=plan.address, log_to_driver=True)
        else:
            ray.init(include_dashboard=False, log_to_driver=True)
    try:
        epochs = int(train_args.get("epochs", 100))
        trainable = tune.with_resources(
            _trainable(model, train_args, trials_dir, evolution.fitness_weights),
            {"cpu": plan.cpu_per_trial, "gpu": plan.gpu_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(evolution.space, tune),
            tune_config=tune.TuneConfig(
                metric="fitness",
                mode="max",
                num_samples=evolution.iterations,
                search_alg=BasicVariantGenerator(
                    points_to_evaluate=[clip_to_space(evolution.start, evolution.space)]
                ),
                scheduler=ASHAScheduler(
                    time_attr="epoch", max_t=max(epochs, 1), grace_period=min(plan.grace_period, epochs)
                ),
            ),
            run_config=tune.RunConfig(name="ray", storage_path=str(save_dir), verbose=1),
        )
        grid = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    return _collect(evolution, grid)


def _collect(evolution: Evolution, grid: Any) -> dict[str, float]:
    """Ray's trials as tune_results.csv rows, best_hyperparameters.yaml and the best weights."""
    rows, run_dirs = [], []
    for result in grid:
        metrics = result.metrics or {}
        if "best_fitness" not in metrics:  # the trial failed before its first epoch ended
            continue
        values = {k: float(metrics.get(f"best_{SHORT[k]}", math.nan)) for k in METRIC_COLUMNS}
        hyp = clip_to_space(result.config, evolution.space)
        row = {"fitness": fitness_of(values, evolution.fitness_weights), **values, **hyp}
        rows.append({k: float(f"{v:.6g}") for k, v in row.items()})
        run_dirs.append(Path(metrics["run_dir"]))
    if not rows:
        raise RuntimeError(
            f"Ray Tune finished no trial; see the trial logs under {evolution.save_dir / 'ray'}"
        )
    for i, row in enumerate(rows):
        row["iteration"] = float(i + 1)
    write_results(evolution.csv_path, rows, evolution.space)
    best_index = max(range(len(rows)), key=lambda i: rows[i]["fitness"])
    evolution.write_best(rows[best_index], len(rows))
    best_weights = run_dirs[best_index] / "weights" / "best.pt"
    if best_weights.is_file():
        (evolution.save_dir / "weights").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best_weights, evolution.save_dir / "weights" / "best.pt")
    if not evolution.keep_weights:
        for run_dir in run_dirs:
            shutil.rmtree(run_dir / "weights", ignore_errors=True)
    evolution.plot(rows)
    return rows[best_index]
