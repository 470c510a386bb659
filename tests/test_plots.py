"""plots.py writes readable pictures without pyplot; draw.py draws where the boxes are."""

from __future__ import annotations

import ast
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yoloforge import plots
from yoloforge.draw import PALETTE_BGR, class_name, color, draw_detections, save_batch_grid
from yoloforge.metrics import CONF_POINTS, RECALL_POINTS
from yoloforge.structures import Batch, Detections

COLUMNS = [
    "epoch", "time", "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)",
    "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss", "val/cls_loss",
    "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2",
]  # fmt: skip


def read(path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable image"
    return image


# ---------------------------------------------------------------------------------------------
# plots.py


def test_curves_and_confusion_matrices(tmp_path):
    rng = np.random.default_rng(0)
    names = ["cat", "dog"]
    pr = np.sort(rng.random((2, 101)), 1)[:, ::-1]
    assert plots.plot_pr_curve(RECALL_POINTS, pr, np.array([0.5, 0.7]), names, tmp_path / "PR.png").is_file()
    f1 = rng.random((2, 1000))
    assert read(plots.plot_mc_curve(CONF_POINTS, f1, names, tmp_path / "F1.png", "F1")).shape[2] == 3
    matrix = np.array([[5, 1, 2], [0, 7, 1], [1, 0, 0]])
    for normalize in (False, True):
        read(plots.plot_confusion_matrix(matrix, names, tmp_path / f"cm{normalize}.png", normalize))
    # many classes: no legend (> 20), no numbers (> 30), still a picture
    many = [f"c{i}" for i in range(31)]
    x = np.linspace(0, 1, 50)
    read(plots.plot_mc_curve(x, rng.random((31, 50)), many, tmp_path / "many.png", "Recall"))
    read(plots.plot_confusion_matrix(rng.integers(0, 5, (32, 32)), many, tmp_path / "cm31.png", True))
    read(plots.plot_pr_curve(RECALL_POINTS, np.zeros((0, 101)), np.zeros(0), [], tmp_path / "none.png"))


def write_results_csv(path, epochs: int, padded: bool = True, drop: str | None = None) -> None:
    header = [c for c in COLUMNS if c != drop]
    width = max(map(len, header)) if padded else 0
    lines = [",".join(h.rjust(width) for h in header)]  # the reference pads names with spaces
    for e in range(1, epochs + 1):
        lines.append(",".join(str(e if h == "epoch" else round(1 / e + 0.01 * len(h), 4)) for h in header))
    path.write_text("\n".join(lines) + "\n")


def test_plot_results_writes_a_2x5_grid_next_to_the_csv(tmp_path):
    write_results_csv(tmp_path / "results.csv", epochs=12, drop="val/dfl_loss")  # a missing column
    out = plots.plot_results(tmp_path / "results.csv")
    assert out == tmp_path / "results.png"
    h, w = read(out).shape[:2]
    assert w > 2 * h  # a wide 2 x 5 grid
    write_results_csv(tmp_path / "one.csv", epochs=1, padded=False)
    read(plots.plot_results(tmp_path / "one.csv", tmp_path / "one.png"))


def test_plot_labels(tmp_path):
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, 200)
    boxes = np.c_[rng.random((200, 2)), rng.uniform(0.05, 0.5, (200, 2))]
    h, w = read(plots.plot_labels(classes, boxes, ["a", "b", "c"], tmp_path / "labels.jpg")).shape[:2]
    assert h == w
    read(plots.plot_labels(np.zeros(0), np.zeros((0, 4)), ["a"], tmp_path / "empty.jpg"))


def imported_modules(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_only_the_plotting_modules_import_matplotlib_and_lazily():
    package = Path(plots.__file__).parent
    importers = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if any(m.split(".")[0] == "matplotlib" for m in imported_modules(p, top_level_only=False))
    }
    assert importers == {"plots.py", "doctor/charts.py"}  # the doctor, which always draws, imports it
    assert not any("pyplot" in m for m in imported_modules(package / "plots.py", top_level_only=False))
    # per-epoch validation (plots off) must not pay for importing matplotlib
    top = imported_modules(package / "validator.py", top_level_only=True)
    assert not any(m.startswith(("yoloforge.plots", "matplotlib")) for m in top)


# ---------------------------------------------------------------------------------------------
# draw.py


def test_palette_and_names():
    assert len(PALETTE_BGR) == 20 and len(set(PALETTE_BGR)) == 20
    assert color(3) == color(23)
    assert class_name({0: "cat"}, 0) == "cat" and class_name({0: "cat"}, 5) == "5"
    assert class_name(["cat", "dog"], 1) == "dog" and class_name(["cat"], 7) == "7"


def test_draw_detections_draws_on_the_box_edges_of_a_copy():
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    out = draw_detections(
        image, torch.tensor([[50.0, 60, 150, 160]]), torch.tensor([2]), None, ["a", "b", "c"], 2
    )
    assert not image.any()  # the input is untouched
    assert tuple(out[110, 50]) == color(2) and tuple(out[160, 100]) == color(2)  # left and bottom edges
    assert not out[110, 100].any()  # the inside stays as it was
    assert (out[40:59, 50:70] == color(2)).all(-1).any()  # the label box sits above the box


def test_draw_detections_with_scores_puts_the_best_on_top():
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 10, 90, 90], [10.0, 10, 90, 90]])
    out = draw_detections(image, boxes, np.array([0, 1]), np.array([0.9, 0.2]), ["a", "b"], 3)
    assert tuple(out[50, 10]) == color(0)  # drawn last, so visible


def make_batch(n: int, h: int = 64, w: int = 96) -> Batch:
    images = torch.zeros((n, 3, h, w), dtype=torch.uint8)
    return Batch(
        images=images,
        classes=torch.tensor([0, 1]),
        boxes_xyxy=torch.tensor([[10.0, 10, 50, 40], [20.0, 20, 60, 50]]),
        batch_idx=torch.tensor([0, n - 1]),
        paths=[f"/d/img{i}.jpg" for i in range(n)],
    )


def test_save_batch_grid_layout_and_scaling(tmp_path):
    grid = read(save_batch_grid(make_batch(6), tmp_path / "b.jpg", ["a", "b"]))
    assert grid.shape == (2 * 64, 3 * 96, 3)  # 6 images: 2 rows x 3 columns
    big = read(save_batch_grid(make_batch(20), tmp_path / "big.jpg", ["a", "b"], max_images=16, max_size=200))
    assert max(big.shape[:2]) <= 200 and big.shape[0] / big.shape[1] == pytest.approx(64 / 96, rel=0.05)


def test_save_batch_grid_draws_labels_or_detections(tmp_path):
    batch = make_batch(1)
    labels = read(save_batch_grid(batch, tmp_path / "l.jpg", ["a", "b"]))
    dets = [Detections(torch.tensor([[30.0, 20, 90, 60]]), torch.tensor([0.8]), torch.tensor([1]))]
    preds = read(save_batch_grid(batch, tmp_path / "p.jpg", ["a", "b"], detections=dets))
    # a left edge of the first image's label box (x = 10) vs of the detection (x = 30), jpg-tolerant
    assert labels[30, 10].astype(int).sum() > 200 and preds[30, 10].astype(int).sum() < 60
    assert preds[40, 30].astype(int).sum() > 200
