"""The pictures of a run: PR / F1 / P / R curves, confusion matrices, results.png and labels.jpg.

The only module that imports matplotlib. Figures are ``matplotlib.figure.Figure`` objects drawn by
the Agg canvas directly: no pyplot, no backend switch, nothing process-wide. Each function takes
arrays (see metrics.BoxMetrics) and a path, writes one file and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from yoloforge.draw import color
from yoloforge.metrics import smooth
from yoloforge.run_reader import read_results

MAX_LEGEND_CLASSES = 20  # more classes: thin grey lines without a legend
RESULTS_COLUMNS = (  # results.png, row by row: what the tutorial reads
    ("train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)", "metrics/recall(B)"),
    ("val/box_loss", "val/cls_loss", "val/dfl_loss", "metrics/mAP50(B)", "metrics/mAP50-95(B)"),
)


def _figure(
    width: float, height: float, rows: int = 1, cols: int = 1, tight: bool = True
) -> tuple[Figure, np.ndarray]:
    """A figure on its own Agg canvas. ``tight`` fits labels automatically (one extra draw pass)."""
    fig = Figure(figsize=(width, height), tight_layout=tight)
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())


def _save(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _rgb(class_id: int) -> tuple[float, float, float]:
    b, g, r = color(class_id)
    return r / 255, g / 255, b / 255


def plot_pr_curve(
    recall: np.ndarray, precision: np.ndarray, ap50: np.ndarray, names: Sequence[str], path: str | Path
) -> Path:
    """PR curve at IoU 0.5: ``recall`` (R,), ``precision`` (K, R) per class, ``ap50`` (K,)."""
    fig, (ax,) = _figure(9, 6)
    legend = len(names) <= MAX_LEGEND_CLASSES
    for k, (name, ap) in enumerate(zip(names, ap50, strict=True)):
        label = f"{name} {ap:.3f}" if legend else None
        ax.plot(recall, precision[k], linewidth=1, label=label, color=None if legend else "grey")
    if len(names):
        ax.plot(
            recall,
            precision.mean(0),
            linewidth=3,
            color="blue",
            label=f"all classes {ap50.mean():.3f} mAP@0.5",
        )
    _finish_axes(ax, "Recall", "Precision", "Precision-Recall Curve")
    return _save(fig, path)


def plot_mc_curve(
    confidence: np.ndarray, values: np.ndarray, names: Sequence[str], path: str | Path, ylabel: str
) -> Path:
    """A metric (F1, Precision or Recall) against confidence: ``values`` (K, C) per class."""
    fig, (ax,) = _figure(9, 6)
    legend = len(names) <= MAX_LEGEND_CLASSES
    for k, name in enumerate(names):
        label = name if legend else None
        ax.plot(confidence, values[k], linewidth=1, label=label, color=None if legend else "grey")
    if len(names):
        mean = smooth(values.mean(0), 0.05)
        best = int(mean.argmax())
        label = f"all classes {mean[best]:.2f} at {confidence[best]:.3f}"
        ax.plot(confidence, mean, linewidth=3, color="blue", label=label)
    _finish_axes(ax, "Confidence", ylabel, f"{ylabel}-Confidence Curve")
    return _save(fig, path)


def _finish_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1.02))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize="small")


def plot_confusion_matrix(
    matrix: np.ndarray, names: Sequence[str], path: str | Path, normalize: bool
) -> Path:
    """(nc + 1, nc + 1) counts, rows = predicted, columns = true; the last index is background.

    ``normalize`` divides each column by its total (the share of each true class).
    """
    values = matrix / (matrix.sum(0, keepdims=True) + 1e-9) if normalize else matrix.astype(float)
    labels = [*names, "background"]
    n = len(labels)
    side = min(max(6.0, 0.45 * n + 3), 24.0)
    fig, (ax,) = _figure(side, side * 0.85)
    shown = np.where(values > 0, values, np.nan)  # empty cells stay white
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(values.max(), 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:  # readable: write the numbers and the names
        for (row, col), v in np.ndenumerate(values):
            if v > 0:
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                dark = v > 0.5 * (1 if normalize else values.max())
                ax.text(
                    col, row, text, ha="center", va="center", fontsize=8, color="white" if dark else "black"
                )
        ax.set_xticks(range(n), labels, rotation=90)
        ax.set_yticks(range(n), labels)
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion Matrix" + (" Normalized" if normalize else ""))
    return _save(fig, path)


def plot_results(csv_path: str | Path, path: str | Path | None = None) -> Path:
    """results.png next to results.csv: losses and metrics per epoch, each with a smoothed line."""
    data = read_results(csv_path)
    if not data:
        raise ValueError(f"{csv_path}: no results to plot (the file is missing or has no epochs yet)")
    epochs = data.get("epoch")
    fig, axes = _figure(15, 6, rows=2, cols=5, tight=False)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.06, top=0.94, wspace=0.25, hspace=0.3)
    for ax, name in zip(axes, [c for row in RESULTS_COLUMNS for c in row], strict=True):
        ax.set_title(name, fontsize=11)
        y = data.get(name)
        if y is None or not np.isfinite(y).any():
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
            continue
        x = epochs if epochs is not None and len(epochs) == len(y) else np.arange(1, len(y) + 1)
        ok = np.isfinite(y)
        ax.plot(x[ok], y[ok], marker=".", linewidth=2, markersize=8, label="results")
        ax.plot(x[ok], smooth(y[ok], 0.1), ":", linewidth=2, label="smooth")
    axes[0].legend(fontsize="small")
    return _save(fig, path or Path(csv_path).with_name("results.png"))


def plot_labels(
    classes: np.ndarray, boxes_cxcywhn: np.ndarray, names: Sequence[str], path: str | Path
) -> Path:
    """labels.jpg: class counts, boxes overlaid at the centre, centre (x, y) and size (w, h) histograms.

    ``classes`` (N,) and ``boxes_cxcywhn`` (N, 4) normalised to each image, over the whole split.
    """
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    boxes = np.asarray(boxes_cxcywhn, dtype=np.float64).reshape(-1, 4)
    fig, axes = _figure(8, 8, rows=2, cols=2, tight=False)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.08, top=0.98, wspace=0.25, hspace=0.25)
    _class_histogram(axes[0], classes, names)
    _box_overlay(axes[1], classes, boxes)
    for ax, columns, xlabel, ylabel in ((axes[2], [0, 1], "x", "y"), (axes[3], [2, 3], "width", "height")):
        ax.hist2d(*boxes[:, columns].T, bins=50, range=((0, 1), (0, 1)), cmap="Blues", cmin=1)
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1))
    return _save(fig, path)


def _class_histogram(ax, classes: np.ndarray, names: Sequence[str]) -> None:
    counts = np.bincount(classes, minlength=len(names))
    ax.bar(range(len(counts)), counts, color=[_rgb(c) for c in range(len(counts))])
    ax.set_ylabel("instances")
    if len(counts) <= 30:
        ax.set_xticks(range(len(counts)), [*names, *map(str, range(len(names), len(counts)))], rotation=90)
    else:
        ax.set_xlabel("classes")


def _box_overlay(ax, classes: np.ndarray, boxes: np.ndarray, size: int = 500, limit: int = 1000) -> None:
    """The first ``limit`` boxes drawn with their centres at the middle of a blank square."""
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    for c, (w, h) in zip(classes[:limit], boxes[:limit, 2:] * size, strict=True):
        p1 = (round(size / 2 - w / 2), round(size / 2 - h / 2))
        p2 = (round(size / 2 + w / 2), round(size / 2 + h / 2))
        cv2.rectangle(canvas, p1, p2, color(c)[::-1], 1)  # RGB canvas
    ax.imshow(canvas)
    ax.axis("off")


def plot_tune_fitness(rows: Sequence[dict[str, float]], path: str | Path) -> Path:
    """tune_fitness.png: each trial's fitness in order, and the best so far."""
    iterations = np.array([r["iteration"] for r in rows])
    fitness = np.array([r["fitness"] for r in rows])
    fig, (ax,) = _figure(9, 6)
    ax.plot(iterations, fitness, "o", markersize=5, alpha=0.7, label="trial")
    ax.plot(iterations, np.maximum.accumulate(fitness), "-", linewidth=2, label="best so far")
    ax.legend(loc="lower right")
    ax.set(xlabel="Iteration", ylabel="Fitness", title="Fitness vs iteration")
    return _save(fig, path)


def plot_tune_scatter(rows: Sequence[dict[str, float]], names: Sequence[str], path: str | Path) -> Path:
    """tune_scatter_plots.png: fitness against each hyperparameter, the best trial marked."""
    cols = math.ceil(math.sqrt(len(names)))
    fig, axes = _figure(2.5 * cols, 2.5 * math.ceil(len(names) / cols), math.ceil(len(names) / cols), cols)
    fitness = np.array([r["fitness"] for r in rows])
    best = int(np.argmax(fitness))
    for ax, name in zip(axes, names, strict=False):
        values = np.array([r[name] for r in rows])
        ax.scatter(values, fitness, c=fitness, cmap="viridis", s=12, alpha=0.8)
        ax.plot(values[best], fitness[best], "k+", markersize=12)
        ax.set_title(f"{name} = {values[best]:.3g}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    return _save(fig, path)
