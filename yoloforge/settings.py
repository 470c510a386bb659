"""Every setting and its default, in one place.

Settings are frozen dataclasses grouped by the stage that reads them (augmentation, optimizer,
loss, ...), so each stage takes only the narrowest group it needs. Field names are unique across
groups, so users set them flat, as they know them: ``yoloforge train epochs=3 lr0=0.02`` or
``YOLO(...).train(epochs=3, lr0=0.02)``. ``cfg=file.yaml`` supplies overrides from a file.

Defaults follow the reference trainer's documented defaults, which users' tutorials rely on.
Numeric settings carry their valid range (``low``/``high`` below), checked in ``coerce`` when
settings load, so ``imgsz=-5`` or ``batch=0`` stops with one line in every mode, not a traceback
later. Users may store their own defaults with ``yoloforge settings`` (see ``user_settings``);
``build`` applies them as the lowest layer above the defaults here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml


class SettingsError(ValueError):
    """A setting that does not exist or has a bad value. The message names the key."""


@dataclass(frozen=True)
class Bounds:
    """The valid range of a numeric setting: ``low``/``high`` inclusive unless ``*_open``; values in
    ``also`` are valid too (e.g. save_period=-1 for off). ``valid`` replaces the generated advice."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple[float, ...] = ()
    valid: str = ""

    def contains(self, x: float) -> bool:
        if x in self.also:
            return True
        if not math.isfinite(x):
            return False
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or (x < self.high if self.high_open else x <= self.high)

    def describe(self) -> str:
        """'>= 1', '> 0', 'in [0, 1]', 'in (0, 1]', '-1 or >= 1'."""
        low, high = _number(self.low), _number(self.high)
        also = "".join(f"{_number(x)} or " for x in self.also)
        if self.low is not None and self.high is not None:
            return f"{also}in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{also}{'>' if self.low_open else '>='} {low}"
        return f"{also}{'<' if self.high_open else '<='} {high}"


def _number(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else f"{x}"


_UNIT = Bounds(0, 1)  # fractions and probabilities
_NONNEG = Bounds(low=0)
_POSITIVE = Bounds(low=0, low_open=True)
_AT_LEAST_1 = Bounds(low=1)
_IMGSZ = Bounds(low=32, valid="use a positive image size in pixels, at least 32")
_BATCH = Bounds(low=1, valid="use a positive number of images per batch")
# training also sizes its batch from the GPU's memory (autobatch.py): -1 or a fraction in (0, 1)
_TRAIN_BATCH = Bounds(
    low=1,
    also=(-1,),
    valid="use a positive number of images per batch, -1 (the largest that fits 60% of the GPU memory) "
    "or a fraction of the GPU memory in (0, 1)",
)
LOGGERS = ("tensorboard", "mlflow")  # loggers=: yoloforge/loggers/ has one module each


def _s(default: Any, help: str, choices: tuple | None = None, bounds: Bounds | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices, "bounds": bounds})


@dataclass(frozen=True)
class AugmentSettings:
    hsv_h: float = _s(0.015, "hue augmentation (fraction of the hue circle)", bounds=_UNIT)
    hsv_s: float = _s(0.7, "saturation augmentation (fraction)", bounds=_UNIT)
    hsv_v: float = _s(0.4, "value/brightness augmentation (fraction)", bounds=_UNIT)
    degrees: float = _s(0.0, "rotation (+/- degrees)", bounds=Bounds(0, 180))
    translate: float = _s(0.1, "translation (+/- fraction of the image)", bounds=_UNIT)
    scale: float = _s(0.5, "scale gain (+/- fraction)", bounds=_UNIT)
    shear: float = _s(0.0, "shear (+/- degrees)", bounds=Bounds(0, 90, high_open=True))
    perspective: float = _s(0.0, "perspective (+/- fraction), usually 0 to 0.001", bounds=_UNIT)
    flipud: float = _s(0.0, "probability of flipping up-down", bounds=_UNIT)
    fliplr: float = _s(0.5, "probability of flipping left-right", bounds=_UNIT)
    mosaic: float = _s(1.0, "probability of a 4-image mosaic", bounds=_UNIT)
    mixup: float = _s(0.0, "probability of mixup", bounds=_UNIT)
    close_mosaic: int = _s(10, "turn mosaic off for the last N epochs (0 keeps it on)", bounds=_NONNEG)


@dataclass(frozen=True)
class OptimSettings:
    optimizer: str = _s(
        "auto", "optimizer; auto picks AdamW or SGD by run length", ("auto", "SGD", "Adam", "AdamW")
    )
    lr0: float = _s(0.01, "initial learning rate (ignored by optimizer=auto)", bounds=_POSITIVE)
    lrf: float = _s(0.01, "final learning rate as a fraction of lr0", bounds=_POSITIVE)
    momentum: float = _s(
        0.937, "SGD momentum / Adam beta1 (ignored by optimizer=auto)", bounds=Bounds(0, 1, high_open=True)
    )
    weight_decay: float = _s(0.0005, "weight decay (scaled with the batch size)", bounds=_NONNEG)
    warmup_epochs: float = _s(3.0, "warmup epochs (fractions allowed)", bounds=_NONNEG)
    warmup_momentum: float = _s(0.8, "momentum at the start of warmup", bounds=_UNIT)
    warmup_bias_lr: float = _s(0.1, "bias learning rate at the start of warmup", bounds=_NONNEG)
    cos_lr: bool = _s(False, "cosine learning-rate decay instead of linear")
    nbs: int = _s(
        64, "nominal batch size: gradients are accumulated to about this many images", bounds=_AT_LEAST_1
    )


@dataclass(frozen=True)
class LossSettings:
    box: float = _s(7.5, "box (CIoU) loss gain", bounds=_NONNEG)
    cls: float = _s(0.5, "classification (BCE) loss gain", bounds=_NONNEG)
    dfl: float = _s(1.5, "distribution focal loss gain", bounds=_NONNEG)


@dataclass(frozen=True)
class TrainSettings:
    model: str = _s("yolov8n.pt", "model: a .pt checkpoint, or a name like yolov8n.yaml / yolo11s to build")
    data: str = _s("", "dataset config yaml (or 'shapes' for the built-in demo data)")
    epochs: int = _s(100, "number of epochs", bounds=_AT_LEAST_1)
    batch: int | float = _s(
        16,
        "images per batch over all processes; -1: the largest that fits 60% of the GPU memory, "
        "0.7: the largest that fits that fraction (CUDA only)",
        bounds=_TRAIN_BATCH,
    )
    imgsz: int = _s(640, "training image size (pixels, a multiple of 32)", bounds=_IMGSZ)
    device: str = _s("", "cpu, 0, '0,1' or mps; empty = first GPU if there is one, else cpu")
    workers: int = _s(8, "data loader worker processes (capped by the CPU count)", bounds=_NONNEG)
    patience: int = _s(100, "stop early after this many epochs without fitness improvement", bounds=_NONNEG)
    cache: str = _s("", "cache decoded images: '' (no), ram", ("", "ram", "False", "True"))
    project: str = _s("runs/detect", "parent folder of the run folder")
    name: str = _s("train", "run folder name (train, train2, ... when it exists)")
    exist_ok: bool = _s(False, "reuse an existing run folder")
    pretrained: bool = _s(True, "start from the checkpoint's weights when model is a .pt")
    freeze: int = _s(0, "freeze the first N layers", bounds=_NONNEG)
    val: bool = _s(True, "validate after every epoch")
    plots: bool = _s(True, "save plots")
    report: bool = _s(True, "write report.html/.md/.json at the end and print what the run shows")
    loggers: tuple[str, ...] = _s(
        (), f"experiment trackers besides the run folder, comma-separated: {', '.join(LOGGERS)}"
    )
    save_period: int = _s(
        -1,
        "also save weights every N epochs (-1: off)",
        bounds=Bounds(low=1, also=(-1,), valid="use -1 (off) or an integer >= 1"),
    )
    fraction: float = _s(1.0, "fraction of the training images to use", bounds=Bounds(0, 1, low_open=True))
    seed: int = _s(0, "random seed", bounds=Bounds(0, 2**32 - 1))
    deterministic: bool = _s(True, "deterministic algorithms where torch offers them")
    resume: bool = _s(False, "resume the interrupted run of this last.pt")
    amp: bool = _s(True, "mixed precision: float16 on CUDA, bfloat16 on CPUs with native bf16")
    sync_bn: bool = _s(
        False, "several CUDA processes: BatchNorm statistics over the global batch (SyncBatchNorm)"
    )
    rect: bool = _s(False, "rectangular training batches (turns mosaic off)")
    single_cls: bool = _s(False, "train as one class")
    verbose: bool = _s(True, "print per-class validation tables")
    conf: float = _s(0.001, "confidence threshold of the per-epoch validation", bounds=_UNIT)
    iou: float = _s(0.7, "NMS IoU threshold of the per-epoch validation", bounds=_UNIT)
    max_det: int = _s(300, "maximum detections per image in validation", bounds=_AT_LEAST_1)
    cfg: str = _s("", "yaml file of settings overriding these defaults")
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    loss: LossSettings = field(default_factory=LossSettings)


@dataclass(frozen=True)
class ValSettings:
    model: str = _s("", "checkpoint to validate")
    data: str = _s("", "dataset config yaml (or 'shapes')")
    split: str = _s("val", "dataset split to validate", ("val", "test", "train"))
    imgsz: int = _s(640, "image size (pixels)", bounds=_IMGSZ)
    batch: int = _s(16, "images per batch", bounds=_BATCH)
    device: str = _s("", "cpu, 0 or mps; empty = first GPU if there is one, else cpu")
    workers: int = _s(8, "data loader worker processes", bounds=_NONNEG)
    conf: float = _s(0.001, "confidence threshold", bounds=_UNIT)
    iou: float = _s(0.7, "NMS IoU threshold", bounds=_UNIT)
    max_det: int = _s(300, "maximum detections per image", bounds=_AT_LEAST_1)
    half: bool = _s(False, "half precision (CUDA only)")
    save_json: bool = _s(False, "write predictions.json in the COCO results format")
    plots: bool = _s(True, "save plots")
    verbose: bool = _s(True, "print the per-class table")
    single_cls: bool = _s(False, "treat every class as one")
    project: str = _s("runs/detect", "parent folder of the run folder")
    name: str = _s("val", "run folder name")
    exist_ok: bool = _s(False, "reuse an existing run folder")
    cfg: str = _s("", "yaml file of settings overriding these defaults")


@dataclass(frozen=True)
class PredictSettings:
    model: str = _s("", "checkpoint (.pt), .onnx or .torchscript file, or OpenVINO folder")
    source: str = _s("", "image, folder, glob, video, webcam index (0), URL or stream")
    conf: float = _s(0.25, "confidence threshold", bounds=_UNIT)
    iou: float = _s(0.7, "NMS IoU threshold", bounds=_UNIT)
    imgsz: int = _s(640, "image size (pixels)", bounds=_IMGSZ)
    max_det: int = _s(300, "maximum detections per image", bounds=_AT_LEAST_1)
    classes: tuple[int, ...] | None = _s(None, "keep only these class ids, e.g. classes=0,2")
    agnostic_nms: bool = _s(False, "class-agnostic NMS")
    device: str = _s("", "cpu, 0 or mps; empty = first GPU if there is one, else cpu")
    half: bool = _s(False, "float16 on CUDA; bfloat16 on CPUs with native bf16 (boxes move ~1 px)")
    batch: int = _s(1, "images per batch", bounds=_BATCH)
    stream: bool = _s(False, "yield results one by one (Python API)")
    vid_stride: int = _s(1, "use every Nth video frame", bounds=_AT_LEAST_1)
    save: bool = _s(False, "save annotated images/videos (the CLI saves by default)")
    save_txt: bool = _s(False, "save YOLO-format label files")
    save_conf: bool = _s(False, "add the confidence to saved label lines")
    show: bool = _s(False, "show results in a window")
    line_width: int = _s(0, "box line width (0: from the image size)", bounds=_NONNEG)
    project: str = _s("runs/detect", "parent folder of the run folder")
    name: str = _s("predict", "run folder name")
    exist_ok: bool = _s(False, "reuse an existing run folder")
    verbose: bool = _s(True, "print a line per image")
    cfg: str = _s("", "yaml file of settings overriding these defaults")


@dataclass(frozen=True)
class ExportSettings:
    model: str = _s("", "checkpoint to export")
    format: str = _s("onnx", "export format", ("onnx", "torchscript", "openvino"))
    imgsz: int = _s(640, "input image size (pixels)", bounds=_IMGSZ)
    dynamic: bool = _s(
        True, "dynamic batch and image size: predicts the same boxes as PyTorch (False: fixed shape)"
    )
    half: bool = _s(False, "half precision (CUDA only)")
    opset: int = _s(0, "ONNX opset (0: a recent one the installed onnx supports)", bounds=_NONNEG)
    batch: int = _s(1, "batch size of the exported model", bounds=_BATCH)
    device: str = _s("", "device used while exporting")
    cfg: str = _s("", "yaml file of settings overriding these defaults")


@dataclass(frozen=True)
class BenchmarkSettings:
    model: str = _s("", "checkpoint to export and measure")
    data: str = _s("", "dataset config yaml whose val split gives mAP50-95 (or 'shapes')")
    imgsz: int = _s(640, "image size (pixels)", bounds=_IMGSZ)
    device: str = _s("", "cpu, 0 or mps; empty = first GPU if there is one, else cpu")
    formats: str = _s("", "formats to measure, e.g. formats=onnx,openvino (empty: all)")
    workers: int = _s(0, "data loader worker processes", bounds=_NONNEG)
    project: str = _s("runs/detect", "parent folder of the benchmark folder")
    name: str = _s("benchmark", "benchmark folder name (benchmark2, ... when it exists)")
    cfg: str = _s("", "yaml file of settings overriding these defaults")


@dataclass(frozen=True)
class TuneSettings:
    """The search itself; every other key of ``yoloforge tune`` is a train setting for every trial."""

    iterations: int = _s(300, "trials to run (with resume=True: the new total)", bounds=_AT_LEAST_1)
    space: str = _s("", "yaml of name: [low, high] to search (default: 22 training hyperparameters)")
    fitness: str = _s("", "weights of P, R, mAP50, mAP50-95 (default 0,0,0.1,0.9)")
    tuner: str = _s(
        "evolve", "evolve: genetic search here; ray: Ray Tune trials with ASHA", ("evolve", "ray")
    )
    ray_address: str = _s("", "Ray cluster to use (auto, ray://host:10001); empty starts a local one")
    cpu_per_trial: float = _s(1.0, "CPUs per Ray trial", bounds=_POSITIVE)
    gpu_per_trial: float = _s(0.0, "GPUs per Ray trial", bounds=_NONNEG)
    grace_period: int = _s(1, "epochs every Ray trial runs before ASHA may stop it", bounds=_AT_LEAST_1)
    keep_weights: bool = _s(False, "keep every trial's weights (default: the best trial's only)")
    plots: bool = _s(True, "tune_fitness.png and tune_scatter_plots.png")
    project: str = _s("runs/detect", "parent folder of the tune folder")
    name: str = _s("tune", "tune folder name (tune, tune2, ... when it exists)")
    resume: bool = _s(False, "continue the search in the latest tune folder (or name=)")


# ----------------------------------------------------------------------------------------------
# flat access: the CLI and the Python API name every setting by its field name


def _is_group(f: dataclasses.Field) -> bool:
    factory = f.default_factory
    return factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory)


def flat_fields(cls: type) -> dict[str, tuple[dataclasses.Field, type, str | None]]:
    """Map every user-facing key to (field, owning dataclass, group attribute or None)."""
    out: dict[str, tuple[dataclasses.Field, type, str | None]] = {}
    for f in fields(cls):
        if _is_group(f):
            for g in fields(f.default_factory):
                out[g.name] = (g, f.default_factory, f.name)
        else:
            out[f.name] = (f, cls, None)
    return out


def _type_of(owner: type, name: str) -> Any:
    return _type_hints(owner)[name]


@functools.cache
def _type_hints(owner: type) -> dict[str, Any]:
    """The resolved annotations of a settings class (they are strings under ``from __future__ import
    annotations``): resolving them compiles each one, 5 ms per ``predict()`` call before this cache."""
    return get_type_hints(owner)


def coerce(key: str, value: Any, owner: type) -> Any:
    """Turn a CLI string or a Python value into the setting's type and check its range;
    SettingsError names the key, the value and what is valid."""
    if key == "loggers":
        return parse_loggers(value)
    typ = _type_of(owner, key)
    f = {x.name: x for x in fields(owner)}[key]
    choices = f.metadata.get("choices")
    bounds: Bounds | None = f.metadata.get("bounds")
    try:
        out = _train_batch(value) if bounds is _TRAIN_BATCH else _convert(key, value, typ)
    except (TypeError, ValueError, OverflowError):
        raise SettingsError(_invalid(key, value, typ, f)) from None
    fraction = bounds is _TRAIN_BATCH and isinstance(out, float)  # in (0, 1): checked by _train_batch
    if bounds is not None and not fraction and not bounds.contains(out):
        raise SettingsError(_invalid(key, value, typ, f))
    if key == "cache":  # users also write cache=True / cache=False
        out = {"true": "ram", "false": "", "ram": "ram", "": ""}.get(out.lower(), out)
    if choices and isinstance(out, str):  # case-insensitive choices, stored as spelled here
        out = {str(c).lower(): c for c in choices}.get(out.lower(), out)
    if choices and out not in choices:
        shown = ", ".join(repr(c) if c == "" else str(c) for c in choices if c not in ("False", "True"))
        raise SettingsError(f"{key}={_shown(value)} is not valid: choose one of {shown}")
    return out


def _convert(key: str, value: Any, typ: Any) -> Any:
    """The value as ``typ``; TypeError, ValueError or OverflowError when it is not one."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", ""):
            return False
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise ValueError
    if typ is int:
        if isinstance(value, bool):
            raise ValueError
        out = int(value) if isinstance(value, int) else int(float(str(value)))  # inf: OverflowError
        if float(str(value)) != out:  # 2.5 is not an integer
            raise ValueError
        return out
    if typ is float:
        if isinstance(value, bool):
            raise ValueError
        out = float(value)
        if not math.isfinite(out):  # nan or inf
            raise ValueError
        return out
    if typ is str:
        return "" if value is None else str(value)
    if key == "classes":
        return _parse_int_tuple(value)
    return value  # pragma: no cover - every field type is listed above


def _train_batch(value: Any) -> int | float:
    """Training's batch: a whole number of images (int; the range is checked after), or a
    fraction of the GPU memory in (0, 1) (float); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError
    out = float(value) if isinstance(value, int | float) else float(str(value))
    if out.is_integer():
        return int(out)
    if 0 < out < 1:
        return out
    raise ValueError


def _shown(value: Any) -> str:
    """The value as the user wrote it: imgsz=-5, not imgsz='-5'; '' and 'a\\nb' keep quotes (one line)."""
    return value if isinstance(value, str) and value.strip() and value.isprintable() else repr(value)


def _invalid(key: str, value: Any, typ: Any, f: dataclasses.Field) -> str:
    bounds: Bounds | None = f.metadata.get("bounds")
    if bounds is None:
        kind = {bool: "true or false", int: "an integer", float: "a number"}.get(typ, "a value")
        return f"{key}={_shown(value)} is not valid: expected {kind}"
    advice = bounds.valid or f"use {'an integer' if typ is int else 'a number'} {bounds.describe()}"
    example = "" if f.default in bounds.also else f", e.g. {f.default}"
    return f"{key}={_shown(value)} is not valid: {advice}{example}"


def parse_loggers(value: Any) -> tuple[str, ...]:
    """loggers=tensorboard,mlflow (or a list) as a tuple of known names, each once; '', none: ()."""
    if value is None:
        return ()
    items = value.strip("[]() ").split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise SettingsError(f"loggers={_shown(value)} is not valid: e.g. loggers=tensorboard,mlflow")
    names = [str(v).strip().strip("'\"").lower() for v in items]
    names = [n for n in names if n not in ("", "none")]
    bad = [n for n in names if n not in LOGGERS]
    if bad:
        raise SettingsError(
            f"loggers={','.join(map(str, items))} is not valid: '{bad[0]}' is not a logger; "
            f"choose from {', '.join(LOGGERS)}"
        )
    return tuple(dict.fromkeys(names))


def _parse_int_tuple(value: Any) -> tuple[int, ...] | None:
    if value is None or value == "" or value == "None":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, str):
        value = value.strip("[]() ").split(",")
    return tuple(int(v) for v in value if str(v).strip() != "")


def build(cls: type, overrides: dict[str, Any] | None = None, fallbacks: dict[str, Any] | None = None) -> Any:
    """Build settings of ``cls`` from flat overrides, applying ``cfg=file.yaml`` first.

    Layers, lowest first: the defaults above, the user's stored defaults (``yoloforge settings``,
    read from the file on every call), ``fallbacks`` (what a checkpoint remembers of its
    training run, e.g. imgsz and data; keys that ``cls`` lacks and values it rejects are ignored,
    as the user did not write them), the ``cfg=`` file,
    then ``overrides``. Unknown keys in ``overrides`` raise SettingsError naming the key and the
    closest valid ones.
    """
    from yoloforge.user_settings import defaults_for  # it validates with this module's coerce

    overrides = dict(overrides or {})
    cfg = overrides.get("cfg")
    known_keys = flat_fields(cls)
    merged: dict[str, Any] = defaults_for(cls)  # read on every call: edits apply at once
    for key, value in (fallbacks or {}).items():
        if (
            key in known_keys
            and key != "cfg"
            and value is not None
            and _valid(key, value, known_keys[key][1])
        ):
            merged[key] = value  # a remembered value this version rejects (imgsz=[640, 480]) is only a hint
    if cfg:
        merged.update(load_yaml_overrides(Path(cfg), cls))
    merged.update(overrides)
    known = known_keys
    top: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for key, value in merged.items():
        if key not in known:
            raise SettingsError(unknown_key_message(key, known))
        _, owner, group = known[key]
        value = coerce(key, value, owner)
        if group is None:
            top[key] = value
        else:
            groups.setdefault(group, {})[key] = value
    for group, values in groups.items():
        default_group = {f.name: f for f in fields(cls)}[group].default_factory
        top[group] = default_group(**values)
    return cls(**top)


def _valid(key: str, value: Any, owner: type) -> bool:
    try:
        coerce(key, value, owner)
    except SettingsError:
        return False
    return True


def read_yaml_mapping(
    path: Path, key: str, layout: str = "key: value", error: type[ValueError] = SettingsError
) -> dict[Any, Any]:
    """The mapping in the yaml file a setting ``key`` names (cfg=, space=); one ``error`` line
    naming ``key`` and the file when it is missing, not YAML, or not a mapping (``layout``)."""
    if not path.is_file():
        raise error(f"{key}={path}: file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{key}={path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise error(f"{key}={path}: expected a mapping of {layout}")
    return data


def load_yaml_overrides(path: Path, cls: type) -> dict[str, Any]:
    """Read a ``cfg=`` yaml; keys that do not belong to ``cls`` (other modes' settings) are ignored."""
    data = read_yaml_mapping(path, "cfg")
    known = flat_fields(cls)
    return {k: v for k, v in data.items() if k in known and k != "cfg" and v is not None}


def unknown_key_message(key: str, known: dict[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return f"'{key}' is not a valid setting.{hint} See the list with --help."


def to_flat_dict(settings: Any) -> dict[str, Any]:
    """Flatten settings back into the user-facing key: value mapping (args.yaml, checkpoints)."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            out.update(to_flat_dict(value))
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def replace(settings: Any, **changes: Any) -> Any:
    """Return a copy with flat-named changes applied (group fields included)."""
    flat = to_flat_dict(settings)
    flat.update(changes)
    flat.pop("cfg", None)
    return build(type(settings), flat)


def help_lines(cls: type, user: dict[str, Any] | None = None) -> list[str]:
    """One line per setting: name, default, meaning and valid range (for ``yoloforge MODE --help``).

    ``user`` holds the user's stored defaults for this mode; they are shown in place of ours.
    """
    lines = []
    user = user or {}
    for key, (f, _, _) in flat_fields(cls).items():
        default = user.get(key, f.default)
        choices = f.metadata.get("choices")
        bounds: Bounds | None = f.metadata.get("bounds")
        shown = [c for c in map(str, choices or ()) if c not in ("False", "True")]
        extra = f" [{'|'.join(shown)}]" if shown else ""
        if bounds is not None:
            extra += f" ({bounds.describe()})"
        if key in user:
            extra += f" (your default; built-in {f.default!r})"
        lines.append(f"  {key:<16} {default!r:<14} {f.metadata.get('help', '')}{extra}")
    return lines
