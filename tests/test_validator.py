"""Validator with a fake model that 'sees' filled rectangles: channel c holds the objects of class c."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import cv2
import numpy as np
import pytest
import torch

from yoloforge.data.letterbox import letterbox
from yoloforge.structures import Batch, Detections
from yoloforge.validator import HEADER, ROW, Validator, coco_json_rows, for_display

NAMES = ["red", "green"]


class RectangleModel(torch.nn.Module):
    """Per image and class channel: the exact box of the bright pixels (score 0.9), the same box
    shifted right by ``shift`` px (``shifted_score``), and one false positive in the corner (0.3)."""

    def __init__(self, nc: int = 2, shift: float = 0.0, shifted_score: float = 0.5):
        super().__init__()
        self.nc, self.shift, self.shifted_score = nc, shift, shifted_score
        self.scale = torch.nn.Parameter(torch.ones(()))  # so .train()/.eval() and parameters exist

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x * self.scale]

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[0]
        out = torch.zeros(x.shape[0], 4 + self.nc, 2 * self.nc + 1)  # (B, 4 + nc, A)
        for b in range(x.shape[0]):
            for c in range(self.nc):
                ys, xs = torch.nonzero(x[b, c] > 0.5, as_tuple=True)
                if len(xs):
                    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                    box = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]).float()
                    out[b, :4, 2 * c] = box
                    out[b, :4, 2 * c + 1] = box + torch.tensor([self.shift, 0, 0, 0])
                    out[b, 4 + c, 2 * c], out[b, 4 + c, 2 * c + 1] = 0.9, self.shifted_score
            out[b, :4, -1] = torch.tensor([4.0, 4, 8, 8])
            out[b, 4, -1] = 0.3
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(x))


def make_image(shape: tuple[int, int], objects: list[tuple[int, list[int]]]) -> np.ndarray:
    image = np.zeros((*shape, 3), dtype=np.uint8)
    for c, (x1, y1, x2, y2) in objects:
        image[y1:y2, x1:x2, c] = 255
    return image


# (file, original (h, w), [(class, xyxy in original pixels)]); coordinates even so halving is exact
IMAGES = [
    ("000012.jpg", (64, 96), [(0, [10, 8, 40, 30]), (1, [50, 20, 90, 60])]),
    ("cat.jpg", (128, 192), [(1, [20, 40, 100, 120])]),
    ("000003.jpg", (128, 64), [(0, [4, 10, 60, 50])]),
    ("empty.jpg", (64, 64), []),
    ("000005.jpg", (64, 96), [(0, [30, 30, 70, 60])]),
    ("000006.jpg", (64, 96), [(1, [2, 2, 20, 20])]),
]


def make_batches(batch_size: int = 2, input_shape: tuple[int, int] = (64, 96)) -> list[Batch]:
    batches = []
    for start in range(0, len(IMAGES), batch_size):
        images, classes, boxes, batch_idx, paths, lbs = [], [], [], [], [], []
        for i, (name, shape, objects) in enumerate(IMAGES[start : start + batch_size]):
            padded, lb = letterbox(make_image(shape, objects), input_shape)
            images.append(torch.from_numpy(padded).permute(2, 0, 1))
            for c, xyxy in objects:
                classes.append(c)
                boxes.append(lb.to_input(np.array(xyxy)).reshape(4))
                batch_idx.append(i)
            paths.append(f"/data/images/{name}")
            lbs.append(lb)
        batches.append(
            Batch(
                images=torch.stack(images),
                classes=torch.tensor(classes, dtype=torch.long),
                boxes_xyxy=torch.tensor(np.array(boxes).reshape(-1, 4)),
                batch_idx=torch.tensor(batch_idx, dtype=torch.long),
                paths=paths,
                letterboxes=lbs,
            )
        )
    return batches


def run(model=None, names=NAMES, **kwargs):
    kwargs.setdefault("plots", False)
    kwargs.setdefault("progress", False)
    validator = Validator(names, **kwargs)
    return validator.run(model or RectangleModel(), make_batches(), "cpu")


def test_perfect_model_scores_one_and_prints_the_table(caplog):
    with caplog.at_level(logging.INFO, logger="yoloforge.validator"):
        result = run()
    box = result.metrics.box
    assert (box.map, box.map50, box.mp, box.mr) == pytest.approx((1, 1, 1, 1), abs=1e-9)
    assert result.metrics.seen == 6 and result.losses is None
    assert box.instances.tolist() == [3, 3] and box.images.tolist() == [3, 3]
    assert set(result.speed) == {"preprocess", "inference", "loss", "postprocess"}
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == HEADER
    assert lines[1] == ROW % ("all", 6, 6, box.mp, box.mr, box.map50, box.map)
    assert lines[2].split() == ["red", "3", "3", "1", "1", "1", "1"]
    assert lines[4].startswith("Speed: ") and lines[4].endswith("ms postprocess per image")
    assert len(lines) == 5


def test_quiet_validation_prints_only_the_all_row(caplog):
    with caplog.at_level(logging.INFO, logger="yoloforge.validator"):
        run(verbose=False)
    assert [r.getMessage().split()[0] for r in caplog.records] == ["Class", "all"]


def test_p_and_r_are_read_where_mean_f1_is_best():
    # duplicates (0.5) and corner false positives (0.3) only cost precision below conf 0.5
    result = run(RectangleModel(shift=6.0))
    box = result.metrics.box
    assert 0.5 <= box.conf < 0.9
    assert (box.mp, box.mr, box.map50) == pytest.approx((1.0, 1.0, 1.0))
    at_low_conf = int(0.2 * 999)
    assert box.p_curve[:, at_low_conf].max() < 1 and box.r_curve[:, at_low_conf].min() == 1


def test_predictions_json_in_original_pixels(tmp_path):
    run(save_json=True, save_dir=tmp_path)
    rows = json.loads((tmp_path / "predictions.json").read_text())
    best = {(r["image_id"], r["category_id"]): r for r in rows if r["score"] == 0.9}
    assert best[(12, 0)]["bbox"] == [10, 8, 30, 22]  # x, y, w, h of [10, 8, 40, 30]
    assert best[(12, 1)]["bbox"] == [50, 20, 40, 40]
    assert best[("cat", 1)]["bbox"] == [20, 40, 80, 80]  # letterboxed at gain 0.5, mapped back
    assert best[(3, 0)]["bbox"] == [4, 10, 56, 40]
    assert {r["image_id"] for r in rows} == {12, "cat", 3, "empty", 5, 6}
    assert sorted({r["score"] for r in rows}) == [0.3, 0.9]  # the unshifted duplicates fell to NMS


def test_map_equals_cocoeval_on_predictions_json(tmp_path):
    coco_mod = pytest.importorskip("pycocotools.coco")
    cocoeval_mod = pytest.importorskip("pycocotools.cocoeval")
    # the shifted boxes (IoU 0.55-0.8 with their GT) rank first: AP is 1 at low IoU thresholds only
    model = RectangleModel(shift=9.0, shifted_score=0.95)
    result = run(model, save_json=True, save_dir=tmp_path, max_det=100)
    assert 0.6 < result.metrics.box.map < 0.95
    # COCOeval breaks score ties between images by image id, we by processing order: number the
    # images in processing order on both sides (pycocotools also cannot sort mixed int/str ids)
    stems = [name.split(".")[0] for name, _, _ in IMAGES]
    number = {int(s) if s.isnumeric() else s: i for i, s in enumerate(stems)}
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    for row in predictions:
        row["image_id"] = number[row["image_id"]]
    gt = {"images": [], "annotations": [], "categories": [{"id": 0}, {"id": 1}]}
    for image_id, (_, _, objects) in enumerate(IMAGES):
        gt["images"].append({"id": image_id})
        for c, (x1, y1, x2, y2) in objects:
            ann = {"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": c, "iscrowd": 0}
            gt["annotations"].append(
                ann | {"bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_mod.COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = cocoeval_mod.COCOeval(coco_gt, coco_gt.loadRes(predictions), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert result.metrics.box.map == pytest.approx(ev.stats[0], abs=1e-4)
    assert result.metrics.box.map50 == pytest.approx(ev.stats[1], abs=1e-4)


def test_plots_are_written(tmp_path):
    result = run(plots=True, save_dir=tmp_path)
    expected = {
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "confusion_matrix.json",  # the counts behind the picture, for the run report
        "PR_curve.png",
        "F1_curve.png",
        "P_curve.png",
        "R_curve.png",
        *(f"val_batch{i}_{kind}.jpg" for i in range(3) for kind in ("labels", "pred")),
    }
    assert {p.name for p in tmp_path.iterdir()} == expected
    saved = json.loads((tmp_path / "confusion_matrix.json").read_text())
    assert saved["matrix"] == result.metrics.confusion_matrix.matrix.tolist()


def test_losses_are_the_mean_over_batches():
    seen = []

    class Criterion:
        def __call__(self, feats, batch):
            seen.append((len(feats), batch.images.device.type))
            value = float(len(seen))  # 1, 2, 3 for the three batches

            class Out:
                parts = torch.tensor([value, 2 * value, 3 * value])

            return Out()

    result = run(criterion=Criterion(), verbose=False)
    assert result.losses.tolist() == pytest.approx([2.0, 4.0, 6.0])
    assert seen == [(1, "cpu")] * 3


def test_model_without_features_is_called():
    model = RectangleModel()

    class Exported:  # what an ONNX wrapper looks like: callable, nothing else
        def __call__(self, images):
            return model(images)

    assert run(Exported()).metrics.box.map == pytest.approx(1.0)
    with pytest.raises(ValueError, match="features"):
        run(Exported(), criterion=lambda feats, batch: None)


def test_training_mode_is_restored():
    model = RectangleModel().train()
    run(model)
    assert model.training
    run(model.eval())
    assert not model.training


def test_single_cls_merges_classes():
    result = run(names=NAMES, single_cls=True)
    metrics = result.metrics
    assert metrics.names == {0: "item"} and metrics.box.instances.tolist() == [6]
    assert metrics.box.map == pytest.approx(1.0)


def test_wrong_class_count_and_missing_save_dir_are_clear_errors():
    with pytest.raises(ValueError, match="predicts 2 classes but the dataset has 3"):
        run(names=["a", "b", "c"])
    with pytest.raises(ValueError, match="save_dir"):
        Validator(NAMES, plots=True)


def test_coco_json_rows_and_for_display():
    det = Detections(
        torch.tensor([[1.23456, 2.0, 11.0, 22.5], [0.0, 0.0, 5.0, 5.0]]),
        torch.tensor([0.876543, 0.1]),
        torch.tensor([3, 1]),
    )
    rows = coco_json_rows("/x/000042.png", det)
    assert rows[0] == {"image_id": 42, "category_id": 3, "bbox": [1.235, 2.0, 9.765, 20.5], "score": 0.87654}
    assert coco_json_rows("/x/img_1.png", det)[1]["image_id"] == "img_1"
    assert for_display(det).scores.tolist() == pytest.approx([0.876543])
    low = Detections(
        det.boxes_xyxy.repeat(3, 1), torch.tensor([0.2, 0.2, 0.1, 0.1, 0.05, 0.01]), torch.zeros(6)
    )
    assert len(for_display(low)) == 3


def test_images_that_no_longer_decode_are_skipped_with_a_warning(tmp_path, caplog):
    """An image that passed the scan but fails to decode in the loader: a warning, not a crash."""
    from yoloforge.data.dataset import ValDataset
    from yoloforge.data.loader import build_val_loader
    from yoloforge.structures import ImageRecord

    records = []
    for name, shape, objects in IMAGES[:3]:
        path = tmp_path / name
        image = make_image(shape, objects)
        if name == "cat.jpg":  # damaged after the scan
            path.write_bytes(b"\xff\xd8 not a jpeg")
        else:
            assert cv2.imwrite(str(path), image[..., ::-1])
        h, w = shape
        boxes = np.array([[(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
                          for _, (x1, y1, x2, y2) in objects], dtype=np.float32).reshape(-1, 4)  # fmt: skip
        records.append(ImageRecord(str(path), shape, np.array([c for c, _ in objects]), boxes))
    for batch_size in (1, 2):  # 1: a batch of nothing but the broken image
        dataset = ValDataset(records, imgsz=96, batch_size=batch_size)
        with caplog.at_level(logging.WARNING, logger="yoloforge"):
            caplog.clear()
            result = Validator(NAMES, plots=False, progress=False).run(
                RectangleModel(), build_val_loader(dataset, workers=0), "cpu"
            )
        skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
        assert skipped == [f"val: skipping {tmp_path / 'cat.jpg'} (not a readable image)"]
        assert result.metrics.seen == 2 and result.metrics.box.instances.tolist() == [2, 1]
