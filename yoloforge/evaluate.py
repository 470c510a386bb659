"""Standalone validation (``YOLO(w).val(...)``, ``yoloforge val``): data in, metrics and plots out.

The model is a PyTorch ``DetectionModel`` (validated as a fused copy, so the caller's model stays
trainable and on its device) or an ``ExportedModel`` (``backends``). A dynamic export (the default)
is validated in the same rectangular batches as the PyTorch model, so its metrics equal PyTorch's.
A static-shape export takes square inputs of its exported size only: those are validated at that
size without rectangular batches, each image letterboxed into the square as prediction does.
"""

from __future__ import annotations

import logging

import torch

from yoloforge.backends import ExportedModel
from yoloforge.data.config import DatasetError, load_data_config
from yoloforge.data.dataset import ValDataset
from yoloforge.data.letterbox import stride_multiple
from yoloforge.data.loader import build_val_loader
from yoloforge.data.scan import scan_split
from yoloforge.device import describe, select_device, use_all_cores
from yoloforge.runs import next_run_dir
from yoloforge.settings import ValSettings
from yoloforge.validator import Validator

log = logging.getLogger(__name__)


def max_stride(model) -> int:
    """The largest stride of a DetectionModel (a tensor of strides) or an ExportedModel (an int)."""
    stride = getattr(model, "stride", 32)
    if isinstance(stride, torch.Tensor):
        return int(stride.max())
    return int(max(stride)) if isinstance(stride, list | tuple) else int(stride)


def input_size(model, imgsz: int, stride: int) -> tuple[int, tuple[int, int] | None]:
    """(imgsz to validate at, fixed (height, width) input or None for rectangular batches)."""
    fixed = getattr(model, "fixed_shape", None)
    if fixed is None:
        return stride_multiple(imgsz, stride, "validating at"), None
    if tuple(fixed) != (imgsz, imgsz):
        log.info("The exported model takes %dx%d inputs: validating at that size", *fixed)
    return max(fixed), tuple(fixed)


def run_validation(model, names: dict[int, str], settings: ValSettings):
    """Validate ``model`` (a DetectionModel or an exported-model wrapper) on ``settings.data``."""
    if not settings.data:
        raise DatasetError("val: data= is required (the dataset config yaml, or 'shapes')")
    data = load_data_config(settings.data)
    model_names = list(names.values())
    if not settings.single_cls and len(model_names) != data.nc:
        raise DatasetError(
            f"{data.yaml_file}: the dataset has {data.nc} classes but the model has {len(model_names)}; "
            "validate on the dataset the model was trained for"
        )
    device = select_device(settings.device)
    if device.type == "cpu":
        use_all_cores()
    log.info(describe(device))
    model = _ready(model, device)
    stride = max_stride(model)
    imgsz, fixed_shape = input_size(model, settings.imgsz, stride)
    scan = scan_split(data.images(settings.split), data.names, prefix=settings.split)
    records = scan.records
    if settings.single_cls:
        records = [r.as_single_class() for r in records]
    dataset = ValDataset(records, imgsz, settings.batch, stride, rect=fixed_shape is None, shape=fixed_shape)
    loader = build_val_loader(dataset, workers=settings.workers, device=device)
    save_dir = next_run_dir(settings.project, settings.name, settings.exist_ok)
    validator = Validator(
        names=["item"] if settings.single_cls else data.names,
        conf=settings.conf,
        iou=settings.iou,
        max_det=settings.max_det,
        save_dir=save_dir,
        plots=settings.plots,
        verbose=settings.verbose,
        save_json=settings.save_json,
        half=settings.half and device.type == "cuda",
        single_cls=settings.single_cls,
    )
    result = validator.run(model, loader, device)
    log.info("Results saved to %s", save_dir)
    return result.metrics


def _ready(model, device: torch.device):
    """A fused eval copy of a DetectionModel on ``device`` (its summary line printed, as the
    reference prints it before the table), or the exported model moved to ``device``."""
    if isinstance(model, ExportedModel):
        log.info("%r", model.to(device))
        return model
    from yoloforge.predictor import inference_copy

    model = inference_copy(model, device, half=False, channels_last=device.type == "cpu")
    log.info(model.summary())
    return model
