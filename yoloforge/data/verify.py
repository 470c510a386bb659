"""Checks of one image file and one label file, used by the dataset scan (scan.py).

Label files hold one object per line, ``class cx cy w h``, normalised to the image; a polygon line
``class x1 y1 x2 y2 x3 y3 ...`` is also accepted and turned into its bounding box, as the reference
does. What happens to each problem:

- wrong column count, non-numeric value, class id outside names, value outside [0, 1] beyond a
  1% tolerance (e.g. pixel coordinates), zero-size box: the line is dropped, with a message.
- a duplicate line is removed; a box that extends past the image edge is clipped to it (with a
  message when by more than 1%).
- an image that does not decode raises ImageReadError. A JPEG without its end-of-image marker is
  decoded by OpenCV (the loader's decoder): kept when that works. The reference re-saves such files
  in place; yoloforge never writes user files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from yoloforge.data.images import ImageReadError

TOLERANCE = 0.01  # label values this far outside [0, 1] are clipped, further out the line is dropped
HEADER_FORMATS = ("JPEG", "MPO", "PNG")  # read from the header; other formats are decoded in full
EXIF_ORIENTATION = 0x0112  # orientations 5-8 swap width and height


def image_shape(path: Path) -> tuple[int, int]:
    """(height, width) of the image as the loader will decode it, EXIF orientation applied.

    JPEG and PNG are read from the header (fast); a JPEG missing its end-of-image marker, other
    formats and anything the header reader rejects are decoded in full with OpenCV, the loader's
    decoder, so that every kept image is known to decode. Raises ImageReadError.
    """
    if not path.is_file():
        raise ImageReadError("image file not found")
    try:
        with Image.open(path) as im:
            fmt, (width, height) = im.format, im.size
            orientation = im.getexif().get(EXIF_ORIENTATION, 1) if fmt in HEADER_FORMATS else 1
            im.verify()  # PNG: chunk checksums; JPEG: header only
    except Exception as e:  # PIL raises many kinds on bad files; OpenCV gets the last word
        reason = "unknown format" if isinstance(e, UnidentifiedImageError) else str(e) or type(e).__name__
        return _decoded_shape(path, reason)
    if fmt not in HEADER_FORMATS:
        return _decoded_shape(path, f"OpenCV cannot decode this {fmt} file")
    if fmt != "PNG" and not _has_jpeg_end(path):
        return _decoded_shape(path, "truncated JPEG: no end-of-image marker")
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _has_jpeg_end(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-2, os.SEEK_END)
        return f.read() == b"\xff\xd9"


def _decoded_shape(path: Path, reason: str) -> tuple[int, int]:
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None  # applies EXIF orientation
    if image is None:
        raise ImageReadError(f"not a readable image ({reason})")
    return image.shape[0], image.shape[1]


# ----------------------------------------------------------------------------------------------
# labels


def parse_label_text(text: str, nc: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse a label file's text into (N,) int64 classes, (N, 4) float32 cxcywhn boxes and messages.

    Bad lines are dropped with a message ``line K: ...``; the kept boxes are inside [0, 1].
    """
    classes: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    messages: list[str] = []
    clipped: list[int] = []
    seen: dict[tuple[float, ...], int] = {}
    for number, line in _numbered_lines(text):
        values, error = _parse_line(line, nc)
        if error is None and values in seen:
            error = f"duplicate of line {seen[values]}; removed"
        if error is not None:
            messages.append(f"line {number}: {error}")
            continue
        seen[values] = number
        box, was_clipped, error = _to_box(values[1:])
        if error is not None:
            messages.append(f"line {number}: {error}; line dropped")
            continue
        if was_clipped:
            clipped.append(number)
        classes.append(int(values[0]))
        boxes.append(box)
    if clipped:
        where = f"line {clipped[0]}" if len(clipped) == 1 else f"lines {', '.join(map(str, clipped))}"
        messages.append(f"{where}: box extends past the image edge by more than 1%; clipped")
    return (
        np.array(classes, dtype=np.int64),
        np.array(boxes, dtype=np.float32).reshape(-1, 4),
        messages,
    )


def _numbered_lines(text: str) -> Iterable[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def _parse_line(line: str, nc: int) -> tuple[tuple[float, ...], str | None]:
    """Values of one line (class first), or an error saying why the line is dropped."""
    tokens = line.split()
    n = len(tokens)
    if n != 5 and (n < 7 or n % 2 == 0):
        expected = "5 values 'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 x3 y3 ...')"
        return (), f"expected {expected}, got {n}; line dropped"
    try:
        values = tuple(float(t) for t in tokens)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        return (), f"non-numeric value '{bad}'; line dropped"
    if not all(map(math.isfinite, values)):
        return (), "value is not a finite number; line dropped"
    cls = values[0]
    if cls != int(cls):
        return (), f"class id '{tokens[0]}' is not an integer; line dropped"
    if not 0 <= cls < nc:
        return (), f"class id {int(cls)} outside names (0..{nc - 1}); line dropped"
    coords = values[1:]
    if min(coords) < -TOLERANCE or max(coords) > 1 + TOLERANCE:
        return (), "values outside [0, 1] (labels must be normalised by the image size); line dropped"
    return values, None


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _to_box(coords: tuple[float, ...]) -> tuple[tuple[float, float, float, float], bool, str | None]:
    """(cx, cy, w, h) or polygon points -> a box clipped to the image, whether clipping exceeded 1%,
    and an error for a zero-size box."""
    if len(coords) == 4:
        cx, cy, w, h = coords
        if w <= 0 or h <= 0:
            return (0, 0, 0, 0), False, f"zero-size box (w={w:g}, h={h:g})"
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    else:
        xs, ys = coords[0::2], coords[1::2]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    c1, d1, c2, d2 = (min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2))
    if c2 - c1 <= 0 or d2 - d1 <= 0:
        return (0, 0, 0, 0), False, "zero-size box (inside the image)"
    excess = max(-x1, -y1, x2 - 1, y2 - 1)
    return ((c1 + c2) / 2, (d1 + d2) / 2, c2 - c1, d2 - d1), excess > TOLERANCE, None
