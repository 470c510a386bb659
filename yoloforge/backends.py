"""Running exported models: ``load_exported("best.onnx")``, ``("best.torchscript")`` or
``("best_openvino_model/")``.

An ``ExportedModel`` keeps the call contract of the PyTorch ``DetectionModel`` in eval mode:
float images (B, 3, H, W) in [0, 1] -> (B, 4 + nc, A), cx, cy, w, h in input pixels, then class
scores. It also carries what the exporter stored in the file (class names, input size, stride,
whether shapes are dynamic), so the predictor can letterbox to the shape a static model expects.

The same ``ExportMetadata`` is written by the exporter: ONNX ``metadata_props`` (one key per field,
JSON values), a TorchScript extra file ``metadata.json`` and, in an OpenVINO folder, ``metadata.yaml``
beside the model's .xml and .bin.

Every backend returns the raw (B, 4 + nc, A) output: letterboxing, NMS and scaling back to the
original image are the predictor's and the validator's, one implementation for all of them.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

log = logging.getLogger(__name__)

EXPORT_EXTRA = 'pip install "yoloforge[export]"'
TORCHSCRIPT_METADATA = "metadata.json"
REFERENCE_TORCHSCRIPT_METADATA = "config.txt"  # the reference exporter's extra file (JSON)
OPENVINO_METADATA = "metadata.yaml"  # beside the .xml/.bin, where the reference writes it too


class ExportedModelError(ValueError):
    """An exported file that cannot be run; the message names it and what to do."""


@dataclass(frozen=True)
class ExportMetadata:
    names: list[str]
    imgsz: tuple[int, int]  # (height, width) of the input the model was exported for
    stride: int
    family: str
    size: str
    dynamic: bool  # batch, height and width may vary
    batch: int  # the fixed batch size when not dynamic
    half: bool  # expects float16 input
    version: str  # yoloforge version that wrote the file
    task: str = "detect"

    def to_strings(self) -> dict[str, str]:
        """Flat key -> JSON-value strings, the form ONNX metadata_props hold."""
        return {k: json.dumps(v) for k, v in asdict(self).items()}

    @staticmethod
    def from_strings(values: dict[str, str], source: str) -> ExportMetadata:
        """From ONNX metadata_props: JSON values (ours) or Python literals (the reference's)."""
        return ExportMetadata.from_dict({k: _parse_value(v) for k, v in values.items()}, source)

    @staticmethod
    def from_dict(values: dict[str, Any], source: str) -> ExportMetadata:
        """Our metadata, or the reference exporter's (so its .onnx/.torchscript files run too)."""
        if "family" not in values and "names" in values and "stride" in values:
            return _from_reference(values, source)
        try:
            raw = {k: v for k, v in values.items() if k in ExportMetadata.__dataclass_fields__}
            raw["imgsz"] = tuple(raw["imgsz"])
            return ExportMetadata(**raw)
        except (KeyError, TypeError) as e:
            raise ExportedModelError(
                f"{source}: no yoloforge metadata ({e}); export it with `yoloforge export model=...`"
            ) from None


def _parse_value(text: str) -> Any:
    """A metadata string as a value: JSON, else a Python literal (never eval), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _from_reference(values: dict[str, Any], source: str) -> ExportMetadata:
    """Metadata written by the reference exporter: names {id: name}, imgsz, stride, batch, task,
    args {dynamic, half, ...}, description 'Ultralytics YOLOv8n model'."""
    task = values.get("task", "detect")
    if task != "detect":
        raise ExportedModelError(f"{source} is a {task} model; yoloforge runs detection models only")
    if values.get("end2end"):
        raise ExportedModelError(f"{source} has NMS inside (end2end); export it again without nms")
    names = values["names"]
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    args = values.get("args") if isinstance(values.get("args"), dict) else {}
    match = re.search(r"yolo(v8|11)([nslmx])", str(values.get("description", "")), re.IGNORECASE)
    return ExportMetadata(
        names=[str(n) for n in names],
        imgsz=tuple(int(v) for v in values["imgsz"]),
        stride=int(values["stride"]),
        family=f"yolo{match.group(1).lower()}" if match else "",
        size=match.group(2).lower() if match else "",
        dynamic=bool(args.get("dynamic", False)),
        batch=int(values.get("batch", 1)),
        half=bool(args.get("half", False)),
        version=f"ultralytics {values.get('version', '')}".strip(),
    )


def require(module: str):
    """Import onnx / onnxruntime / openvino, or fail with one line telling how to install them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{module} is not installed; {EXPORT_EXTRA}") from None


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch's deprecation notices for torch.jit trace/save/load (TorchScript is still the
    format users ask for) and tracer notes about Python-side checks that trace as constants."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


class ExportedModel:
    """Common part of the ONNX and TorchScript runners: metadata, device, static batch handling."""

    def __init__(self, path: Path, meta: ExportMetadata):
        self.path = path
        self.meta = meta
        self.device = torch.device("cpu")

    # what the predictor and the facade read
    @property
    def names(self) -> list[str]:
        return list(self.meta.names)

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.meta.imgsz

    @property
    def stride(self) -> int:
        return self.meta.stride

    @property
    def dynamic(self) -> bool:
        return self.meta.dynamic

    @property
    def fixed_shape(self) -> tuple[int, int] | None:
        """(height, width) every input must have, or None when shapes are dynamic."""
        return None if self.meta.dynamic else self.meta.imgsz

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float16 if self.meta.half else torch.float32

    def to(self, device: torch.device | str) -> ExportedModel:
        """Run on ``device`` from now on (CUDA when the runtime supports it). Returns self."""
        if torch.device(device) != self.device:
            self.device = torch.device(device)
            self._load()
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, 4 + nc, A) float32, on the device of ``images``."""
        if self.fixed_shape is not None and tuple(images.shape[-2:]) != self.fixed_shape:
            raise ExportedModelError(
                f"{self.path.name} was exported for {self.fixed_shape[0]}x{self.fixed_shape[1]} inputs, "
                f"got {images.shape[-2]}x{images.shape[-1]}; export with dynamic=True for other sizes"
            )
        device, images = images.device, images.to(self.input_dtype)
        if self.meta.dynamic or len(images) == self.meta.batch:
            out = self._run(images)
        else:  # a static batch size: run it chunk by chunk
            out = torch.cat([self._run_padded(chunk) for chunk in images.split(self.meta.batch)])
        return out.float().to(device)

    def _run_padded(self, chunk: torch.Tensor) -> torch.Tensor:
        """A static batch of ``meta.batch`` images: pad a short chunk with zeros, drop their outputs."""
        n = len(chunk)
        if n < self.meta.batch:
            pad = chunk.new_zeros((self.meta.batch - n, *chunk.shape[1:]))
            chunk = torch.cat((chunk, pad))
        return self._run(chunk)[:n]

    def _load(self) -> None:
        raise NotImplementedError

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        shape = "dynamic" if self.dynamic else f"{self.imgsz[0]}x{self.imgsz[1]}, batch {self.meta.batch}"
        return f"{type(self).__name__}({str(self.path)!r}, {len(self.names)} classes, {shape})"


class OnnxModel(ExportedModel):
    """onnxruntime session; CUDAExecutionProvider when on a CUDA device and available."""

    def __init__(self, path: Path):
        onnx = require("onnx")
        model = onnx.load(str(path), load_external_data=False)
        meta = ExportMetadata.from_strings({p.key: p.value for p in model.metadata_props}, str(path))
        super().__init__(path, meta)
        self.session = None
        self._load()

    def _load(self) -> None:
        ort = require("onnxruntime")
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": self.device.index or 0}))
            else:
                log.warning("onnxruntime has no CUDA provider here (install onnxruntime-gpu); running on CPU")
        self.session = ort.InferenceSession(str(self.path), providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float16 if "float16" in self.session.get_inputs()[0].type else torch.float32

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().cpu().numpy()
        (out,) = self.session.run(None, {self.input_name: np.ascontiguousarray(array)})
        return torch.from_numpy(out)


class TorchScriptModel(ExportedModel):
    """A traced module loaded with ``torch.jit.load`` (no Python model code needed)."""

    def __init__(self, path: Path):
        extra = {TORCHSCRIPT_METADATA: "", REFERENCE_TORCHSCRIPT_METADATA: ""}
        with quiet_torchscript():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        text = extra[TORCHSCRIPT_METADATA] or extra[REFERENCE_TORCHSCRIPT_METADATA]
        if not text:
            raise ExportedModelError(f"{path}: no yoloforge metadata; export it with `yoloforge export ...`")
        super().__init__(path, ExportMetadata.from_dict(json.loads(text), str(path)))
        self.module = module.eval()

    def _load(self) -> None:
        with quiet_torchscript():
            self.module = torch.jit.load(str(self.path), map_location=self.device).eval()

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(images.to(self.device))


class OpenVinoModel(ExportedModel):
    """An OpenVINO IR folder (model .xml + .bin + metadata.yaml), compiled for the CPU."""

    def __init__(self, path: Path):
        self.xml = openvino_xml(path)
        meta_file = self.xml.parent / OPENVINO_METADATA
        if not meta_file.is_file():
            raise ExportedModelError(
                f"{self.xml.parent}: no {OPENVINO_METADATA} beside {self.xml.name}; "
                "export it with `yoloforge export format=openvino ...`"
            )
        values = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
        if not isinstance(values, dict):
            raise ExportedModelError(f"{meta_file}: expected a mapping of metadata keys to values")
        super().__init__(self.xml.parent, ExportMetadata.from_dict(values, str(meta_file)))
        self.request = None
        self._load()

    def _load(self) -> None:
        ov = require("openvino")
        if self.device.type != "cpu":
            log.warning("OpenVINO models run on the CPU here; %s is not used", self.device)
        # the CPU plugin computes in bfloat16 by default where the CPU has it (AVX512-BF16, AMX);
        # float32 keeps the boxes the PyTorch model finds
        compiled = ov.Core().compile_model(str(self.xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.request = compiled.create_infer_request()

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float32

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().cpu().float().numpy())
        self.request.infer({0: array})
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())  # the buffer is reused


def openvino_xml(path: Path) -> Path:
    """The model .xml of an OpenVINO folder (or the .xml itself); one line when there is not one."""
    if path.is_file():
        return path
    found = sorted(path.glob("*.xml"))
    if len(found) != 1:
        what = "no .xml model" if not found else f"{len(found)} .xml models"
        raise ExportedModelError(f"model={path}: an OpenVINO folder holds one .xml model, found {what}")
    return found[0]


def exported_format(path: str | Path) -> str | None:
    """'onnx', 'torchscript' or 'openvino' for what an export writes (an OpenVINO folder or its
    .xml), else None (a checkpoint or a model name)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".torchscript"):
        return suffix[1:]
    if suffix == ".xml" or (path.is_dir() and any(path.glob("*.xml"))):
        return "openvino"
    return None


def load_exported(path: str | Path, device: torch.device | str = "cpu") -> ExportedModel:
    """Open an exported ``.onnx`` or ``.torchscript`` file or an OpenVINO folder on ``device``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model={path}: file not found")
    fmt = exported_format(path)
    if fmt == "onnx" and path.is_file():
        model: ExportedModel = OnnxModel(path)
    elif fmt == "torchscript" and path.is_file():
        model = TorchScriptModel(path)
    elif fmt == "openvino":
        model = OpenVinoModel(path)
    else:
        raise ExportedModelError(
            f"model={path}: expected a .onnx or .torchscript file or an OpenVINO folder (with its .xml)"
        )
    if torch.device(device).type != "cpu":
        model.to(device)
    return model
