import os
import stat
import zipfile

import pytest
import torch

from yoloforge import checkpoint as ckpt_mod
from yoloforge.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_archive,
    load_checkpoint,
    read_plain,
    remove_stale_temps,
    save_checkpoint,
)
from yoloforge.files import umask


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


def test_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = save_checkpoint(_ckpt(), tmp_path / "last.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # not mkstemp's 0600
    assert umask() == old  # read without being changed


def test_remove_stale_temps_removes_only_save_checkpoint_temps(tmp_path):
    stale = [tmp_path / ".last.pt.k3j9x_2a.tmp", tmp_path / ".best.pt.abcdefgh.tmp"]
    kept = ["last.pt", "notes.tmp", ".last.pt.tmp", ".last.pt.short.tmp", "last.pt.abcdefgh.tmp"]
    for path in stale + [tmp_path / name for name in kept]:
        path.write_bytes(b"x")
    (tmp_path / ".dir.pt.abcdefgh.tmp").mkdir()
    assert remove_stale_temps(tmp_path) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, ".dir.pt.abcdefgh.tmp"])
    assert remove_stale_temps(tmp_path / "missing") == []


def test_a_temp_left_by_a_killed_write_is_what_remove_stale_temps_finds(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_mod.os, "replace", lambda *a: None)  # killed before the rename
    save_checkpoint(_ckpt(), tmp_path / "last.pt")
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".last.pt.")
    assert remove_stale_temps(tmp_path) == left and not any(tmp_path.iterdir())


def test_check_archive_reads_zip64_directories(tmp_path):
    """Archives with more than 65535 records (or over 4 GiB) end in a zip64 record: still accepted."""
    path = tmp_path / "many.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path) as src:
        records = {info.filename: src.read(info) for info in src.infolist()}
    prefix = next(iter(records)).split("/")[0]
    with zipfile.ZipFile(path, "w") as out:
        for name, data in records.items():
            out.writestr(name, data)
        for i in range(0xFFFF):
            out.writestr(f"{prefix}/extra/{i}", b"")
    check_archive(path)
    assert torch.equal(read_plain(path)["w"], torch.zeros(2))


def test_a_directory_torch_would_read_elsewhere_is_refused(tmp_path):
    """Python's zipfile reads the directory just before the end record, torch's reader at the offset
    the end record states: when the two differ they could see different records."""
    good = save_checkpoint(_ckpt(), tmp_path / "good.pt").read_bytes()
    moved = bytearray(good)
    moved[-6:-2] = (0).to_bytes(4, "little")  # the end record's directory offset
    (tmp_path / "moved.pt").write_bytes(bytes(moved))
    with pytest.raises(CheckpointError, match="moved.pt: damaged .*zip directory is not where torch.save"):
        check_archive(tmp_path / "moved.pt")
    (tmp_path / "tail.pt").write_bytes(good + b"trailing bytes")
    with pytest.raises(CheckpointError, match="tail.pt: damaged"):
        read_plain(tmp_path / "tail.pt")


def test_damaged_checkpoint_fields_are_one_line(tmp_path):
    raw = torch.load(save_checkpoint(_ckpt(), tmp_path / "a.pt"), weights_only=True)
    raw["arch"] = {"family": "yolov8"}
    torch.save(raw, tmp_path / "no_size.pt")
    with pytest.raises(CheckpointError, match=r"no_size.pt: damaged checkpoint \(KeyError: 'size'\)"):
        load_checkpoint(tmp_path / "no_size.pt")
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    raw["model"] = ["not", "tensors"]
    torch.save(raw, tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: damaged checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
