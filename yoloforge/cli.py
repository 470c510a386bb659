"""``yoloforge MODE key=value ...``: the command line users already type.

    yoloforge train data=config.yaml model=yolov8n.pt epochs=3 imgsz=640 batch=16 device=cpu
    yoloforge val model=runs/detect/train/weights/best.pt data=config.yaml
    yoloforge predict model=best.pt source=photos/
    yoloforge export model=best.pt format=onnx
    yoloforge benchmark model=best.pt data=config.yaml   # every export format: size, mAP50-95, ms/image
    yoloforge split export_folder out=dataset val=0.2
    yoloforge check data=config.yaml
    yoloforge doctor data=config.yaml [model=best.pt] [strict=True]   # is the data good enough?
    yoloforge convert coco annotations.json images/ out=dataset
    yoloforge convert voc VOCdevkit/VOC2012 out=dataset
    yoloforge settings device=cpu workers=2        # your own defaults; 'settings reset' removes them
    yoloforge strip runs/detect/train/weights/last.pt   # a small copy to ship: last-stripped.pt
    yoloforge report runs/detect/train             # report.html/.md/.json: what the run shows
    yoloforge report runs/detect/train runs/detect/train2   # two runs compared

Bad input ends with one line naming the key and what is valid, and exit code 2.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from yoloforge.doctor.settings import DoctorSettings
from yoloforge.settings import (
    BenchmarkSettings,
    ExportSettings,
    PredictSettings,
    SettingsError,
    TrainSettings,
    TuneSettings,
    ValSettings,
    build,
    help_lines,
)
from yoloforge.user_settings import defaults_for

log = logging.getLogger("yoloforge.cli")


class UsageError(ValueError):
    """Bad command line; printed as one line with exit code 2."""


@dataclass(frozen=True)
class Mode:
    run: Callable[[list[str], dict[str, str]], int]
    summary: str
    settings: type | None = None
    usage: str = ""


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `yoloforge train --help | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
        return 0


def _main(argv: list[str] | None) -> int:
    from yoloforge.console import setup_console

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_overview())
        return 0
    if argv[0] in ("version", "--version", "-V"):
        from yoloforge import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    modes = _modes()
    if name not in modes:
        return _fail(f"'{name}' is not a mode; choose one of {', '.join(modes)}")
    mode = modes[name]
    if any(a in ("-h", "--help", "help") for a in rest):
        print(_mode_help(name, mode))
        return 0
    setup_console()
    try:
        positional, pairs = _split_args(rest)
        return mode.run(positional, pairs)
    except (UsageError, SettingsError) as e:
        if os.environ.get("YOLOFORGE_DEBUG"):
            raise
        return _fail(str(e))
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if os.environ.get("YOLOFORGE_DEBUG"):
            raise
        print(f"Error: {e} (YOLOFORGE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def _fail(message: str) -> int:
    print(f"yoloforge: {message}", file=sys.stderr)
    return 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's files or machine: printed as one line, no traceback."""
    from yoloforge.checkpoint import CheckpointError
    from yoloforge.data.config import DatasetError
    from yoloforge.data.images import ImageReadError
    from yoloforge.device import DeviceError
    from yoloforge.loading import ModelSourceError
    from yoloforge.model.weights import UnsafeCheckpointError, WeightsNotFoundError
    from yoloforge.trainer import TrainingDiverged

    return (
        CheckpointError,
        DatasetError,
        ImageReadError,
        DeviceError,
        ModelSourceError,
        UnsafeCheckpointError,
        WeightsNotFoundError,
        TrainingDiverged,
        FileNotFoundError,
        ValueError,
        ImportError,  # an optional extra that is not installed: the message says what to install
    )


def _split_args(args: list[str]) -> tuple[list[str], dict[str, str]]:
    positional: list[str] = []
    pairs: dict[str, str] = {}
    for a in args:
        if "=" in a and not a.startswith("="):
            key, value = a.split("=", 1)
            key = key.strip().lstrip("-").replace("-", "_")
            if key in pairs:
                raise UsageError(f"'{key}' is given twice")
            pairs[key] = value
        elif a.startswith("--"):
            raise UsageError(f"'{a}': settings are written key=value (e.g. epochs=3), not --key value")
        else:
            positional.append(a)
    return positional, pairs


def _no_positional(mode: str, positional: list[str]) -> None:
    if positional:
        raise UsageError(f"{mode}: unexpected argument '{positional[0]}'; settings are written key=value")


# ----------------------------------------------------------------------------------------------
# modes


def _train(positional: list[str], pairs: dict[str, str]) -> int:
    from yoloforge.api import YOLO

    _no_positional("train", positional)
    settings = build(TrainSettings, pairs)  # every key and value checked before anything loads
    model = pairs.pop("model", TrainSettings.model)
    from yoloforge import launch

    yolo = YOLO(model)  # a model that cannot load is one line here, not one per process
    if launch.wants_processes(settings.device):  # device=0,1: torchrun runs this command per GPU
        return launch.train_in_processes(model, settings, pairs).returncode
    yolo.train(**pairs)
    return 0


def _checked_model(mode: str, settings: type, positional: list[str], pairs: dict[str, str]) -> str:
    """The model= path of a mode that needs one, taken out of ``pairs`` once the whole line is
    known to be valid (no positional words, every key and value accepted by ``settings``)."""
    _no_positional(mode, positional)
    build(settings, pairs)
    if not pairs.get("model"):
        raise UsageError(f"{mode}: model= is required, e.g. model=runs/detect/train/weights/best.pt")
    return pairs.pop("model")


def _val(positional: list[str], pairs: dict[str, str]) -> int:
    from yoloforge.api import YOLO

    YOLO(_checked_model("val", ValSettings, positional, pairs)).val(**pairs)
    return 0


def _predict(positional: list[str], pairs: dict[str, str]) -> int:
    from yoloforge.api import YOLO

    if "save" not in pairs and "save" not in defaults_for(PredictSettings):
        pairs["save"] = "True"  # the CLI's point is the saved pictures, unless the user stored save=False
    weights = _checked_model("predict", PredictSettings, positional, pairs)
    if not pairs.get("source"):
        raise UsageError("predict: source= is required (an image, folder, video, or 0 for the webcam)")
    model = YOLO(weights)
    for _ in model.predict(pairs.pop("source"), stream=True, **pairs):
        pass
    return 0


def _export(positional: list[str], pairs: dict[str, str]) -> int:
    from yoloforge.api import YOLO

    path = YOLO(_checked_model("export", ExportSettings, positional, pairs)).export(**pairs)
    log.info("Exported %s", path)
    return 0


def _benchmark(positional: list[str], pairs: dict[str, str]) -> int:
    from yoloforge.api import YOLO

    YOLO(_checked_model("benchmark", BenchmarkSettings, positional, pairs)).benchmark(**pairs)
    return 0


def _tune(positional: list[str], pairs: dict[str, str]) -> int:
    from yoloforge.api import YOLO

    _no_positional("tune", positional)
    model = pairs.pop("model", TrainSettings.model)
    YOLO(model).tune(**pairs)  # tune and train keys are checked before the first trial
    return 0


def _split(positional: list[str], pairs: dict[str, str]) -> int:
    from yoloforge.data.tools import split_dataset

    if len(positional) != 1:
        raise UsageError("split: give one source folder, e.g. yoloforge split export/ out=dataset val=0.2")
    opts = _typed(pairs, {"out": str, "val": float, "test": float, "seed": int}, "split")
    if "out" not in opts:
        raise UsageError("split: out= is required (a new folder for the split dataset)")
    config = split_dataset(positional[0], **opts)
    log.info("Wrote %s; train with: yoloforge train data=%s model=yolov8n.pt", config, config)
    return 0


def _check(positional: list[str], pairs: dict[str, str]) -> int:
    from yoloforge.data.tools import check_dataset

    if positional and "data" not in pairs:
        pairs["data"] = positional.pop(0)
    _no_positional("check", positional)
    opts = _typed(pairs, {"data": str}, "check")
    if "data" not in opts:
        raise UsageError("check: data= is required, e.g. data=config.yaml")
    report = check_dataset(opts["data"])
    return 0 if report.usable else 1


def _doctor(positional: list[str], pairs: dict[str, str]) -> int:
    from yoloforge.doctor import DoctorSettings, doctor

    if positional and "data" not in pairs:
        pairs["data"] = positional.pop(0)
    _no_positional("doctor", positional)
    settings = build(DoctorSettings, pairs)  # every key and value checked before anything loads
    if not settings.data:
        raise UsageError("doctor: data= is required, e.g. data=config.yaml")
    report = doctor(**pairs)
    return 1 if settings.strict and report.failed else 0


def _convert(positional: list[str], pairs: dict[str, str]) -> int:
    from yoloforge.data.tools import convert_coco, convert_voc

    opts = _typed(pairs, {"out": str}, "convert")
    if "out" not in opts:
        raise UsageError("convert: out= is required (a new folder for the YOLO dataset)")
    if positional[:1] == ["coco"] and len(positional) == 3:
        config = convert_coco(positional[1], positional[2], opts["out"])
    elif positional[:1] == ["voc"] and len(positional) == 2:
        config = convert_voc(positional[1], opts["out"])
    else:
        raise UsageError("convert: use 'convert coco JSON IMAGES out=DST' or 'convert voc DIR out=DST'")
    log.info("Wrote %s", config)
    return 0


def _settings(positional: list[str], pairs: dict[str, str]) -> int:
    from yoloforge import user_settings

    path = user_settings.settings_file()
    if positional == ["reset"] and not pairs:
        print(f"Removed {path}" if user_settings.reset() else f"No settings file to remove ({path})")
        return 0
    if positional:
        raise UsageError(f"settings: unexpected argument '{positional[0]}'; {_modes()['settings'].usage}")
    stored = user_settings.update(pairs) if pairs else user_settings.load()
    print(f"Settings file: {path}")
    if not stored:
        print("No defaults stored; set some with e.g. yoloforge settings device=cpu workers=2")
    modes = user_settings.storable_keys()
    for key, value in stored.items():
        print(f"  {key}: {value}  ({', '.join(modes[key])})")
    return 0


def _strip(positional: list[str], pairs: dict[str, str]) -> int:
    """Drop what only extending a run needs (optimizer, raw training weights); weights as float16."""
    import dataclasses

    import torch

    from yoloforge.checkpoint import load_checkpoint, save_checkpoint, state_to

    if len(positional) != 1:
        raise UsageError(f"strip: give one checkpoint, e.g. {_modes()['strip'].usage}")
    opts = _typed(pairs, {"out": str}, "strip")
    src = Path(positional[0])
    out = Path(str(opts.get("out") or src.with_name(f"{src.stem}-stripped{src.suffix}")))
    if out.is_dir():
        out = out / f"{src.stem}-stripped{src.suffix}"
    ckpt = load_checkpoint(src)
    before = src.stat().st_size
    small = dataclasses.replace(
        ckpt, model=state_to(ckpt.model, torch.float16), train_model=None, optimizer=None
    )
    save_checkpoint(small, out)  # atomic, so out= the input path strips it in place safely
    print(f"Stripped {src} ({_mb(before)}) -> {out} ({_mb(out.stat().st_size)})")
    return 0


def _report(positional: list[str], pairs: dict[str, str]) -> int:
    """One run folder: report.html/.md/.json in it; two: compare.html/.md/.json in the first."""
    from yoloforge.report import report_run
    from yoloforge.report.compare import compare_runs

    if len(positional) not in (1, 2):
        raise UsageError(f"report: give one or two run folders, e.g. {_modes()['report'].usage}")
    opts = _typed(pairs, {"val": boolean}, "report")
    validate = bool(opts.get("val", True))
    if len(positional) == 1:
        report_run(positional[0], validate=validate)
    else:
        compare_runs(positional[0], positional[1], validate=validate)
    return 0


def boolean(value: str) -> bool:
    """'True'/'False' (also 1/0, yes/no) as typed on the command line."""
    flags = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if value.lower() not in flags:
        raise ValueError(value)
    return flags[value.lower()]


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f}MB"


def _typed(pairs: dict[str, str], spec: dict[str, type], mode: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs.items():
        if key not in spec:
            raise UsageError(f"'{key}' is not a setting of {mode}; valid: {', '.join(spec)}")
        try:
            out[key] = spec[key](value)
        except ValueError:
            raise UsageError(f"{key}={value!r} is not valid: expected a {spec[key].__name__}") from None
    return out


def _modes() -> dict[str, Mode]:
    return {
        "train": Mode(_train, "train a detector", TrainSettings),
        "val": Mode(_val, "validate a model on a dataset split", ValSettings),
        "predict": Mode(_predict, "detect objects in images, videos, streams", PredictSettings),
        "export": Mode(_export, "export to ONNX, TorchScript or OpenVINO", ExportSettings),
        "benchmark": Mode(
            _benchmark, "every export format with its size, mAP50-95 and ms/image", BenchmarkSettings
        ),
        "tune": Mode(
            _tune, "search training hyperparameters (evolution; Ray Tune with tuner=ray)", TuneSettings
        ),
        "split": Mode(
            _split,
            "split an export into train/val(/test) with a config.yaml",
            None,
            "yoloforge split SRC out=DST val=0.2 test=0 seed=0",
        ),
        "check": Mode(
            _check, "check a dataset and name every problem", None, "yoloforge check data=config.yaml"
        ),
        "doctor": Mode(
            _doctor,
            "check a dataset against the guide's advice: counts, duplicates, leakage, label errors",
            DoctorSettings,
        ),
        "convert": Mode(
            _convert,
            "convert COCO json or Pascal VOC to the YOLO layout",
            None,
            "yoloforge convert coco JSON IMAGES out=DST | yoloforge convert voc DIR out=DST",
        ),
        "settings": Mode(
            _settings,
            "show or set your own defaults for every mode",
            None,
            "yoloforge settings [key=value ...] (key= removes one) | yoloforge settings reset",
        ),
        "report": Mode(
            _report,
            "what a run's numbers show and what to try next (report.html/.md/.json); two runs compared",
            None,
            "yoloforge report runs/detect/train [runs/detect/train2] [val=False: do not validate best.pt]",
        ),
        "strip": Mode(
            _strip,
            "write a small copy of a checkpoint without its optimizer state, in float16",
            None,
            "yoloforge strip runs/detect/train/weights/last.pt [out=PATH] (out= the input path: in place)",
        ),
    }


def _overview() -> str:
    lines = ["usage: yoloforge MODE key=value ...", "", "modes:"]
    lines += [f"  {name:<9} {mode.summary}" for name, mode in _modes().items()]
    lines += [
        "",
        "yoloforge MODE --help lists every setting of a mode with its default.",
        "example: yoloforge train data=config.yaml model=yolov8n.pt epochs=3 imgsz=640",
    ]
    return "\n".join(lines)


def _mode_help(name: str, mode: Mode) -> str:
    if name == "settings":
        return _settings_help(mode)
    if mode.settings is None:
        return f"usage: {mode.usage}\n\n{mode.summary}"
    head = [f"usage: yoloforge {name} key=value ...", "", f"{mode.summary}. Settings (default, meaning):"]
    if mode.settings is TuneSettings:
        head[-1] += " (and every train setting, passed to each trial; see yoloforge train --help)"
    try:
        user, note = defaults_for(mode.settings), []
    except SettingsError as e:  # help still works with a broken settings file, and says so
        user, note = {}, ["", f"Your stored defaults are not shown: {e}"]
    return "\n".join(head + help_lines(mode.settings, user) + note)


def _settings_help(mode: Mode) -> str:
    from yoloforge import user_settings

    lines = [f"usage: {mode.usage}", "", f"{mode.summary}, stored in {user_settings.settings_file()}."]
    lines += ["Keys that may be stored (and the modes they apply to):"]
    lines += [f"  {key:<16} {', '.join(modes)}" for key, modes in user_settings.storable_keys().items()]
    lines += ["", f"Given for each run instead: {', '.join(sorted(user_settings.PER_RUN))}."]
    return "\n".join(lines)
