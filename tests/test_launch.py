"""device=0,1 outside torchrun: yoloforge launches torchrun itself (the runner is replaced here: no GPU).

The fake runner plays torchrun: it checks the command and writes best.pt where rank 0 would.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from yoloforge import launch
from yoloforge.api import YOLO
from yoloforge.cli import main
from yoloforge.device import DeviceError, gpu_ids

FIXTURE = Path(__file__).parent / "fixtures" / "shapes_yolov8n.pt"


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine that reports two GPUs, a launcher that records its command, and no torchrun around."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    calls: list[list[str]] = []

    def fake_torchrun(command: list[str]) -> int:
        calls.append(command)
        pairs = dict(a.split("=", 1) for a in command if "=" in a and not a.startswith("--"))
        weights = Path(pairs["project"]) / pairs["name"] / "weights"
        weights.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURE, weights / "best.pt")
        return 0

    monkeypatch.setattr(launch, "_run", fake_torchrun)
    return calls


@pytest.mark.parametrize("device", ["0,1", [0, 1], "[0, 1]", "cuda:0,1"])
def test_several_gpus_name_their_ids(device):
    assert gpu_ids(device) == [0, 1]


def test_one_device_or_torchrun_itself_launches_nothing():
    assert not launch.wants_processes("0") and not launch.wants_processes("cpu")
    assert not launch.wants_processes("0,1", environ={"WORLD_SIZE": "2"})
    assert launch.wants_processes([0, 1], environ={})


def test_api_launches_torchrun_in_a_claimed_folder_and_loads_its_best(two_gpus, tmp_path: Path):
    (tmp_path / "train").mkdir()  # taken: the run goes to train2, and the processes are told so
    model = YOLO(FIXTURE)
    assert model.train(data="shapes.yaml", epochs=2, device=[0, 1], project=str(tmp_path)) is None
    (command,) = two_gpus
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in command
    program = command[command.index("yoloforge") + 1 :]
    assert program[:2] == ["train", f"model={FIXTURE}"]
    assert {"device=0,1", "epochs=2", f"project={tmp_path}", "name=train2", "exist_ok=True"} <= set(program)
    assert model.ckpt_path == str(tmp_path / "train2" / "weights" / "best.pt")


def test_cli_returns_the_launcher_exit_status(two_gpus, tmp_path: Path, monkeypatch):
    args = ["train", f"model={FIXTURE}", "data=shapes.yaml", "device=0,1", f"project={tmp_path}"]
    assert main(args) == 0
    assert len(two_gpus) == 1 and "name=train" in two_gpus[0]
    monkeypatch.setattr(launch, "_run", lambda command: 3)
    assert main([*args, "name=failed"]) == 3
    assert not (tmp_path / "failed").exists()  # the claimed folder of a failed start is removed


def test_api_raises_when_the_processes_fail_and_refuses_callbacks(two_gpus, monkeypatch, tmp_path: Path):
    from yoloforge.callbacks import Callback
    from yoloforge.distributed import DistributedError

    with pytest.raises(ValueError, match="callbacks cannot reach the training processes"):
        YOLO(FIXTURE).train(data="shapes.yaml", device="0,1", project=str(tmp_path), callbacks=[Callback()])
    monkeypatch.setattr(launch, "_run", lambda command: 1)
    with pytest.raises(DistributedError, match="exit status 1"):
        YOLO(FIXTURE).train(data="shapes.yaml", device="0,1", project=str(tmp_path))


def test_gpus_this_machine_lacks_are_one_line(capsys, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="device=0,1"):
        YOLO(FIXTURE).train(data="shapes.yaml", device=[0, 1], project=str(tmp_path))
    assert main(["train", f"model={FIXTURE}", "data=shapes.yaml", "device=0,1", f"project={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: device=0,1")
    assert list(tmp_path.iterdir()) == []  # no folder claimed for a run that cannot start
