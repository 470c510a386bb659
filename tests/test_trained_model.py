"""A model trained by yoloforge on the demo data, on images it has never seen.

The fixture ``shapes_yolov8n.pt`` is best.pt of a longer README demo run
(see benchmarks/make_trained_fixture.py).
New images come from the demo generator with another seed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from yoloforge import YOLO
from yoloforge.coco import cocoeval, ground_truth
from yoloforge.data.config import load_data_config
from yoloforge.data.demo import ensure_shapes
from yoloforge.data.scan import scan_split
from yoloforge.results import match_boxes

FIXTURE = Path(__file__).parent / "fixtures" / "shapes_yolov8n.pt"
IMGSZ = 256


@pytest.fixture(scope="module")
def unseen(tmp_path_factory) -> Path:
    return ensure_shapes(tmp_path_factory.mktemp("unseen"), n_train=2, n_val=24, seed=2026)


def _val_records(config: Path):
    data = load_data_config(config)
    return data, scan_split(data.val, data.names, prefix="val", progress=False).records


def test_val_reports_the_map_cocoeval_computes_from_its_predictions_json(unseen, tmp_path):
    metrics = YOLO(FIXTURE).val(
        data=str(unseen),
        imgsz=IMGSZ,
        batch=8,
        save_json=True,
        max_det=100,
        project=str(tmp_path),
        plots=False,
    )
    predictions = json.loads((Path(metrics.save_dir) / "predictions.json").read_text())
    data, records = _val_records(unseen)
    reference = cocoeval(ground_truth(records, data.names), predictions, max_dets=100)
    assert metrics.box.map > 0.5  # a real model, so the comparison means something
    assert abs(metrics.box.map - reference["map"]) < 1e-4
    assert abs(metrics.box.map50 - reference["map50"]) < 1e-4
    assert abs(metrics.box.map75 - reference["map75"]) < 1e-4


def _recall_and_precision(results, records) -> tuple[float, float]:
    by_path = {Path(r.path).name: r for r in records}
    found = n_gt = n_pred = 0
    for res in results:
        rec = by_path[Path(res.path).name]
        h, w = rec.shape
        cx, cy, bw, bh = (rec.boxes_cxcywhn * np.array([w, h, w, h])).T
        gt = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        m = match_boxes(res.boxes.xyxy, res.boxes.cls, gt, rec.classes, min_iou=0.5)
        found, n_gt, n_pred = found + len(m.pairs), n_gt + len(gt), n_pred + len(res.boxes)
    return found / max(n_gt, 1), found / max(n_pred, 1)


def test_finds_its_objects_in_new_images_through_pytorch_and_onnx(unseen, tmp_path):
    weights = shutil.copy(FIXTURE, tmp_path / "best.pt")  # the export goes next to the weights
    model = YOLO(weights)
    onnx_file = model.export(format="onnx", imgsz=IMGSZ, dynamic=True)
    _, records = _val_records(unseen)
    images = [r.path for r in records]
    counts = []
    for m in (model, YOLO(onnx_file)):
        results = m.predict(images, imgsz=IMGSZ, conf=0.25, verbose=False)
        recall, precision = _recall_and_precision(results, records)
        assert recall >= 0.8 and precision >= 0.5, (m, recall, precision)
        counts.append([len(r.boxes) for r in results])
    assert counts[0] == counts[1]  # the exported model gives the same answers
