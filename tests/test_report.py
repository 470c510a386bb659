"""The run report: planted patterns in synthetic run folders give exactly the right findings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from yoloforge.report import KINDS, build_report, report_run
from yoloforge.report.classes import class_findings
from yoloforge.report.evidence import ClassResult, LabelStats, Validation, label_stats
from yoloforge.report.findings import Finding
from yoloforge.report.trend import fit, noise
from yoloforge.results_csv import write_rows
from yoloforge.run_reader import ConfusionData, read_run, write_confusion
from yoloforge.structures import ImageRecord

EPOCHS = np.arange(1, 31)


def planted_run(folder, epochs, train_loss, val_loss, map50_95, map50=None, args=None):
    """A run folder with results.csv from these curves (each (E,) per epoch) and args.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    map50 = map50 if map50 is not None else np.minimum(1.0, map50_95 * 1.4)
    rows = []
    for i, e in enumerate(epochs):
        rows.append(
            {
                "epoch": int(e), "time": 10.0 * e,
                **{f"train/{k}_loss": train_loss[i] / 3 for k in ("box", "cls", "dfl")},
                "metrics/precision(B)": 0.7, "metrics/recall(B)": 0.6,
                "metrics/mAP50(B)": map50[i], "metrics/mAP50-95(B)": map50_95[i],
                **{f"val/{k}_loss": val_loss[i] / 3 for k in ("box", "cls", "dfl")},
                "lr/pg0": 0.01, "lr/pg1": 0.01, "lr/pg2": 0.01,
            }
        )  # fmt: skip
    write_rows(folder / "results.csv", rows)
    settings = {"epochs": int(epochs[-1]), "batch": 16, "imgsz": 640, "lr0": 0.01, **(args or {})}
    (folder / "args.yaml").write_text(yaml.safe_dump(settings))
    return folder


def kinds(report) -> list[str]:
    return sorted(f.kind for f in report.findings)


def one(report, kind: str) -> Finding:
    (finding,) = [f for f in report.findings if f.kind == kind]
    return finding


def noisy(values, scale, seed=0):
    return values + np.random.default_rng(seed).normal(0, scale, len(values))


def test_slope_and_its_standard_error_by_hand():
    x = np.array([1, 2, 3, 4])
    t = fit(x, np.array([0.0, 1.0, 1.0, 2.0]))  # least squares: slope 0.6, residuals (-.1, .3, -.3, .1)
    assert t.slope == pytest.approx(0.6)
    assert t.stderr == pytest.approx(np.sqrt(0.2 / 2 / 5))  # sqrt(SSR / (n - 2) / sum((x - mean)^2))
    assert (t.first, t.last, t.points) == (1, 4, 4)
    assert fit(x[:3], x[:3]) is None  # fewer than 4 points: no slope
    assert noise(np.arange(10.0)) == pytest.approx(0.0)  # a straight line has no epoch-to-epoch noise
    assert noise(np.tile([0.0, 1.0], 10)) > 0.5


def test_overfitting_from_epoch_12(tmp_path):
    train = 3 * np.exp(-EPOCHS / 10) + 1
    val = noisy(np.where(EPOCHS <= 12, 2.5 - 0.04 * EPOCHS, 2.02 + 0.02 * (EPOCHS - 12)), 0.002)  # min at 12
    m = noisy(0.5 - 0.0008 * (EPOCHS - 12) ** 2, 0.002)
    report = build_report(read_run(planted_run(tmp_path, EPOCHS, train, val, m)))
    assert kinds(report) == ["overfitting"]
    f = one(report, "overfitting")
    assert f.epoch == 12 and f.evidence["onset_epoch"] == 12
    assert f.evidence["best_epoch"] == pytest.approx(12, abs=1)
    assert f.evidence["val_loss_slope"] > 2 * f.evidence["val_loss_slope_stderr"]
    assert f.evidence["train_loss_slope"] < 0
    assert "epoch 12" in f.sentence and "best.pt" in f.advice and "augmentation" in f.advice


def test_still_improving_at_the_end(tmp_path):
    epochs = EPOCHS[:20]
    m = noisy(0.6 * (1 - np.exp(-epochs / 15)), 0.003)
    loss = 3 * np.exp(-epochs / 15) + 1
    report = build_report(read_run(planted_run(tmp_path, epochs, loss, noisy(loss, 0.002, 1), m)))
    assert kinds(report) == ["still_improving"]
    f = one(report, "still_improving")
    assert f.evidence["map50_95_slope"] > 2 * f.evidence["map50_95_slope_stderr"] > 0
    assert f.evidence["window_epochs"] == 6 and f.evidence["suggested_epochs"] == 40
    assert "epochs=40" in f.advice and "±" in f.sentence


def test_converged(tmp_path):
    m = noisy(0.5 - 0.3 * np.exp(-EPOCHS / 3), 0.003)
    loss = 2 + np.exp(-EPOCHS / 3)
    report = build_report(read_run(planted_run(tmp_path, EPOCHS, loss, noisy(loss, 0.003, 2), m)))
    assert kinds(report) == ["converging"]
    f = one(report, "converging")
    assert abs(f.evidence["map50_95_slope"]) <= 2 * f.evidence["map50_95_slope_stderr"]


def test_unstable_validation(tmp_path):
    epochs = EPOCHS[:20]
    m = noisy(0.5 + 0.08 * (-1.0) ** epochs, 0.01)  # swings of 0.16 from one epoch to the next
    loss = 2 + np.exp(-epochs / 3)
    report = build_report(read_run(planted_run(tmp_path, epochs, loss, noisy(loss, 0.003, 3), m)))
    assert "unstable" in kinds(report) and "overfitting" not in kinds(report)
    f = one(report, "unstable")
    assert f.evidence["map50_95_noise"] > 0.05 and f.evidence["largest_drop"] > 0.1
    assert "(now 16)" in f.advice and "(now 0.01)" in f.advice


def test_loose_boxes(tmp_path):
    m = noisy(0.3 - 0.2 * np.exp(-EPOCHS / 3), 0.002)
    loss = 2 + np.exp(-EPOCHS / 3)
    run = planted_run(tmp_path, EPOCHS, loss, noisy(loss, 0.003, 4), m, map50=m * 2.8)
    report = build_report(read_run(run))
    assert kinds(report) == ["converging", "localisation"]
    assert one(report, "localisation").evidence["ratio"] == pytest.approx(1 / 2.8, abs=1e-3)


def confused_matrix() -> np.ndarray:
    """cat (true, 100 objects): 60 found, 30 taken for dog, 10 missed; dog: 95 found, 5 missed;
    bird: 50 found; 12 false alarms in all (of 187 detections)."""
    m = np.zeros((4, 4), dtype=int)
    m[0, 0], m[1, 0], m[3, 0] = 60, 30, 10
    m[1, 1], m[3, 1] = 95, 5
    m[2, 2] = 50
    m[:3, 3] = [4, 4, 4]
    return m


def test_one_class_confused_with_another(tmp_path):
    run = planted_run(tmp_path, EPOCHS[:3], np.ones(3), np.ones(3), np.full(3, 0.4))
    write_confusion(run / "confusion_matrix.json", confused_matrix(), ["cat", "dog", "bird"], 0.25, 0.45)
    report = build_report(read_run(run), validate=False)
    assert kinds(report) == ["confusion"]  # and no background_fp: 12 of 187 is 6%
    f = one(report, "confusion")
    assert f.evidence | {"share": 0} == {
        "true_class": "cat", "predicted_as": "dog", "count": 30, "true_total": 100, "share": 0,
        "correct": 60, "conf": 0.25,
    }  # fmt: skip
    assert f.evidence["share"] == pytest.approx(0.3)
    assert any("too few to fit a slope" in n for n in report.notes)  # 3 epochs: no trend is claimed


def test_many_background_false_positives(tmp_path):
    m = np.diag([80, 90, 0]).astype(int)
    m[:2, 2] = [70, 5]  # 75 false alarms of 245 detections, most of them 'person'
    cm = ConfusionData(["person", "car"], m, 0.25, 0.45)
    labels = LabelStats(["person", "car"], np.array([500, 400]), 300, 0, np.array([80.0, 90.0]), 640)
    validation = Validation([], 0.3, 0.6, 0.5, 0.55, 100, cm, "test")
    found = class_findings(validation, labels)
    assert [f.kind for f in found] == ["background_fp"]
    f = found[0]
    assert (f.evidence["false_alarms"], f.evidence["detections"]) == (75, 245)
    assert f.evidence["most_from_class"] == "person" and f.evidence["train_backgrounds"] == 0
    assert "0-10%" in f.advice and "now 0.0%" in f.advice


def test_weak_small_class_and_threshold():
    rows = [
        ClassResult("car", 50, 120, 0.9, 0.85, 0.95, 0.72),
        ClassResult("bus", 40, 60, 0.88, 0.8, 0.9, 0.66),
        ClassResult("sign", 30, 45, 0.5, 0.3, 0.4, 0.18),
    ]
    labels = LabelStats(
        ["car", "bus", "sign"], np.array([900, 700, 80]), 500, 20, np.array([120, 200, 14.0]), 320
    )
    found = class_findings(Validation(rows, 0.412, 0.76, 0.65, 0.7, 100, None, "test"), labels)
    assert [f.kind for f in found] == ["weak_class", "small_objects", "threshold"]
    weak, small, thr = found
    assert weak.evidence["class"] == "sign" and weak.evidence["others_mean_ap50_95"] == pytest.approx(0.69)
    assert weak.evidence["train_instances"] == 80 and "Add images of 'sign'" in weak.advice
    assert small.evidence["classes"] == ["sign"] and "imgsz=640" in small.advice
    assert thr.evidence["conf"] == 0.412 and "conf=0.41" in thr.advice


def test_label_statistics_measure_sizes_at_the_network_input():
    records = [
        ImageRecord(
            "a.jpg", (100, 200), np.array([0, 1]), np.array([[0.5, 0.5, 0.1, 0.2], [0.5, 0.5, 0.5, 0.5]])
        ),
        ImageRecord("b.jpg", (100, 100), np.zeros(0, np.int64), np.zeros((0, 4))),
    ]
    stats = label_stats(["a", "b"], records, records, imgsz=64)
    assert stats.train_instances.tolist() == [1, 1] and (stats.train_images, stats.train_backgrounds) == (
        2,
        1,
    )
    assert stats.val_side_px[0] == pytest.approx(np.sqrt(20 * 20) * 64 / 200)


def test_files_and_json_schema(tmp_path):
    m = noisy(0.6 * (1 - np.exp(-EPOCHS / 15)), 0.003)
    loss = 3 * np.exp(-EPOCHS / 15) + 1
    args = {"nbs": 16, "mosaic": 1.0, "close_mosaic": 5, "project": "elsewhere"}  # 2 changed
    run = planted_run(tmp_path / "run", EPOCHS, loss, loss, m, args=args)
    write_confusion(run / "confusion_matrix.json", confused_matrix(), ["cat", "dog", "bird"], 0.25, 0.45)
    report, files = report_run(run, validate=False)
    data = json.loads(files.json.read_text())
    assert [f["kind"] for f in data["findings"]] == ["still_improving", "confusion"]
    for f in data["findings"]:
        assert f["kind"] in KINDS and set(f) == {"kind", "epoch", "evidence", "advice", "sentence"}
    assert data["findings"][0]["epoch"] == 30 and data["findings"][1]["epoch"] is None
    assert "No weights/best.pt" not in " ".join(data["notes"])  # val=False: not attempted
    md, html = files.markdown.read_text(), files.html.read_text()
    assert "still_improving" in md and "'cat' is taken for 'dog'" in md
    assert "&#39;cat&#39; is taken for &#39;dog&#39;" in html  # escaped by jinja2
    settings = "Settings: batch=16, epochs=30, imgsz=640, lr0=0.01, nbs=16, close_mosaic=5\n"
    assert md.endswith(settings)  # the main ones, then those off their defaults; not the folders
    assert "<tr><td>nbs</td><td>16</td></tr>" in html and "mosaic</td><td>1.0" not in html


def test_no_threshold_is_suggested_when_nothing_was_found():
    rows = [ClassResult("car", 5, 8, 0.0, 0.0, 0.0, 0.0)]
    notes: list[str] = []
    assert class_findings(Validation(rows, 0.001, 0.0, 0.0, 0.0, 5, None, "test"), None, notes) == []
    assert notes == ["No detection matched a label at any confidence (F1 0): no threshold to suggest."]
