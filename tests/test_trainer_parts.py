"""The trainer's bookkeeping without training: best fitness, patience, the results.csv row, the
divergence guards, freezing, imgsz rounding and the run folder."""

from __future__ import annotations

import logging
import math
import os
from types import SimpleNamespace

import pytest
import torch

from yoloforge.checkpoint import Checkpoint
from yoloforge.model.zoo import build_model
from yoloforge.results_csv import COLUMNS, epoch_row, read_rows, write_rows
from yoloforge.runs import RunFolder, RunFolderError
from yoloforge.settings import TrainSettings
from yoloforge.trainer import (
    TrainingDiverged,
    TrainState,
    _freeze,
    _non_finite,
    _refuse_non_finite,
    _stride_imgsz,
    train_settings_for_resume,
)


def test_best_fitness_and_patience():
    st = TrainState()
    assert st.update(0, 0.5) and st.best_fitness == 0.5 and st.epoch == 1
    assert not st.update(1, 0.4) and st.epochs_without_improvement == 1
    assert not st.update(2, None) and st.epochs_without_improvement == 1  # not validated: no count
    assert not st.out_of_patience(2)
    assert not st.update(3, 0.49) and st.out_of_patience(2) and not st.out_of_patience(0)
    assert st.update(4, 0.5) and st.epochs_without_improvement == 0  # a tie is the newer best
    assert st.epoch == 5


def test_epoch_row_has_every_column():
    box = SimpleNamespace(mp=0.9, mr=0.8, map50=0.7, map=0.5)
    row = epoch_row(3, 12.5, [1.0, 2.0, 3.0], box, [4.0, 5.0, 6.0], [0.1, 0.2, 0.3])
    assert tuple(row) == COLUMNS
    assert row["train/cls_loss"] == 2.0 and row["val/dfl_loss"] == 6.0 and row["lr/pg2"] == 0.3
    assert row["metrics/mAP50-95(B)"] == 0.5 and row["epoch"] == 3
    empty = epoch_row(1, 0.0, [1, 1, 1], None, [math.nan] * 3, [0.1] * 3)
    assert math.isnan(empty["metrics/mAP50(B)"]) and math.isnan(empty["val/box_loss"])


def test_non_finite_names_every_bad_tensor_nested_too():
    state = {
        "a": torch.ones(2),
        "b": torch.tensor([1.0, float("inf")]),
        "steps": torch.tensor([3]),  # integer tensors cannot be non-finite
        "optimizer": {"state": {0: {"momentum_buffer": torch.tensor([float("nan")])}}, "lr": 0.1},
    }
    assert _non_finite(state) == ["b", "optimizer.state.0.momentum_buffer"]
    assert _non_finite({"w": torch.zeros(3, dtype=torch.float16)}) == []


def test_a_checkpoint_with_inf_is_refused_with_one_line(tmp_path):
    big = torch.full((2,), 1e6).to(torch.float16)  # fp16 overflow: what an exploded best.pt held
    ckpt = Checkpoint(family="yolov8", size="n", nc=1, names=["a"], model={"w": big}, epoch=4)
    with pytest.raises(TrainingDiverged, match=r"^Training diverged at epoch 5: best\.pt would hold") as e:
        _refuse_non_finite(ckpt, tmp_path / "best.pt", "last.pt keeps the last good epoch (4)")
    assert "\n" not in str(e.value) and not (tmp_path / "best.pt").exists()


def test_resume_settings_drop_task_and_mode():
    args = {"task": "detect", "mode": "train", "model": "yolov8n.yaml", "epochs": 3, "cfg": ""}
    ckpt = Checkpoint(family="yolov8", size="n", nc=1, names=["a"], model={}, train_args=args)
    assert train_settings_for_resume(ckpt, {"epochs": 5}) == {
        "model": "yolov8n.yaml",
        "epochs": 5,
        "resume": False,
    }


def test_freeze_logs_each_frozen_tensor_and_the_dfl_buffer(caplog):
    model = build_model("yolov8", "n", nc=2)
    with caplog.at_level(logging.INFO, logger="yoloforge"):
        _freeze(model, 0)
    assert [r.getMessage() for r in caplog.records] == ["Freezing layer 'head.dfl.proj'"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yoloforge"):
        frozen = _freeze(model, 1)
    lines = [r.getMessage() for r in caplog.records]
    names = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert len(frozen) == 1 and names and lines == [f"Freezing layer '{n}'" for n in names] + lines[-1:]
    assert lines[-1] == "Freezing layer 'head.dfl.proj'"


def test_imgsz_rounds_up_to_the_stride():
    assert _stride_imgsz(TrainSettings(imgsz=150)).imgsz == 160
    same = TrainSettings(imgsz=320)
    assert _stride_imgsz(same) is same


def test_run_folder_claim_lock_discard_and_stale_temps(tmp_path):
    run = RunFolder.claim(tmp_path / "p" / "detect", "train", exist_ok=False)
    assert run.path == tmp_path / "p" / "detect" / "train"
    run.lock()
    with pytest.raises(RunFolderError, match=r"train is in use by another training process"):
        RunFolder.claim(tmp_path / "p" / "detect", "train", exist_ok=True).lock()
    other = RunFolder.claim(tmp_path / "p" / "detect", "train", exist_ok=False)
    assert other.path.name == "train2"  # exist_ok=False never shares a folder
    (run.path / "weights").mkdir()
    (run.path / "args.yaml").write_text("epochs: 1\n")
    run.release()
    assert run.discard() and not (tmp_path / "p" / "detect" / "train").exists()
    assert (tmp_path / "p" / "detect" / "train2").is_dir()  # parents still in use stay

    kept = RunFolder.claim(tmp_path / "p" / "detect", "train2", exist_ok=True)  # made by someone else
    (kept.path / "weights").mkdir()
    for name in (".last.pt.abcd1234.tmp", "last.pt"):
        (kept.path / "weights" / name).write_bytes(b"x")
    (kept.path / ".results.x1y2z3.tmp").write_text("epoch\n")
    kept.lock()
    removed = kept.remove_stale_temps()
    kept.release()
    assert sorted(p.name for p in removed) == [".last.pt.abcd1234.tmp", ".results.x1y2z3.tmp"]
    assert not kept.discard() and (kept.path / "weights" / "last.pt").exists()


def test_results_csv_is_an_ordinary_file_and_a_failed_write_is_one_line(tmp_path):
    path = tmp_path / "results.csv"
    write_rows(path, [epoch_row(1, 1.0, [1, 1, 1], None, [1, 1, 1], [0.1] * 3)])
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert read_rows(path)[0]["epoch"] == 1 and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(RunFolderError, match=r"missing/results\.csv: could not be written"):
        write_rows(tmp_path / "missing" / "results.csv", [])
