"""Boxes and labels drawn on images with OpenCV, and batch mosaics (train_batch*.jpg, val_batch*.jpg).

No matplotlib here: the predictor's ``Results.plot()`` and the trainer's batch pictures use these.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from yoloforge.data.images import write_image
from yoloforge.structures import Batch, Detections

Names = Mapping[int, str] | Sequence[str]

# 20 distinct colours (RGB hex), class c gets PALETTE[c % 20]
_PALETTE_HEX = (
    "E6194B", "3CB44B", "FFE119", "4363D8", "F58231", "911EB4", "46F0F0", "F032E6", "BCF60C", "FABEBE",
    "008080", "E6BEFF", "9A6324", "FFFAC8", "800000", "AAFFC3", "808000", "FFD8B1", "000075", "808080",
)  # fmt: skip
PALETTE_BGR: tuple[tuple[int, int, int], ...] = tuple(
    (int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16)) for h in _PALETTE_HEX
)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def color(class_id: int) -> tuple[int, int, int]:
    """BGR colour of a class."""
    return PALETTE_BGR[int(class_id) % len(PALETTE_BGR)]


def class_name(names: Names, class_id: int) -> str:
    """Name of a class from a dict or list of names; the number when it is not there."""
    c = int(class_id)
    if isinstance(names, Mapping):
        return str(names.get(c, c))
    return str(names[c]) if 0 <= c < len(names) else str(c)


def _as_numpy(x: torch.Tensor | np.ndarray | None, dtype: type) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x).astype(dtype, copy=False)


def _label(image: np.ndarray, text: str, x1: int, y1: int, bgr: tuple[int, int, int], lw: int) -> None:
    """Filled label box with ``text`` above (x1, y1), or just inside the box at the top edge."""
    scale, thickness = lw / 3, max(lw - 1, 1)
    (tw, th), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    th += baseline
    outside = y1 - th >= 0
    y_top = y1 - th if outside else y1
    cv2.rectangle(image, (x1, y_top), (x1 + tw, y_top + th), bgr, -1, cv2.LINE_AA)
    luminance = 0.299 * bgr[2] + 0.587 * bgr[1] + 0.114 * bgr[0]
    text_bgr = (0, 0, 0) if luminance > 150 else (255, 255, 255)
    cv2.putText(image, text, (x1, y_top + th - baseline), FONT, scale, text_bgr, thickness, cv2.LINE_AA)


def draw_detections(
    image_bgr: np.ndarray,
    boxes_xyxy: torch.Tensor | np.ndarray,
    classes: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray | None,
    names: Names,
    line_width: int | None = None,
    labels: bool = True,
) -> np.ndarray:
    """Return a copy of ``image_bgr`` (H, W, 3) uint8 with (N, 4) pixel boxes and 'name 0.87' labels.

    ``scores`` None draws names only (ground truth); ``labels=False`` draws boxes only.
    ``line_width`` None: about 0.3% of the image size.
    """
    out = np.ascontiguousarray(image_bgr).copy()
    lw = line_width or max(round(sum(out.shape[:2]) / 2 * 0.003), 2)
    boxes = _as_numpy(boxes_xyxy, np.float64).reshape(-1, 4)
    cls = _as_numpy(classes, np.int64).reshape(-1)
    conf = _as_numpy(scores, np.float64)
    for i in np.argsort(conf, kind="stable") if conf is not None else range(len(cls)):  # best on top
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        bgr = color(cls[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), bgr, lw, cv2.LINE_AA)
        if not labels:
            continue
        text = class_name(names, cls[i]) if conf is None else f"{class_name(names, cls[i])} {conf[i]:.2f}"
        _label(out, text, max(x1, 0), max(y1, 0), bgr, lw)
    return out


def _caption(image: np.ndarray, text: str, lw: int) -> None:
    """White text on a dark strip in the top-left corner, readable on any image."""
    scale, thickness = max(lw / 3, 0.4), 1
    (tw, th), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    cv2.rectangle(image, (0, 0), (tw + 6, th + baseline + 4), (40, 40, 40), -1)
    cv2.putText(image, text, (3, th + 2), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def _grid_shape(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def save_batch_grid(
    batch: Batch,
    path: str | Path,
    names: Names,
    detections: list[Detections] | None = None,
    max_images: int = 16,
    max_size: int = 1920,
) -> Path:
    """Save the batch's images as a grid jpg with boxes and the file name on each tile.

    Draws the batch's ground truth, or ``detections`` (per image, in the batch's input pixels)
    when given. The grid is scaled down so its longer side is at most ``max_size`` pixels.
    """
    n = min(len(batch), max_images)
    rows, cols = _grid_shape(n)
    _, _, h, w = batch.images.shape
    scale = min(1.0, max_size / max(rows * h, cols * w))
    th, tw = max(round(h * scale), 1), max(round(w * scale), 1)
    canvas = np.full((rows * th, cols * tw, 3), 255, dtype=np.uint8)
    images = batch.images[:n].permute(0, 2, 3, 1).cpu().numpy()[..., ::-1]  # RGB -> BGR
    lw = max(round(min(th, tw) / 320), 1)
    for i in range(n):
        tile = cv2.resize(np.ascontiguousarray(images[i]), (tw, th), interpolation=cv2.INTER_AREA)
        if detections is None:
            mine = batch.batch_idx == i
            boxes, cls, conf = batch.boxes_xyxy[mine], batch.classes[mine], None
        else:
            boxes, cls, conf = detections[i].boxes_xyxy, detections[i].classes, detections[i].scores
        tile = draw_detections(tile, _as_numpy(boxes, np.float64) * scale, cls, conf, names, lw)
        if i < len(batch.paths):
            _caption(tile, Path(batch.paths[i]).name[:40], lw)
        r, c = divmod(i, cols)
        canvas[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
        cv2.rectangle(canvas, (c * tw, r * th), ((c + 1) * tw - 1, (r + 1) * th - 1), (255, 255, 255), 1)
    return write_image(path, canvas, quality=90)


# ----------------------------------------------------------------------------------------------
# windows


def gui_problem() -> str | None:
    """Why ``cv2.imshow`` cannot open a window here, or None when it should.

    Two things are needed: an OpenCV built with a GUI (opencv-python-headless, which yoloforge
    installs, has none) and, on Linux, a display (DISPLAY or WAYLAND_DISPLAY).
    """
    problems = []
    if _opencv_gui() == "NONE":
        problems.append("this OpenCV has no GUI (opencv-python-headless; pip install opencv-python)")
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        problems.append("no display (DISPLAY is not set)")
    return "; ".join(problems) or None


def _opencv_gui() -> str:
    """The GUI backend line of OpenCV's build information ('NONE', 'GTK3', 'QT5', ...), '' if absent."""
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "GUI":
            return value.strip()
    return ""


def show_window(title: str, image_bgr: np.ndarray, wait_ms: int) -> str | None:
    """``cv2.imshow`` then ``cv2.waitKey(wait_ms)`` (0: until a key is pressed); None when shown,
    else why OpenCV could not open the window (check ``gui_problem()`` first: it is cheaper)."""
    try:
        cv2.imshow(title, image_bgr)
        cv2.waitKey(wait_ms)
    except cv2.error as e:
        return str(e).strip().splitlines()[-1]
    return None
