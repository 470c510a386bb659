"""``yoloforge benchmark`` / ``YOLO.benchmark``: every export format measured on the val split."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pytest

from yoloforge import YOLO
from yoloforge.benchmark import BenchmarkRow, chosen_formats, format_table
from yoloforge.cli import main
from yoloforge.settings import SettingsError

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

FIXTURE = Path(__file__).parent / "fixtures" / "shapes_yolov8n.pt"
IMGSZ = 128  # small and fast; the demo model still finds most shapes at this size


@pytest.fixture(scope="module")
def weights(tmp_path_factory, one_thread) -> Path:
    return Path(shutil.copy(FIXTURE, tmp_path_factory.mktemp("weights") / "best.pt"))


def test_every_format_gets_size_map_and_speed_and_the_same_map(weights, shapes_small, tmp_path, logs):
    pytest.importorskip("openvino")
    rows = YOLO(weights).benchmark(data=str(shapes_small), imgsz=IMGSZ, device="cpu", project=str(tmp_path))
    assert [r.format for r in rows] == ["PyTorch", "TorchScript", "ONNX", "OpenVINO"]
    assert all(isinstance(r, BenchmarkRow) and not r.problem for r in rows)
    assert rows[0].map50_95 > 0.3  # a real model, so equal figures mean something
    for r in rows:
        assert abs(r.map50_95 - rows[0].map50_95) < 1e-4, r  # dynamic exports: the same inputs
        assert r.ms_per_image > 0 and r.size_mb > 1 and Path(r.path).exists()
    folder = tmp_path / "benchmark"
    assert Path(rows[2].path) == folder / "best.onnx"  # exports go to the benchmark folder ...
    assert not (weights.parent / "best.onnx").exists()  # ... never over the user's own
    assert rows[0].size_mb == pytest.approx(weights.stat().st_size / 1e6)
    with (folder / "benchmark.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [t["format"] for t in table] == ["PyTorch", "TorchScript", "ONNX", "OpenVINO"]
    assert float(table[3]["map50_95"]) == pytest.approx(rows[3].map50_95)
    text = list(dict.fromkeys(r.getMessage() for r in logs.records))  # a record may arrive twice
    (logged,) = [t for t in text if t.startswith("Benchmark of best.pt on ")]
    assert logged.splitlines()[1].split() == ["format", "size", "(MB)", "mAP50-95", "ms/image", "file"]


def test_a_missing_package_gives_its_row_a_reason(weights, shapes_small, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    rows = YOLO(weights).benchmark(
        data=str(shapes_small), imgsz=IMGSZ, device="cpu", formats="openvino,pytorch", project=str(tmp_path)
    )
    pytorch_row, openvino_row = rows
    assert pytorch_row.format == "PyTorch" and not pytorch_row.problem and pytorch_row.map50_95 > 0.3
    assert openvino_row == BenchmarkRow(
        "OpenVINO", "", None, None, None, 'openvino is not installed; pip install "yoloforge[export]"'
    )
    assert format_table(rows).splitlines()[2].split()[:4] == ["OpenVINO", "-", "-", "-"]


def test_cli_benchmark_and_its_bad_input(weights, shapes_small, tmp_path, capsys):
    args = ["benchmark", f"model={weights}", f"data={shapes_small}", f"imgsz={IMGSZ}", "device=cpu"]
    assert main([*args, "formats=pytorch", f"project={tmp_path}", "workers=0"]) == 0
    rows = list(csv.DictReader((tmp_path / "benchmark" / "benchmark.csv").open()))
    assert [r["format"] for r in rows] == ["PyTorch"]
    capsys.readouterr()  # the validation's progress bars
    assert main([*args, "formats=onnx,tensorrt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "yoloforge: formats=onnx,tensorrt is not valid: choose among pytorch, torchscript, onnx, openvino"
    )
    assert main(["benchmark", f"data={shapes_small}"]) == 2
    assert "benchmark: model= is required" in capsys.readouterr().err
    assert main(["benchmark", f"model={weights}", "data="]) == 2  # the model remembers 'shapes': given empty
    assert "benchmark: data= is required" in capsys.readouterr().err


def test_formats_are_read_in_table_order():
    assert chosen_formats("") == ("pytorch", "torchscript", "onnx", "openvino")
    assert chosen_formats(" OpenVINO, pytorch ") == ("pytorch", "openvino")
    with pytest.raises(SettingsError, match="formats=engine is not valid"):
        chosen_formats("engine")
