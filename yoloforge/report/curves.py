"""Findings from results.csv alone: convergence, overfitting, instability, localisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yoloforge.report import trend
from yoloforge.report.findings import Finding
from yoloforge.run_reader import Run

MAP, MAP50 = "metrics/mAP50-95(B)", "metrics/mAP50(B)"
MIN_RISE = 0.02  # overfitting: validation loss at the end at least 2% above its minimum
UNSTABLE_ABS, UNSTABLE_REL = 0.02, 0.10  # noise above 0.02 mAP and above 10% of its level
LOOSE_RATIO, LOOSE_MIN_MAP50 = 0.5, 0.3  # localisation: mAP50-95 / mAP50 below 0.5 at mAP50 >= 0.3


@dataclass
class Curves:
    """The per-epoch sums the findings look at, from a run's results.csv."""

    epochs: np.ndarray  # (E,)
    map: np.ndarray  # mAP50-95 (NaN where not validated)
    map50: np.ndarray
    train_loss: np.ndarray  # box + cls + dfl
    val_loss: np.ndarray
    fitness: np.ndarray  # 0.1 mAP50 + 0.9 mAP50-95, what picks best.pt

    @classmethod
    def of(cls, run: Run) -> Curves:
        def total(prefix: str) -> np.ndarray:
            return sum(run.column(f"{prefix}/{k}_loss") for k in ("box", "cls", "dfl"))

        m, m50 = run.column(MAP), run.column(MAP50)
        return cls(run.column("epoch"), m, m50, total("train"), total("val"), 0.1 * m50 + 0.9 * m)

    @property
    def best_epoch(self) -> int | None:
        """best.pt's epoch: the highest fitness, a later epoch winning a tie (as the trainer)."""
        ok = np.flatnonzero(np.isfinite(self.fitness))
        if not len(ok):
            return None
        values = self.fitness[ok]
        return int(self.epochs[ok[len(values) - 1 - int(np.argmax(values[::-1]))]])

    def at(self, values: np.ndarray, epoch: int) -> float:
        return float(values[np.flatnonzero(self.epochs == epoch)[0]])


def curve_findings(run: Run, notes: list[str]) -> list[Finding]:
    c = Curves.of(run)
    validated = int(np.isfinite(c.map).sum())
    if validated < trend.MIN_POINTS:
        notes.append(
            f"Only {validated} validated epochs: too few to fit a slope, so nothing is said about "
            f"convergence, overfitting or stability (at least {trend.MIN_POINTS} are needed)."
        )
        return [f for f in (localisation(c),) if f]
    found = [overfitting(c) or convergence(c, run), unstable(c, run), localisation(c)]
    return [f for f in found if f]


def overfitting(c: Curves) -> Finding | None:
    """Validation loss rising since its minimum while the training loss keeps falling."""
    x, v = trend.finite(c.epochs, c.val_loss)
    if len(x) < trend.MIN_POINTS:
        return None
    i = int(np.argmin(v))
    onset, after = int(x[i]), x >= x[i]
    val_trend = trend.fit(x[after], v[after])
    train_trend = trend.fit(x[after], c.train_loss[np.isin(c.epochs, x[after])])
    if val_trend is None or train_trend is None or not val_trend.rising or train_trend.slope >= 0:
        return None
    rise = (v[-1] - v[i]) / v[i]
    if rise < MIN_RISE:
        return None
    best = c.best_epoch
    evidence = {
        "onset_epoch": onset,
        "val_loss_min": float(v[i]),
        "val_loss_last": float(v[-1]),
        "val_loss_rise": float(rise),
        "val_loss_slope": val_trend.slope,
        "val_loss_slope_stderr": val_trend.stderr,
        "train_loss_slope": train_trend.slope,
        "train_loss_slope_stderr": train_trend.stderr,
        "best_epoch": best,
        "best_map50_95": c.at(c.map, best) if best else None,
        "last_map50_95": float(c.map[np.isfinite(c.map)][-1]),
    }
    sentence = (
        f"Overfitting from epoch {onset}: the validation loss (box + cls + dfl) rose from its minimum "
        f"{v[i]:.4g} to {v[-1]:.4g} (+{100 * rise:.1f}%, slope {val_trend.text()}) while the training "
        f"loss kept falling ({train_trend.text()}). best.pt is from epoch {best} "
        f"(mAP50-95 {evidence['best_map50_95']:.3f}; last epoch {evidence['last_map50_95']:.3f})."
    )
    advice = (
        f"Keep best.pt (epoch {best}). To delay overfitting: more augmentation (e.g. larger scale=, "
        f"mixup=), more training images, or fewer epochs (epochs={max(onset, best or onset)})."
    )
    return Finding("overfitting", sentence, advice, evidence, epoch=onset)


def convergence(c: Curves, run: Run) -> Finding:
    """Is mAP50-95 still rising over the last epochs, beyond its noise?"""
    validated = int(np.isfinite(c.map).sum())
    k = trend.window(validated)
    m = trend.fit_last(c.epochs, c.map, k)
    train = trend.fit_last(c.epochs, c.train_loss, k)
    val = trend.fit_last(c.epochs, c.val_loss, k)
    last = float(c.map[np.isfinite(c.map)][-1])
    evidence = {
        "window_epochs": m.points,
        "map50_95_slope": m.slope,
        "map50_95_slope_stderr": m.stderr,
        "last_map50_95": last,
        "train_loss_slope": train.slope if train else None,
        "train_loss_slope_stderr": train.stderr if train else None,
        "val_loss_slope": val.slope if val else None,
        "val_loss_slope_stderr": val.stderr if val else None,
    }
    losses = _losses_text(train, val)
    epochs = int(run.args.get("epochs") or c.epochs[-1])
    if m.rising:
        evidence["suggested_epochs"] = 2 * epochs
        sentence = f"Still improving: mAP50-95 rose {m.text()} to {last:.3f}{losses}."
        advice = (
            f"Train longer, e.g. epochs={2 * epochs} (twice this run's {epochs}, as the guide suggests); "
            "a finished run continues from its weights/last.pt."
        )
        return Finding("still_improving", sentence, advice, evidence, epoch=m.last)
    direction = "fell" if m.falling else "levelled off"
    sentence = f"Converged: mAP50-95 {direction} at {last:.3f}, slope {m.text()}{losses}."
    advice = (
        "More epochs of the same training will add little. Next, as the guide orders them: more or better "
        "labelled data, a larger model (e.g. yolov8s), a larger imgsz for small objects."
    )
    return Finding("converging", sentence, advice, evidence, epoch=m.last)


def _losses_text(train: trend.Trend | None, val: trend.Trend | None) -> str:
    parts = [f"{name} loss {t.text()}" for name, t in (("training", train), ("validation", val)) if t]
    return "; " + ", ".join(parts) if parts else ""


def unstable(c: Curves, run: Run) -> Finding | None:
    """Epoch-to-epoch swings of mAP50-95 over the second half of the run, beyond a smooth trend."""
    x, m = trend.finite(c.epochs, c.map)
    half = len(x) // 2
    x, m = x[half:], m[half:]
    sigma = trend.noise(m)
    level = float(np.mean(m)) if len(m) else 0.0
    if not np.isfinite(sigma) or sigma <= max(UNSTABLE_ABS, UNSTABLE_REL * level):
        return None
    drops = np.diff(m)
    j = int(np.argmin(drops))
    evidence = {
        "map50_95_noise": sigma,
        "map50_95_mean": level,
        "from_epoch": int(x[0]),
        "largest_drop": float(-drops[j]),
        "largest_drop_epoch": int(x[j + 1]),
        "batch": run.args.get("batch"),
        "lr0": run.args.get("lr0"),
    }
    sentence = (
        f"Unstable validation: from epoch {int(x[0])} on, mAP50-95 swings by {sigma:.3f} from epoch to epoch "
        f"around its mean {level:.3f} (largest drop {-drops[j]:.3f}, at epoch {int(x[j + 1])})."
    )
    now = {k: run.args[k] for k in ("lr0", "batch") if run.args.get(k) is not None}
    advice = (
        "Single epochs say little here. A larger validation set steadies the metric; a lower lr0 "
        f"{_now(now, 'lr0')}steadies training; a larger batch {_now(now, 'batch')}gives steadier "
        "BatchNorm statistics."
    )
    return Finding("unstable", sentence, advice, evidence, epoch=int(x[0]))


def _now(values: dict, key: str) -> str:
    return f"(now {values[key]}) " if key in values else ""


def localisation(c: Curves) -> Finding | None:
    """Objects found (mAP50 high) but boxes loose (mAP50-95 low) at best.pt's epoch."""
    best = c.best_epoch
    if best is None:
        return None
    m50, m = c.at(c.map50, best), c.at(c.map, best)
    if m50 < LOOSE_MIN_MAP50 or m / m50 >= LOOSE_RATIO:
        return None
    evidence = {"epoch": best, "map50": m50, "map50_95": m, "ratio": m / m50}
    sentence = (
        f"Loose boxes: at epoch {best} (best.pt) mAP50 is {m50:.3f} but mAP50-95 only {m:.3f} "
        f"(ratio {m / m50:.2f}): objects are found, their boxes are not tight."
    )
    advice = (
        "Check that the labels are tight and drawn the same way (yoloforge check); a larger imgsz and "
        "more epochs help box precision (watch box_loss and dfl_loss)."
    )
    return Finding("localisation", sentence, advice, evidence, epoch=best)
