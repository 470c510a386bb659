"""The doctor page's histograms, one PNG each (matplotlib figures on their own Agg canvas, as in
plots.py: nothing process-wide)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from yoloforge.doctor.report import LabelledImage


def _axes(width: float = 5.0, height: float = 3.2):
    fig = Figure(figsize=(width, height), tight_layout=True)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_charts(
    folder: Path,
    images: Sequence[LabelledImage],
    names: list[str],
    brightness: np.ndarray,
    imgsz: int,
    min_px: int,
) -> list[tuple[str, Path]]:
    """(title, png) of each chart, written into ``folder``."""
    return [
        ("Instances per class", _instances(folder / "instances.png", images, names)),
        (f"Box size at imgsz={imgsz}", _box_sizes(folder / "box_sizes.png", images, imgsz, min_px)),
        ("Image sizes", _image_sizes(folder / "image_sizes.png", images)),
        ("Brightness", _brightness(folder / "brightness.png", brightness)),
    ]


def _instances(path: Path, images: Sequence[LabelledImage], names: list[str]) -> Path:
    fig, ax = _axes()
    splits = list(dict.fromkeys(image.split for image in images))
    width = 0.8 / max(len(splits), 1)
    x = np.arange(len(names))
    for s, split in enumerate(splits):
        classes = [image.record.classes for image in images if image.split == split]
        counts = np.bincount(np.concatenate(classes or [np.zeros(0, np.int64)]), minlength=len(names))
        ax.bar(x + s * width, counts[: len(names)], width, label=split)
    ax.set_xticks(x + width * (len(splits) - 1) / 2, names, rotation=45 if len(names) > 6 else 0, ha="right")
    ax.set_ylabel("instances")
    ax.legend()
    return _save(fig, path)


def _box_sizes(path: Path, images: Sequence[LabelledImage], imgsz: int, min_px: int) -> Path:
    fig, ax = _axes()
    sizes = [
        np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))
        * imgsz
        / max(i.shape)
        for i in images
        if len(b := i.boxes_xyxy)
    ]
    size = np.concatenate(sizes) if sizes else np.zeros(0)
    if size.size:
        bins = np.geomspace(max(size.min(), 0.5), max(size.max(), 1.0) * 1.01, 40)
        ax.hist(size, bins=bins, color="#4363D8")
        ax.set_xscale("log")
    ax.axvline(min_px, color="#E6194B", linestyle="--", label=f"{min_px} px")
    ax.set_xlabel("sqrt(box area), pixels")
    ax.set_ylabel("boxes")
    ax.legend()
    return _save(fig, path)


def _image_sizes(path: Path, images: Sequence[LabelledImage]) -> Path:
    fig, ax = _axes()
    hw = np.array([image.shape for image in images], dtype=np.float64).reshape(-1, 2)
    ax.scatter(hw[:, 1], hw[:, 0], s=6, alpha=0.4, color="#3CB44B")
    ax.set_xlabel("width")
    ax.set_ylabel("height")
    return _save(fig, path)


def _brightness(path: Path, brightness: np.ndarray) -> Path:
    fig, ax = _axes()
    ax.hist(brightness[np.isfinite(brightness)], bins=np.linspace(0, 255, 33), color="#F58231")
    ax.set_xlabel("mean grey level")
    ax.set_ylabel("images")
    return _save(fig, path)
