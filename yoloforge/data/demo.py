"""The built-in demo dataset ``data=shapes``: coloured circles, squares and triangles.

Generated on first use into ``yoloforge_home()/datasets/shapes-v1`` (about 2 s). Made to be learnt
quickly from scratch on a CPU: objects are large (20-50% of the short image side), clean (a little
noise and JPEG compression), their colours are drawn independently of their class so only the form
tells the classes apart, and they overlap only a little. About 5% of the images are backgrounds.

Deterministic: image ``i`` of a split depends only on (seed, split, i), so a smaller variant for tests
(``ensure_shapes(tmp_path, n_train=16, n_val=8)``) holds the first images of the full one.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from yoloforge.data.config import write_data_yaml, yoloforge_home

log = logging.getLogger(__name__)

VERSION = "shapes-v1"  # bump when the generated images change
NAMES = ["circle", "square", "triangle"]
COLOURS_RGB = [  # saturated, so that shapes stand out from the muted backgrounds
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (250, 250, 250), (20, 20, 20),
]  # fmt: skip
BACKGROUND_FRACTION = 0.05
SIZE_RANGE = (0.2, 0.5)  # object side as a fraction of the image's short side
MAX_OBJECTS = 4
MAX_OVERLAP_IOU = 0.15


@dataclass(frozen=True)
class Shape:
    """One drawn object: its class and outline."""

    cls: int
    polygon_xy: np.ndarray  # (K, 2) float pixels; a circle is a fine polygon

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]:
        (x1, y1), (x2, y2) = self.polygon_xy.min(0), self.polygon_xy.max(0)
        return float(x1), float(y1), float(x2), float(y2)


def ensure_shapes(root: Path | None = None, n_train: int = 400, n_val: int = 100, seed: int = 0) -> Path:
    """Return the demo dataset's config.yaml, generating the dataset into ``root`` if it is not there.

    ``root`` defaults to ``yoloforge_home()/datasets/shapes-v1`` (a suffix names non-default sizes).
    An existing dataset in ``root`` is used as it is.
    """
    if root is None:
        suffix = "" if (n_train, n_val, seed) == (400, 100, 0) else f"-{n_train}-{n_val}-seed{seed}"
        root = yoloforge_home() / "datasets" / f"{VERSION}{suffix}"
    root = Path(root).expanduser().absolute()
    config = root / "config.yaml"
    if config.is_file():
        return config
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        log.info(f"generating the demo dataset {VERSION} ({n_train} train, {n_val} val images) in {root}")
        generate_shapes(tmp, n_train, n_val, seed)
        write_data_yaml(
            tmp / "config.yaml",
            root,
            {"train": "images/train", "val": "images/val"},
            NAMES,
            f"yoloforge demo dataset {VERSION}: n_train={n_train} n_val={n_val} seed={seed}",
        )
        _move_into_place(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return config


def _move_into_place(tmp: Path, root: Path) -> None:
    """Rename the finished dataset to ``root``; when another process got there first, keep theirs."""
    try:
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        os.rename(tmp, root)
    except OSError:
        if not (root / "config.yaml").is_file():
            raise


def generate_shapes(out: Path, n_train: int, n_val: int, seed: int = 0) -> None:
    """Write out/images/{train,val}/NNNNN.jpg and out/labels/{train,val}/NNNNN.txt."""
    for split_id, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, split_id, i])
            image_rgb, shapes = draw_image(rng)
            stem = f"{i:05d}"
            ok, jpg = cv2.imencode(".jpg", image_rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise OSError("OpenCV failed to encode a JPEG (is its JPEG codec missing?)")
            jpg.tofile(str(out / "images" / split / f"{stem}.jpg"))
            if shapes:
                h, w = image_rgb.shape[:2]
                lines = [_label_line(s, w, h) for s in shapes]
                (out / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")


def draw_image(rng: np.random.Generator) -> tuple[np.ndarray, list[Shape]]:
    """One (H, W, 3) uint8 RGB image and the shapes drawn on it (later shapes on top)."""
    long_side = int(rng.integers(256, 321))
    aspect = float(rng.uniform(0.75, 1.0))
    short_side = round(long_side * aspect)
    h, w = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    image = _background(rng, h, w)  # uint8: OpenCV anti-aliases only 8-bit images
    shapes: list[Shape] = []
    n_objects = 0 if rng.random() < BACKGROUND_FRACTION else int(rng.integers(1, MAX_OBJECTS + 1))
    for _ in range(n_objects):
        shape = _place_shape(rng, h, w, shapes)
        if shape is not None:
            _draw(image, shape, rng)
            shapes.append(shape)
    amplitude = int(rng.integers(4, 13))  # uniform noise: ten times cheaper to draw than Gaussian
    noise = rng.integers(-amplitude, amplitude + 1, image.shape, dtype=np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8), shapes


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A muted two-colour gradient in a random direction, with a few faint blobs: (H, W, 3) uint8."""
    a, b = (rng.uniform(60, 200) + rng.uniform(-40, 40, 3) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    small_h, small_w = h // 8 + 1, w // 8 + 1  # a linear gradient: compute small, resize up
    yy, xx = np.mgrid[0:small_h, 0:small_w].astype(np.float32) * 8
    t = (xx * math.cos(angle) + yy * math.sin(angle)) / math.hypot(h, w) + 0.5
    small = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    image = cv2.resize(np.clip(small, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(0, 6))):  # distractors that are not shapes of any class
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        major = int(rng.integers(10, min(h, w) // 3))
        axes = (major, max(2, int(major * rng.uniform(0.15, 0.5))))  # elongated: never circle-like
        shade = np.clip(image[centre[1], centre[0]] + rng.uniform(-25, 25, 3), 0, 255)
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, shade.tolist(), -1, cv2.LINE_AA)
    return image


def _place_shape(rng: np.random.Generator, h: int, w: int, placed: list[Shape]) -> Shape | None:
    """A random shape fully inside the image that overlaps the placed ones little (None if no room)."""
    for _ in range(20):
        cls = int(rng.integers(len(NAMES)))
        side = rng.uniform(*SIZE_RANGE) * min(h, w)
        unit = _unit_polygon(cls, rng)  # fits in [-0.5, 0.5]^2
        extent = unit.max(0) - unit.min(0)
        low = -unit.min(0) * side
        high = np.array([w, h]) - unit.max(0) * side
        if (high <= low).any() or (extent <= 0).any():
            continue
        centre = rng.uniform(low, high)
        shape = Shape(cls, unit * side + centre)
        if all(_iou(shape.box_xyxy, other.box_xyxy) <= MAX_OVERLAP_IOU for other in placed):
            return shape
    return None


def _unit_polygon(cls: int, rng: np.random.Generator) -> np.ndarray:
    """(K, 2) vertices of a class's shape with side (or diameter) 1, centred on 0."""
    if NAMES[cls] == "circle":
        angles = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        return 0.5 * np.stack([np.cos(angles), np.sin(angles)], 1)
    if NAMES[cls] == "square":
        corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
        return _rotate(corners, rng.uniform(-25, 25))
    angles = np.deg2rad([-90, 30, 150])  # equilateral triangle, circumradius 1/sqrt(3): side 1
    triangle = np.stack([np.cos(angles), np.sin(angles)], 1) / math.sqrt(3)
    return _rotate(triangle, rng.uniform(0, 360))


def _rotate(points_xy: np.ndarray, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return points_xy @ np.array([[c, s], [-s, c]])


def _draw(image: np.ndarray, shape: Shape, rng: np.random.Generator) -> None:
    colour = np.array(COLOURS_RGB[int(rng.integers(len(COLOURS_RGB)))], dtype=np.float64)
    colour = np.clip(colour + rng.uniform(-20, 20, 3), 0, 255)
    points = np.round(shape.polygon_xy * 16).astype(np.int32)  # 4 fractional bits: sub-pixel edges
    cv2.fillPoly(image, [points], tuple(colour.tolist()), cv2.LINE_AA, shift=4)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _label_line(shape: Shape, w: int, h: int) -> str:
    x1, y1, x2, y2 = shape.box_xyxy
    return (
        f"{shape.cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
    )
