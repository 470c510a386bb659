"""A real short training writes a complete report, and the page renders in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yoloforge import YOLO
from yoloforge.report import KINDS
from yoloforge.report.compare import compare_runs


@pytest.fixture(scope="module")
def run(shapes_small: Path, tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    project = tmp_path_factory.mktemp("report_runs")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse settings folder is not set yet
        mp.setenv("YOLOFORGE_CONFIG_DIR", str(tmp_path_factory.mktemp("report_user_config")))
        YOLO("yolov8n.yaml").train(
            data=str(shapes_small), epochs=2, imgsz=64, batch=4, workers=0, project=str(project)
        )
    return project / "train"


def test_training_writes_a_complete_report(run: Path, logs):
    data = json.loads((run / "report.json").read_text())
    assert data["summary"]["epochs"] == 2 and data["summary"]["best_epoch"] in (1, 2)
    kinds = [f["kind"] for f in data["findings"]]
    assert set(kinds) <= set(KINDS)
    no_threshold = any("no threshold to suggest" in n for n in data["notes"])
    assert ("threshold" in kinds) != no_threshold  # 2 epochs may find nothing yet: then it says so
    assert not {"converging", "still_improving", "overfitting", "unstable"} & set(kinds)  # 2 epochs: no trend
    assert any("too few to fit a slope" in n for n in data["notes"])
    assert data["validation"] == "the final validation of best.pt"
    assert [row["class"] for row in data["classes"]] and "train_instances" in data["classes"][0]
    assert (run / "confusion_matrix.json").is_file()
    md = (run / "report.md").read_text()
    assert "## Findings" in md and "## Per class" in md


def test_report_page_renders_in_a_browser(run: Path, open_page):
    check = open_page(run / "report.html")
    assert check.clean, (check.console_errors, check.page_errors, check.failed_requests, check.broken_images)
    assert check.images >= 4  # results.png, PR and F1 curves, confusion matrix, labels, a val batch
    assert "Run report: train" in check.title and "Findings" in check.text and "Per class" in check.text


def test_report_of_a_folder_validates_best_pt_and_compares(run: Path, tmp_path: Path, open_page):
    """Outside training, the report validates best.pt itself; two runs give a comparison page."""
    from yoloforge.report import report_run

    report, files = report_run(run)
    assert report.validation is not None and "by this report" in report.validation.source
    assert report.validation.classes and report.validation.images == 8
    comparison, files = compare_runs(run, run, validate=False)
    assert comparison.verdict and comparison.settings == []  # the same run: no setting differs
    assert files.html == run / "compare.html"
    check = open_page(files.html)
    assert check.clean and check.images == 2
