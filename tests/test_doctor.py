"""The dataset doctor on generated datasets with planted problems: each is found, and found alone.

Datasets come from the demo generator (tests/doctor_data.py plants the problems); the label-error
checks use the committed model trained on the demo data (tests/fixtures/shapes_yolov8n.pt) on
images it has never seen, so nothing trains here.
"""

from __future__ import annotations

import json
from pathlib import Path

import doctor_data
import pytest

from yoloforge.doctor import doctor
from yoloforge.doctor.report import CHECKS

FIXTURE = Path(__file__).parent / "fixtures" / "shapes_yolov8n.pt"
IMGSZ = 256  # the demo images are 256-320 pixels


def _run(config: Path, out: Path, **overrides):
    return doctor(config, imgsz=IMGSZ, project=str(out), progress=False, **overrides)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return doctor_data.make_shapes(tmp_path_factory.mktemp("clean"), n_train=60, n_val=20, seed=3)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict]:
    config = doctor_data.make_shapes(tmp_path_factory.mktemp("planted"), n_train=60, n_val=30, seed=5)
    root = config.parent
    stems = doctor_data.labelled_stems(root, "train")
    truth = {"leaked": doctor_data.plant_leakage(root, 20)}
    truth["exact"], truth["near"] = doctor_data.plant_duplicates(root, 5, 5)
    doctor_data.plant_tiny_boxes(root, stems[10:20])
    doctor_data.plant_double_labels(root, stems[20:25])
    truth["tiny"] = [str(root / "images" / "train" / f"{s}.jpg") for s in stems[10:20]]
    truth["double"] = [str(root / "images" / "train" / f"{s}.jpg") for s in stems[20:25]]
    truth["backgrounds"] = doctor_data.plant_backgrounds(root, 0.3)
    return config, truth


@pytest.fixture(scope="module")
def planted_report(planted, tmp_path_factory):
    return _run(planted[0], tmp_path_factory.mktemp("runs"))


def test_a_clean_dataset_raises_nothing_beyond_the_size_advice(clean, tmp_path):
    report = _run(clean, tmp_path)
    raised = {f.check for f in report.findings if f.severity != "ok"}
    assert raised == {"images_per_class", "instances_per_class"}, [f.message for f in report.findings]
    assert not report.failed
    assert report.save_dir == tmp_path / "doctor"
    assert _run(clean, tmp_path).save_dir == tmp_path / "doctor2"  # incrementing, like train folders


def test_every_val_image_copied_into_train_is_leakage(planted, planted_report):
    leakage = planted_report["leakage"]
    assert leakage.severity == "fail" and planted_report.failed
    assert sorted(i["image"] for i in leakage.items) == sorted(map(str, planted[1]["leaked"]))
    assert all(i["split"] == "val" and "leak_" in Path(i["matches"][0]).name for i in leakage.items)


def test_exact_and_re_encoded_copies_within_a_split(planted, planted_report):
    found = planted_report["duplicates"]
    assert found.severity == "warn"
    exact = sorted(i["image"] for i in found.items if i["exact"])
    near = sorted(i["image"] for i in found.items if not i["exact"])
    assert exact == sorted(map(str, planted[1]["exact"]))
    assert near == sorted(map(str, planted[1]["near"]))
    assert all(i["bits"] <= 8 for i in found.items if not i["exact"])


def test_backgrounds_tiny_objects_and_double_labels(planted, planted_report):
    truth = planted[1]
    backgrounds = planted_report["backgrounds"]
    assert backgrounds.severity == "warn" and 0.29 <= backgrounds.value <= 0.35
    small = planted_report["small_objects"]
    assert small.severity == "warn" and "imgsz=" in small.message
    assert sorted({i["image"] for i in small.items}) == sorted(truth["tiny"])
    assert all(i["px"] < 4 for i in small.items)
    double = planted_report["double_labels"]
    assert double.severity == "warn"
    assert sorted(i["image"] for i in double.items) == sorted(truth["double"])
    assert planted_report["degenerate_boxes"].severity == "ok"


def test_doctor_json_has_the_issue_s_layout(planted_report):
    data = json.loads(planted_report.json.read_text())
    assert [f["check"] for f in data["findings"]] == [
        c for c in CHECKS if c not in ("overlooked", "swapped", "badly_located")
    ]
    for f in data["findings"]:
        assert set(f) == {"check", "severity", "value", "target", "message", "items"}
        assert f["severity"] in ("ok", "warn", "fail")
    assert data["images"]["val"] == 30


def test_the_page_renders_with_thumbnails_and_no_console_error(planted_report, open_page):
    check = open_page(planted_report.html)
    assert check.clean, (check.console_errors, check.broken_images, check.failed_requests)
    assert check.images > 4 + 20  # 4 histograms, and thumbnails of the worst cases
    assert "leakage" in check.text and "FAIL" in check.text
    thumbs = list((planted_report.save_dir / "thumbs").glob("*.jpg"))
    assert thumbs and all(p.stat().st_size > 0 for p in thumbs)


@pytest.fixture(scope="module")
def mislabelled(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """Images the fixture model has not seen; 8 lose a label, 8 others have a class swapped."""
    config = doctor_data.make_shapes(tmp_path_factory.mktemp("mislabelled"), n_train=40, n_val=8, seed=2026)
    root = config.parent
    stems = doctor_data.labelled_stems(root, "train", min_objects=2)
    removed, swapped = stems[:8], stems[8:16]
    doctor_data.plant_removed_labels(root, "train", removed)
    doctor_data.plant_swapped_classes(root, "train", swapped)
    image = lambda s: str(root / "images" / "train" / f"{s}.jpg")  # noqa: E731
    return config, [image(s) for s in removed], [image(s) for s in swapped]


def test_removed_labels_and_swapped_classes_rank_first(mislabelled, tmp_path, one_thread):
    config, removed, swapped = mislabelled
    report = doctor(config, model=str(FIXTURE), project=str(tmp_path), progress=False, device="cpu")
    assert report.imgsz == IMGSZ  # the model's training size
    top_overlooked = [i["image"] for i in report["overlooked"].items[: len(removed)]]
    top_swapped = [i["image"] for i in report["swapped"].items[: len(swapped)]]
    # the fixture model itself reads some unseen squares as circles: those follow the planted swaps
    assert len(set(top_overlooked) & set(removed)) >= 7, report["overlooked"].items[:10]
    assert len(set(top_swapped) & set(swapped)) >= 6, report["swapped"].items[:10]
    assert set(top_overlooked[:2]) <= set(removed) and set(top_swapped[:2]) <= set(swapped)
    assert report["overlooked"].severity == "warn" and report["swapped"].severity == "warn"
    assert all(i["model_class"] != i["class"] for i in report["swapped"].items)


def test_a_model_for_other_classes_and_a_missing_data_key_are_one_line_errors(clean, tmp_path):
    from yoloforge.data.config import DatasetError
    from yoloforge.settings import SettingsError

    with pytest.raises(ValueError, match="data= is required"):
        doctor(project=str(tmp_path))
    with pytest.raises(SettingsError, match="'imgsize' is not a valid setting"):
        doctor(clean, imgsize=320)
    config = clean.parent / "one_class.yaml"
    config.write_text(clean.read_text().replace("nc: 3", "nc: 1").split("names:")[0] + "names: [thing]\n")
    with pytest.raises(DatasetError, match="1 classes|has 3 classes"):
        doctor(config, model=str(FIXTURE), project=str(tmp_path), progress=False)
