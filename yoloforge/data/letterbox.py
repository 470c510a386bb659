"""Letterbox: resize keeping the aspect ratio, then pad to the network's input shape.

Used by validation (rectangular batches), prediction and export checks, so that boxes can be
mapped back to the original image exactly (``Letterbox.to_original``).
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from yoloforge.structures import Letterbox

log = logging.getLogger(__name__)

PAD_VALUE = 114  # grey, the reference's padding colour


def stride_multiple(imgsz: int, stride: int, what: str = "using") -> int:
    """``imgsz`` rounded up to a multiple of ``stride`` (at least one stride), with one warning
    line when it changes: train, val, predict and export all round the same way."""
    rounded = max(stride, math.ceil(imgsz / stride) * stride)
    if rounded != imgsz:
        log.warning("imgsz=%d is not a multiple of the stride %d; %s imgsz=%d", imgsz, stride, what, rounded)
    return rounded


def letterbox(
    image: np.ndarray,
    new_shape: tuple[int, int],
    scaleup: bool = True,
    center: bool = True,
) -> tuple[np.ndarray, Letterbox]:
    """Fit ``image`` (H, W, 3) into ``new_shape`` (height, width) and pad with grey.

    ``scaleup=False`` only shrinks (validation keeps small images as they are).
    Returns the padded image and the ``Letterbox`` mapping back to the original.
    """
    h0, w0 = image.shape[:2]
    gain = min(new_shape[0] / h0, new_shape[1] / w0)
    if not scaleup:
        gain = min(gain, 1.0)
    w1, h1 = round(w0 * gain), round(h0 * gain)
    if (w1, h1) != (w0, h0):
        # Bilinear both ways, as the training loader shrinks its images: INTER_AREA took 5-6 ms of a
        # 20 ms prediction (an 810x1080 photo to 320 or 640), bilinear 0.3-0.8 ms. Validation shrinks
        # with INTER_AREA before it gets here (``read_resized``), so it arrives at gain 1.
        image = cv2.resize(image, (w1, h1), interpolation=cv2.INTER_LINEAR)
    dw, dh = new_shape[1] - w1, new_shape[0] - h1
    if center:
        left, top = dw // 2, dh // 2
    else:
        left, top = 0, 0
    right, bottom = dw - left, dh - top
    if dw or dh:
        image = cv2.copyMakeBorder(
            image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
        )
    return image, Letterbox(gain=(w1 / w0, h1 / h0), pad=(float(left), float(top)), orig_shape=(h0, w0))


def rect_shape(aspect_hw: float, imgsz: int, stride: int = 32, pad: float = 0.5) -> tuple[int, int]:
    """Smallest stride-multiple (height, width) that holds an image of this h/w aspect at ``imgsz``.

    ``pad`` adds half a stride of margin, as the reference's rectangular validation does.
    """
    hw = (aspect_hw, 1.0) if aspect_hw < 1 else (1.0, 1 / aspect_hw)
    return tuple(int(math.ceil(v * imgsz / stride + pad) * stride) for v in hw)  # type: ignore[return-value]
