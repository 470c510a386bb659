"""Safe import of detection checkpoints written by the reference implementation (ultralytics).

Those files are pickles of whole Python objects. Unpickling them normally would import ultralytics
and could run any code the file asks for. Here a restricted unpickler admits only what rebuilds
tensors and plain containers; every ultralytics or torch.nn class becomes an inert ``ForeignObject``
that keeps its pickled state and runs nothing; anything else stops the load with
``UnsafeCheckpointError`` before it is called. The weights are then mapped onto our modules by the
explicit key map in ``keymap.py``. ultralytics is never imported.
"""

from __future__ import annotations

import datetime
import logging
import math
import pickle
import types
import zipfile
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch
from torch import nn

from yoloforge.checkpoint import (
    CheckpointError,
    check_archive,
    check_tensors,
    damaged_file_errors,
    open_archive,
)
from yoloforge.model.download import WeightsNotFoundError, fetch_published
from yoloforge.model.keymap import KeyMapError, block_path_table, map_reference_key
from yoloforge.model.zoo import SIZES, build_model, parse_model_name

log = logging.getLogger(__name__)

__all__ = [
    "ForeignCheckpoint",
    "ForeignCheckpointError",
    "ForeignObject",
    "UnsafeCheckpointError",
    "WeightsNotFoundError",
    "fetch_published",
    "is_foreign_checkpoint",
    "load_foreign_checkpoint",
    "restricted_load",
    "transfer_state",
]


class UnsafeCheckpointError(pickle.UnpicklingError, CheckpointError):
    """The file's pickle asks for something other than tensors and plain data; nothing was run."""


class ForeignCheckpointError(CheckpointError):
    """The file is not a detection checkpoint we can import; the message says why."""


# ---------------------------------------------------------------------------------------------
# The restricted unpickler


class ForeignObject:
    """Stands in for an instance of an ultralytics or torch.nn class: records the class name,
    constructor arguments and pickled state (for a module: ``_parameters``, ``_buffers``,
    ``_modules``, ...). It has no behaviour."""

    foreign_class = "?"  # set on the per-class subclass: 'ultralytics.nn.tasks.DetectionModel'

    def __new__(cls, *args: Any, **kwargs: Any) -> ForeignObject:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ kept the arguments; nothing else to do

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict state, slots state)
        self.state = state

    def __repr__(self) -> str:
        return f"ForeignObject({self.foreign_class})"


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """How protocol-2 pickles spell bytes (``_codecs.encode``); only latin-1, no codec lookups."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(f"pickle asks for codec '{encoding}'; only latin1 is allowed")
    return text.encode("latin1")


def _pure_path(*parts: str) -> str:
    return str(PurePosixPath(*parts))


def _pure_windows_path(*parts: str) -> str:
    return str(PureWindowsPath(*parts))


class PickledArray(np.ndarray):
    """A numpy array as the restricted unpickler builds it: only by ``_reconstruct`` and then its
    pickled state, whose data must hold exactly the elements its shape claims. numpy allocates the
    shape first (10**13 elements: a MemoryError, 10**9: gigabytes), and an object array given fewer
    items than its shape crashes the interpreter."""

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledArray:
        raise UnsafeCheckpointError("refused: the file builds a numpy array other than from its pickled data")

    def __setstate__(self, state: Any) -> None:
        _check_array_state(state)
        super().__setstate__(state)


def _check_array_state(state: Any) -> None:
    """(version, shape, dtype, is_fortran, data) as ndarray.__reduce__ writes it, data matching shape."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise ValueError("a numpy array with a malformed pickled state")
    shape, dtype, _, data = state[-4:]
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ValueError(f"a numpy array with shape {shape!r}")
    if not isinstance(dtype, np.dtype) or dtype.subdtype is not None:
        raise ValueError(f"a numpy array of dtype {dtype!r}")
    count = math.prod(shape)
    if dtype.hasobject:
        fits = dtype == np.dtype(object) and isinstance(data, list) and len(data) == count
    else:
        fits = isinstance(data, bytes | bytearray) and len(data) == count * dtype.itemsize
    if not fits:
        raise ValueError(f"a numpy array of shape {shape} whose data does not hold that many elements")


def _reconstruct_array(subtype: Any, shape: Any, dtype: Any) -> PickledArray:
    """``numpy.core.multiarray._reconstruct``: an empty array that the pickle's state then fills."""
    if subtype not in (np.ndarray, PickledArray) or tuple(shape) != (0,):
        raise ValueError("a numpy array rebuilt other than as numpy pickles it")
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    return multiarray._reconstruct(PickledArray, (0,), dtype)


def _numpy_reconstruct() -> dict[tuple[str, str], Any]:
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    out: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): PickledArray}
    for package in ("numpy.core", "numpy._core"):  # numpy 1 and 2 spell the path differently
        out[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        out[(f"{package}.multiarray", "_reconstruct")] = _reconstruct_array
    return out


# (module, name) -> the object handed to the pickle. Each is harmless whatever its arguments.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _latin1_encode,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("pathlib", "Path"): _pure_path,  # a path string: never touches the file system
    ("pathlib", "PosixPath"): _pure_path,
    ("pathlib", "PurePosixPath"): _pure_path,
    ("pathlib", "WindowsPath"): _pure_windows_path,
    ("pathlib", "PureWindowsPath"): _pure_windows_path,
    **_numpy_reconstruct(),
}
PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # protocol 2 writes these names
PLACEHOLDER_PREFIXES = ("ultralytics.", "torch.nn.modules.")


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals from ``ALLOWED_GLOBALS``, torch storage and dtype names, and inert
    placeholders for ultralytics / torch.nn classes. Everything else raises before it is called."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._placeholders: dict[str, type[ForeignObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = PYTHON2_MODULES.get(module, module)
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "torch" and name.endswith("Storage") and _is_storage_class(getattr(torch, name, None)):
            return getattr(torch, name)
        if module.startswith(PLACEHOLDER_PREFIXES) or module == "ultralytics":
            return self._placeholder(f"{module}.{name}")
        raise UnsafeCheckpointError(
            f"refused: the file asks to run or import '{module}.{name}', which a weights file does not "
            "need (it could execute code). Nothing was run. Only load checkpoints from sources you trust."
        )

    def _placeholder(self, qualified: str) -> type[ForeignObject]:
        if qualified not in self._placeholders:
            name = qualified.rsplit(".", 1)[-1]
            self._placeholders[qualified] = type(name, (ForeignObject,), {"foreign_class": qualified})
        return self._placeholders[qualified]


def _is_storage_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, torch.storage._LegacyStorage)


def _restricted_pickle_module() -> types.ModuleType:
    """A stand-in for the ``pickle`` module that ``torch.load`` accepts as ``pickle_module``."""
    module = types.ModuleType("yoloforge_restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()
    module.__name__ = "yoloforge_restricted_pickle"
    return module


def restricted_load(path: str | Path) -> Any:
    """Unpickle a torch zip checkpoint on the CPU with ``RestrictedUnpickler``.

    ``check_archive`` first refuses, from the zip directory alone, what torch.save does not write
    (TorchScript archives among them). Raises UnsafeCheckpointError if the pickle asks for anything
    beyond tensors and plain data, CheckpointError naming the file for a damaged or crafted one.
    """
    path = Path(path)
    with ExitStack() as stack:
        try:
            f = stack.enter_context(open_archive(path))  # the file checked is the file loaded
        except CheckpointError as e:
            raise ForeignCheckpointError(str(e)) from None
        with damaged_file_errors(path):
            try:
                obj = torch.load(
                    f, map_location="cpu", pickle_module=_restricted_pickle_module(), weights_only=False
                )
            except UnsafeCheckpointError as e:  # raised deep in the pickle: name the file
                raise UnsafeCheckpointError(f"{path}: {e}") from None
            check_tensors(obj, path)
    return obj


def is_foreign_checkpoint(path: str | Path) -> bool:
    """True if ``path`` is a torch zip checkpoint whose pickle names ultralytics classes.
    Reads the pickle's bytes only; nothing is unpickled."""
    try:
        check_archive(path)  # refuses, among others, a data.pkl that would inflate beyond the file
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            return bool(pickles) and b"ultralytics" in archive.read(pickles[0])
    except (OSError, zipfile.BadZipFile, CheckpointError):
        return False


# ---------------------------------------------------------------------------------------------
# From the unpickled objects to our state dict


@dataclass
class ForeignCheckpoint:
    """A reference detection checkpoint, translated: weights in our key names, plain metadata."""

    family: str  # 'yolov8' or 'yolo11'
    size: str  # 'n', 's', 'm', 'l', 'x'
    nc: int
    names: list[str]
    state_dict: dict[str, torch.Tensor]  # our keys; floating tensors as float32
    train_args: dict[str, Any] = field(default_factory=dict)  # plain values only
    epoch: int = -1  # -1 for a finished run / a published model
    best_fitness: float | None = None
    source: Path | None = None


def load_foreign_checkpoint(path: str | Path) -> ForeignCheckpoint:
    """Read a reference detection checkpoint (published ``yolov8n.pt`` ... ``yolo11x.pt``, or a
    trainer's best.pt / last.pt; fp16 or fp32) without running any of its code."""
    path = Path(path)
    ckpt = restricted_load(path)
    with damaged_file_errors(path):  # a crafted file's structure fails as one line naming it
        return _translate(ckpt, path)


def _translate(ckpt: Any, path: Path) -> ForeignCheckpoint:
    if not isinstance(ckpt, dict):
        raise ForeignCheckpointError(f"{path}: expected a checkpoint dict, found {type(ckpt).__name__}")
    model_obj = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    if not isinstance(model_obj, ForeignObject):
        keys = ", ".join(map(str, ckpt))
        raise ForeignCheckpointError(f"{path}: no model in the checkpoint (keys: {keys})")
    if not model_obj.foreign_class.endswith(".DetectionModel"):
        raise ForeignCheckpointError(
            f"{path}: holds a {model_obj.foreign_class.rsplit('.', 1)[-1]}; only detection models "
            "(YOLOv8 / YOLO11 DetectionModel) can be imported"
        )
    attrs = model_obj.state if isinstance(model_obj.state, dict) else {}
    yaml_cfg = attrs.get("yaml") if isinstance(attrs.get("yaml"), dict) else {}
    family, size = _architecture(yaml_cfg, path)
    nc = int(yaml_cfg.get("nc", attrs.get("nc", 0)))  # a wrong nc fails the shape check below
    state_dict = _our_state_dict(module_tensors(model_obj), family, size, nc, path)  # before nc is trusted
    epoch, best_fitness = ckpt.get("epoch"), ckpt.get("best_fitness")
    return ForeignCheckpoint(
        family=family,
        size=size,
        nc=nc,
        names=_names(attrs.get("names"), nc),
        state_dict=state_dict,
        train_args=_plain(_as_dict(ckpt.get("train_args"))),
        epoch=-1 if epoch is None else int(epoch),
        best_fitness=None if best_fitness is None else float(best_fitness),
        source=path,
    )


def module_tensors(obj: ForeignObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of a placeholder module tree: parameters and persistent buffers, by dotted name."""
    state = obj.state if isinstance(obj.state, dict) else {}
    skip = set(state.get("_non_persistent_buffers_set") or ())
    out: dict[str, torch.Tensor] = {}
    for name, tensor in (state.get("_parameters") or {}).items():
        if tensor is not None:
            out[prefix + name] = tensor.detach()
    for name, tensor in (state.get("_buffers") or {}).items():
        if tensor is not None and name not in skip:
            out[prefix + name] = tensor.detach()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, ForeignObject):
            out.update(module_tensors(child, f"{prefix}{name}."))
    return out


def _architecture(yaml_cfg: dict, path: Path) -> tuple[str, str]:
    """(family, size) from the model's yaml dict: its file name ('yolov8n.yaml'), else the family
    from the file name or the layer types and the size from 'scale' or the depth/width multiples."""
    stem = Path(str(yaml_cfg.get("yaml_file", ""))).name
    try:
        return parse_model_name(stem)
    except ValueError:
        pass
    layers = str(yaml_cfg.get("backbone", "")) + str(yaml_cfg.get("head", ""))
    if "yolo11" in stem or "C3k2" in layers:
        family = "yolo11"
    elif "yolov8" in stem or "C2f" in layers:
        family = "yolov8"
    else:
        family = ""
    size = str(yaml_cfg.get("scale", ""))
    if family and size not in SIZES[family]:
        depth, width = yaml_cfg.get("depth_multiple"), yaml_cfg.get("width_multiple")
        size = next((s for s, sc in SIZES[family].items() if (sc.depth, sc.width) == (depth, width)), "")
    if not family or not size:
        raise ForeignCheckpointError(
            f"{path}: cannot tell the architecture (yaml_file '{stem}', scale '{size}'); "
            "only YOLOv8 and YOLO11 detection checkpoints can be imported"
        )
    return family, size


def _our_state_dict(
    foreign: dict[str, torch.Tensor], family: str, size: str, nc: int, path: Path
) -> dict[str, torch.Tensor]:
    """Map every reference key onto ours and check it covers our model exactly, shapes included."""
    with torch.device("meta"):
        target = build_model(family, size, nc=nc)  # structure and shapes only, no memory
    paths = block_path_table(target)
    expected = target.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in foreign.items():
        try:
            ours = map_reference_key(target, key, paths)
        except KeyMapError as e:
            msg = f"{path}: not a standard {family}{size} detection model: {e}"
            raise ForeignCheckpointError(msg) from None
        if ours is None:
            continue
        if ours not in expected or expected[ours].shape != tensor.shape:
            want = tuple(expected[ours].shape) if ours in expected else "nothing"
            raise ForeignCheckpointError(
                f"{path}: '{key}' has shape {tuple(tensor.shape)}, {family}{size} (nc={nc}) expects {want}"
            )
        out[ours] = tensor.float() if tensor.is_floating_point() else tensor.clone()
    missing = sorted(set(expected) - set(out))
    if missing:
        raise ForeignCheckpointError(f"{path}: {len(missing)} weights missing, e.g. {', '.join(missing[:3])}")
    return out


def _names(names: Any, nc: int) -> list[str]:
    if isinstance(names, dict):
        return [str(names.get(i, i)) for i in range(nc)]
    if isinstance(names, (list, tuple)) and len(names) == nc:
        return [str(n) for n in names]
    return [str(i) for i in range(nc)]


def _as_dict(obj: Any) -> dict:
    if isinstance(obj, ForeignObject):  # e.g. an IterableSimpleNamespace of settings
        obj = obj.state
    return dict(obj) if isinstance(obj, dict) else {}


def _plain(value: Any) -> Any:
    """Plain Python values only (str, int, float, bool, None, lists, dicts); others become strings."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


# ---------------------------------------------------------------------------------------------
# Fine-tuning from pretrained weights


def transfer_state(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Copy into ``model`` every tensor whose key and shape match (a different nc leaves only the
    final class convs untouched). Returns (transferred, total) for 'Transferred X/Y items ...'."""
    own = model.state_dict()
    matching = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    return len(matching), len(own)
