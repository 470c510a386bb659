"""Export a detector to ONNX, TorchScript or OpenVINO, then check the file against PyTorch.

    path = export(load_model("best.pt"), ExportSettings(format="onnx"))   # -> best.onnx

Every format keeps the eval-mode contract: ``images`` (B, 3, H, W) float in [0, 1] -> ``output0``
(B, 4 + nc, A), cx, cy, w, h in input pixels, then class scores. Class names, input size, stride
and the rest of ``ExportMetadata`` travel with the file, so ``YOLO("best.onnx")`` needs nothing else.

By default (``dynamic=True``) batch, height and width are free, so an exported model takes the
same stride-multiple rectangle the PyTorch model predicts on, and finds the same boxes on images of
any aspect ratio. ``dynamic=False`` fixes the shape for tools that need one; such a model predicts
non-square images letterboxed into its square, so its boxes can differ slightly from PyTorch's.

OpenVINO: the ONNX graph converted by ``openvino.convert_model`` and written by
``openvino.save_model`` into ``best_openvino_model/`` (best.xml, best.bin, metadata.yaml).

ONNX uses the TorchScript-based exporter (``dynamo=False``): on torch 2.14 here it writes the file
in ~1-2 s with onnx and onnxruntime only, and its outputs match PyTorch to ~1e-7 relative; the
dynamo exporter matched just as well but took ~13-29 s and needs the extra ``onnxscript`` package
(yolov8n, CPU; see the issue 6 report).
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from yoloforge import __version__
from yoloforge.backends import (
    OPENVINO_METADATA,
    TORCHSCRIPT_METADATA,
    ExportMetadata,
    load_exported,
    quiet_torchscript,
    require,
)
from yoloforge.data.letterbox import stride_multiple
from yoloforge.device import select_device
from yoloforge.loading import LoadedModel
from yoloforge.predictor import inference_copy
from yoloforge.settings import ExportSettings

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17  # read by onnxruntime >= 1.13, TensorRT >= 8.6 and OpenVINO; the exporter goes to 20
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript", "openvino": "_openvino_model"}  # OpenVINO: folder
FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "openvino": "OpenVINO"}
TIMED_RUNS = 3  # the check's ms/image: median of this many runs, after the check's own run
TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2}  # see output_difference


class ExportError(ValueError):
    """An export that cannot be done or whose file does not reproduce PyTorch; the message says why."""


def export(loaded: LoadedModel, settings: ExportSettings) -> Path:
    """Write ``loaded.model`` as ``settings.format`` next to its checkpoint (or in the current folder
    for a model built from a name), check it, and return the file's path."""
    device = select_device(settings.device)
    if settings.half and device.type != "cuda":
        raise ExportError(f"half=True needs a CUDA device (device=0); {device.type} exports in float32")
    if settings.batch < 1:
        raise ExportError(f"batch={settings.batch}: must be 1 or more")
    if settings.half and settings.format == "openvino":
        raise ExportError("half=True: OpenVINO models run in float32 on the CPU here; export without half")
    _require_runtime(settings.format)  # fail before spending time on the export
    model = inference_copy(loaded.model, device, settings.half)
    stride = int(model.stride.max())
    imgsz = stride_multiple(settings.imgsz, stride, "exporting at")
    meta = ExportMetadata(
        names=list(loaded.names),
        imgsz=(imgsz, imgsz),
        stride=stride,
        family=loaded.family,
        size=loaded.size,
        dynamic=settings.dynamic,
        batch=settings.batch,
        half=settings.half,
        version=__version__,
    )
    path = output_path(loaded, settings.format)
    sample = sample_input(meta, device, seed=0)
    start = time.perf_counter()
    details = _write(settings.format, model, sample, path, meta, settings.opset)
    shape = "dynamic batch/height/width" if meta.dynamic else f"input {tuple(sample.shape)}"
    log.info(
        "%s: exported %s (%.1f MB) in %.1fs; %s, %s",
        FORMAT_NAMES[settings.format],
        path,
        file_size(path) / 1e6,
        time.perf_counter() - start,
        shape,
        details,
    )
    if not meta.dynamic:
        log.info(
            "Fixed input shape: non-square images are letterboxed into %dx%d, so boxes can differ "
            "slightly from the PyTorch model's (dynamic=True, the default, finds the same boxes)",
            imgsz,
            imgsz,
        )
    check_export(model, path, meta, device)
    return path


def _write(
    fmt: str, model: torch.nn.Module, sample: torch.Tensor, path: Path, meta: ExportMetadata, opset: int
) -> str:
    """Write ``path`` in format ``fmt``; returns what wrote it, for the log line."""
    if fmt == "onnx":
        opset = _write_onnx(model, sample, path, meta, opset)
        return f"opset {opset}, onnx {require('onnx').__version__}"
    if fmt == "openvino":
        _write_openvino(model, sample, path, meta, opset)
        return f"openvino {require('openvino').__version__}"
    _write_torchscript(model, sample, path, meta)
    return f"torch {torch.__version__}"


def _require_runtime(fmt: str) -> None:
    """The packages writing and checking ``fmt`` need, or ImportError saying what to install."""
    if fmt == "onnx":
        require("onnx")
        require("onnxruntime")
    elif fmt == "openvino":
        require("onnx")  # the graph goes through ONNX
        require("openvino")


def file_size(path: Path) -> int:
    """Bytes of an exported file, or of every file in an exported folder (OpenVINO)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def output_path(loaded: LoadedModel, fmt: str) -> Path:
    """best.pt -> best.onnx (or the folder best_openvino_model) beside it; a model built from a
    name -> ./yolov8n.onnx."""
    suffix = SUFFIXES[fmt]
    if loaded.path is not None:
        return loaded.path.with_name(loaded.path.stem + suffix)
    return Path.cwd() / f"{loaded.family}{loaded.size}{suffix}"


def sample_input(meta: ExportMetadata, device: torch.device, seed: int, extra: int = 0) -> torch.Tensor:
    """Random images (batch, 3, H, W) in [0, 1]; ``extra`` adds images and a stride of width
    (only for dynamic models, to check other shapes than the traced one)."""
    generator = torch.Generator().manual_seed(seed)
    h, w = meta.imgsz
    shape = (meta.batch + extra, 3, h, w + extra * meta.stride)
    images = torch.rand(shape, generator=generator).to(device)
    return images.half() if meta.half else images


# ----------------------------------------------------------------------------------------------
# writers


def _write_onnx(
    model: torch.nn.Module, sample: torch.Tensor, path: Path, meta: ExportMetadata, opset: int
) -> int:
    onnx = require("onnx")
    newest = onnx.defs.onnx_opset_version()
    opset = opset or min(DEFAULT_OPSET, newest)
    if opset > newest:
        raise ExportError(f"opset={opset}: the installed onnx {onnx.__version__} reads up to opset {newest}")
    dynamic_axes = None
    if meta.dynamic:
        dynamic_axes = {
            "images": {0: "batch", 2: "height", 3: "width"},
            "output0": {0: "batch", 2: "anchors"},
        }
    # the dynamo exporter is the default from torch 2.9; torch < 2.5 has no such argument
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    try:
        with quiet_torchscript():  # the TorchScript-based exporter traces the model
            torch.onnx.export(
                model,
                (sample,),
                str(path),
                opset_version=opset,
                input_names=["images"],
                output_names=["output0"],
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                **legacy,
            )
    except Exception as e:  # torch raises many types here; the user needs the first line
        raise ExportError(f"ONNX export to {path} failed at opset {opset}: {str(e).splitlines()[0]}") from e
    proto = onnx.load(str(path))
    # the exporter leaves the channel axis symbolic (a concat of boxes and scores): it is 4 + nc
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 4 + len(meta.names)
    for key, value in meta.to_strings().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return opset


def _write_openvino(
    model: torch.nn.Module, sample: torch.Tensor, folder: Path, meta: ExportMetadata, opset: int
) -> None:
    """ONNX graph -> ``openvino.convert_model`` -> ``openvino.save_model`` (weights kept in float32,
    so the check holds) into ``folder``, with metadata.yaml; an older folder is replaced whole."""
    ov = require("openvino")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as tmp:
        onnx_file = Path(tmp) / f"{folder.name.removesuffix(SUFFIXES['openvino'])}.onnx"
        _write_onnx(model, sample, onnx_file, meta, opset)
        try:
            converted = ov.convert_model(str(onnx_file))
        except Exception as e:  # openvino raises its own types; the user needs the first line
            raise ExportError(f"OpenVINO conversion for {folder} failed: {str(e).splitlines()[0]}") from e
        staged = Path(tmp) / folder.name
        ov.save_model(converted, str(staged / onnx_file.with_suffix(".xml").name), compress_to_fp16=False)
        values = {**asdict(meta), "imgsz": list(meta.imgsz)}
        (staged / OPENVINO_METADATA).write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)


def _write_torchscript(
    model: torch.nn.Module, sample: torch.Tensor, path: Path, meta: ExportMetadata
) -> None:
    with quiet_torchscript():
        traced = torch.jit.trace(model, sample, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_METADATA: json.dumps(asdict(meta))})


# ----------------------------------------------------------------------------------------------
# the check


def check_export(model: torch.nn.Module, path: Path, meta: ExportMetadata, device: torch.device) -> float:
    """Run the written file on fresh random input (and a second shape when dynamic) and compare
    with PyTorch, then log both one's ms/image. Raises ExportError past ``TOLERANCE``; returns the
    largest difference."""
    runtime = load_exported(path, device)
    dtype = torch.float16 if meta.half else torch.float32
    samples = [sample_input(meta, device, seed=1)]
    if meta.dynamic:
        samples.append(sample_input(meta, device, seed=2, extra=1))
    worst = 0.0
    for images in samples:
        with torch.inference_mode():
            expected = model(images).float()
        actual = runtime(images).float()
        if actual.shape != expected.shape:
            raise ExportError(
                f"{path}: output shape {tuple(actual.shape)} differs from PyTorch's {tuple(expected.shape)} "
                f"for input {tuple(images.shape)}"
            )
        worst = max(worst, output_difference(expected, actual))
    if worst > TOLERANCE[dtype]:
        raise ExportError(
            f"{path}: outputs differ from PyTorch by {worst:.2g} (tolerance {TOLERANCE[dtype]:g}); "
            "the file is kept for inspection. Please report this with the model and settings."
        )
    log.info(
        "Checked %s with %s against PyTorch: max relative difference %.1e", path.name, _runner(path), worst
    )
    images = samples[0]
    exported_ms = ms_per_image(runtime, images)
    with torch.inference_mode():
        torch_ms = ms_per_image(model, images)
    log.info(
        "%s: %.1f ms/image, PyTorch %.1f ms/image, input %s (median of %d runs)",
        path.name,
        exported_ms,
        torch_ms,
        "x".join(map(str, images.shape)),
        TIMED_RUNS,
    )
    return worst


def _runner(path: Path) -> str:
    """What ran the exported file in the check, for the log line."""
    if path.suffix == ".onnx":
        return f"onnxruntime {require('onnxruntime').__version__}"
    if path.suffix == ".torchscript":
        return "torch.jit.load"
    return f"OpenVINO {require('openvino').__version__}"


def ms_per_image(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> float:
    """Median milliseconds per image of ``forward(images)`` over ``TIMED_RUNS`` runs (the caller has
    run it once on this shape already: the warm-up)."""
    times = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        forward(images)
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3 / len(images)


def output_difference(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """Largest difference of two (B, 4 + nc, A) outputs relative to their scale: boxes relative to
    the largest coordinate (pixels), scores absolutely (they live in [0, 1])."""
    box_scale = expected[:, :4].abs().max().clamp(min=1.0)
    box_err = ((actual[:, :4] - expected[:, :4]).abs().max() / box_scale).item()
    score_err = (actual[:, 4:] - expected[:, 4:]).abs().max().item()
    return max(box_err, score_err)
