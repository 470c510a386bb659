"""Label check and cache: each rule by hand, the summary line, and when the cache is rebuilt."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from yoloforge.data import scan
from yoloforge.data.images import ImageReadError, read_image
from yoloforge.data.scan import image_to_label_path, scan_split
from yoloforge.data.verify import image_shape, parse_label_text

NAMES = ["a", "b", "c"]


# ----------------------------------------------------------------------------------------------
# label lines


def parse(text: str, nc: int = 3) -> tuple[list[int], list[list[float]], list[str]]:
    classes, boxes, messages = parse_label_text(text, nc)
    assert classes.dtype == np.int64 and boxes.dtype == np.float32 and boxes.shape == (len(classes), 4)
    return classes.tolist(), np.round(boxes.astype(float), 6).tolist(), messages


def test_good_lines_are_kept_as_written():
    classes, boxes, messages = parse("0 0.5 0.5 0.2 0.4\n\n2 0.25 0.75 0.5 0.5\n")
    assert classes == [0, 2]
    assert boxes == [[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.5, 0.5]]
    assert messages == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.2", "line 1: expected 5 values"),
        ("0 0.5 0.5 0.2 0.2 0.9", "got 6; line dropped"),
        ("0 0.5 x 0.2 0.2", "line 1: non-numeric value 'x'; line dropped"),
        ("0 0.5 nan 0.2 0.2", "not a finite number"),
        ("3 0.5 0.5 0.2 0.2", "line 1: class id 3 outside names (0..2); line dropped"),
        ("-1 0.5 0.5 0.2 0.2", "class id -1 outside names"),
        ("1.5 0.5 0.5 0.2 0.2", "class id '1.5' is not an integer"),
        ("0 0.5 0.5 0 0.2", "line 1: zero-size box (w=0, h=0.2); line dropped"),
        ("0 0.5 0.5 0.2 -0.005", "zero-size box"),
        ("0 320 240 50 60", "values outside [0, 1]"),
        ("0 0.5 1.02 0.2 0.2", "values outside [0, 1]"),
    ],
)
def test_bad_lines_are_dropped_with_their_line_number(line: str, message: str):
    classes, boxes, messages = parse(line + "\n")
    assert classes == [] and boxes == []
    assert len(messages) == 1 and message in messages[0]


def test_duplicates_are_removed_and_integral_float_class_ids_accepted():
    classes, boxes, messages = parse("1 0.5 0.5 0.2 0.2\n1.0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.3\n")
    assert classes == [1, 1]
    assert messages == ["line 2: duplicate of line 1; removed"]


def test_values_just_outside_are_clipped_silently_and_overhanging_boxes_with_a_message():
    # line 1: cx - w/2 = -0.005 (within 1%): clipped silently to x1 = 0, x2 = 0.195
    # line 2: the box reaches x = 1.05: clipped to [0.85, 1.0] with a message
    classes, boxes, messages = parse("0 0.095 0.5 0.2 0.2\n1 0.95 0.5 0.2 0.2\n")
    assert classes == [0, 1]
    assert boxes == [[0.0975, 0.5, 0.195, 0.2], [0.925, 0.5, 0.15, 0.2]]
    assert messages == ["line 2: box extends past the image edge by more than 1%; clipped"]


def test_polygon_lines_become_their_bounding_box():
    classes, boxes, messages = parse("2 0.1 0.2 0.5 0.1 0.3 0.6 0.2 0.4\n")
    assert classes == [2] and boxes == [[0.3, 0.35, 0.4, 0.5]] and messages == []


# ----------------------------------------------------------------------------------------------
# images


def test_image_shape_applies_exif_orientation_like_the_decoder(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored 40 high x 80 wide, shown 80 high x 40 wide
    path = tmp_path / "rotated.jpg"
    Image.fromarray(np.zeros((40, 80, 3), np.uint8)).save(path, exif=exif.tobytes())
    assert image_shape(path) == (80, 40)
    assert read_image(path).shape[:2] == (80, 40)


def test_png_and_webp_shapes(tmp_path: Path, write_image):
    assert image_shape(write_image(tmp_path / "x.png", hw=(30, 50))) == (30, 50)
    assert image_shape(write_image(tmp_path / "x.webp", hw=(21, 13))) == (21, 13)


def test_unreadable_and_missing_images_raise(tmp_path: Path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="not a readable image"):
        image_shape(tmp_path / "bad.jpg")
    with pytest.raises(ImageReadError, match="image file not found"):
        image_shape(tmp_path / "missing.jpg")


def test_a_truncated_jpeg_is_kept_exactly_when_the_loader_can_decode_it(tmp_path: Path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", noise)[1].tobytes()
    for name, cut in (("no_end_marker.jpg", data[:-2]), ("half.jpg", data[: len(data) // 2])):
        path = tmp_path / name
        path.write_bytes(cut)
        decodable = cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR) is not None
        if decodable:
            assert image_shape(path) == (64, 64)
        else:
            with pytest.raises(ImageReadError, match="truncated JPEG"):
                image_shape(path)


# ----------------------------------------------------------------------------------------------
# scanning a split


@pytest.fixture
def split(tmp_path: Path, write_image) -> list[Path]:
    """6 images: 2 labelled, 1 with an empty label, 1 without label, 1 corrupt, 1 with a bad line."""
    images = tmp_path / "ds" / "images" / "train"
    paths = [write_image(images / f"{i}.jpg") for i in range(5)]
    (images / "5.jpg").write_bytes(b"corrupt")
    paths.append(images / "5.jpg")
    labels = tmp_path / "ds" / "labels" / "train"
    labels.mkdir(parents=True)
    (labels / "0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "1.txt").write_text("1 0.5 0.5 0.4 0.4\n2 0.2 0.2 0.1 0.1\n")
    (labels / "2.txt").write_text("")
    (labels / "4.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    (labels / "5.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    return paths


def test_scan_counts_names_problems_and_logs_the_summary(split: Path, caplog, yoloforge_home):
    caplog.set_level(logging.INFO, logger="yoloforge")
    result = scan_split(split, NAMES, "train", progress=False)
    labels_dir = split[0].parent.parent.parent / "labels" / "train"
    summary = f"train: Scanning {labels_dir}... 5 images, 2 backgrounds, 1 corrupt"
    assert result.summary("train") == summary
    assert summary in caplog.messages
    assert (result.n_images, result.n_backgrounds, result.n_corrupt, result.n_missing_labels) == (5, 2, 1, 1)
    assert [Path(r.path).name for r in result.records] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert result.records[1].shape == (32, 48) and result.records[1].classes.tolist() == [1, 2]
    assert {(Path(p.path).name, p.severity) for p in result.problems} == {
        ("5.jpg", "error"),
        ("4.txt", "warning"),
    }
    assert any("4.txt: line 2: class id 7 outside names" in m for m in caplog.messages)
    assert result.n_boxes == 4


def test_label_file_that_is_not_text_skips_its_image(split: list[Path], yoloforge_home):
    image_to_label_path(split[3]).write_bytes(b"\xff\xfe\xfa binary")
    result = scan_split(split, NAMES, "train", progress=False)
    assert result.n_corrupt == 2
    assert any(p.path.endswith("3.txt") and "not UTF-8" in p.message for p in result.problems)


def test_scan_never_writes_user_files(split: list[Path], yoloforge_home):
    def digest() -> dict[str, str]:
        root = split[0].parents[2]
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(scan.CACHE_SUFFIX))
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = digest()
    scan_split(split, NAMES, "train", progress=False)
    assert digest() == before


def test_many_images_keep_their_order_through_the_thread_pool(tmp_path: Path, write_image, yoloforge_home):
    images = [write_image(tmp_path / "images" / f"{i:03d}.png", hw=(10 + i, 12)) for i in range(40)]
    result = scan_split(images, NAMES, "train", progress=False)
    assert [r.path for r in result.records] == [str(p) for p in images]
    assert [r.shape for r in result.records] == [(10 + i, 12) for i in range(40)]
    assert result.problems[-1].message.startswith("no label files found")


# ----------------------------------------------------------------------------------------------
# cache


def assert_same(a: scan.ScanResult, b: scan.ScanResult) -> None:
    assert a.summary("x") == b.summary("x") and a.problems == b.problems
    for ra, rb in zip(a.records, b.records, strict=True):
        assert ra.path == rb.path and ra.shape == rb.shape
        np.testing.assert_array_equal(ra.classes, rb.classes)
        np.testing.assert_array_equal(ra.boxes_cxcywhn, rb.boxes_cxcywhn)


def test_second_scan_comes_from_the_cache_and_prints_the_same_line(split: list[Path], caplog, yoloforge_home):
    caplog.set_level(logging.INFO, logger="yoloforge")
    first = scan_split(split, NAMES, "train", progress=False)
    assert not first.from_cache
    assert first.cache_path == split[0].parents[2] / "labels" / "train.yoloforge.cache"
    second = scan_split(split, NAMES, "train", progress=False)
    assert second.from_cache
    assert_same(first, second)
    assert caplog.messages.count(first.summary("train")) == 2
    with np.load(first.cache_path, allow_pickle=False) as z:  # plain arrays only
        assert all(z[k].dtype != object for k in z.files)


def test_editing_a_label_rebuilds_the_cache(split: list[Path], yoloforge_home):
    scan_split(split, NAMES, "train", progress=False)
    label = image_to_label_path(split[0])
    label.write_text("2 0.5 0.5 0.3 0.3\n")
    stat = label.stat()
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # even within one mtime tick
    result = scan_split(split, NAMES, "train", progress=False)
    assert not result.from_cache and result.records[0].classes.tolist() == [2]


def test_touching_a_file_or_adding_a_label_rebuilds_the_cache(split: list[Path], yoloforge_home):
    scan_split(split, NAMES, "train", progress=False)
    stat = split[2].stat()
    os.utime(split[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not scan_split(split, NAMES, "train", progress=False).from_cache
    image_to_label_path(split[3]).write_text("0 0.5 0.5 0.1 0.1\n")
    result = scan_split(split, NAMES, "train", progress=False)
    assert not result.from_cache and result.n_missing_labels == 0


def test_changing_names_or_the_cache_version_rebuilds_the_cache(
    split: list[Path], monkeypatch, yoloforge_home
):
    scan_split(split, NAMES, "train", progress=False)
    result = scan_split(split, [*NAMES, "d", "e", "f", "g", "h"], "train", progress=False)
    assert not result.from_cache and result.records[4].classes.tolist() == [0, 7]  # class 7 is now valid
    assert scan_split(split, [*NAMES, "d", "e", "f", "g", "h"], "train", progress=False).from_cache
    monkeypatch.setattr(scan, "CACHE_VERSION", scan.CACHE_VERSION + 1)
    assert not scan_split(split, [*NAMES, "d", "e", "f", "g", "h"], "train", progress=False).from_cache


def test_a_broken_cache_file_is_scanned_again(split: list[Path], yoloforge_home):
    cache = scan_split(split, NAMES, "train", progress=False).cache_path
    cache.write_bytes(b"garbage")
    result = scan_split(split, NAMES, "train", progress=False)
    assert not result.from_cache and result.n_images == 5


def test_when_the_labels_folder_is_not_writable_the_cache_goes_to_the_user_cache(
    split: list[Path], yoloforge_home
):
    # a folder where the cache file should go: it cannot be written (chmod would not stop root)
    (split[0].parents[2] / "labels" / "train.yoloforge.cache").mkdir()
    first = scan_split(split, NAMES, "train", progress=False)
    assert first.cache_path is not None and first.cache_path.parent == yoloforge_home / "label-caches"
    assert scan_split(split, NAMES, "train", progress=False).from_cache


def test_no_folder_is_created_in_the_users_dataset(tmp_path: Path, write_image, yoloforge_home):
    images = [write_image(tmp_path / "ds" / "images" / f"{i}.jpg") for i in range(3)]
    scan_split(images, NAMES, "val", progress=False)
    assert not (tmp_path / "ds" / "labels").exists()


def test_logging_is_capped_during_training_but_check_logs_everything(tmp_path: Path, write_image, caplog):
    image = write_image(tmp_path / "images" / "a.jpg")
    lines = "".join(f"{9 + i} 0.5 0.5 0.2 0.2\n" for i in range(5))  # 5 bad class ids
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(lines)
    caplog.set_level(logging.WARNING, logger="yoloforge")
    scan_split([image], NAMES, "train", progress=False, max_logged=2)
    assert len(caplog.messages) == 3 and caplog.messages[-1].startswith("train: 3 more problems")
    caplog.clear()
    scan_split([image], NAMES, "train", progress=False, max_logged=None)
    assert len(caplog.messages) == 5
