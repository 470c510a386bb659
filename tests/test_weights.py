"""Importing reference (ultralytics) checkpoints: parity with the reference's own outputs, the key
map, the restricted unpickler refusing code, transfer_state, and fetching published weights.

The fixtures in tests/fixtures/reference/ were written by the reference implementation
(benchmarks/make_reference_fixtures.py, see manifest.json); ultralytics is not needed here.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import subprocess
import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from yoloforge.checkpoint import CheckpointError
from yoloforge.model.download import WeightsNotFoundError, fetch_published
from yoloforge.model.keymap import KeyMapError, map_reference_key
from yoloforge.model.weights import (
    ForeignCheckpointError,
    ForeignObject,
    RestrictedUnpickler,
    UnsafeCheckpointError,
    is_foreign_checkpoint,
    load_foreign_checkpoint,
    restricted_load,
    transfer_state,
)
from yoloforge.model.zoo import build_model

FIXTURES = Path(__file__).parent / "fixtures" / "reference"
CHECKPOINTS = {  # file stem: (family, size, nc)
    "yolov8n": ("yolov8", "n", 80),
    "yolov8s_nc5": ("yolov8", "s", 5),
    "yolo11n_nc2_last": ("yolo11", "n", 2),
}
TOLERANCE = 1e-4  # max abs error relative to the largest reference magnitude


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference_io() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / "reference_io.pt", weights_only=True)


def relative_errors(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(boxes, scores): max |ours - ref| / max |ref| over each part of the (B, 4 + nc, A) output."""
    return tuple(
        ((ours[:, part] - ref[:, part]).abs().max() / ref[:, part].abs().max()).item()
        for part in (slice(0, 4), slice(4, None))
    )


# ---------------------------------------------------------------------------------------------
# Parity with the reference


@pytest.mark.parametrize("stem", list(CHECKPOINTS))
def test_reference_checkpoint_gives_reference_outputs(stem, reference_io):
    ckpt = load_foreign_checkpoint(FIXTURES / f"{stem}.pt")
    assert (ckpt.family, ckpt.size, ckpt.nc) == CHECKPOINTS[stem]
    model = build_model(ckpt.family, ckpt.size, ckpt.nc)
    model.load_state_dict(ckpt.state_dict)  # strict: every one of our weights is in the file
    model.eval()
    ref = reference_io[stem]
    with torch.no_grad():
        out = model(reference_io["images"])
        assert out.shape == ref.shape
        assert max(relative_errors(out, ref)) < TOLERANCE
        fused = model.fuse()(reference_io["images"])
    assert max(relative_errors(fused, ref)) < TOLERANCE


def test_a_wrong_weight_would_be_caught(reference_io):
    """The parity check is sensitive: one perturbed BN statistic moves the output beyond tolerance."""
    ckpt = load_foreign_checkpoint(FIXTURES / "yolov8n.pt")
    model = build_model("yolov8", "n", 80)
    state = dict(ckpt.state_dict)
    state["backbone.stage_p3.inner.1.conv2.bn.running_mean"] = (
        state["backbone.stage_p3.inner.1.conv2.bn.running_mean"] + 0.5
    )
    model.load_state_dict(state)
    with torch.no_grad():
        out = model.eval()(reference_io["images"])
    assert max(relative_errors(out, reference_io["yolov8n"])) > TOLERANCE


def test_published_format_metadata():
    ckpt = load_foreign_checkpoint(FIXTURES / "yolov8n.pt")
    assert ckpt.names[:2] == ["class_0", "class_1"] and len(ckpt.names) == 80
    assert ckpt.epoch == -1 and ckpt.best_fitness is None
    assert ckpt.source == FIXTURES / "yolov8n.pt"
    assert all(t.dtype == torch.float32 for k, t in ckpt.state_dict.items() if "num_batches" not in k)


def test_trainer_checkpoint_metadata_is_plain():
    ckpt = load_foreign_checkpoint(FIXTURES / "yolo11n_nc2_last.pt")
    assert ckpt.epoch == 4
    assert ckpt.best_fitness == pytest.approx(0.4321)
    assert ckpt.names == ["class_0", "class_1"]
    assert ckpt.train_args["epochs"] == 5 and ckpt.train_args["data"] == "custom.yaml"

    def plain(v) -> bool:
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (str, int, float, bool))

    assert plain(ckpt.train_args)


def test_fp32_checkpoint_loads_the_same_weights(tmp_path, monkeypatch):
    fp16 = load_foreign_checkpoint(FIXTURES / "yolo11n_nc2_last.pt")
    raw = restricted_load(FIXTURES / "yolo11n_nc2_last.pt")
    path = tmp_path / "fp32.pt"
    save_as_foreign(convert_floats(raw, torch.float32), path, monkeypatch)
    fp32 = load_foreign_checkpoint(path)
    assert fp32.state_dict.keys() == fp16.state_dict.keys()
    assert all(torch.equal(fp32.state_dict[k], fp16.state_dict[k]) for k in fp16.state_dict)


def test_is_foreign_checkpoint(tmp_path):
    assert is_foreign_checkpoint(FIXTURES / "yolov8n.pt")
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "plain.pt")
    assert not is_foreign_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    assert not is_foreign_checkpoint(tmp_path / "text.pt")
    assert not is_foreign_checkpoint(tmp_path / "missing.pt")


def test_not_a_zip_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ForeignCheckpointError, match="text.pt: not a PyTorch checkpoint"):
        load_foreign_checkpoint(tmp_path / "text.pt")


def test_other_tasks_are_refused_with_their_name(tmp_path, monkeypatch):
    raw = restricted_load(FIXTURES / "yolov8n.pt")
    raw["model"] = retype(raw["model"], "ultralytics.nn.tasks.SegmentationModel")
    save_as_foreign(raw, tmp_path / "seg.pt", monkeypatch)
    with pytest.raises(ForeignCheckpointError, match="holds a SegmentationModel; only detection"):
        load_foreign_checkpoint(tmp_path / "seg.pt")


# ---------------------------------------------------------------------------------------------
# Key map


@pytest.mark.parametrize(
    ("family", "key", "ours"),
    [
        ("yolov8", "model.0.conv.weight", "backbone.stem.conv.weight"),
        ("yolov8", "model.4.m.0.cv1.conv.weight", "backbone.stage_p3.inner.0.conv1.conv.weight"),
        ("yolov8", "model.9.cv2.bn.running_var", "backbone.sppf.merge.bn.running_var"),
        ("yolov8", "model.21.cv1.bn.num_batches_tracked", "neck.out_p5.split_conv.bn.num_batches_tracked"),
        ("yolov8", "model.22.cv3.1.2.bias", "head.cls_branches.1.2.bias"),
        ("yolov8", "model.22.dfl.conv.weight", None),
        (
            "yolo11",
            "model.6.m.0.m.1.cv2.conv.weight",
            "backbone.stage_p4.inner.0.bottlenecks.1.conv2.conv.weight",
        ),
        ("yolo11", "model.6.m.0.cv3.bn.bias", "backbone.stage_p4.inner.0.merge_conv.bn.bias"),
        ("yolo11", "model.10.m.0.attn.pe.bn.weight", "backbone.psa.blocks.0.attn.pos_enc.bn.weight"),
        ("yolo11", "model.10.m.0.ffn.1.conv.weight", "backbone.psa.blocks.0.ffn.1.conv.weight"),
        ("yolo11", "model.23.cv3.0.0.0.conv.weight", "head.cls_branches.0.0.0.conv.weight"),
    ],
)
def test_map_reference_key(family, key, ours):
    with torch.device("meta"):
        model = build_model(family, "n")
    assert map_reference_key(model, key) == ours


@pytest.mark.parametrize(
    "key", ["model.2.cv9.conv.weight", "model.30.conv.weight", "backbone.0.weight", "model.0.conv.bias.x"]
)
def test_map_reference_key_refuses_unknown_parts(key):
    with torch.device("meta"):
        model = build_model("yolov8", "n")
    with pytest.raises(KeyMapError):
        map_reference_key(model, key)


# ---------------------------------------------------------------------------------------------
# The restricted unpickler


class MakesFile:
    """Unpickling this object runs ``call(*args)``; each of them creates ``marker``."""

    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def evil_payloads(marker: Path) -> list[MakesFile]:
    return [
        MakesFile(os.system, (f"touch '{marker}'",)),
        MakesFile(eval, (f"open({str(marker)!r}, 'w').close()",)),
        MakesFile(subprocess.call, (["touch", str(marker)],)),
        MakesFile(open, (str(marker), "w")),
    ]


def test_the_payloads_really_create_the_file(tmp_path):
    """Control: unpickled by plain pickle, each payload does create the file."""
    for i, payload in enumerate(evil_payloads(tmp_path / "marker")):
        (tmp_path / "marker").unlink(missing_ok=True)
        result = pickle.loads(pickle.dumps(payload))
        if hasattr(result, "close"):
            result.close()
        assert (tmp_path / "marker").exists(), f"payload {i}"


@pytest.mark.parametrize("index", range(4))
def test_malicious_plain_checkpoint_is_refused_and_nothing_runs(tmp_path, index):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "note": evil_payloads(marker)[index]}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused: the file asks to run or import"):
        load_foreign_checkpoint(path)
    assert not marker.exists()


def test_malicious_object_inside_a_model_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    raw = restricted_load(FIXTURES / "yolov8n.pt")
    raw["model"].state["_modules"]["model"].state["_modules"]["0"].state["hook"] = evil_payloads(marker)[0]
    save_as_foreign(raw, tmp_path / "evil_model.pt", monkeypatch)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        load_foreign_checkpoint(tmp_path / "evil_model.pt")
    assert not marker.exists()


def test_errors_are_checkpoint_errors():
    """The CLI prints all of them as one line; YOLO() callers can catch ValueError."""
    assert issubclass(UnsafeCheckpointError, CheckpointError) and issubclass(
        UnsafeCheckpointError, ValueError
    )
    assert issubclass(ForeignCheckpointError, CheckpointError)


def test_numpy_arrays_that_hold_their_data_still_load(tmp_path, monkeypatch):
    raw = restricted_load(FIXTURES / "yolo11n_nc2_last.pt")
    raw["train_args"]["anchors"] = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw["train_args"]["mixed"] = np.array([1, "a", None], dtype=object)
    path = tmp_path / "with_arrays.pt"
    save_as_foreign(raw, path, monkeypatch)
    state = restricted_load(path)["train_args"]
    assert np.array_equal(state["anchors"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert list(state["mixed"]) == [1, "a", None]
    assert load_foreign_checkpoint(path).train_args["anchors"]  # plain text of the array


def test_a_huge_nc_in_the_yaml_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    raw = restricted_load(FIXTURES / "yolov8n.pt")
    raw["model"].state["yaml"]["nc"] = 10**9  # names would be a list of a billion strings
    save_as_foreign(raw, tmp_path / "nc.pt", monkeypatch)
    with pytest.raises(ForeignCheckpointError, match=r"nc.pt: .*nc=1000000000\) expects"):
        load_foreign_checkpoint(tmp_path / "nc.pt")


def test_find_class_admits_tensors_containers_and_placeholders_only():
    unpickler = RestrictedUnpickler(io.BytesIO(b""))
    assert unpickler.find_class("__builtin__", "set") is set
    assert unpickler.find_class("torch", "float16") is torch.float16
    assert unpickler.find_class("torch._utils", "_rebuild_tensor_v2") is torch._utils._rebuild_tensor_v2
    placeholder = unpickler.find_class("ultralytics.nn.modules.conv", "Conv")
    assert issubclass(placeholder, ForeignObject)
    assert placeholder.foreign_class == "ultralytics.nn.modules.conv.Conv"
    assert unpickler.find_class("ultralytics.nn.modules.conv", "Conv") is placeholder
    for module, name in [("os", "system"), ("builtins", "eval"), ("builtins", "getattr"), ("torch", "load")]:
        with pytest.raises(UnsafeCheckpointError):
            unpickler.find_class(module, name)
    encode = unpickler.find_class("_codecs", "encode")
    assert encode("\xff", "latin1") == b"\xff"
    with pytest.raises(UnsafeCheckpointError):
        encode("x", "rot13")


def test_placeholders_keep_state_and_run_nothing():
    raw = restricted_load(FIXTURES / "yolov8n.pt")
    model = raw["model"]
    assert isinstance(model, ForeignObject)
    assert model.foreign_class == "ultralytics.nn.tasks.DetectionModel"
    assert model.state["yaml"]["yaml_file"] == "yolov8n.yaml"
    assert "ultralytics" not in sys.modules


# ---------------------------------------------------------------------------------------------
# transfer_state


def test_transfer_state_to_a_different_nc_skips_only_the_class_convs():
    """yolov8s's class branch is 128 channels wide for any nc <= 128: only its last conv changes."""
    ckpt = load_foreign_checkpoint(FIXTURES / "yolov8s_nc5.pt")
    model = build_model("yolov8", "s", nc=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    transferred, total = transfer_state(model, ckpt.state_dict)
    assert total == len(before)
    assert transferred == total - 6  # 3 levels x (weight, bias) of the final class conv
    for key, value in model.state_dict().items():
        if key.startswith("head.cls_branches.") and key.split(".")[3] == "2":
            assert torch.equal(value, before[key])
        else:
            assert torch.equal(value, ckpt.state_dict[key])


def test_transfer_state_when_the_class_branch_width_changes():
    """yolov8n's class branch is max(64, min(nc, 100)) wide: 80 at nc=80, 64 at nc=3 (as the reference)."""
    ckpt = load_foreign_checkpoint(FIXTURES / "yolov8n.pt")
    model = build_model("yolov8", "n", nc=3)
    transferred, total = transfer_state(model, ckpt.state_dict)
    same_shape = [
        k
        for k in model.state_dict()
        if not k.startswith("head.cls_branches.") or k.endswith("num_batches_tracked")
    ]
    assert transferred == len(same_shape)


def test_transfer_state_same_nc_copies_everything():
    ckpt = load_foreign_checkpoint(FIXTURES / "yolov8n.pt")
    model = build_model("yolov8", "n", nc=80)
    transferred, total = transfer_state(model, ckpt.state_dict)
    assert transferred == total == len(ckpt.state_dict)


# ---------------------------------------------------------------------------------------------
# fetch_published


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, length: int | None = None):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data) if length is None else length)}


def test_fetch_published_offline_is_one_clear_line(tmp_path):
    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    with pytest.raises(WeightsNotFoundError) as err:
        fetch_published("yolov8n.pt", tmp_path / "weights", timeout=0.1, opener=offline)
    message = str(err.value)
    assert "\n" not in message
    assert "yolov8n.pt" in message and str(tmp_path / "weights") in message and "yolov8n.yaml" in message
    assert list((tmp_path / "weights").iterdir()) == []  # no partial file left behind


def test_fetch_published_downloads_to_the_folder(tmp_path):
    calls = []

    published = (FIXTURES / "yolov8n.pt").read_bytes()  # what the release serves: a torch zip

    def opener(url, timeout):
        calls.append(url)
        return FakeResponse(published)

    path = fetch_published("yolo11s.pt", tmp_path, opener=opener)
    assert path == tmp_path / "yolo11s.pt" and path.read_bytes() == published
    assert calls == ["https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11s.pt"]
    assert fetch_published("yolo11s.pt", tmp_path, opener=opener) == path  # present: no second download
    assert len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yolo11s.pt"]


def test_fetch_published_truncated_download_leaves_nothing(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="incomplete download"):
        fetch_published("yolov8n.pt", tmp_path, opener=lambda url, timeout: FakeResponse(b"abc", length=10))
    assert list(tmp_path.iterdir()) == []


def test_fetch_published_refuses_what_is_not_a_checkpoint(tmp_path):
    """A proxy's or captive portal's page served with status 200 is not kept as yolov8n.pt."""
    page = b"<html><body>Please sign in to the network</body></html>"
    with pytest.raises(WeightsNotFoundError, match="what arrived is not a PyTorch checkpoint"):
        fetch_published("yolov8n.pt", tmp_path, opener=lambda url, timeout: FakeResponse(page))
    assert list(tmp_path.iterdir()) == []


def test_fetch_published_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="not a published model: use one of yolov8n.pt"):
        fetch_published("yolov9n.pt", tmp_path)


# ---------------------------------------------------------------------------------------------
# Helpers: write a checkpoint in the reference's pickle format without the reference installed.
# Placeholder trees (from restricted_load) are turned back into objects of classes named like the
# reference's, registered as stand-in modules for the duration of one test.


def save_as_foreign(obj, path: Path, monkeypatch) -> None:
    classes: dict[str, type] = {}

    def rebuild(value):
        if isinstance(value, ForeignObject):
            cls = classes.get(value.foreign_class) or stand_in_class(value.foreign_class, monkeypatch)
            classes[value.foreign_class] = cls
            instance = cls.__new__(cls)
            instance.__dict__.update(rebuild(value.state))
            return instance
        if isinstance(value, dict):
            return type(value)((k, rebuild(v)) for k, v in value.items())
        if isinstance(value, list):
            return [rebuild(v) for v in value]
        return value

    torch.save(rebuild(obj), path)


def stand_in_class(qualified: str, monkeypatch) -> type:
    module_name, name = qualified.rsplit(".", 1)
    if module_name.startswith("torch."):
        return getattr(importlib.import_module(module_name), name)  # the real torch.nn class
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix not in sys.modules:
            monkeypatch.setitem(sys.modules, prefix, types.ModuleType(prefix))
    module = sys.modules[module_name]
    if not hasattr(module, name):
        monkeypatch.setattr(module, name, type(name, (), {"__module__": module_name}), raising=False)
    return getattr(module, name)


def convert_floats(value, dtype: torch.dtype):
    if isinstance(value, ForeignObject):
        value.state = convert_floats(value.state, dtype)
        return value
    if isinstance(value, dict):
        return type(value)((k, convert_floats(v, dtype)) for k, v in value.items())
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return (
            torch.nn.Parameter(value.to(dtype), False)
            if isinstance(value, torch.nn.Parameter)
            else value.to(dtype)
        )
    return value


def retype(obj: ForeignObject, qualified: str) -> ForeignObject:
    """The same placeholder state under another reference class name."""
    cls = type(qualified.rsplit(".", 1)[-1], (ForeignObject,), {"foreign_class": qualified})
    clone = cls.__new__(cls)
    clone.state = obj.state
    return clone
