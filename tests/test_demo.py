"""The demo dataset: deterministic, clean, learnable by construction, and never half-written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from yoloforge.data import demo
from yoloforge.data.config import load_data_config
from yoloforge.data.images import read_image
from yoloforge.data.scan import scan_split


def digest(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".jpg", ".txt"))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_small_variant_loads_and_scans_clean(shapes_small: Path, yoloforge_home):
    config = load_data_config(shapes_small)
    assert config.names == ["circle", "square", "triangle"]
    assert (len(config.train), len(config.val)) == (16, 8)
    for split in ("train", "val"):
        result = scan_split(config.images(split), config.names, split, progress=False)
        assert result.n_corrupt == 0 and result.problems == []
        assert result.n_boxes > len(result.records)  # several objects per image on average


def test_generation_is_deterministic_and_a_smaller_set_is_a_prefix(tmp_path: Path, shapes_small: Path):
    again = demo.ensure_shapes(tmp_path / "again", n_train=16, n_val=8)
    assert digest(again.parent) == digest(shapes_small.parent)
    bigger = demo.ensure_shapes(tmp_path / "bigger", n_train=17, n_val=8)
    small, big = digest(shapes_small.parent), digest(bigger.parent)
    assert all(big[name] == h for name, h in small.items())
    assert "images/train/00016.jpg" in big


def test_objects_are_large_varied_and_overlap_little():
    classes, sides, n_objects, max_iou = [], [], [], 0.0
    for i in range(150):
        image, shapes = demo.draw_image(np.random.default_rng([0, 0, i]))
        h, w = image.shape[:2]
        assert image.dtype == np.uint8 and min(h, w) >= 256 * 0.75 - 1 and max(h, w) <= 320
        n_objects.append(len(shapes))
        for k, shape in enumerate(shapes):
            x1, y1, x2, y2 = shape.box_xyxy
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            classes.append(shape.cls)
            sides.append(max(x2 - x1, y2 - y1) / min(h, w))
            max_iou = max([max_iou] + [demo._iou(shape.box_xyxy, o.box_xyxy) for o in shapes[:k]])
    assert set(classes) == {0, 1, 2} and min(np.bincount(classes)) > 0.2 * len(classes)
    assert min(sides) >= 0.18 and max(sides) <= 0.5 * 1.42  # a rotated square's box is up to sqrt(2) wider
    assert 0 < n_objects.count(0) <= 0.12 * len(n_objects)  # some backgrounds, about 5%
    assert max(n_objects) == demo.MAX_OBJECTS
    assert max_iou <= demo.MAX_OVERLAP_IOU


def object_box(image: np.ndarray, seed_xy: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel box (x1, y1, x2, y2) of the region of about the seed pixel's colour that holds the seed."""
    colour = image[seed_xy[1], seed_xy[0]].astype(int)
    mask = (np.abs(image.astype(int) - colour).max(-1) < 40).astype(np.uint8)
    _, components = cv2.connectedComponents(mask)
    ys, xs = np.nonzero(components == components[seed_xy[1], seed_xy[0]])
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_label_files_sit_on_their_objects(shapes_small: Path):
    """For images with one object, the labelled box is the box of the object's pixels (within 2 px)."""
    checked = 0
    for label in sorted((shapes_small.parent / "labels" / "train").glob("*.txt")):
        lines = label.read_text().splitlines()
        if len(lines) != 1:
            continue
        image = read_image(shapes_small.parent / "images" / "train" / f"{label.stem}.jpg")
        h, w = image.shape[:2]
        _, cx, cy, bw, bh = (float(v) for v in lines[0].split())
        expected = np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        found = np.array(object_box(image, (round(cx * w), round(cy * h))))
        assert np.abs(found - expected).max() <= 2, label.name
        checked += 1
    assert checked >= 3


def test_an_existing_dataset_is_reused_and_a_failed_generation_leaves_nothing(tmp_path: Path, monkeypatch):
    root = tmp_path / "shapes"
    config = demo.ensure_shapes(root, n_train=2, n_val=1)
    mtime = config.stat().st_mtime_ns
    assert demo.ensure_shapes(root, n_train=2, n_val=1) == config and config.stat().st_mtime_ns == mtime

    def crash(out: Path, *args) -> None:
        (out / "images").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "generate_shapes", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        demo.ensure_shapes(tmp_path / "other", n_train=2, n_val=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]


def test_default_location_is_under_yoloforge_home(yoloforge_home: Path, monkeypatch):
    made = []
    monkeypatch.setattr(demo, "generate_shapes", lambda out, *a: made.append(out))
    config = demo.ensure_shapes(n_train=3, n_val=1)
    assert config == yoloforge_home / "datasets" / "shapes-v1-3-1-seed0" / "config.yaml"
    assert made and config.is_file()
