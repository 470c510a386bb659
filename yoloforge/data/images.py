"""Reading images the way every stage expects them: (H, W, 3) uint8 RGB, EXIF orientation applied."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")


class ImageReadError(OSError):
    """The file is not a readable image."""


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


_REDUCED_FLAGS = {  # decode at 1/n of the size
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def write_image(path: str | Path, image_bgr: np.ndarray, quality: int = 95) -> Path:
    """Encode a (H, W, 3) uint8 BGR image in the format of ``path``'s suffix (one of
    ``IMAGE_SUFFIXES``; JPEG without one) and write it, making the folder. Encoding apart from
    writing keeps non-ASCII paths working (``cv2.imwrite`` cannot open them on Windows)."""
    path = Path(path)
    suffix = path.suffix.lower() or ".jpg"
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: cannot write an image with suffix '{path.suffix}'; use .jpg or .png")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    ok, data = cv2.imencode(suffix, np.ascontiguousarray(image_bgr), params)
    if not ok:
        raise OSError(f"{path}: cannot encode the image")
    path.parent.mkdir(parents=True, exist_ok=True)
    data.tofile(str(path))
    return path


def read_image(path: str | Path, reduce: int = 1) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB.

    OpenCV's IMREAD_COLOR applies the EXIF orientation and converts grayscale, RGBA and
    16-bit images to 8-bit, 3 channels. Reading the bytes first keeps non-ASCII paths working.
    ``reduce`` (1, 2, 4 or 8) decodes at about 1/reduce of the size; JPEGs are then scaled
    while decoding, several times faster than decoding in full and resizing (training loaders).
    """
    if reduce not in _REDUCED_FLAGS:
        raise ValueError(f"reduce={reduce} must be 1, 2, 4 or 8")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from None
    image = cv2.imdecode(data, _REDUCED_FLAGS[reduce]) if data.size else None
    if image is None:
        raise ImageReadError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
