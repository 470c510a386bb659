"""Augmentation: hand-computed box maths, and the property that boxes stay on their objects.

The property tests draw solid rectangles of unique colours on a black background, run the whole
geometric pipeline (mosaic, affine/perspective, flips) with random settings over many seeds, and
compare every kept box with the pixels of its object's colour.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from yoloforge.data.augment import (
    Labeled,
    augment,
    flip,
    keep_boxes,
    letterbox_labeled,
    mixup,
    mosaic4,
    random_affine,
    random_affine_matrix,
    random_hsv,
    resize_long_side,
    scaled_boxes,
    transform_boxes,
    without_mosaic,
)
from yoloforge.data.letterbox import PAD_VALUE
from yoloforge.settings import AugmentSettings

NO_AUGMENT = AugmentSettings(
    hsv_h=0, hsv_s=0, hsv_v=0, degrees=0, translate=0, scale=0, shear=0, perspective=0,
    flipud=0, fliplr=0, mosaic=0, mixup=0,
)  # fmt: skip
PALETTE = [  # object colours: every pair differs by >= 127 in some channel; none is grey
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
    (255, 128, 0), (128, 0, 255), (0, 128, 255), (255, 0, 128), (128, 255, 0), (0, 255, 128),
]  # fmt: skip


def labeled(image: np.ndarray, boxes_xyxy: list, classes: list | None = None) -> Labeled:
    boxes = np.array(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    cls = np.arange(len(boxes)) if classes is None else np.array(classes)
    return Labeled(image, cls.astype(np.int64), boxes)


# ---------------------------------------------------------------------------------------------
# hand-computed cases


def test_transform_boxes_scale_translate_and_rotation():
    boxes = np.array([[10, 20, 30, 60]], dtype=np.float32)
    scale_move = np.array([[2, 0, 5], [0, 2, -5], [0, 0, 1]], dtype=float)
    np.testing.assert_allclose(transform_boxes(boxes, scale_move), [[25, 35, 65, 115]])
    quarter_turn = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=float)  # (x, y) -> (-y, x)
    np.testing.assert_allclose(transform_boxes(boxes, quarter_turn), [[-60, 10, -20, 30]])
    assert transform_boxes(np.zeros((0, 4), np.float32), scale_move).shape == (0, 4)


def test_transform_boxes_rotation_45_encloses_the_corners():
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    out = transform_boxes(np.array([[-1, -1, 1, 1]], dtype=np.float32), rot)
    np.testing.assert_allclose(out, [[-math.sqrt(2), -math.sqrt(2), math.sqrt(2), math.sqrt(2)]], rtol=1e-6)


def test_transform_boxes_perspective_divides_by_z():
    persp = np.array([[1, 0, 0], [0, 1, 0], [0.01, 0, 1]])  # z = 1 + 0.01 x
    out = transform_boxes(np.array([[0, 0, 100, 10]], dtype=np.float32), persp)
    np.testing.assert_allclose(out, [[0, 0, 50, 10]], rtol=1e-6)  # x=100 -> 100/2; y=10 at x=0 stays


@pytest.mark.parametrize(
    ("visible", "whole", "kept"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], True),
        ([0, 0, 2, 10], [0, 0, 2, 10], False),  # 2 px wide: not more than 2
        ([0, 0, 10, 2.5], [0, 0, 10, 2.5], True),
        ([0, 0, 10, 10], [0, 0, 100, 100], False),  # 1% of the whole object left
        ([0, 0, 10, 10], [0, 0, 30, 30], True),  # 11%
        ([0, 0, 300, 2.9], [0, 0, 300, 2.9], False),  # aspect 103
        ([0, 0, 250, 2.6], [0, 0, 250, 2.6], True),  # aspect 96
    ],
)
def test_keep_boxes_rule(visible, whole, kept):
    out = keep_boxes(np.array([visible], np.float32), np.array([whole], np.float32))
    assert out.tolist() == [kept]


def test_affine_matrix_without_augmentation_is_identity_for_equal_shapes():
    m = random_affine_matrix((64, 96), (64, 96), NO_AUGMENT, np.random.default_rng(0))
    np.testing.assert_allclose(m, np.eye(3), atol=1e-12)


def test_affine_without_augmentation_keeps_image_and_boxes():
    image = np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    out = random_affine(labeled(image, [[5, 6, 20, 30]]), (40, 60), NO_AUGMENT, np.random.default_rng(0))
    np.testing.assert_array_equal(out.image, image)
    np.testing.assert_allclose(out.boxes_xyxy, [[5, 6, 20, 30]])


def test_affine_halves_from_mosaic_canvas_and_clips():
    aug = AugmentSettings(translate=0, scale=0, hsv_h=0)
    # 200x200 canvas -> 100x100 output: centre maps to centre, no scaling: a crop of the middle
    item = labeled(np.zeros((200, 200, 3), np.uint8), [[40, 90, 60, 110], [100, 100, 120, 120]])
    out = random_affine(item, (100, 100), aug, np.random.default_rng(0))
    # first box is 10 px left of the crop (x 40..60 -> -10..10): clipped to 0..10, half remains
    np.testing.assert_allclose(out.boxes_xyxy, [[0, 40, 10, 60], [50, 50, 70, 70]])


def test_flip_boxes_hand_computed():
    image = np.zeros((10, 20, 3), np.uint8)
    image[2:5, 3:8] = 255
    item = labeled(image, [[3, 2, 8, 5]])
    lr = flip(item, horizontal=True)
    np.testing.assert_allclose(lr.boxes_xyxy, [[12, 2, 17, 5]])
    assert lr.image[2:5, 12:17].min() == 255 and lr.image.sum() == image.sum()
    ud = flip(item, horizontal=False)
    np.testing.assert_allclose(ud.boxes_xyxy, [[3, 5, 8, 8]])
    assert ud.image[5:8, 3:8].min() == 255


def test_letterbox_labeled_pads_and_shifts():
    item = labeled(np.zeros((40, 80, 3), np.uint8), [[0, 0, 10, 10]])
    out = letterbox_labeled(item, (80, 80))
    assert out.image.shape == (80, 80, 3)
    assert (out.image[:20] == PAD_VALUE).all() and (out.image[20:60] == 0).all()
    np.testing.assert_allclose(out.boxes_xyxy, [[0, 20, 10, 30]])


def test_resize_long_side_and_scaled_boxes():
    assert resize_long_side(np.zeros((480, 640, 3), np.uint8), 320).shape == (240, 320, 3)
    assert resize_long_side(np.zeros((100, 50, 3), np.uint8), 320).shape == (320, 160, 3)
    same = np.zeros((320, 200, 3), np.uint8)
    assert resize_long_side(same, 320) is same
    boxes = scaled_boxes(np.array([[0.5, 0.5, 0.5, 0.25]]), (100, 200))  # (h, w)
    np.testing.assert_allclose(boxes, [[50, 37.5, 150, 62.5]])


def test_mosaic_places_each_tile_at_its_boxes():
    imgsz = 100
    tiles = []
    for k, (h, w) in enumerate([(100, 100), (60, 100), (100, 80), (50, 50)]):
        tiles.append(labeled(np.full((h, w, 3), PALETTE[k], np.uint8), [[0, 0, w, h]], [k]))
    for seed in range(5):
        out = mosaic4(tiles, imgsz, np.random.default_rng(seed))
        assert out.image.shape == (200, 200, 3)
        np.testing.assert_array_equal(out.classes, [0, 1, 2, 3])
        for k, box in enumerate(out.boxes_xyxy):
            mask = (out.image == PALETTE[k]).all(-1)
            ys, xs = np.nonzero(mask)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box.tolist()
            assert mask.sum() == (box[2] - box[0]) * (box[3] - box[1])
        # the whole boxes are the tiles' full extents, touching the mosaic centre
        full = out.full_xyxy
        assert full[0, 2] == full[1, 0] == full[2, 2] == full[3, 0]  # xc
        assert full[0, 3] == full[1, 3] == full[2, 1] == full[3, 1]  # yc


def test_mixup_blends_and_keeps_both_box_sets():
    a = labeled(np.full((8, 8, 3), 200, np.uint8), [[0, 0, 4, 4]], [1])
    b = labeled(np.full((8, 8, 3), 100, np.uint8), [[4, 4, 8, 8], [1, 1, 2, 2]], [2, 0])
    out = mixup(a, b, np.random.default_rng(0))
    assert out.classes.tolist() == [1, 2, 0]
    np.testing.assert_allclose(out.boxes_xyxy, [[0, 0, 4, 4], [4, 4, 8, 8], [1, 1, 2, 2]])
    assert 130 <= out.image.min() <= out.image.max() <= 170  # Beta(32, 32) is near 0.5
    with pytest.raises(ValueError, match="same-sized"):
        mixup(a, labeled(np.zeros((4, 4, 3), np.uint8), []), np.random.default_rng(0))


def test_hsv_zero_gains_and_grey_hue():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    before = image.copy()
    random_hsv(image, 0, 0, 0, rng)
    np.testing.assert_array_equal(image, before)
    grey = np.full((4, 4, 3), 90, np.uint8)
    random_hsv(grey, 0.5, 0, 0, rng)  # hue has no effect on a colourless pixel
    np.testing.assert_array_equal(grey, 90)


def test_hsv_value_gain_scales_brightness():
    image = np.full((4, 4, 3), (200, 100, 50), np.uint8)
    for seed in range(10):
        out = image.copy()
        rng = np.random.default_rng(seed)
        gain = 1 + np.random.default_rng(seed).uniform(-1, 1, 3)[2] * 0.4  # the draw random_hsv makes
        random_hsv(out, 0, 0, 0.4, rng)
        assert abs(int(out.max()) - min(255, 200 * gain)) <= 2
        assert out.max() == out[..., 0].max()  # hue and saturation unchanged: red stays the top channel


def test_without_mosaic_turns_off_mixup_too():
    aug = without_mosaic(AugmentSettings(mixup=0.3))
    assert aug.mosaic == 0 and aug.mixup == 0 and aug.hsv_h == AugmentSettings().hsv_h


# ---------------------------------------------------------------------------------------------
# property: boxes stay on their objects


class SceneMaker:
    """``load(i)`` for the pipeline: every call draws a new scene with colours not used before,
    so each class id (= palette index) appears once per sample."""

    def __init__(self, rng: np.random.Generator, imgsz: int):
        self.rng, self.imgsz, self.next_colour = rng, imgsz, 0

    def __call__(self, index: int) -> Labeled:
        h, w = (int(v) for v in self.rng.integers(self.imgsz // 2, self.imgsz + 1, size=2))
        if max(h, w) != self.imgsz:  # resized images have their long side at imgsz
            h, w = (self.imgsz, w) if h > w else (h, self.imgsz)
        image = np.zeros((h, w, 3), np.uint8)
        boxes, classes = [], []
        for _ in range(3):
            if self.next_colour == len(PALETTE):
                break
            bw, bh = (int(v) for v in self.rng.integers(8, max(9, min(h, w) // 2), size=2))
            # 3 px clear of the edges and of other objects, so colours never blend into each other
            x1, y1 = int(self.rng.integers(3, w - bw - 2)), int(self.rng.integers(3, h - bh - 2))
            if (image[y1 - 3 : y1 + bh + 3, x1 - 3 : x1 + bw + 3] != 0).any():
                continue
            image[y1 : y1 + bh, x1 : x1 + bw] = PALETTE[self.next_colour]
            boxes.append([x1, y1, x1 + bw, y1 + bh])
            classes.append(self.next_colour)
            self.next_colour += 1
        return labeled(image, boxes, classes)


def random_geometry(rng: np.random.Generator) -> AugmentSettings:
    return AugmentSettings(
        hsv_h=0, hsv_s=0, hsv_v=0, mixup=0,
        degrees=float(rng.uniform(0, 45)), translate=float(rng.uniform(0, 0.3)),
        scale=float(rng.uniform(0, 0.7)), shear=float(rng.uniform(0, 10)),
        perspective=float(rng.choice([0, rng.uniform(0, 0.001)])),
        flipud=0.5, fliplr=0.5, mosaic=float(rng.choice([0.0, 1.0])),
    )  # fmt: skip


def box_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def check_boxes_on_objects(out: Labeled) -> int:
    """Assert the property on one sample; return how many boxes had the strict IoU check."""
    img_h, img_w = out.image.shape[:2]
    boxes = out.boxes_xyxy
    assert boxes.dtype == np.float32 and out.classes.dtype == np.int64
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= img_w).all() and (boxes[:, 3] <= img_h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert len(set(out.classes.tolist())) == len(out.classes), "a colour is drawn once per sample"
    diff = np.abs(out.image.astype(np.int16)[:, :, None, :] - np.array(PALETTE, np.int16)).max(-1)
    pad = (np.abs(out.image.astype(np.int16) - PAD_VALUE) <= 3).all(-1)
    kept = dict(zip(out.classes.tolist(), boxes.tolist(), strict=True))
    strict = 0
    for c in range(len(PALETTE)):
        mask = diff[:, :, c] <= 40
        if not mask.any():
            assert c not in kept, f"class {c}: a box without any object pixel"
            continue
        ys, xs = np.nonzero(mask)
        mask_box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        near = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        clipped = (
            mask_box[0] <= 2 or mask_box[1] <= 2 or mask_box[2] >= img_w - 2 or mask_box[3] >= img_h - 2
        ) or (near & pad).any()
        big = mask_box[2] - mask_box[0] >= 8 and mask_box[3] - mask_box[1] >= 8
        if c not in kept:
            assert clipped or not big, f"class {c}: a whole, visible object lost its box"
            continue
        box = kept[c]
        # every object pixel lies in its box (1.5 px for interpolation at the edges)
        assert box[0] - 1.5 <= mask_box[0] and box[1] - 1.5 <= mask_box[1], (c, box, mask_box)
        assert mask_box[2] <= box[2] + 1.5 and mask_box[3] <= box[3] + 1.5, (c, box, mask_box)
        # colour-thresholded edges lose up to a pixel per side: IoU is only meaningful on larger boxes
        if not clipped and min(mask_box[2] - mask_box[0], mask_box[3] - mask_box[1]) >= 16:
            assert box_iou(box, mask_box) >= 0.8, (c, box, mask_box)
            strict += 1
    return strict


def test_boxes_stay_on_their_objects_through_the_pipeline():
    imgsz, strict, total = 128, 0, 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        aug = random_geometry(rng)
        out = augment(SceneMaker(rng, imgsz), 0, range(10), imgsz, aug, rng)
        assert out.image.shape == (imgsz, imgsz, 3) and out.image.dtype == np.uint8
        strict += check_boxes_on_objects(out)
        total += len(out.classes)
    assert total > 150 and strict > 60  # the strict check ran on many boxes, not on a few


def test_boxes_stay_on_their_objects_with_strong_rotation_and_perspective():
    imgsz = 128
    aug = AugmentSettings(
        hsv_h=0, hsv_s=0, hsv_v=0, degrees=180, shear=20, perspective=0.001, scale=0.5, translate=0.2
    )
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        check_boxes_on_objects(augment(SceneMaker(rng, imgsz), 0, range(10), imgsz, aug, rng))


def test_mosaic_drops_slivers_cut_by_the_canvas_edge():
    """A tile object mostly outside the canvas is dropped even when the affine keeps all of it."""
    imgsz = 100
    big = labeled(np.zeros((100, 100, 3), np.uint8), [[0, 0, 100, 100]], [0])
    aug = AugmentSettings(translate=0, scale=0, hsv_h=0)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        item = mosaic4([big] * 4, imgsz, rng)
        out = random_affine(item, (imgsz, imgsz), aug, rng)
        visible = (out.boxes_xyxy[:, 2] - out.boxes_xyxy[:, 0]) * (
            out.boxes_xyxy[:, 3] - out.boxes_xyxy[:, 1]
        )
        assert (visible > 0.1 * 100 * 100).all()


def test_same_rng_seed_same_sample():
    imgsz, aug = 96, AugmentSettings(degrees=10, mixup=0.5)
    a = augment(
        SceneMaker(np.random.default_rng(3), imgsz), 0, range(10), imgsz, aug, np.random.default_rng(7)
    )
    b = augment(
        SceneMaker(np.random.default_rng(3), imgsz), 0, range(10), imgsz, aug, np.random.default_rng(7)
    )
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes_xyxy, b.boxes_xyxy)
