"""Export: files with metadata, the parity check, and exported models predicting like PyTorch."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from test_predict import NAMES, make_predictor, random_image, same_detections, tiny_model

from yoloforge.backends import ExportedModelError, ExportMetadata, load_exported, quiet_torchscript, require
from yoloforge.checkpoint import Checkpoint, save_checkpoint
from yoloforge.exporter import ExportError, check_export, export, output_difference
from yoloforge.loading import LoadedModel
from yoloforge.settings import ExportSettings, build

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return tiny_model(seed=1)


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "best.pt"
    return save_checkpoint(Checkpoint("yolov8", "n", 3, list(NAMES), model.state_dict()), path)


def loaded(model, path=None) -> LoadedModel:
    return LoadedModel(model, "yolov8", "n", list(NAMES), path)


def export_settings(**overrides) -> ExportSettings:
    return build(ExportSettings, {"device": "cpu", "imgsz": 128, **overrides})


def images_for_parity() -> list[np.ndarray]:
    return [random_image(96, 128, seed=10), random_image(128, 72, seed=11), random_image(128, 128, seed=12)]


def test_onnx_via_the_facade_predicts_like_pytorch(checkpoint):
    from yoloforge.api import YOLO

    path = YOLO(checkpoint).export(format="onnx", imgsz=128, dynamic=True, device="cpu")
    assert path == str(checkpoint.with_suffix(".onnx"))
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["names"] == '["circle", "square", "triangle"]' and meta["dynamic"] == "true"
    output = proto.graph.output[0]
    assert output.name == "output0" and output.type.tensor_type.shape.dim[1].dim_value == 4 + 3
    exported, original = YOLO(path), YOLO(checkpoint)
    assert exported.names == original.names
    kwargs = {"conf": 0.25, "imgsz": 128, "device": "cpu", "verbose": False}
    for a, b in zip(
        exported.predict(images_for_parity(), **kwargs),
        original.predict(images_for_parity(), **kwargs),
        strict=True,
    ):
        same_detections(a, b)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_static_export_predicts_like_pytorch_on_square_inputs(model, checkpoint, fmt):
    path = export(loaded(model, checkpoint), export_settings(format=fmt, batch=2, dynamic=False))
    runtime = load_exported(path)
    assert runtime.names == NAMES and runtime.fixed_shape == (128, 128) and runtime.stride == 32
    # square originals: the PyTorch path letterboxes them to 128x128 as the static model needs
    images = [random_image(128, 128, seed=s) for s in (20, 21, 22)]
    from_export = list(make_predictor(runtime, batch=3).stream(images))  # 3 images on a batch-2 model
    from_torch = list(make_predictor(model).stream(images))
    for a, b in zip(from_export, from_torch, strict=True):
        same_detections(a, b)
    # any original shape runs through the static model: letterboxed to its 128x128
    assert next(make_predictor(runtime).stream(random_image(50, 90))).orig_shape == (50, 90)


def test_dynamic_torchscript_from_a_model_name_goes_to_cwd_and_is_checked(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = export(loaded(model), export_settings(format="torchscript", dynamic=True))
    assert path == tmp_path / "yolov8n.torchscript"
    runtime = load_exported(path)
    assert runtime.dynamic and runtime.fixed_shape is None
    for a, b in zip(
        make_predictor(runtime).stream(images_for_parity()),
        make_predictor(model).stream(images_for_parity()),
        strict=True,
    ):
        same_detections(a, b)
    # the exporter's check fails on a file that does not reproduce the model
    other = copy.deepcopy(model).eval().fuse()
    with torch.no_grad():
        other.head.cls_branches[0][-1].bias.add_(0.5)  # scores move by up to ~0.1
    with pytest.raises(ExportError, match="outputs differ from PyTorch"):
        check_export(other, path, runtime.meta, torch.device("cpu"))


def test_output_difference_scales_boxes_but_not_scores():
    expected = torch.zeros(1, 5, 2)
    expected[0, :4] = 400.0  # boxes in pixels
    actual = expected.clone()
    actual[0, 0, 0] += 0.2  # 0.2 px on a 400 px scale
    assert output_difference(expected, actual) == pytest.approx(0.2 / 400, rel=1e-3)
    actual[0, 4, 1] += 0.01  # a score off by 0.01
    assert output_difference(expected, actual) == pytest.approx(0.01, rel=1e-3)


def test_bad_requests_fail_with_one_clear_line(model, tmp_path):
    with pytest.raises(ExportError, match="half=True needs a CUDA device"):
        export(loaded(model, tmp_path / "best.pt"), export_settings(half=True))
    with pytest.raises(ImportError, match=r'pip install "yoloforge\[export\]"'):
        require("onnx_not_installed_here")
    (tmp_path / "m.engine").write_bytes(b"")
    with pytest.raises(ExportedModelError, match="expected a .onnx or .torchscript"):
        load_exported(tmp_path / "m.engine")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load_exported(tmp_path / "missing.onnx")


def test_files_exported_by_the_reference_are_understood(tmp_path):
    # the reference writes ONNX metadata values as Python literals, TorchScript's as config.txt JSON
    props = {
        "description": "Ultralytics YOLO11s model trained on config.yaml",
        "version": "8.3.0",
        "stride": "32",
        "task": "detect",
        "batch": "1",
        "imgsz": "[640, 640]",
        "names": "{0: '5euro', 1: '10euro'}",
        "args": "{'batch': 1, 'half': False, 'dynamic': True, 'nms': None}",
    }
    meta = ExportMetadata.from_strings(props, "m.onnx")
    assert meta.names == ["5euro", "10euro"] and meta.imgsz == (640, 640) and meta.stride == 32
    assert meta.dynamic and (meta.family, meta.size) == ("yolo11", "s")
    with pytest.raises(ExportedModelError, match="m.onnx is a segment model"):
        ExportMetadata.from_strings({**props, "task": "segment"}, "m.onnx")
    config = {"stride": 32, "task": "detect", "batch": 1, "imgsz": [64, 64], "names": {"0": "a", "1": "b"}}
    with quiet_torchscript():
        traced = torch.jit.trace(torch.nn.Identity(), torch.zeros(1))
        torch.jit.save(
            traced, str(tmp_path / "r.torchscript"), _extra_files={"config.txt": json.dumps(config)}
        )
    runtime = load_exported(tmp_path / "r.torchscript")
    assert runtime.names == ["a", "b"] and runtime.fixed_shape == (64, 64)
