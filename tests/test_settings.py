"""Settings: types and ranges checked when they load, the user's stored defaults, and the layer order
defaults < user file < fallbacks (checkpoint) < cfg= < explicit values."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest
import yaml

from yoloforge import user_settings
from yoloforge.settings import (
    AugmentSettings,
    Bounds,
    ExportSettings,
    PredictSettings,
    SettingsError,
    TrainSettings,
    ValSettings,
    build,
    coerce,
    flat_fields,
    help_lines,
)

MODES = (TrainSettings, ValSettings, PredictSettings, ExportSettings)


def store(values: dict) -> Path:
    """Write the user settings file by hand, as a user editing it would."""
    path = user_settings.settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values))
    return path


# ----------------------------------------------------------------------------------------------
# ranges


@pytest.mark.parametrize(
    "key, value, advice",
    [
        ("imgsz", "-5", "imgsz=-5 is not valid: use a positive image size in pixels, at least 32, e.g. 640"),
        ("imgsz", "16", "imgsz=16 is not valid: use a positive image size in pixels"),
        ("batch", "0", "batch=0 is not valid: use a positive number of images per batch, -1 (the"),
        ("batch", "-3", "batch=-3 is not valid: use a positive number of images per batch, -1 (the"),
        ("batch", "-2", "batch=-2 is not valid: use a positive number of images per batch, -1 (the"),
        ("batch", "1.5", "batch=1.5 is not valid: use a positive number of images per batch, -1 (the"),
        ("epochs", "0", "epochs=0 is not valid: use an integer >= 1, e.g. 100"),
        ("epochs", "-1", "epochs=-1 is not valid: use an integer >= 1"),
        ("epochs", "inf", "epochs=inf is not valid: use an integer >= 1"),
        ("epochs", "nan", "epochs=nan is not valid"),
        ("workers", "-1", "workers=-1 is not valid: use an integer >= 0"),
        ("patience", "-2", "patience=-2 is not valid: use an integer >= 0"),
        ("close_mosaic", "-1", "close_mosaic=-1 is not valid: use an integer >= 0"),
        ("freeze", "-1", "freeze=-1 is not valid: use an integer >= 0"),
        ("conf", "2", "conf=2 is not valid: use a number in [0, 1]"),
        ("conf", "-0.1", "conf=-0.1 is not valid: use a number in [0, 1]"),
        ("iou", "1.5", "iou=1.5 is not valid: use a number in [0, 1]"),
        ("max_det", "0", "max_det=0 is not valid: use an integer >= 1"),
        ("fraction", "0", "fraction=0 is not valid: use a number in (0, 1]"),
        ("fraction", "1.1", "fraction=1.1 is not valid: use a number in (0, 1]"),
        ("lr0", "0", "lr0=0 is not valid: use a number > 0"),
        ("lr0", "nan", "lr0=nan is not valid: use a number > 0"),
        ("lr0", "inf", "lr0=inf is not valid: use a number > 0"),
        ("lrf", "-0.01", "lrf=-0.01 is not valid: use a number > 0"),
        ("momentum", "1", "momentum=1 is not valid: use a number in [0, 1)"),
        ("weight_decay", "-1e-4", "weight_decay=-1e-4 is not valid: use a number >= 0"),
        ("warmup_epochs", "-1", "warmup_epochs=-1 is not valid: use a number >= 0"),
        ("warmup_momentum", "1.2", "warmup_momentum=1.2 is not valid: use a number in [0, 1]"),
        ("hsv_h", "2", "hsv_h=2 is not valid: use a number in [0, 1]"),
        ("hsv_s", "-1", "hsv_s=-1 is not valid"),
        ("hsv_v", "1.5", "hsv_v=1.5 is not valid"),
        ("translate", "1.5", "translate=1.5 is not valid"),
        ("scale", "-0.5", "scale=-0.5 is not valid"),
        ("perspective", "2", "perspective=2 is not valid"),
        ("flipud", "1.5", "flipud=1.5 is not valid: use a number in [0, 1]"),
        ("fliplr", "-0.5", "fliplr=-0.5 is not valid"),
        ("mosaic", "2", "mosaic=2 is not valid"),
        ("mixup", "-1", "mixup=-1 is not valid"),
        ("degrees", "-10", "degrees=-10 is not valid: use a number in [0, 180]"),
        ("shear", "-1", "shear=-1 is not valid"),
        ("box", "-1", "box=-1 is not valid: use a number >= 0"),
        ("cls", "-1", "cls=-1 is not valid"),
        ("dfl", "-1", "dfl=-1 is not valid"),
        ("nbs", "0", "nbs=0 is not valid: use an integer >= 1"),
        ("save_period", "0", "save_period=0 is not valid: use -1 (off) or an integer >= 1"),
        ("save_period", "-2", "save_period=-2 is not valid"),
        ("seed", "-1", "seed=-1 is not valid: use an integer in [0, 4294967295]"),
        ("epochs", "abc", "epochs=abc is not valid: use an integer >= 1"),
        ("amp", "maybe", "amp=maybe is not valid: expected true or false"),
        ("optimizer", "rmsprop", "optimizer=rmsprop is not valid: choose one of auto, SGD, Adam, AdamW"),
    ],
)
def test_train_rejects_each_bad_value_with_one_line(key: str, value: str, advice: str):
    with pytest.raises(SettingsError) as info:
        build(TrainSettings, {key: value})
    message = str(info.value)
    assert message.startswith(advice)
    assert "\n" not in message


@pytest.mark.parametrize(
    "cls, key, value",
    [
        (ValSettings, "imgsz", "-5"),
        (ValSettings, "batch", "0"),
        (ValSettings, "conf", "2"),
        (ValSettings, "workers", "-1"),
        (PredictSettings, "imgsz", "-5"),
        (PredictSettings, "batch", "-3"),
        (PredictSettings, "conf", "2"),
        (PredictSettings, "vid_stride", "0"),
        (PredictSettings, "line_width", "-1"),
        (PredictSettings, "max_det", "0"),
        (ExportSettings, "imgsz", "0"),
        (ExportSettings, "batch", "0"),
        (ExportSettings, "opset", "-1"),
    ],
)
def test_every_mode_checks_ranges(cls: type, key: str, value: str):
    with pytest.raises(SettingsError, match=rf"^{key}={value} is not valid: use "):
        build(cls, {key: value})


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("conf", "0", 0.0),
        ("conf", "1", 1.0),
        ("fraction", "1", 1.0),
        ("momentum", "0", 0.0),
        ("save_period", "-1", -1),
        ("save_period", "1", 1),
        ("workers", "0", 0),
        ("imgsz", "32", 32),
        ("batch", "1", 1),
        ("batch", "-1", -1),  # autobatch (CUDA)
        ("batch", "0.8", 0.8),  # a fraction of the GPU memory (CUDA)
        ("batch", "16.0", 16),
        ("epochs", "1e2", 100),
        ("seed", str(2**32 - 1), 2**32 - 1),
    ],
)
def test_edges_of_each_range_are_valid(key: str, value: str, expected):
    _, owner, _ = flat_fields(TrainSettings)[key]
    assert coerce(key, value, owner) == expected


def test_every_numeric_setting_has_a_range_that_holds_its_default():
    for cls in MODES:
        for key, (f, owner, _) in flat_fields(cls).items():
            typ = owner.__dataclass_fields__[key].type
            if typ in ("int", "float"):
                bounds = f.metadata.get("bounds")
                assert isinstance(bounds, Bounds), f"{cls.__name__}.{key} has no bounds"
                assert bounds.contains(f.default), f"{cls.__name__}.{key} default {f.default}"
                assert coerce(key, f.default, owner) == f.default


def test_python_values_are_checked_like_strings():
    with pytest.raises(SettingsError, match=r"^lr0=nan is not valid"):
        build(TrainSettings, {"lr0": math.nan})
    with pytest.raises(SettingsError, match=r"^imgsz=-5 is not valid"):
        build(PredictSettings, {"imgsz": -5})
    with pytest.raises(SettingsError, match=r"^epochs=True is not valid"):
        build(TrainSettings, {"epochs": True})


def test_coerce_types():
    train = build(
        TrainSettings,
        {"epochs": "3.0", "amp": "no", "val": "1", "cache": "True", "optimizer": "adamw", "lr0": "1e-3"},
    )
    assert (train.epochs, train.amp, train.val, train.cache) == (3, False, True, "ram")
    assert train.optim.optimizer == "AdamW" and train.optim.lr0 == pytest.approx(1e-3)
    assert build(PredictSettings, {"classes": "0,2"}).classes == (0, 2)
    assert build(PredictSettings, {"classes": ""}).classes is None
    assert build(TrainSettings, {"device": 0}).device == "0"
    with pytest.raises(SettingsError, match=r"^epochs=2.5 is not valid"):
        build(TrainSettings, {"epochs": "2.5"})


def test_help_lines_show_each_range():
    lines = {line.split()[0]: line for line in help_lines(TrainSettings)}
    assert lines["conf"].endswith("(in [0, 1])")
    assert lines["epochs"].endswith("(>= 1)")
    assert lines["fraction"].endswith("(in (0, 1])")
    assert lines["save_period"].endswith("(-1 or >= 1)")
    assert len(lines) == len(flat_fields(TrainSettings))


# ----------------------------------------------------------------------------------------------
# layers


def test_layers_defaults_user_file_fallbacks_cfg_explicit(tmp_path: Path):
    assert build(ValSettings).imgsz == 640  # built-in default

    store({"imgsz": 320, "workers": 3})
    assert build(ValSettings).imgsz == 320  # user file over the default

    fallbacks = {"imgsz": 416, "data": "remembered.yaml"}
    assert build(ValSettings, fallbacks=fallbacks).imgsz == 416  # checkpoint over the user file

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("imgsz: 512\n")
    assert build(ValSettings, {"cfg": str(cfg)}, fallbacks).imgsz == 512  # cfg over the checkpoint

    s = build(ValSettings, {"cfg": str(cfg), "imgsz": "608"}, fallbacks)
    assert s.imgsz == 608  # explicit over everything
    assert s.workers == 3 and s.data == "remembered.yaml"  # lower layers still fill the rest


def test_a_remembered_value_that_is_not_valid_is_only_a_hint():
    store({"imgsz": 320})
    fallbacks = {"imgsz": [640, 480], "batch": -1, "data": "d.yaml", "epochs": 30}  # another trainer's
    s = build(ValSettings, {}, fallbacks)
    assert (s.imgsz, s.batch, s.data) == (320, 16, "d.yaml")
    with pytest.raises(SettingsError, match=r"^batch=-1 is not valid"):
        build(ValSettings, {"batch": -1}, fallbacks)  # what the user writes is checked


def test_user_file_applies_only_keys_the_mode_has():
    store({"device": "cpu", "workers": 2, "save_txt": True, "hsv_h": 0.02, "conf": 0.4, "batch": 8})
    train = build(TrainSettings)
    assert (train.device, train.workers, train.augment.hsv_h, train.batch) == ("cpu", 2, 0.02, 8)
    assert train.conf == 0.001  # conf is the prediction threshold only: validation needs 0.001
    val = build(ValSettings)
    assert (val.device, val.conf, val.batch) == ("cpu", 0.001, 8)
    predict = build(PredictSettings)
    assert (predict.device, predict.save_txt, predict.conf, predict.batch) == ("cpu", True, 0.4, 1)
    export = build(ExportSettings)
    assert (export.device, export.batch) == ("cpu", 1)  # an exported model's batch is its own
    assert build(AugmentSettings).hsv_h == 0.015  # not a mode: the file does not apply


def test_nothing_is_cached_between_calls():
    assert build(TrainSettings).workers == 8
    path = store({"workers": 1})
    assert build(TrainSettings).workers == 1
    store({"workers": 5})
    assert build(TrainSettings).workers == 5
    path.unlink()
    assert build(TrainSettings).workers == 8


@pytest.mark.parametrize(
    "text, why",
    [
        ("workers: [1,\n", "is not valid YAML"),
        ("- workers\n- 2\n", "is not a mapping of key: value"),
        ("workers: -1\n", "workers=-1 is not valid: use an integer >= 0"),
        ("wokers: 2\n", "'wokers' is not a valid setting. Did you mean workers"),  # (or loggers?)
        ("model: yolov8s.pt\n", "'model' cannot be a stored default"),
        ("lr0: .nan\n", "lr0=nan is not valid"),
    ],
)
def test_a_bad_settings_file_is_named_in_one_line(text: str, why: str):
    path = user_settings.settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    for cls in (TrainSettings, PredictSettings):
        with pytest.raises(SettingsError) as info:
            build(cls, {"epochs": "3"} if cls is TrainSettings else {})
        message = str(info.value)
        assert message.startswith(f"{path}: ") and why in message
        assert message.endswith("fix the file or run 'yoloforge settings reset'")
        assert "\n" not in message


# ----------------------------------------------------------------------------------------------
# the user settings file


def test_update_checks_everything_before_writing():
    path = user_settings.settings_file()
    with pytest.raises(SettingsError, match=r"^workers=-1 is not valid"):
        user_settings.update({"device": "cpu", "workers": "-1"})
    assert not path.exists()
    for bad in ({"source": "photos/"}, {"data": "x.yaml"}, {"wokers": "2"}, {"resume": ""}):
        with pytest.raises(SettingsError):
            user_settings.update(bad)
    assert not path.exists()

    assert user_settings.update({"device": "cpu", "workers": "2", "amp": "false"}) == {
        "device": "cpu",
        "workers": 2,
        "amp": False,
    }
    assert yaml.safe_load(path.read_text()) == {"device": "cpu", "workers": 2, "amp": False}
    assert not list(path.parent.glob(".*.tmp"))  # the temp file of the atomic write is gone

    assert user_settings.update({"workers": ""}) == {"device": "cpu", "amp": False}  # key= removes
    assert user_settings.update({"device": "0,1"}) == {"device": "0,1", "amp": False}
    assert build(TrainSettings).device == "0,1"  # stored as a string, read back as one
    assert user_settings.reset() and not path.exists()
    assert not user_settings.reset()


def test_removing_the_last_key_removes_the_file():
    user_settings.update({"device": "cpu"})
    user_settings.update({"device": ""})
    assert not user_settings.settings_file().exists()


def test_storable_keys_leave_out_per_run_ones():
    keys = user_settings.storable_keys()
    assert not set(keys) & user_settings.PER_RUN
    assert keys["device"] == ["train", "val", "predict", "export"]
    assert keys["conf"] == ["predict"] and keys["batch"] == ["train", "val"]
    assert keys["lr0"] == ["train"] and keys["format"] == ["export"]


def test_config_dir_per_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("YOLOFORGE_CONFIG_DIR", str(tmp_path / "mine"))
    assert user_settings.settings_file() == tmp_path / "mine" / "settings.yaml"

    monkeypatch.delenv("YOLOFORGE_CONFIG_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert user_settings.config_dir() == tmp_path / "xdg" / "yoloforge"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert user_settings.config_dir() == tmp_path / "home" / ".config" / "yoloforge"

    monkeypatch.setattr(sys, "platform", "darwin")
    assert user_settings.config_dir() == tmp_path / "home" / "Library" / "Application Support" / "yoloforge"

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("APPDATA", str(tmp_path / "appdata"))
    assert user_settings.config_dir() == tmp_path / "appdata" / "yoloforge"


def test_settings_dataclasses_stay_frozen():
    s = build(TrainSettings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.epochs = 3  # type: ignore[misc]
