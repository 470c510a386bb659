import pytest
import torch

from yoloforge import checkpoint as ckpt_mod
from yoloforge.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint


def _ckpt(**kw):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.rand(1, 3, 8, 8)).sum().backward()
    opt.step()
    base = dict(
        family="yolov8",
        size="n",
        nc=2,
        names=["5euro", "10euro"],
        model=net.state_dict(),
        optimizer=opt.state_dict(),
        epoch=3,
        best_fitness=0.5,
        train_args={"epochs": 10, "classes": (0, 1), "data": "config.yaml"},
    )
    base.update(kw)
    return Checkpoint(**base)


def test_round_trip_loads_with_weights_only(tmp_path):
    original = _ckpt()
    path = save_checkpoint(original, tmp_path / "w" / "last.pt")
    raw = torch.load(path, weights_only=True)  # plain types and tensors only
    assert raw["format"] == "yoloforge" and raw["arch"] == {"family": "yolov8", "size": "n", "nc": 2}
    back = load_checkpoint(path)
    assert back.names == ["5euro", "10euro"] and back.epoch == 3 and back.best_fitness == 0.5
    assert back.train_args["classes"] == [0, 1]
    for k, v in original.model.items():
        assert torch.equal(back.model[k], v)
    assert back.optimizer["param_groups"][0]["lr"] == 0.1


def test_crash_mid_write_keeps_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint(_ckpt(epoch=1), tmp_path / "last.pt")
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(_ckpt(epoch=2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
    assert load_checkpoint(path).epoch == 1


def test_not_ours_is_named(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="other.pt: not a yoloforge checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="file not found"):
        load_checkpoint(tmp_path / "missing.pt")
