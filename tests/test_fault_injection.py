"""Fault injection that future changes keep green.

Each hostile or broken file goes through the three doors a user opens: ``YOLO(path)``,
``yoloforge val model=...`` and ``yoloforge predict model=...``. Each must end in one line that names
the file (no traceback), and no code from the file may run: a payload that would run code creates a
marker file, and the marker must not exist afterwards. Training-level faults (SIGKILL mid-epoch)
live in their own module.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from system_marks import peak_rss_mib

import yoloforge
from yoloforge import YOLO
from yoloforge.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from yoloforge.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
OURS = FIXTURES / "shapes_yolov8n.pt"  # a real yoloforge checkpoint (3 classes)
REFERENCE = FIXTURES / "reference" / "yolov8n.pt"  # a real ultralytics checkpoint
TRUNCATED = r"truncated or incomplete \(was it copied whole\?\)"
DAMAGED = r"damaged or not a checkpoint yoloforge can read"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("YOLOFORGE_DEBUG", raising=False)  # errors as one line, not tracebacks
    monkeypatch.chdir(tmp_path)  # nothing lands in the checkout


def refused_everywhere(path: Path, match: str, capsys, data: Path) -> None:
    """YOLO(path), `val` and `predict` each fail with one line naming ``path`` and matching ``match``."""
    with pytest.raises(ValueError, match=match) as err:  # all of yoloforge's file errors are ValueErrors
        YOLO(str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    capsys.readouterr()
    for argv in (["val", f"model={path}", f"data={data}"], ["predict", f"model={path}", f"source={data}"]):
        code = main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert code != 0, argv
        assert len(lines) == 1, lines
        assert str(path) in lines[0] and re.search(match, lines[0]), lines[0]


# ---------------------------------------------------------------------------------------------
# Pickled code


class RunsCode:
    """Unpickling this runs ``call(*args)``, which creates the marker file."""

    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def payloads(marker: Path) -> dict[str, RunsCode]:
    return {
        "os.system": RunsCode(os.system, (f"touch '{marker}'",)),
        "builtins.exec": RunsCode(exec, (f"open({str(marker)!r}, 'w').close()",)),
        "subprocess.call": RunsCode(subprocess.call, (["touch", str(marker)],)),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "subprocess.call"])
def test_pickled_code_is_refused_and_never_runs(tmp_path, capsys, shapes_small, name):
    marker = tmp_path / "marker"
    payload = payloads(marker)[name]
    pickle.loads(pickle.dumps(payload))  # control: unpickled plainly, the payload does run
    assert marker.exists()
    marker.unlink()
    for where, host in (("top", OURS), ("inside_a_model", REFERENCE)):
        raw = torch.load(host, weights_only=True) if host == OURS else {"model": {"w": torch.zeros(2)}}
        raw["note"] = payload
        path = tmp_path / f"evil_{where}.pt"
        torch.save(raw, path)
        refused_everywhere(path, "refused: the file asks to run or import", capsys, shapes_small)
        assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# TorchScript archives: torch.load hands them to torch.jit.load, which runs their code


class Scripted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    @torch.jit.export
    def __getstate__(self) -> tuple[float, bool]:
        return self.scale, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[float, bool]) -> None:
        print("code from the archive ran")  # runs inside torch.jit.load
        self.scale = state[0]
        self.training = state[1]


def test_torchscript_archive_named_pt_never_reaches_torch_jit_load(
    tmp_path, capsys, monkeypatch, shapes_small
):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    torch.jit.script(Scripted()).save(str(path))

    def jit_load(*args, **kwargs):
        marker.touch()
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", jit_load)
    with pytest.raises(AssertionError):  # control: torch.load would hand the file to torch.jit.load
        torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    refused_everywhere(path, "is a TorchScript archive, which runs its own code", capsys, shapes_small)
    assert not marker.exists()
    assert "rename it to .torchscript" in str(pytest.raises(ValueError, YOLO, str(path)).value)


def test_other_zip_archives_and_non_checkpoints_are_named(tmp_path, capsys, shapes_small):
    with zipfile.ZipFile(tmp_path / "notes.pt", "w") as z:
        z.writestr("notes/readme.txt", "hello")
    refused_everywhere(
        tmp_path / "notes.pt", r"a zip archive but not a PyTorch checkpoint", capsys, shapes_small
    )
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    refused_everywhere(tmp_path / "random.pt", "not a PyTorch checkpoint", capsys, shapes_small)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    refused_everywhere(legacy, r"legacy format \(torch < 1\.6\)", capsys, shapes_small)


# ---------------------------------------------------------------------------------------------
# Crafted headers: one line, never a huge allocation


def copy_archive(
    src: Path, dst: Path, replace: dict[str, bytes], compression: int = zipfile.ZIP_STORED
) -> Path:
    """``src``'s records written again to ``dst``, some replaced (names without the archive folder)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            record = info.filename.split("/", 1)[1]
            zout.writestr(info.filename, replace.get(record, zin.read(info)))
    return dst


class HugeTensor:
    """A tensor header claiming 10**13 float32 elements over a 16-byte storage."""

    def __init__(self, stride: int):
        self.stride = stride

    def __reduce__(self):
        storage = torch.storage.TypedStorage(
            wrap_storage=torch.zeros(4).untyped_storage(), dtype=torch.float32, _internal=True
        )
        return torch._utils._rebuild_tensor_v2, (storage, 0, (10**13,), (self.stride,), False, OrderedDict())


class PickledArray:
    """What numpy pickles for an array, with a shape its data does not hold."""

    def __init__(self, shape, dtype, data):
        self.state = (1, shape, np.dtype(dtype), False, data)

    def __reduce__(self):
        return np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), self.state


class BuildsArray:
    """np.ndarray((10**13,)) called directly from the pickle."""

    def __reduce__(self):
        return np.ndarray, ((10**13,),)


def crafted(tmp_path: Path) -> dict[str, Path]:
    """One file per crafted header, each otherwise a real checkpoint."""
    files = {}
    for stride in (1, 0):
        raw = torch.load(OURS, weights_only=True)
        raw["model"]["head.cls_branches.0.2.bias"] = HugeTensor(stride)
        files[f"tensor_stride{stride}"] = tmp_path / f"tensor_stride{stride}.pt"
        torch.save(raw, files[f"tensor_stride{stride}"])
    raw = torch.load(OURS, weights_only=True)
    raw["arch"]["nc"] = 10**9  # would build a model with a billion classes
    files["nc_1e9"] = tmp_path / "nc_1e9.pt"
    torch.save(raw, files["nc_1e9"])
    arrays = {
        "array_1e13_objects": PickledArray((10**13,), object, [1, 2]),
        "array_1e9_floats": PickledArray((10**9,), np.float32, b"\0" * 8),
        "array_direct": BuildsArray(),
    }
    for name, payload in arrays.items():
        files[name] = tmp_path / f"{name}.pt"
        torch.save({"model": {"w": torch.zeros(2)}, "meta": payload}, files[name])
    storage_record = next(n for n in zipfile.ZipFile(OURS).namelist() if "/data/" in n).split("/", 1)[1]
    files["record_size"] = copy_archive(OURS, tmp_path / "record_size.pt", {storage_record: b"\0" * 8})
    data_pkl = zipfile.ZipFile(OURS).read(
        next(n for n in zipfile.ZipFile(OURS).namelist() if "data.pkl" in n)
    )
    bad_type = re.sub(rb"ctorch\n\w+Storage\n", b"ccollections\nOrderedDict\n", data_pkl)  # storage type
    assert bad_type != data_pkl
    files["storage_type"] = copy_archive(OURS, tmp_path / "storage_type.pt", {"data.pkl": bad_type})
    return files


def test_the_copy_helper_writes_a_loadable_archive(tmp_path):
    """Control: an unchanged copy loads, so the refusals below come from what was changed."""
    path = copy_archive(OURS, tmp_path / "copy.pt", {})
    assert YOLO(str(path)).names == YOLO(str(OURS)).names


@pytest.mark.parametrize(
    "name",
    [
        "tensor_stride1",
        "tensor_stride0",
        "array_1e13_objects",
        "array_1e9_floats",
        "array_direct",
        "record_size",
    ]
    + ["storage_type", "nc_1e9"],
)
def test_crafted_headers_end_in_one_line_without_allocating(tmp_path, capsys, shapes_small, name):
    path = crafted(tmp_path)[name]
    peak_before = peak_rss_mib()
    refused_everywhere(path, rf"{DAMAGED}|damaged checkpoint|refused", capsys, shapes_small)
    if peak_before is not None:  # Windows has no peak figure: the refusal alone is checked there
        grown_mib = peak_rss_mib() - peak_before
        assert grown_mib < 200, f"loading {name} raised the peak memory by {grown_mib:.0f} MiB"


def test_object_array_shorter_than_its_shape_does_not_crash_the_interpreter(tmp_path):
    """numpy segfaults setting an object array from fewer items than its shape: refused first."""
    path = tmp_path / "short.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "meta": PickledArray((3,), object, [1, 2])}, path)
    code = f"from yoloforge import YOLO\ntry:\n    YOLO({str(path)!r})\nexcept ValueError as e:\n    print(e)"
    env = {**os.environ, "PYTHONPATH": str(Path(yoloforge.__file__).parents[1])}  # this yoloforge
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "whose data does not hold that many elements" in done.stdout


def zip_bomb(path: Path, inflated_mib: int) -> Path:
    """A real checkpoint whose one extra record inflates to ``inflated_mib`` MiB of zeros."""
    with zipfile.ZipFile(OURS) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
        prefix = zin.namelist()[0].split("/", 1)[0]
        info = zipfile.ZipInfo(f"{prefix}/data/bomb")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zout.open(info, "w", force_zip64=True) as record:
            chunk = bytes(1 << 20)
            for _ in range(inflated_mib):
                record.write(chunk)
    return path


def test_zip_bomb_is_refused_from_its_directory(tmp_path, capsys, shapes_small):
    path = zip_bomb(tmp_path / "bomb.pt", inflated_mib=128)
    assert path.stat().st_size < 7 << 20  # 6 MB of real checkpoint + the compressed zeros
    peak_before = peak_rss_mib()
    refused_everywhere(path, r"its records claim 1\d\d MiB in a \d+\.\d MiB file", capsys, shapes_small)
    if peak_before is not None:  # Windows has no peak figure: the refusal alone is checked there
        assert peak_rss_mib() - peak_before < 100


def test_a_compressed_record_is_refused(tmp_path, capsys, shapes_small):
    path = copy_archive(OURS, tmp_path / "deflated.pt", {}, compression=zipfile.ZIP_DEFLATED)
    refused_everywhere(path, "is compressed, which torch.save never does", capsys, shapes_small)


# ---------------------------------------------------------------------------------------------
# Truncated copies


@pytest.mark.parametrize("fraction", [0.0001, 0.3, 0.6, 0.999])
@pytest.mark.parametrize("source", [OURS, REFERENCE], ids=["ours", "reference"])
def test_truncated_checkpoint_says_so(tmp_path, capsys, shapes_small, source, fraction):
    data = source.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    refused_everywhere(path, TRUNCATED, capsys, shapes_small)


def test_last_bytes_missing_or_empty_file_say_truncated(tmp_path, capsys, shapes_small):
    data = OURS.read_bytes()
    for name, content in {"short.pt": data[:-1], "empty.pt": b"", "magic.pt": b"PK"}.items():
        (tmp_path / name).write_bytes(content)
        refused_everywhere(tmp_path / name, TRUNCATED, capsys, shapes_small)


# ---------------------------------------------------------------------------------------------
# model= a folder


def test_a_run_folder_as_model_points_at_its_checkpoint(tmp_path, capsys, shapes_small):
    run = tmp_path / "runs" / "detect" / "train"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "best.pt").write_bytes(OURS.read_bytes())
    with pytest.raises(ValueError, match=rf"model={run} is a folder; give a checkpoint file such as "):
        YOLO(str(run))
    assert main(["val", f"model={run}", f"data={shapes_small}"]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(run / "weights" / "best.pt") in lines[0]
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"is a folder; give a checkpoint file such as .*weights/best\.pt"):
        YOLO(str(empty))


# ---------------------------------------------------------------------------------------------
# A full disk


def small_checkpoint(**model: torch.Tensor) -> Checkpoint:
    return Checkpoint(family="yolov8", size="n", nc=1, names=["a"], model=model or {"w": torch.zeros(4)})


def test_full_disk_keeps_the_previous_checkpoint(tmpfs):
    tiny_disk = tmpfs("2m")
    last = save_checkpoint(small_checkpoint(), tiny_disk / "last.pt")
    before = last.read_bytes()
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(small_checkpoint(w=torch.zeros(1 << 20)), last)  # 4 MiB on a 2 MiB disk
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"could not write {last}: the disk is full; the previous last.pt is kept")
    assert last.read_bytes() == before
    assert torch.equal(load_checkpoint(last).model["w"], torch.zeros(4))
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["last.pt"]  # no temp file left


def test_write_failures_are_one_line(tmp_path, monkeypatch):
    last = save_checkpoint(small_checkpoint(), tmp_path / "last.pt")

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"the disk is full; the previous last.pt is kept"):
        save_checkpoint(small_checkpoint(), last)
    with pytest.raises(
        CheckpointError, match=r"could not write .*new.pt: the disk is full; nothing was written"
    ):
        save_checkpoint(small_checkpoint(), tmp_path / "new.pt")

    def torch_write_failed(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", torch_write_failed)
    with pytest.raises(
        CheckpointError, match=r"the write failed \(RuntimeError: unexpected pos 704 vs 598\)"
    ):
        save_checkpoint(small_checkpoint(), last)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
