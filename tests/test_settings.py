"""Settings: types and ranges checked when they load."""

from __future__ import annotations

import math

import pytest

from yoloforge.settings import (
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


# ----------------------------------------------------------------------------------------------
# ranges


@pytest.mark.parametrize(
    "key, value, advice",
    [
        ("imgsz", "-5", "imgsz=-5 is not valid: use a positive image size in pixels, at least 32, e.g. 640"),
        ("imgsz", "16", "imgsz=16 is not valid: use a positive image size in pixels"),
        ("batch", "0", "batch=0 is not valid: use a positive number of images per batch, e.g. 16"),
        ("batch", "-3", "batch=-3 is not valid: use a positive number of images per batch, e.g. 16"),
        ("batch", "-1", "batch=-1 is not valid: use a positive number of images per batch"),
        ("batch", "0.5", "batch=0.5 is not valid: use a positive number of images per batch"),
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
