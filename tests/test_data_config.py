"""Dataset config YAML: the forms users write, and one clear line for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from yoloforge.data import demo
from yoloforge.data.config import DatasetError, load_data_config, write_data_yaml
from yoloforge.data.scan import image_to_label_path


@pytest.fixture
def dataset(tmp_path: Path, write_image) -> Path:
    """root/images/{train,val}/... with a nested train folder; returns the root."""
    root = tmp_path / "ds"
    for name in ("a.jpg", "b.png", "sub/c.jpg"):
        write_image(root / "images" / "train" / name)
    write_image(root / "images" / "val" / "d.jpg")
    (root / "images" / "train" / "notes.md").write_text("not an image")
    return root


def write_yaml(path: Path, data: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_folders_are_searched_recursively_and_relative_to_path(dataset: Path, tmp_path: Path, monkeypatch):
    cfg_file = write_yaml(tmp_path / "cfg" / "data.yaml", {
        "path": "../ds", "train": "images/train", "val": "images/val", "names": ["cat", "dog"],
    })  # fmt: skip
    monkeypatch.chdir(tmp_path / "cfg" / "..")  # relative 'path' must not depend on the cwd
    config = load_data_config(cfg_file)
    assert config.root == dataset
    assert config.train == [dataset / "images/train" / n for n in ("a.jpg", "b.png", "sub/c.jpg")]
    assert config.val == [dataset / "images/val/d.jpg"]
    assert config.test is None
    assert config.names == ["cat", "dog"] and config.nc == 2


def test_missing_path_means_the_yaml_folder_and_names_may_be_a_mapping(dataset: Path):
    cfg_file = write_yaml(
        dataset / "data.yaml", "train: images/train\nval: images/val\nnames: {1: dog, 0: cat}\n"
    )
    config = load_data_config(str(cfg_file))
    assert config.root == dataset
    assert config.names == ["cat", "dog"]


def test_lists_of_folders_and_txt_files(dataset: Path, tmp_path: Path):
    lists = dataset / "lists"
    lists.mkdir()
    # ./ lines: relative to the txt's folder; other relative lines: relative to 'path'; absolute as is
    (lists / "val.txt").write_text(
        f"./../images/val/d.jpg\nimages/train/a.jpg\n{dataset / 'images/train/b.png'}\n\nreadme.md\n"
    )
    cfg_file = write_yaml(dataset / "data.yaml", {
        "path": str(dataset), "train": ["images/train/sub", "images/val"], "val": "lists/val.txt",
        "test": "images/val", "nc": 1, "names": ["thing"],
    })  # fmt: skip
    config = load_data_config(cfg_file)
    assert config.train == [dataset / "images/train/sub/c.jpg", dataset / "images/val/d.jpg"]
    assert config.val == [
        dataset / "images/val/d.jpg",
        dataset / "images/train/a.jpg",
        dataset / "images/train/b.png",
    ]
    assert config.images("test") == [dataset / "images/val/d.jpg"]


def test_only_nc_gives_numbered_names(dataset: Path):
    cfg_file = write_yaml(dataset / "data.yaml", {"train": "images/train", "val": "images/val", "nc": 2})
    assert load_data_config(cfg_file).names == ["class_0", "class_1"]


@pytest.mark.parametrize("name", ["shapes", "shapes.yaml"])
def test_shapes_means_the_demo_dataset(name: str, monkeypatch, shapes_small: Path, tmp_path: Path):
    monkeypatch.setattr(demo, "ensure_shapes", lambda: shapes_small)
    monkeypatch.chdir(tmp_path)
    config = load_data_config(name)
    assert config.names == demo.NAMES
    assert len(config.train) == 16 and len(config.val) == 8


BAD_CONFIGS = [  # (yaml text, words the one-line message must contain)
    (None, ["data.yaml", "not found"]),
    ("train: [unclosed\n", ["data.yaml", "not valid YAML"]),
    ("- a\n- b\n", ["data.yaml", "not a YAML mapping"]),
    ("val: images/val\nnames: [a]\n", ["data.yaml", "'train'", "missing key"]),
    ("train: images/train\nnames: [a]\n", ["data.yaml", "'val'", "missing key"]),
    ("train: images/train\nval: images/val\n", ["data.yaml", "'names'", "missing key"]),
    (
        "path: nowhere\ntrain: images/train\nval: images/val\nnames: [a]\n",
        ["'path'", "folder not found", "nowhere"],
    ),
    ("train: images/train\nval: images/nope\nnames: [a]\n", ["'val'", "folder not found", "images/nope"]),
    ("train: images/train\nval: lists/x.txt\nnames: [a]\n", ["'val'", "list file not found", "x.txt"]),
    ("train: images/train\nval: images/empty\nnames: [a]\n", ["'val'", "no images found in", "images/empty"]),
    ("train: images/train\nval: images/val\nnames: [a, b]\nnc: 3\n", ["'nc' is 3", "'names' has 2"]),
    ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n", ["'names' ids", "0..1", "[0, 2]"]),
    ("train: images/train\nval: images/val\nnames: {x: a}\n", ["'names' keys", "integer"]),
    ("train: images/train\nval: images/val\nnames: []\n", ["'names' is empty"]),
    ("train: images/train\nval: images/val\nnames: [a]\nnc: two\n", ["'nc'", "positive integer"]),
]


@pytest.mark.parametrize(("text", "words"), BAD_CONFIGS)
def test_each_mistake_gives_one_line_naming_file_and_key(dataset: Path, text: str | None, words: list[str]):
    (dataset / "images" / "empty").mkdir()
    cfg_file = dataset / "data.yaml"
    if text is not None:
        cfg_file.write_text(text)
    with pytest.raises(DatasetError) as info:
        load_data_config(cfg_file)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(cfg_file))
    for word in words:
        assert word in message


def test_folder_not_found_message_says_what_paths_are_relative_to(dataset: Path):
    cfg_file = write_yaml(
        dataset / "config.yaml", f"path: {dataset}\ntrain: images/train\nval: images/v\nnames: [a]\n"
    )
    with pytest.raises(DatasetError) as info:
        load_data_config(cfg_file)
    expected = f"'val' folder not found: {dataset}/images/v (paths are relative to 'path': {dataset})"
    assert str(info.value) == f"{cfg_file}: {expected}"


def test_asking_for_a_missing_test_split_is_a_clear_error(dataset: Path):
    cfg_file = write_yaml(dataset / "data.yaml", "train: images/train\nval: images/val\nnames: [a]\n")
    with pytest.raises(DatasetError, match="no 'test' split"):
        load_data_config(cfg_file).images("test")


def test_written_config_loads_back(dataset: Path):
    cfg_file = write_data_yaml(
        dataset / "out.yaml",
        dataset,
        {"train": "images/train", "val": "images/val"},
        ["a", "b c"],
        "made by a test",
    )
    config = load_data_config(cfg_file)
    assert config.names == ["a", "b c"] and config.root == dataset
    assert cfg_file.read_text().startswith("# made by a test\n")


@pytest.mark.parametrize(
    ("image", "label"),
    [
        ("/d/images/train/x.jpg", "/d/labels/train/x.txt"),
        ("/images/d/images/a/b.c.png", "/images/d/labels/a/b.c.txt"),  # only the last /images/
        ("/d/pics/x.jpeg", "/d/pics/x.txt"),  # no images folder: next to the image
        ("/d/my_images/x.jpg", "/d/my_images/x.txt"),
    ],
)
def test_label_path_replaces_the_last_images_folder(image: str, label: str):
    assert image_to_label_path(image) == Path(label)
