"""Training augmentation: mosaic, random affine/perspective, mixup, HSV and flips.

The order and the defaults follow the reference training pipeline (``AugmentSettings``):

    load + resize (long side = imgsz) -> mosaic of 4 (canvas 2*imgsz) or letterbox to imgsz
    -> random affine back to imgsz -> mixup -> HSV -> flip up-down -> flip left-right

Everything works on uint8 (H, W, 3) RGB images and (N, 4) xyxy pixel boxes, and takes a
``numpy.random.Generator`` so that a sample is a pure function of its seed.

Boxes are transformed exactly: the 4 corners of each box go through the affine/perspective
matrix and the enclosing box is kept, clipped to the image. A box survives when (``keep_boxes``)
its clipped width and height exceed 2 px, its aspect ratio is below 100 and its clipped area is more
than 10% of the area of the *whole* object's box transformed without any clipping. The whole box is
tracked through the mosaic crop too (``Labeled.full_xyxy``), so an object that lost 95% of itself
to the mosaic tile edge is dropped rather than kept as a sliver (the reference compares against the
box after the mosaic clip only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from yoloforge.data.letterbox import PAD_VALUE, letterbox
from yoloforge.settings import AugmentSettings

MIN_BOX_SIZE = 2.0  # px: narrower or shorter boxes are dropped
MIN_AREA_RATIO = 0.1  # kept share of the whole (unclipped) transformed box
MAX_ASPECT = 100.0  # longest side / shortest side
MIXUP_BETA = 32.0  # blend ratio ~ Beta(32, 32): close to 0.5 (Zhang et al. 2018, mixup)


@dataclass
class Labeled:
    """An image with its boxes, on its way through the pipeline."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    classes: np.ndarray  # (N,) int64
    boxes_xyxy: np.ndarray  # (N, 4) float32, visible part, pixels of ``image``
    full_xyxy: np.ndarray | None = None  # (N, 4) the whole objects before any crop; None = boxes_xyxy

    @property
    def whole_xyxy(self) -> np.ndarray:
        return self.boxes_xyxy if self.full_xyxy is None else self.full_xyxy


def resize_long_side(image: np.ndarray, imgsz: int, shrink_interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resize (H, W, 3) so that max(H, W) == imgsz, keeping the aspect ratio.

    Enlarging always uses bilinear interpolation; ``shrink_interp`` chooses for shrinking
    (training: bilinear, fast; validation: INTER_AREA, which does not alias on large photos, as
    training's reduced JPEG decoding does not). Sizes are rounded; the installed reference (8.4)
    rounds up and shrinks bilinearly everywhere, which made no measurable difference to our
    models on the demo data (pycocotools mAP50-95 of four seeds within +/- 0.004 either way).
    """
    h0, w0 = image.shape[:2]
    r = imgsz / max(h0, w0)
    if r == 1:
        return image
    size = (min(imgsz, max(1, round(w0 * r))), min(imgsz, max(1, round(h0 * r))))  # (w, h) for cv2
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR if r > 1 else shrink_interp)


def letterbox_labeled(item: Labeled, shape: tuple[int, int]) -> Labeled:
    """Pad (and if needed resize) to ``shape`` (height, width), centred; the path without mosaic."""
    image, lb = letterbox(item.image, shape)
    full = None if item.full_xyxy is None else lb.to_input(item.full_xyxy)
    return Labeled(image, item.classes, lb.to_input(item.boxes_xyxy), full)


# ---------------------------------------------------------------------------------------------
# mosaic


def mosaic4(items: list[Labeled], imgsz: int, rng: np.random.Generator) -> Labeled:
    """Tile 4 images around a random centre of a 2*imgsz square canvas filled with grey.

    Images (each at most imgsz on its long side) meet at the centre (xc, yc), drawn from
    [imgsz/2, 3*imgsz/2]: the first sits up-left of it, then up-right, down-left, down-right.
    Parts falling off the canvas are cut; their visible boxes are clipped, the whole boxes kept.
    """
    if len(items) != 4:
        raise ValueError(f"mosaic4 needs 4 images, got {len(items)}")
    size = 2 * imgsz
    xc, yc = (int(v) for v in rng.uniform(imgsz / 2, 3 * imgsz / 2, size=2))
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    classes, boxes, full = [], [], []
    for k, item in enumerate(items):
        h, w = item.image.shape[:2]
        # canvas region (x1a, y1a, x2a, y2a) of this tile, before clipping to the canvas
        x1 = xc - w if k in (0, 2) else xc
        y1 = yc - h if k in (0, 1) else yc
        x1a, y1a, x2a, y2a = max(x1, 0), max(y1, 0), min(x1 + w, size), min(y1 + h, size)
        canvas[y1a:y2a, x1a:x2a] = item.image[y1a - y1 : y2a - y1, x1a - x1 : x2a - x1]
        offset = np.array([x1, y1, x1, y1], dtype=np.float32)
        classes.append(item.classes)
        boxes.append(item.boxes_xyxy + offset)
        full.append(item.whole_xyxy + offset)
    visible = np.concatenate(boxes).reshape(-1, 4)
    np.clip(visible, 0, size, out=visible)  # a tile never extends past its own corner of the canvas
    return Labeled(
        canvas,
        np.concatenate(classes).astype(np.int64),
        visible.astype(np.float32),
        np.concatenate(full).reshape(-1, 4).astype(np.float32),
    )


# ---------------------------------------------------------------------------------------------
# random affine / perspective


def random_affine_matrix(
    in_shape: tuple[int, int], out_shape: tuple[int, int], aug: AugmentSettings, rng: np.random.Generator
) -> np.ndarray:
    """A random 3x3 matrix mapping input pixels to output pixels (as the reference composes it).

    M = T @ S @ R @ P @ C: centre the input at the origin (C), perspective (P), rotate and scale
    (R), shear (S), then move the origin to a random point near the output centre (T).
    """
    (h_in, w_in), (h_out, w_out) = in_shape, out_shape
    centre = np.eye(3)
    centre[:2, 2] = -w_in / 2, -h_in / 2
    persp = np.eye(3)
    persp[2, :2] = rng.uniform(-aug.perspective, aug.perspective, size=2)
    angle = rng.uniform(-aug.degrees, aug.degrees)
    scale = rng.uniform(1 - aug.scale, 1 + aug.scale)
    rot = np.eye(3)
    rot[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=scale)
    shear = np.eye(3)
    shear[0, 1], shear[1, 0] = np.tan(np.radians(rng.uniform(-aug.shear, aug.shear, size=2)))
    move = np.eye(3)
    move[0, 2] = rng.uniform(0.5 - aug.translate, 0.5 + aug.translate) * w_out
    move[1, 2] = rng.uniform(0.5 - aug.translate, 0.5 + aug.translate) * h_out
    return move @ shear @ rot @ persp @ centre


def transform_boxes(boxes_xyxy: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Send the 4 corners of each (N, 4) box through a 3x3 matrix; return the enclosing boxes."""
    n = len(boxes_xyxy)
    if n == 0:
        return np.zeros((0, 4), dtype=np.float32)
    x1, y1, x2, y2 = boxes_xyxy.T
    corners = np.ones((n, 4, 3))
    corners[..., 0] = np.stack((x1, x2, x2, x1), axis=1)
    corners[..., 1] = np.stack((y1, y1, y2, y2), axis=1)
    mapped = corners @ matrix.T  # (N, 4, 3)
    xy = mapped[..., :2] / mapped[..., 2:3]  # perspective divide (z = 1 for affine)
    return np.concatenate((xy.min(axis=1), xy.max(axis=1)), axis=1).astype(np.float32)


def keep_boxes(visible_xyxy: np.ndarray, whole_xyxy: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """(N,) bool: boxes still worth training on (see the module docstring for the rule)."""
    w, h = visible_xyxy[:, 2] - visible_xyxy[:, 0], visible_xyxy[:, 3] - visible_xyxy[:, 1]
    whole_area = (whole_xyxy[:, 2] - whole_xyxy[:, 0]) * (whole_xyxy[:, 3] - whole_xyxy[:, 1])
    aspect = np.maximum(w / (h + eps), h / (w + eps))
    return (
        (w > MIN_BOX_SIZE)
        & (h > MIN_BOX_SIZE)
        & (w * h / (whole_area + eps) > MIN_AREA_RATIO)
        & (aspect < MAX_ASPECT)
    )


def random_affine(
    item: Labeled, out_shape: tuple[int, int], aug: AugmentSettings, rng: np.random.Generator
) -> Labeled:
    """Warp ``item`` into an ``out_shape`` (height, width) image with a random affine/perspective.

    Boxes are transformed exactly, clipped, filtered by ``keep_boxes``; the result has no
    ``full_xyxy`` any more (later steps never crop).
    """
    h_out, w_out = out_shape
    matrix = random_affine_matrix(item.image.shape[:2], out_shape, aug, rng)
    fill = (PAD_VALUE,) * 3
    if aug.perspective:
        image = cv2.warpPerspective(item.image, matrix, dsize=(w_out, h_out), borderValue=fill)
    else:
        image = cv2.warpAffine(item.image, matrix[:2], dsize=(w_out, h_out), borderValue=fill)
    whole = transform_boxes(item.whole_xyxy, matrix)
    visible = transform_boxes(item.boxes_xyxy, matrix)
    visible[:, [0, 2]] = visible[:, [0, 2]].clip(0, w_out)
    visible[:, [1, 3]] = visible[:, [1, 3]].clip(0, h_out)
    keep = keep_boxes(visible, whole)
    return Labeled(image, item.classes[keep], visible[keep])


# ---------------------------------------------------------------------------------------------
# photometric and flips


def mixup(a: Labeled, b: Labeled, rng: np.random.Generator) -> Labeled:
    """Blend two same-sized images with a Beta(32, 32) ratio; keep the boxes of both."""
    if a.image.shape != b.image.shape:
        raise ValueError(f"mixup needs same-sized images, got {a.image.shape} and {b.image.shape}")
    r = rng.beta(MIXUP_BETA, MIXUP_BETA)
    image = cv2.addWeighted(a.image, r, b.image, 1 - r, 0)
    return Labeled(
        image,
        np.concatenate((a.classes, b.classes)),
        np.concatenate((a.boxes_xyxy, b.boxes_xyxy)),
    )


def random_hsv(image: np.ndarray, hsv_h: float, hsv_s: float, hsv_v: float, rng: np.random.Generator) -> None:
    """Shift hue and scale saturation and value of a uint8 RGB image in place, through lookup tables.

    Hue moves by up to +/- hsv_h of the hue circle; saturation and value are multiplied by a
    gain in [1 - gain, 1 + gain].
    """
    if not (hsv_h or hsv_s or hsv_v):
        return
    dh, gs, gv = rng.uniform(-1, 1, size=3) * (hsv_h, hsv_s, hsv_v) + (0, 1, 1)
    x = np.arange(256, dtype=np.float32)
    lut_h = np.mod(x + dh * 180, 180).astype(np.uint8)  # OpenCV's 8-bit hue spans 0..179
    lut_s = np.clip(x * gs, 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gv, 0, 255).astype(np.uint8)
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=image)


def flip(item: Labeled, horizontal: bool) -> Labeled:
    """Mirror left-right (``horizontal``) or up-down, boxes included."""
    h, w = item.image.shape[:2]
    boxes = item.boxes_xyxy.copy()
    if horizontal:
        boxes[:, [0, 2]] = w - item.boxes_xyxy[:, [2, 0]]
    else:
        boxes[:, [1, 3]] = h - item.boxes_xyxy[:, [3, 1]]
    return Labeled(cv2.flip(item.image, 1 if horizontal else 0), item.classes, boxes)


def photometric_and_flips(item: Labeled, aug: AugmentSettings, rng: np.random.Generator) -> Labeled:
    """The steps after the geometry: HSV, then flip up-down, then flip left-right."""
    random_hsv(item.image, aug.hsv_h, aug.hsv_s, aug.hsv_v, rng)
    if rng.random() < aug.flipud:
        item = flip(item, horizontal=False)
    if rng.random() < aug.fliplr:
        item = flip(item, horizontal=True)
    return item


def without_mosaic(aug: AugmentSettings) -> AugmentSettings:
    """Settings for the last ``close_mosaic`` epochs: no mosaic and no mixup (blends of mosaics)."""
    return replace(aug, mosaic=0.0, mixup=0.0)


def scaled_boxes(boxes_cxcywhn: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, 4) normalised centre/size -> xyxy pixels of an image of ``shape`` (height, width)."""
    h, w = shape
    cx, cy, bw, bh = (boxes_cxcywhn.reshape(-1, 4).astype(np.float32) * (w, h, w, h)).T
    return np.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the whole training pipeline


def geometric(
    load: Callable[[int], Labeled],
    index: int,
    partners: Sequence[int],
    imgsz: int,
    aug: AugmentSettings,
    rng: np.random.Generator,
    shape: tuple[int, int] | None = None,
) -> Labeled:
    """Mosaic of ``index`` and 3 images drawn from ``partners`` (probability ``aug.mosaic``), or
    ``index`` letterboxed; then the random affine back to imgsz x imgsz, or to ``shape``
    (height, width) for rectangular batches, which never use mosaic.
    ``load(i)`` gives image i resized to imgsz; it may return shared arrays (nothing here writes
    into its inputs)."""
    if shape is not None and aug.mosaic:
        raise ValueError("rectangular training samples (shape=...) cannot use mosaic")
    shape = shape or (imgsz, imgsz)
    if rng.random() < aug.mosaic:
        others = [int(partners[i]) for i in rng.integers(0, len(partners), size=3)]
        item = mosaic4([load(index)] + [load(i) for i in others], imgsz, rng)
    else:
        item = letterbox_labeled(load(index), shape)
    return random_affine(item, shape, aug, rng)


def augment(
    load: Callable[[int], Labeled],
    index: int,
    partners: Sequence[int],
    imgsz: int,
    aug: AugmentSettings,
    rng: np.random.Generator,
    shape: tuple[int, int] | None = None,
) -> Labeled:
    """One training sample: geometry, mixup with a second sample (probability ``aug.mixup``),
    HSV and flips. Mosaic and mixup partners are drawn from ``partners`` (image indices);
    ``shape`` makes a rectangular sample (see ``geometric``)."""
    item = geometric(load, index, partners, imgsz, aug, rng, shape)
    if rng.random() < aug.mixup:
        other = int(partners[rng.integers(len(partners))])
        item = mixup(item, geometric(load, other, partners, imgsz, aug, rng, shape), rng)
    return photometric_and_flips(item, aug, rng)
