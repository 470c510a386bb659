"""Datasets with planted problems for the doctor's tests, made from the demo generator.

``plant_*`` functions change a generated dataset in place (a test's own copy, never user data) and
return what they planted, so a test can check that the doctor finds exactly that.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from yoloforge.data.demo import ensure_shapes


def make_shapes(root: Path, n_train: int, n_val: int, seed: int) -> Path:
    return ensure_shapes(root, n_train=n_train, n_val=n_val, seed=seed)


def _pair(root: Path, split: str, stem: str) -> tuple[Path, Path]:
    return root / "images" / split / f"{stem}.jpg", root / "labels" / split / f"{stem}.txt"


def _copy_pair(root: Path, src: tuple[str, str], dst: tuple[str, str]) -> Path:
    image, label = _pair(root, *src)
    new_image, new_label = _pair(root, *dst)
    shutil.copy(image, new_image)
    if label.is_file():
        shutil.copy(label, new_label)
    return new_image


def plant_leakage(root: Path, n: int) -> list[Path]:
    """Copy the first ``n`` val images (and labels) into train; returns the val images."""
    stems = sorted(p.stem for p in (root / "images" / "val").glob("*.jpg"))[:n]
    for stem in stems:
        _copy_pair(root, ("val", stem), ("train", f"leak_{stem}"))
    return [_pair(root, "val", s)[0] for s in stems]


def plant_duplicates(root: Path, n_exact: int, n_near: int) -> tuple[list[Path], list[Path]]:
    """Byte copies of train images, and copies resized to 70% and re-encoded at JPEG quality 60."""
    stems = sorted(p.stem for p in (root / "images" / "train").glob("0*.jpg"))
    exact = [_copy_pair(root, ("train", s), ("train", f"copy_{s}")) for s in stems[:n_exact]]
    near = []
    for s in stems[n_exact : n_exact + n_near]:
        image = cv2.imread(str(_pair(root, "train", s)[0]))
        small = cv2.resize(image, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
        path, label = _pair(root, "train", f"resized_{s}")
        cv2.imwrite(str(path), small, [cv2.IMWRITE_JPEG_QUALITY, 60])
        if _pair(root, "train", s)[1].is_file():
            shutil.copy(_pair(root, "train", s)[1], label)  # normalised labels fit the smaller copy
        near.append(path)
    return exact, near


def plant_backgrounds(root: Path, share: float, seed: int = 0) -> list[Path]:
    """Add object-free images (gradients with faint blobs) until ``share`` of train is background."""
    rng = np.random.default_rng(seed)
    train = list((root / "images" / "train").glob("*.jpg"))
    labelled = sum((root / "labels" / "train" / f"{p.stem}.txt").is_file() for p in train)
    n = int(np.ceil((share * len(train) - (len(train) - labelled)) / (1 - share)))
    out = []
    for k in range(n):
        h, w = int(rng.integers(240, 320)), int(rng.integers(240, 320))
        a, b = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
        t = np.linspace(0, 1, w)[None, :, None] if k % 2 else np.linspace(0, 1, h)[:, None, None]
        image = np.broadcast_to(a * (1 - t) + b * t, (h, w, 3)).astype(np.uint8).copy()
        for _ in range(6):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(10, 80)), int(rng.integers(5, 30)))
            colour = rng.uniform(0, 255, 3).tolist()
            cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        path = root / "images" / "train" / f"background_{k:03d}.jpg"
        cv2.imwrite(str(path), image)
        out.append(path)
    return out


def _edit_label(root: Path, split: str, stem: str, edit) -> None:
    label = _pair(root, split, stem)[1]
    lines = label.read_text().splitlines()
    label.write_text("\n".join(edit(lines)) + "\n")


def labelled_stems(root: Path, split: str, min_objects: int = 1) -> list[str]:
    labels = sorted((root / "labels" / split).glob("0*.txt"))
    return [p.stem for p in labels if len(p.read_text().splitlines()) >= min_objects]


def plant_tiny_boxes(root: Path, stems: list[str]) -> None:
    """A 1%-of-the-image box added to each label file (about 3 pixels at imgsz 256)."""
    _ = [
        _edit_label(root, "train", s, lambda lines: [*lines, "0 0.500000 0.500000 0.010000 0.010000"])
        for s in stems
    ]


def plant_double_labels(root: Path, stems: list[str]) -> None:
    """The first box of each label file again, moved by 0.2% of the image."""

    def double(lines: list[str]) -> list[str]:
        c, x, y, w, h = lines[0].split()
        return [*lines, f"{c} {float(x) + 0.002:.6f} {y} {w} {h}"]

    for s in stems:
        _edit_label(root, "train", s, double)


def plant_removed_labels(root: Path, split: str, stems: list[str]) -> None:
    """The last object of each label file loses its label (the image still shows it)."""
    for s in stems:
        _edit_label(root, split, s, lambda lines: lines[:-1])


def plant_swapped_classes(root: Path, split: str, stems: list[str], nc: int = 3) -> None:
    """The first label of each file gets the next class."""

    def swap(lines: list[str]) -> list[str]:
        c, *rest = lines[0].split()
        return [" ".join([str((int(c) + 1) % nc), *rest]), *lines[1:]]

    for s in stems:
        _edit_label(root, split, s, swap)
