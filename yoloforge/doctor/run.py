"""``doctor(data, **settings)``: read the dataset once, run every check, write the run folder.

    report = doctor("config.yaml", model="runs/detect/train/weights/best.pt")
    report["leakage"].severity, report.html, report.failed

The dataset is only read (the label scan may refresh its cache, as training does); everything the
doctor writes goes to a new run folder, ``runs/doctor``, ``runs/doctor2``, ...
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from yoloforge.data.config import load_data_config
from yoloforge.data.scan import scan_split
from yoloforge.doctor import duplicates, geometry, stats
from yoloforge.doctor.html import write_html
from yoloforge.doctor.label_errors import label_error_findings, model_imgsz, predict_all
from yoloforge.doctor.output import console_table, write_json
from yoloforge.doctor.pixels import import_imagehash, read_pixels
from yoloforge.doctor.report import CHECKS, DoctorReport, Finding, LabelledImage
from yoloforge.doctor.settings import DoctorSettings
from yoloforge.runs import RunFolder
from yoloforge.settings import build

log = logging.getLogger(__name__)

DEFAULT_IMGSZ = 640


def doctor(data: str | Path | None = None, **overrides: Any) -> DoctorReport:
    """Check a dataset against the advanced guide's advice; see ``DoctorSettings`` for the keys."""
    if data is not None:
        overrides["data"] = str(data)
    settings: DoctorSettings = build(DoctorSettings, overrides)
    if not settings.data:
        raise ValueError("doctor: data= is required, e.g. data=config.yaml")
    import_imagehash()  # a missing extra stops here, before any work
    config = load_data_config(settings.data)
    imgsz = settings.imgsz or (settings.model and model_imgsz(settings.model)) or DEFAULT_IMGSZ
    by_split = {
        split: [
            LabelledImage(split, r)
            for r in scan_split(config.images(split), config.names, split, progress=settings.progress).records
        ]
        for split in ("train", "val", "test")
        if getattr(config, split) is not None
    }
    images = [image for split_images in by_split.values() for image in split_images]
    pixels = read_pixels([i.path for i in images], [i.shape for i in images], settings.progress)
    findings = _dataset_findings(by_split, images, pixels, config.names, imgsz, settings.min_px)
    if settings.model:
        detections = predict_all(
            settings.model,
            [i.path for i in images],
            config.nc,
            imgsz,
            settings.conf,
            settings.batch,
            settings.device,
            settings.progress,
        )
        findings += label_error_findings(images, detections, config.names)
    findings.sort(key=lambda f: CHECKS.index(f.check))
    save_dir = RunFolder.claim(settings.project, settings.name, exist_ok=False).path
    report = DoctorReport(
        data=config.yaml_file,
        names=config.names,
        imgsz=imgsz,
        model=settings.model,
        save_dir=save_dir,
        findings=findings,
        n_images={split: len(v) for split, v in by_split.items()},
    )
    write_json(report)
    write_html(report, images, np.array([p.brightness for p in pixels]), settings.min_px)
    for line in console_table(report):
        log.info(line)
    log.info("Doctor's report saved to %s (open %s)", save_dir, report.html.name)
    return report


def _dataset_findings(
    by_split: dict[str, list[LabelledImage]],
    images: list[LabelledImage],
    pixels: list,
    names: list[str],
    imgsz: int,
    min_px: int,
) -> list[Finding]:
    counts = {split: stats.class_counts(split_images, len(names)) for split, split_images in by_split.items()}
    table = stats.count_table(counts, names)
    train = counts["train"]
    instances = stats.per_class_finding(
        "instances_per_class", train.instances, names, stats.MIN_INSTANCES_PER_CLASS, table
    )
    links = duplicates.find_links(pixels)
    return [
        duplicates.leakage_finding(images, links),
        stats.per_class_finding("images_per_class", train.images, names, stats.MIN_IMAGES_PER_CLASS, table),
        stats.with_missing_classes(instances, stats.missing_in_held_out(counts, names)),
        stats.backgrounds_finding(by_split),
        stats.imbalance_finding(train, names),
        duplicates.duplicates_finding(images, links),
        geometry.small_objects_finding(images, names, imgsz, min_px),
        geometry.border_boxes_finding(images, names),
        geometry.double_labels_finding(images, names),
        geometry.degenerate_boxes_finding(images, names),
        stats.variety_finding(images, np.array([p.brightness for p in pixels]), imgsz),
    ]
