"""split / check / convert on small hand-made inputs: data copied faithfully, every problem named."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import yaml

from yoloforge.data.config import DatasetError, load_data_config
from yoloforge.data.scan import image_to_label_path, scan_split
from yoloforge.data.tools import assign_splits, check_dataset, convert_coco, convert_voc, split_dataset

CLASSES = ["cat", "dog", "bird"]


@pytest.fixture
def export(tmp_path: Path, write_image) -> Path:
    """A Label Studio-like YOLO export: 10 labelled images, 3 backgrounds (one without label file),
    a corrupt image, a class id out of range, a malformed line and a label without an image."""
    src = tmp_path / "export"
    labels = src / "labels"
    labels.mkdir(parents=True)
    for i in range(10):
        write_image(src / "images" / f"img{i:02d}.jpg", value=10 * i)
        (labels / f"img{i:02d}.txt").write_text(f"{i % 3} 0.5 0.5 0.{i + 1} 0.2\n")
    for i in range(10, 13):
        write_image(src / "images" / f"img{i:02d}.png")
        if i != 12:
            (labels / f"img{i:02d}.txt").write_text("")
    (src / "images" / "img03.jpg").write_bytes(b"this is not a jpeg")  # corrupt, labelled
    (labels / "img05.txt").write_text("1 0.5 0.5 0.6 0.2\n9 0.5 0.5 0.2 0.2\n")  # class id out of range
    (labels / "img07.txt").write_text("1 0.5 0.5 0.8 0.2\n2 0.5 0.5\n")  # malformed line
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (src / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    categories = [{"id": i, "name": n} for i, n in enumerate(CLASSES)]
    (src / "notes.json").write_text(json.dumps({"categories": categories, "info": {"year": 2024}}))
    return src


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_split_then_check_copies_everything_and_names_every_problem(
    export: Path, tmp_path: Path, caplog, yoloforge_home
):
    caplog.set_level(logging.INFO, logger="yoloforge")
    before = tree_digest(export)
    out = tmp_path / "dataset"
    config_file = split_dataset(export, out, val=0.3, seed=0, progress=False)
    assert tree_digest(export) == before  # SRC only read

    assert config_file == out / "config.yaml"
    raw = yaml.safe_load(config_file.read_text())
    assert raw == {"path": str(out), "train": "images/train", "val": "images/val", "nc": 3,
                   "names": {0: "cat", 1: "dog", 2: "bird"}}  # fmt: skip

    # every image in exactly one split, its label beside it, both byte for byte
    copied = {}
    for split in ("train", "val"):
        for image in (out / "images" / split).iterdir():
            assert image.name not in copied
            copied[image.name] = split
            assert image.read_bytes() == (export / "images" / image.name).read_bytes()
            src_label = export / "labels" / f"{image.stem}.txt"
            dst_label = image_to_label_path(image)
            assert dst_label.is_file() == src_label.is_file()
            if src_label.is_file():
                assert dst_label.read_bytes() == src_label.read_bytes()
    assert sorted(copied) == sorted(p.name for p in (export / "images").iterdir())
    assert sum(s == "val" for s in copied.values()) == 4  # round(10 * 0.3) + round(3 * 0.3)
    assert not list(out.rglob("orphan.txt"))

    logged = "\n".join(caplog.messages)
    assert f"{export / 'labels' / 'orphan.txt'}: label file without an image; not copied" in logged
    corrupt_split = copied["img03.jpg"]
    assert f"{corrupt_split}: Scanning {out / 'labels' / corrupt_split}..." in logged
    assert "1 corrupt" in logged

    caplog.clear()
    report = check_dataset(config_file, progress=False)
    assert report.usable
    assert sum(r.n_corrupt for r in report.splits.values()) == 1
    assert report.splits[corrupt_split].summary(corrupt_split).endswith(", 1 corrupt")
    named = {(Path(p.path).name, p.severity) for p in report.problems}
    assert named == {("img03.jpg", "error"), ("img05.txt", "warning"), ("img07.txt", "warning")}
    for problem in report.problems:
        assert str(problem) in "\n".join(caplog.messages)
    assert any("img05.txt: line 2: class id 9 outside names (0..2)" in m for m in caplog.messages)
    assert any("img07.txt: line 2: expected 5 values" in m for m in caplog.messages)


def test_a_second_split_onto_the_same_output_is_refused(export: Path, tmp_path: Path, yoloforge_home):
    out = tmp_path / "dataset"
    split_dataset(export, out, progress=False)
    before = tree_digest(out)
    with pytest.raises(DatasetError, match="already exists"):
        split_dataset(export, out, seed=1, progress=False)
    assert tree_digest(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left over


def test_split_is_deterministic_by_seed_and_spreads_backgrounds(export: Path):
    images = sorted((export / "images").iterdir())
    a, b, c = (assign_splits(images, 0.3, 0.2, seed) for seed in (0, 0, 1))
    assert a == b and a != c
    backgrounds = [p for p in images if p.suffix == ".png"]
    assert sorted(a[p] for p in backgrounds) == ["test", "train", "val"]  # 3 * (0.5, 0.3, 0.2), rounded
    counts = {s: list(a.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 6, "val": 4, "test": 3}  # labelled: 5/3/2, backgrounds: 1/1/1


def test_split_with_a_test_fraction_writes_a_test_split(export: Path, tmp_path: Path, yoloforge_home):
    config = load_data_config(split_dataset(export, tmp_path / "out", val=0.2, test=0.2, progress=False))
    assert (len(config.train), len(config.val), len(config.test or [])) == (7, 3, 3)  # 6/2/2 + 1/1/1
    assert {p.parent.name for p in config.images("test")} == {"test"}


def test_split_names_come_from_notes_json_without_classes_txt(export: Path, tmp_path: Path, yoloforge_home):
    (export / "classes.txt").unlink()
    categories = [{"id": 1, "name": "dog"}, {"id": 0, "name": "cat"}, {"id": 2, "name": "bird"}]
    (export / "notes.json").write_text(json.dumps({"categories": categories}))
    config = load_data_config(split_dataset(export, tmp_path / "out", progress=False))
    assert config.names == CLASSES


def test_split_input_errors(export: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match="no 'images' folder"):
        split_dataset(tmp_path / "nothing", tmp_path / "out")
    with pytest.raises(DatasetError, match="together below 1"):
        split_dataset(export, tmp_path / "out", val=0.6, test=0.5)
    (export / "classes.txt").unlink()
    (export / "notes.json").unlink()
    with pytest.raises(DatasetError, match="classes.txt"):
        split_dataset(export, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_check_names_label_files_without_an_image(tmp_path: Path, write_image, yoloforge_home):
    # train and val listed by .txt files share one images and one labels folder
    for name in ("a", "b"):
        write_image(tmp_path / "images" / f"{name}.jpg")
        (tmp_path / "labels").mkdir(exist_ok=True)
        (tmp_path / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "A_typo.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "train.txt").write_text("images/a.jpg\n")
    (tmp_path / "val.txt").write_text("images/b.jpg\n")
    (tmp_path / "data.yaml").write_text("train: train.txt\nval: val.txt\nnames: [a]\n")
    report = check_dataset(tmp_path / "data.yaml", progress=False)
    assert report.usable
    assert [Path(p.path).name for p in report.problems] == ["A_typo.txt"]


def test_check_says_unusable_when_train_has_no_objects(tmp_path: Path, write_image, yoloforge_home):
    for split in ("train", "val"):
        write_image(tmp_path / "images" / split / "a.jpg")
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a]\n")
    report = check_dataset(tmp_path / "data.yaml", progress=False)
    assert not report.usable
    assert report.reasons == ["'train' has no objects (every image is a background)"]


# ----------------------------------------------------------------------------------------------
# conversions


def test_coco_round_trip(tmp_path: Path, write_image, yoloforge_home):
    images = tmp_path / "coco_images"
    write_image(images / "a.jpg", hw=(100, 200))
    write_image(images / "b.jpg", hw=(50, 50))
    write_image(images / "c.jpg", hw=(60, 80))
    coco = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 200, "height": 100},
            {"id": 2, "file_name": "b.jpg", "width": 50, "height": 50},
            {"id": 3, "file_name": "c.jpg", "width": 80, "height": 60},
        ],
        "categories": [{"id": 7, "name": "zebra"}, {"id": 3, "name": "cat"}, {"id": 5, "name": "ant"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [20, 10, 40, 30], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [180, 80, 40, 40], "iscrowd": 0},  # clipped
            {"id": 3, "image_id": 2, "category_id": 5, "bbox": [0, 0, 25, 50], "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [5, 5, 10, 10], "iscrowd": 1},  # skipped
        ],
    }
    json_file = tmp_path / "instances_val2017.json"
    json_file.write_text(json.dumps(coco))
    config_file = convert_coco(json_file, images, tmp_path / "out")

    config = load_data_config(config_file)
    assert config.names == ["cat", "ant", "zebra"]  # sorted by category id: 3, 5, 7
    assert [p.name for p in config.val] == ["a.jpg", "b.jpg", "c.jpg"]  # one split, named after the file
    labels = tmp_path / "out" / "labels" / "val"
    assert (labels / "a.txt").read_text().splitlines() == [
        "2 0.200000 0.250000 0.200000 0.300000",  # zebra: x 20..60 of 200, y 10..40 of 100
        "0 0.950000 0.900000 0.100000 0.200000",  # cat: clipped to x 180..200, y 80..100
    ]
    assert (labels / "b.txt").read_text() == "1 0.250000 0.500000 0.500000 1.000000\n"
    assert not (labels / "c.txt").exists()  # background
    result = scan_split(config.val, config.names, "val", progress=False)
    assert (result.n_images, result.n_backgrounds, result.n_corrupt, result.problems) == (3, 1, 0, [])


def write_voc_xml(path: Path, filename: str, size: tuple[int, int], objects: list[tuple]) -> None:
    parts = [f"<annotation><filename>{filename}</filename>"]
    parts.append(f"<size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>")
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts) + "</annotation>")


def test_voc_round_trip_with_image_sets(tmp_path: Path, write_image, yoloforge_home):
    voc = tmp_path / "VOC"
    for stem in ("000001", "000002", "000003"):
        write_image(voc / "JPEGImages" / f"{stem}.jpg", hw=(50, 100))
    # VOC pixels are 1-based and inclusive: xmin 11 .. xmax 30 covers x = [10, 30) in 0-based corners
    write_voc_xml(voc / "Annotations/000001.xml", "000001.jpg", (50, 100),
                  [("dog", (11, 6, 30, 25), 0), ("person", (1, 1, 100, 50), 1)])  # fmt: skip
    write_voc_xml(voc / "Annotations/000002.xml", "000002.jpg", (50, 100), [("cat", (51, 1, 100, 50), 0)])
    write_voc_xml(voc / "Annotations/000003.xml", "000003.jpg", (50, 100), [("person", (1, 1, 50, 50), 0)])
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets/Main/train.txt").write_text("000001\n000002\n")
    (voc / "ImageSets/Main/val.txt").write_text("000003\n")

    config = load_data_config(convert_voc(voc, tmp_path / "out"))
    assert config.names == ["cat", "dog", "person"]
    assert [p.name for p in config.train] == ["000001.jpg", "000002.jpg"]
    assert [p.name for p in config.val] == ["000003.jpg"]
    labels = tmp_path / "out" / "labels"
    # the difficult "person" of 000001 is skipped
    assert (labels / "train/000001.txt").read_text() == "1 0.200000 0.300000 0.200000 0.400000\n"
    assert (labels / "train/000002.txt").read_text() == "0 0.750000 0.500000 0.500000 1.000000\n"
    assert (labels / "val/000003.txt").read_text() == "2 0.250000 0.500000 0.500000 1.000000\n"


def test_voc_without_image_sets_is_one_split_and_refuses_existing_output(tmp_path: Path, write_image):
    voc = tmp_path / "VOC"
    write_image(voc / "JPEGImages" / "x.jpg", hw=(20, 20))
    write_voc_xml(voc / "Annotations/x.xml", "x.jpg", (20, 20), [("cat", (1, 1, 10, 10), 0)])
    config = load_data_config(convert_voc(voc, tmp_path / "out"))
    assert config.train == config.val and len(config.train) == 1
    with pytest.raises(DatasetError, match="already exists"):
        convert_voc(voc, tmp_path / "out")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not valid JSON"),
        ('{"images": []}', "missing key 'categories'"),
        ('{"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}]}', "KeyError: 'file_name'"),
    ],
)
def test_malformed_coco_gives_one_line(tmp_path: Path, content: str, words: str):
    (tmp_path / "x.json").write_text(content)
    with pytest.raises(DatasetError) as info:
        convert_coco(tmp_path / "x.json", tmp_path, tmp_path / "out")
    assert str(info.value).startswith(str(tmp_path / "x.json")) and words in str(info.value)
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()
