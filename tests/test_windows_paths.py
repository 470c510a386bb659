"""What Windows needs, checked on any system: loader workers started by spawn (Windows has no fork),
and folders with non-ASCII names, which OpenCV's imread and imwrite cannot open on Windows."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest

from yoloforge import YOLO


def _windows_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV as on Windows for a non-ASCII path: imread finds nothing, imwrite writes nothing."""
    real_imread, real_imwrite = cv2.imread, cv2.imwrite

    def imread(path, *args):
        return None if not str(path).isascii() else real_imread(path, *args)

    def imwrite(path, *args):
        return False if not str(path).isascii() else real_imwrite(path, *args)

    monkeypatch.setattr(cv2, "imread", imread)
    monkeypatch.setattr(cv2, "imwrite", imwrite)


def test_train_and_predict_in_non_ascii_folders(tmp_path, monkeypatch):
    from yoloforge.data.demo import ensure_shapes

    config = ensure_shapes(tmp_path / "données 数据", n_train=8, n_val=4)
    _windows_opencv(monkeypatch)
    project = tmp_path / "résultats"
    YOLO("yolov8n.yaml").train(
        data=str(config), epochs=1, imgsz=64, batch=4, workers=0, project=str(project), name="é",
    )  # fmt: skip
    run = project / "é"
    for name in ("labels.jpg", "train_batch0.jpg", "val_batch0_pred.jpg", "results.png", "weights/best.pt"):
        assert (run / name).is_file(), name
    images = sorted((config.parent / "images" / "val").glob("*.jpg"))
    results = YOLO(run / "weights" / "best.pt").predict(
        str(images[0].parent), conf=0.0, save=True, project=str(project), name="prédire"
    )
    assert len(results) == len(images) and results[0].orig_img.shape[2] == 3
    assert sorted(p.name for p in (project / "prédire").glob("*.jpg")) == [p.name for p in images]
    assert Path(results[0].save(tmp_path / "sortie ü" / "a.jpg")).is_file()


SPAWN = """
import multiprocessing, sys
from yoloforge.data.config import load_data_config
from yoloforge.data.dataset import TrainDataset, ValDataset
from yoloforge.data.loader import build_train_loader, build_val_loader
from yoloforge.data.scan import scan_split
from yoloforge.settings import AugmentSettings

if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")  # Windows' (and macOS's) default
    data = load_data_config(sys.argv[1])
    train = scan_split(data.train, data.names, prefix="train", progress=False).records
    val = scan_split(data.val, data.names, prefix="val", progress=False).records
    dataset = TrainDataset(train, imgsz=64, augment=AugmentSettings(), batch_size=4)
    loader = build_train_loader(dataset, batch=4, workers=2, device="cpu")
    for epoch in range(2):
        loader.set_epoch(epoch)
        if epoch == 1:
            loader.close_mosaic()
        print("train", epoch, sum(b.images.shape[0] for b in loader))
    val_loader = build_val_loader(ValDataset(val, imgsz=64, batch_size=4), workers=2)
    print("val", sum(b.images.shape[0] for b in val_loader))
    print("start method", multiprocessing.get_start_method())
"""


def test_loader_workers_work_with_the_spawn_start_method(shapes_small, tmp_path):
    script = tmp_path / "spawn_loader.py"
    script.write_text(textwrap.dedent(SPAWN))
    proc = subprocess.run(
        [sys.executable, str(script), str(shapes_small)], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines == ["train 0 16", "train 1 16", "val 8", "start method spawn"], proc.stdout


def test_doctor_thumbnails_in_non_ascii_folders(tmp_path, monkeypatch):
    pytest.importorskip("imagehash")
    from yoloforge import doctor  # as the README writes it: the package, callable
    from yoloforge.data.demo import ensure_shapes

    config = ensure_shapes(tmp_path / "Données", n_train=12, n_val=4, seed=1)
    val_image = sorted((config.parent / "images" / "val").glob("*.jpg"))[0]
    shutil.copy(val_image, config.parent / "images" / "train" / "fuite.jpg")  # leakage: has pictures
    _windows_opencv(monkeypatch)
    report = doctor(config, project=str(tmp_path / "Rapports"), name="médecin", imgsz=256, progress=False)
    thumbs = list((report.save_dir / "thumbs").glob("*.jpg"))
    assert thumbs and all(p.stat().st_size > 0 for p in thumbs)
