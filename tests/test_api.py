"""The YOLO facade on the demo model: what a checkpoint or an export remembers, validating exported
models, and the everyday calls of tutorial code (show, save_crop, fuse, task, metrics tables)."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yoloforge import YOLO
from yoloforge.checkpoint import load_checkpoint, save_checkpoint
from yoloforge.cli import main
from yoloforge.data.config import DatasetError
from yoloforge.model.summary import is_fused
from yoloforge.results import Boxes, Results

FIXTURE = Path(__file__).parent / "fixtures" / "shapes_yolov8n.pt"
TRAINED_IMGSZ = 256  # the fixture's train_args
NAMES = ["circle", "square", "triangle"]
QUICK = {"device": "cpu", "workers": 0, "plots": False}


def messages(caplog, level: int = logging.INFO) -> list[str]:
    """Each message once, in order (a record may reach caplog through two handlers)."""
    return list(dict.fromkeys(r.getMessage() for r in caplog.records if r.levelno >= level))


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """best.pt (the demo model) and its exports beside it, made once."""
    folder = tmp_path_factory.mktemp("weights")
    weights = Path(shutil.copy(FIXTURE, folder / "best.pt"))
    model = YOLO(weights)
    files = {"pt": weights}
    dynamic = Path(model.export(format="onnx", device="cpu", dynamic=True))
    files["onnx_dynamic"] = dynamic.rename(folder / "dynamic.onnx")
    files["torchscript"] = Path(model.export(format="torchscript", device="cpu"))
    files["onnx"] = Path(model.export(format="onnx", device="cpu"))
    return files


@pytest.fixture(scope="module")
def pt_metrics(exports, shapes_small, tmp_path_factory):
    return YOLO(exports["pt"]).val(data=str(shapes_small), project=str(tmp_path_factory.mktemp("v")), **QUICK)


def val_image(shapes_small: Path) -> Path:
    return sorted((shapes_small.parent / "images" / "val").iterdir())[0]


# ----------------------------------------------------------------------------------------------
# what the file remembers


def test_val_predict_and_export_default_to_the_training_imgsz_and_data(
    exports, shapes_small, tmp_path, monkeypatch
):
    onnx_file = exports["onnx"]
    model = YOLO(exports["pt"])
    assert model._remembered("imgsz", "data", "single_cls") == {
        "imgsz": TRAINED_IMGSZ,
        "data": "shapes",
        "single_cls": False,
    }
    model.predict(val_image(shapes_small), verbose=False, device="cpu")
    assert model._predictor[1].settings.imgsz == TRAINED_IMGSZ
    model.predict(val_image(shapes_small), verbose=False, device="cpu", imgsz=128)
    assert model._predictor[1].settings.imgsz == 128  # what the user gives wins
    assert YOLO(onnx_file)._exported.imgsz == (TRAINED_IMGSZ, TRAINED_IMGSZ)  # exported at 256
    exported = YOLO(exports["onnx_dynamic"])  # dynamic: it could take any size, but 256 is its own
    exported.predict(val_image(shapes_small), verbose=False, device="cpu")
    assert exported._predictor[1].settings.imgsz == TRAINED_IMGSZ  # not 640
    seen = {}
    monkeypatch.setattr("yoloforge.evaluate.run_validation", lambda m, n, settings: seen.update(s=settings))
    YOLO(exports["pt"]).val()
    assert (seen["s"].imgsz, seen["s"].data, seen["s"].batch) == (TRAINED_IMGSZ, "shapes", 16)
    YOLO(exports["pt"]).val(imgsz=320, data=str(shapes_small))
    assert (seen["s"].imgsz, seen["s"].data) == (320, str(shapes_small))


def test_remembered_values_of_other_shapes_are_read_or_dropped():
    model = YOLO(FIXTURE)
    model._loaded.train_args.update(imgsz=[320, 480], data=None, single_cls="no")  # as others write them
    assert model._remembered("imgsz", "data", "single_cls") == {"imgsz": 480}


def _with_data(tmp_path: Path, data: str) -> Path:
    ckpt = load_checkpoint(FIXTURE)
    return save_checkpoint(replace(ckpt, train_args={**ckpt.train_args, "data": data}), tmp_path / "best.pt")


def test_a_remembered_dataset_that_is_gone_is_named_in_one_line(tmp_path, capsys):
    weights = _with_data(tmp_path, "../elsewhere/pets.yaml")
    expected = (
        "best.pt was trained on data=../elsewhere/pets.yaml, which is not found from here; "
        "pass data=path/to/config.yaml"
    )
    with pytest.raises(DatasetError) as error:
        YOLO(weights).val()
    assert str(error.value) == expected
    assert main(["val", f"model={weights}"]) == 1
    assert capsys.readouterr().err.startswith(f"Error: {expected} (")


def test_cli_val_without_data_validates_on_the_training_data_at_its_size(shapes_small, tmp_path, logs):
    weights = _with_data(tmp_path, str(shapes_small))
    assert main(["val", f"model={weights}", f"project={tmp_path}", "workers=0", "plots=False"]) == 0
    text = messages(logs)
    assert text[0].startswith("yoloforge ") and " torch-" in text[0]  # describe(device)
    assert text[1].startswith("YOLOv8n summary (fused): ") and " 0 gradients" in text[1]
    assert any(t.split()[:3] == ["all", "8", "23"] for t in text)  # shapes_small's val split


# ----------------------------------------------------------------------------------------------
# exported models validate like the PyTorch model


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "onnx_dynamic"])
def test_exported_models_validate_like_pytorch(exports, pt_metrics, shapes_small, tmp_path, fmt, logs):
    metrics = YOLO(exports[fmt]).val(data=str(shapes_small), project=str(tmp_path), **QUICK)
    assert pt_metrics.box.map > 0.5  # a real model, so the comparison means something
    # a dynamic export takes the same rectangular batches; a static one square 256x256 inputs
    # (0.760 vs 0.753 mAP50-95, 0.924 vs 0.913 mAP50: other padding, 8 images)
    same_inputs = fmt == "onnx_dynamic"
    assert abs(metrics.box.map - pt_metrics.box.map) < (1e-4 if same_inputs else 0.01)
    assert abs(metrics.box.map50 - pt_metrics.box.map50) < (1e-4 if same_inputs else 0.02)
    assert metrics.seen == pt_metrics.seen == 8


def test_val_rounds_imgsz_up_to_the_stride_with_one_warning(exports, shapes_small, tmp_path, logs):
    YOLO(exports["pt"]).val(data=str(shapes_small), imgsz=250, project=str(tmp_path), **QUICK)
    warnings = messages(logs, logging.WARNING)
    assert warnings == ["imgsz=250 is not a multiple of the stride 32; validating at imgsz=256"]


# ----------------------------------------------------------------------------------------------
# everyday calls


def test_show_without_a_window_says_so_in_one_line(exports, shapes_small, logs, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    results = YOLO(exports["pt"]).predict(val_image(shapes_small), verbose=False, device="cpu")
    results[0].show()
    (line,) = messages(logs, logging.WARNING)
    assert line.startswith("show() needs a display and OpenCV with GUI support (")
    assert "no display (DISPLAY is not set)" in line and "results[0].save('out.jpg')" in line
    YOLO(exports["pt"]).predict(val_image(shapes_small), verbose=False, device="cpu", show=True)
    assert messages(logs, logging.WARNING)[1].startswith("show=True needs a display and OpenCV with GUI")


def test_show_opens_a_window_where_it_can(monkeypatch):
    import yoloforge.draw

    shown = []
    monkeypatch.setattr(yoloforge.draw, "gui_problem", lambda: None)
    monkeypatch.setattr(cv2, "imshow", lambda title, image: shown.append((title, image.shape)))
    monkeypatch.setattr(cv2, "waitKey", lambda ms: shown.append(ms))
    image = np.zeros((40, 60, 3), np.uint8)
    Results(image, "a.jpg", {0: "circle"}, Boxes(torch.tensor([[1.0, 2, 30, 20, 0.9, 0]]), (40, 60))).show()
    assert shown == [("a.jpg", (40, 60, 3)), 0]  # waits for a key, like a picture viewer


def test_save_crop_writes_one_clipped_crop_per_box_numbering_duplicates(tmp_path):
    image = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    data = torch.tensor(
        [[-10.0, -5, 20.2, 30, 0.9, 0], [50, 10, 75, 50, 0.8, 2], [5, 5, 5, 5, 0.3, 0]]  # 2 cross edges
    )
    result = Results(image, "photo.png", dict(enumerate(NAMES)), Boxes(data, (40, 60)))
    paths = result.save_crop(tmp_path, file_name="im.jpg")
    assert paths == [
        str(tmp_path / "circle" / "im.jpg"),
        str(tmp_path / "triangle" / "im.jpg"),
        str(tmp_path / "circle" / "im2.jpg"),
    ]
    shapes = [cv2.imread(p).shape[:2] for p in paths]
    assert shapes == [(30, 21), (30, 10), (1, 1)]  # clipped to the image, at least one pixel
    again = result[1:2].save_crop(tmp_path, file_name=Path("im.jpg"))
    assert again == [str(tmp_path / "triangle" / "im2.jpg")]


def test_save_crop_on_the_demo_model(exports, shapes_small, tmp_path):
    (result,) = YOLO(exports["pt"]).predict(val_image(shapes_small), verbose=False, device="cpu")
    assert len(result) > 0
    paths = result.save_crop(tmp_path, file_name="val0")
    assert len(paths) == len(result)
    assert {Path(p).parent.name for p in paths} <= set(NAMES)


def test_fuse_keeps_predictions_and_training(exports, shapes_small, tmp_path):
    model = YOLO(exports["pt"])
    assert model.task == "detect" and YOLO(exports["onnx"]).task == "detect"
    image = val_image(shapes_small)
    before = model.predict(image, verbose=False, device="cpu")[0].boxes.data
    assert model.fuse() is model and model.fuse() is model  # idempotent, chainable
    assert is_fused(model.model) and "summary (fused)" in model.info()
    after = YOLO(exports["pt"]).fuse().predict(image, verbose=False, device="cpu")[0].boxes.data
    assert torch.allclose(before, after, atol=1e-3)
    assert YOLO(exports["onnx"]).fuse().task == "detect"  # an export: nothing to fold
    with pytest.raises(RuntimeError, match="is fused for inference .* load the checkpoint again"):
        model.model.train()  # a loop of one's own: a clear error, not weights silently frozen
    assert not model.model.training
    model.train(
        data=str(shapes_small), epochs=1, imgsz=64, batch=8, val=False, plots=False,
        project=str(tmp_path), **{k: v for k, v in QUICK.items() if k != "plots"},
    )  # fmt: skip
    assert (model.trainer.weights_dir / "last.pt").is_file()


def test_metrics_summary_csv_and_json_per_class(pt_metrics):
    rows = pt_metrics.summary()
    assert [r["Class"] for r in rows] == NAMES
    assert list(rows[0]) == ["Class", "Images", "Instances", "Box-P", "Box-R", "Box-F1", "mAP50", "mAP50-95"]
    box = pt_metrics.box
    assert [r["Instances"] for r in rows] == box.instances.tolist() and sum(box.instances) == 23
    assert [r["Images"] for r in rows] == box.images.tolist()
    assert rows[1]["mAP50-95"] == pytest.approx(box.ap[1], abs=1e-5)
    assert rows[2]["Box-F1"] == pytest.approx(2 * box.p[2] * box.r[2] / (box.p[2] + box.r[2]), abs=1e-4)
    parsed = list(csv.DictReader(io.StringIO(pt_metrics.to_csv())))
    assert len(parsed) == 3 and parsed[0]["Class"] == "circle"
    assert float(parsed[0]["mAP50"]) == rows[0]["mAP50"]
    assert json.loads(pt_metrics.to_json()) == rows


def test_a_model_trained_at_96_validates_and_predicts_at_96_on_its_own_data(
    shapes_small, tmp_path, monkeypatch
):
    """Issue 17's case end to end: train at imgsz=96, then val() and predict() with nothing given."""
    import yoloforge.evaluate

    YOLO("yolov8n.yaml").train(
        data=str(shapes_small), epochs=1, imgsz=96, batch=4, workers=0, plots=False, project=str(tmp_path)
    )
    best = tmp_path / "train" / "weights" / "best.pt"
    seen = {}
    real = yoloforge.evaluate.run_validation

    def spy(model, names, settings):
        seen["settings"] = settings
        return real(model, names, settings)

    monkeypatch.setattr(yoloforge.evaluate, "run_validation", spy)
    metrics = YOLO(best).val(project=str(tmp_path), workers=0, plots=False)
    assert (seen["settings"].imgsz, seen["settings"].data) == (96, str(shapes_small))
    assert metrics.seen == 8  # shapes_small's val split, taken from the checkpoint
    model = YOLO(best)
    model.predict(val_image(shapes_small), verbose=False)
    assert model._predictor[1].settings.imgsz == 96
