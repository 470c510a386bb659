"""Standalone validation (``YOLO(w).val(...)``, ``yoloforge val``): data in, metrics and plots out."""

from __future__ import annotations

import logging

from yoloforge.data.config import DatasetError, load_data_config
from yoloforge.data.dataset import ValDataset
from yoloforge.data.loader import build_val_loader
from yoloforge.data.scan import scan_split
from yoloforge.device import select_device, use_all_cores
from yoloforge.runs import next_run_dir
from yoloforge.settings import ValSettings
from yoloforge.validator import Validator

log = logging.getLogger(__name__)


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
    scan = scan_split(data.images(settings.split), data.names, prefix=settings.split)
    records = scan.records
    if settings.single_cls:
        records = [r.as_single_class() for r in records]
    stride = int(max(getattr(model, "stride", [32])))
    dataset = ValDataset(
        records,
        imgsz=settings.imgsz,
        batch_size=settings.batch,
        stride=stride,
        rect=not getattr(model, "static_shape", False),
    )
    loader = build_val_loader(dataset, workers=settings.workers, device=device)
    save_dir = next_run_dir(settings.project, settings.name, settings.exist_ok)
    if hasattr(model, "to"):
        model = model.to(device).eval()
        if hasattr(model, "fuse"):
            model.fuse()
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
