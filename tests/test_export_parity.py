"""Exported models find the boxes the PyTorch model finds, on images of every aspect ratio.

The trained demo model (``tests/fixtures/shapes_yolov8n.pt``) so the boxes are real; images of
the demo generator, stacked and resized into tall, wide, square, tiny and large ones. Exports are
dynamic by default, so they take the same stride-multiple rectangle PyTorch predicts on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yoloforge import YOLO
from yoloforge.backends import ExportedModelError, OpenVinoModel, load_exported
from yoloforge.data.demo import ensure_shapes
from yoloforge.results import Results, match_boxes

pytest.importorskip("onnx")

FIXTURE = Path(__file__).parent / "fixtures" / "shapes_yolov8n.pt"
IMGSZ = 256  # the fixture's training size
NAMES = ["circle", "square", "triangle"]
RUNTIMES = {"onnx": "onnxruntime", "torchscript": "torch", "openvino": "openvino"}
PREDICT = {"imgsz": IMGSZ, "conf": 0.25, "device": "cpu", "verbose": False}


@pytest.fixture(scope="module")
def weights(tmp_path_factory, one_thread) -> Path:
    return Path(shutil.copy(FIXTURE, tmp_path_factory.mktemp("weights") / "best.pt"))


@pytest.fixture(scope="module")
def exported(weights) -> dict[str, Path]:
    """Format -> its default export of the trained model, written on first use (once per module)."""
    return {}


def export_once(exported: dict[str, Path], weights: Path, fmt: str) -> Path:
    if fmt not in exported:
        exported[fmt] = Path(YOLO(weights).export(format=fmt, device="cpu"))
    return exported[fmt]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, np.ndarray]:
    """Name -> BGR image: aspect ratios from 1:3 to 3:1, 70 px to 1,000 px."""
    config = ensure_shapes(tmp_path_factory.mktemp("parity"), n_train=1, n_val=6, seed=5)
    labelled = sorted(p for p in (config.parent / "labels" / "val").glob("*.txt") if p.read_text().strip())
    photos = [cv2.imread(str(config.parent / "images" / "val" / f"{p.stem}.jpg")) for p in labelled[:3]]
    a, b, c = (cv2.resize(p, (256, 256)) for p in photos)
    return {
        "tall": cv2.vconcat([a, b]),  # 512x256
        "wide": cv2.hconcat([a, b, c]),  # 256x768
        "square": photos[0],  # as generated (256-320 px, near square)
        "odd": cv2.resize(photos[1], (300, 170)),  # 170x300: pads to no round shape
        "tiny": cv2.resize(photos[2], (70, 90)),  # scaled up 2.8x
        "large": cv2.resize(cv2.vconcat([a, c]), (500, 1000)),  # scaled down 4x
    }


@pytest.fixture(scope="module")
def from_torch(weights, images) -> dict[str, Results]:
    results = YOLO(weights).predict(list(images.values()), **PREDICT)
    return dict(zip(images, results, strict=True))


def assert_same_boxes(a: Results, b: Results, what: str) -> None:
    """Same count, and each box of ``a`` paired with one of ``b`` of its class at IoU >= 0.99."""
    assert len(a) == len(b), f"{what}: {len(a)} boxes against {len(b)}"
    match = match_boxes(a.boxes.xyxy, a.boxes.cls, b.boxes.xyxy, b.boxes.cls, min_iou=0.99)
    assert len(match.pairs) == len(a), f"{what}: unmatched {match.unmatched_a} / {match.unmatched_b}"


@pytest.mark.parametrize("fmt", list(RUNTIMES))
def test_exported_models_find_the_pytorch_boxes_on_every_aspect_ratio(
    weights, exported, images, from_torch, fmt, logs
):
    pytest.importorskip(RUNTIMES[fmt])
    assert all(len(r) > 0 for r in from_torch.values())  # every image has real boxes to compare
    model = YOLO(export_once(exported, weights, fmt))
    text = [r.getMessage() for r in logs.records]  # the export's check times both models
    assert any(" ms/image, PyTorch " in t and t.endswith("(median of 3 runs)") for t in text), text
    assert model.model.dynamic and model.model.imgsz == (IMGSZ, IMGSZ)
    for (name, image), torch_result in zip(images.items(), from_torch.values(), strict=True):
        result = model.predict(image, **PREDICT)[0]
        assert_same_boxes(result, torch_result, f"{fmt} on {name} {image.shape[:2]}")


def test_a_fixed_shape_export_still_runs_any_image_letterboxed_into_its_square(weights, images, logs):
    pytest.importorskip("onnxruntime")
    path = YOLO(weights).export(format="onnx", device="cpu", dynamic=False, batch=1)
    assert any("Fixed input shape" in r.getMessage() for r in logs.records)  # the difference is told
    runtime = load_exported(path)
    assert runtime.fixed_shape == (IMGSZ, IMGSZ)
    result = YOLO(path).predict(images["wide"], **PREDICT)[0]
    assert result.orig_shape == images["wide"].shape[:2] and len(result) > 0


def test_openvino_round_trip_keeps_names_metadata_and_metrics(weights, exported, shapes_small, tmp_path):
    pytest.importorskip("openvino")
    folder = export_once(exported, weights, "openvino")
    assert folder == weights.parent / "best_openvino_model" and folder.is_dir()
    assert sorted(p.name for p in folder.iterdir()) == ["best.bin", "best.xml", "metadata.yaml"]
    meta = yaml.safe_load((folder / "metadata.yaml").read_text())
    assert meta["names"] == NAMES and meta["imgsz"] == [IMGSZ, IMGSZ] and meta["dynamic"] is True
    for source in (folder, folder / "best.xml", f"{folder}/"):
        model = YOLO(source)
        assert isinstance(model.model, OpenVinoModel) and model.names == dict(enumerate(NAMES))
    quick = {
        "data": str(shapes_small),
        "device": "cpu",
        "workers": 0,
        "plots": False,
        "project": str(tmp_path),
    }
    ours = YOLO(folder).val(**quick)
    pt = YOLO(weights).val(**quick)
    assert pt.box.map > 0.5 and abs(ours.box.map - pt.box.map) < 1e-4 and ours.seen == pt.seen == 8


def test_openvino_folders_of_the_reference_and_broken_ones(weights, exported, images, tmp_path):
    pytest.importorskip("openvino")
    folder = Path(shutil.copytree(export_once(exported, weights, "openvino"), tmp_path / "r_openvino_model"))
    # the reference's metadata.yaml: names as a dict, args holding dynamic
    reference = {
        "description": "Ultralytics YOLOv8n model trained on config.yaml",
        "stride": 32,
        "task": "detect",
        "batch": 1,
        "imgsz": [IMGSZ, IMGSZ],
        "names": {0: "circle", 1: "square", 2: "triangle"},
        "args": {"batch": 1, "half": False, "dynamic": False},
    }
    (folder / "metadata.yaml").write_text(yaml.safe_dump(reference))
    runtime = load_exported(folder)
    assert (
        runtime.names == NAMES and runtime.fixed_shape == (IMGSZ, IMGSZ) and runtime.meta.family == "yolov8"
    )
    assert len(YOLO(folder).predict(images["wide"], **PREDICT)[0]) > 0  # letterboxed into its square
    (folder / "metadata.yaml").unlink()
    with pytest.raises(ExportedModelError, match="no metadata.yaml beside best.xml"):
        load_exported(folder)
    # exporting again replaces the whole folder
    (folder / "stale.txt").write_text("x")
    r_pt = shutil.copy(weights, tmp_path / "r.pt")
    assert YOLO(r_pt).export(format="openvino", device="cpu", imgsz=128, dynamic=False) == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.yaml", "r.bin", "r.xml"]
    assert load_exported(folder).fixed_shape == (128, 128)
    empty = tmp_path / "empty_openvino_model"
    empty.mkdir()
    (empty / "a.xml").write_text("")
    (empty / "b.xml").write_text("")
    with pytest.raises(ExportedModelError, match="holds one .xml model, found 2 .xml models"):
        load_exported(empty)
