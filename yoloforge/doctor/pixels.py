"""One pass over the image files: content hash, perceptual hash and brightness of each image.

Each file is read once; its bytes give the exact-duplicate hash, and a reduced decode (JPEGs scale
while decoding, several times faster than a full decode) gives the perceptual hash and brightness.
Threads overlap the reads and decodes (OpenCV and hashlib release the GIL).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

HASH_SIZE = 16  # phash bits = HASH_SIZE**2; 256 bits keep distinct images far apart (see duplicates.py)
SMALLEST_DECODE = 96  # the reduced decode keeps at least this many pixels on the short side
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


class MissingExtraError(ImportError):
    """An optional package the doctor needs is not installed; the message says what to install."""


@dataclass(frozen=True)
class Pixels:
    """What the doctor needs from an image's pixels."""

    digest: str  # blake2b of the file bytes: equal for byte-identical files
    phash: np.ndarray  # (HASH_SIZE**2,) bool perceptual hash (DCT of the grey image)
    brightness: float  # mean grey level, 0..255 (nan when the file could not be decoded)


def import_imagehash():
    try:
        import imagehash
    except ImportError:
        raise MissingExtraError(
            'the dataset doctor needs the imagehash package: pip install "yoloforge[doctor]"'
        ) from None
    return imagehash


def read_pixels(
    paths: Sequence[str], shapes: Sequence[tuple[int, int]], progress: bool = True
) -> list[Pixels]:
    """``Pixels`` of each image (``shapes`` are the (height, width) the label scan read from headers)."""
    imagehash = import_imagehash()
    workers = min(4, os.cpu_count() or 1)
    bar = tqdm(total=len(paths), desc="doctor: hashing images", unit="img", disable=not progress, leave=False)
    with ThreadPoolExecutor(workers) as pool:
        out = []
        for pixels in pool.map(lambda p, s: _one(p, s, imagehash), paths, shapes):
            out.append(pixels)
            bar.update()
    bar.close()
    return out


def _one(path: str, shape: tuple[int, int], imagehash) -> Pixels:
    from PIL import Image

    data = np.fromfile(path, dtype=np.uint8)
    digest = hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()
    image = cv2.imdecode(data, _flag_for(shape))
    if image is None:  # the scan decoded it; a file changed since then
        return Pixels(digest, np.zeros(HASH_SIZE**2, bool), float("nan"))
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    phash = imagehash.phash(Image.fromarray(grey), hash_size=HASH_SIZE).hash.reshape(-1)
    return Pixels(digest, np.asarray(phash, bool), float(grey.mean()))


def _flag_for(shape: tuple[int, int]) -> int:
    short = min(shape)
    for factor, flag in _REDUCED:
        if short // factor >= SMALLEST_DECODE:
            return flag
    return cv2.IMREAD_COLOR
