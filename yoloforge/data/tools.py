"""Dataset tools behind ``yoloforge split``, ``check`` and ``convert`` (the conversions live in convert.py).

- ``split_dataset``: a folder of images/ and labels/ (e.g. a Label Studio YOLO export) into
  train/val[/test] folders and a ready config.yaml. It copies the user's data faithfully, bad files
  included, then reports every problem the check finds, so ``split`` then ``check`` name them all.
- ``check_dataset``: scan every split of a config and log each problem with its file.

The source folder is only read. The output is written to a hidden folder next to it and renamed
into place at the end (``convert.staging``), so a failed run never leaves half a dataset.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yoloforge.data.config import DataConfig, DatasetError, load_data_config, write_data_yaml
from yoloforge.data.convert import convert_coco, convert_voc, copy_file, refuse_existing, staging
from yoloforge.data.images import is_image
from yoloforge.data.scan import Problem, ScanResult, image_to_label_path, scan_split

log = logging.getLogger(__name__)

__all__ = ["CheckReport", "check_dataset", "convert_coco", "convert_voc", "split_dataset"]


@dataclass
class CheckReport:
    """The scan of every split of a dataset; ``usable`` decides the exit code of ``yoloforge check``."""

    config: DataConfig
    splits: dict[str, ScanResult]
    reasons: list[str] = field(default_factory=list)  # why the data cannot train; empty when usable
    orphans: list[Problem] = field(default_factory=list)  # label files that belong to no image

    @property
    def usable(self) -> bool:
        return not self.reasons

    @property
    def problems(self) -> list[Problem]:
        return [p for result in self.splits.values() for p in result.problems] + self.orphans


def check_dataset(data: str | Path, progress: bool = True) -> CheckReport:
    """Scan every split of ``data`` (a config YAML or "shapes"), logging the summary and each problem.

    Usable means: every split has at least one readable image and train has at least one object;
    warnings (dropped lines, skipped images) do not make data unusable.
    """
    config = load_data_config(data)
    splits = {
        split: scan_split(config.images(split), config.names, split, progress=progress, max_logged=None)
        for split in ("train", "val", "test")
        if getattr(config, split) is not None
    }
    report = CheckReport(config, splits, _unusable_reasons(splits), _orphans_of(config))
    for problem in report.orphans:
        log.warning(str(problem))
    n_errors = sum(p.severity == "error" for p in report.problems)
    n = len(report.problems)
    counts = f"{n} problem{'s' * (n != 1)} ({n_errors} image{'s' * (n_errors != 1)} skipped)"
    if report.usable:
        log.info(f"{config.yaml_file}: usable, {counts}")
    else:
        log.error(f"{config.yaml_file}: not usable: {'; '.join(report.reasons)} ({counts})")
    return report


def _orphans_of(config: DataConfig) -> list[Problem]:
    """Label files in the labels folders of the config's images that belong to none of them.

    All splits together: splits listed by .txt files often share one labels folder. Folders that
    hold images too (labels next to images) are left out: their other .txt files may be anything.
    """
    images = [p for split in (config.train, config.val, config.test or []) for p in split]
    expected = {image_to_label_path(p) for p in images}
    folders = {p.parent for p in expected} - {p.parent for p in images}
    orphans = sorted(p for folder in folders for p in folder.glob("*.txt") if p not in expected)
    return [
        Problem(str(p), "label file without an image (is its image misnamed?)", "warning") for p in orphans
    ]


def _unusable_reasons(splits: dict[str, ScanResult]) -> list[str]:
    reasons = [f"'{name}' has no readable images" for name, r in splits.items() if r.n_images == 0]
    if splits["train"].n_images and not splits["train"].n_boxes:
        reasons.append("'train' has no objects (every image is a background)")
    return reasons


# ----------------------------------------------------------------------------------------------
# split


def split_dataset(
    src: str | Path,
    out: str | Path,
    val: float = 0.2,
    test: float = 0.0,
    seed: int = 0,
    names: list[str] | None = None,
    progress: bool = True,
) -> Path:
    """Copy SRC/images and SRC/labels into OUT/{images,labels}/{train,val[,test]}; return OUT/config.yaml.

    An image and its label always go to the same split; backgrounds (no or empty label) are spread
    across the splits in proportion; the assignment depends only on the file names and ``seed``.
    Class names come from ``names``, SRC/classes.txt or SRC/notes.json (Label Studio).
    """
    src, out = Path(src).expanduser().absolute(), Path(out).expanduser().absolute()
    images = _source_images(src)
    _check_fractions(val, test)
    refuse_existing(out)
    names = names or read_class_names(src)
    assignment = assign_splits(images, val, test, seed)
    split_names = [s for s in ("train", "val", "test") if s in assignment.values()]
    yaml_splits = {s: f"images/{s}" for s in split_names}
    yaml_splits.setdefault("val", "images/train")  # val=0: validate on the training images
    with staging(out) as tmp:
        for image, split in assignment.items():
            rel = image.relative_to(src / "images")
            copy_file(image, tmp / "images" / split / rel)
            label = image_to_label_path(image)
            if label.is_file():
                copy_file(label, tmp / "labels" / split / rel.with_suffix(".txt"))
        yaml_file = write_data_yaml(tmp / "config.yaml", out, yaml_splits, names, f"split of {src}")
    counts = ", ".join(f"{sum(s == v for v in assignment.values())} {s}" for s in split_names)
    log.info(f"split {len(images)} images of {src} into {out}: {counts}")
    for problem in _orphan_labels(src, images):
        log.warning(str(problem))
    check_dataset(out / yaml_file.name, progress=progress)
    return out / yaml_file.name


def _source_images(src: Path) -> list[Path]:
    folder = src / "images"
    if not folder.is_dir():
        raise DatasetError(f"{src}: no 'images' folder: split expects SRC/images and SRC/labels")
    images = sorted(p for p in folder.rglob("*") if is_image(p) and p.is_file())
    if len(images) < 2:
        raise DatasetError(f"{folder}: found {len(images)} images, split needs at least 2")
    return images


def _check_fractions(val: float, test: float) -> None:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DatasetError(f"val={val} test={test}: each must be in [0, 1) and together below 1")


def read_class_names(src: Path) -> list[str]:
    """Names from SRC/classes.txt (one per line, in id order) or SRC/notes.json ``categories``."""
    classes_txt, notes = src / "classes.txt", src / "notes.json"
    if classes_txt.is_file():
        names = [line.strip() for line in classes_txt.read_text(encoding="utf-8-sig").splitlines()]
        if any(names):
            return [n for n in names if n]
    if notes.is_file():
        try:
            categories = json.loads(notes.read_text(encoding="utf-8"))["categories"]
            return [str(c["name"]) for c in sorted(categories, key=lambda c: int(c["id"]))]
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{notes}: expected 'categories': [{{id, name}}, ...] ({e})") from None
    raise DatasetError(
        f"{src}: no classes.txt or notes.json: write the class names to {classes_txt}, one a line in id order"
    )


def assign_splits(images: list[Path], val: float, test: float, seed: int) -> dict[Path, str]:
    """Image -> "train" | "val" | "test". Labelled images and backgrounds are shuffled and cut
    separately, so both are spread in proportion; val and test get at least one image when asked."""
    rng = np.random.default_rng(seed)
    is_background = {p: _is_background(image_to_label_path(p)) for p in images}
    labelled = [p for p in images if not is_background[p]]
    backgrounds = [p for p in images if is_background[p]]
    assignment: dict[Path, str] = {}
    for group in (labelled, backgrounds):
        order = [group[i] for i in rng.permutation(len(group))]
        n_test, n_val = round(len(order) * test), round(len(order) * val)
        for k, image in enumerate(order):
            assignment[image] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    for split, fraction in (("val", val), ("test", test)):
        train = [p for p in (*labelled, *backgrounds) if assignment[p] == "train"]
        if fraction > 0 and split not in assignment.values() and len(train) > 1:
            assignment[train[0]] = split
    return {p: assignment[p] for p in images}


def _is_background(label: Path) -> bool:
    try:
        return not label.read_text(encoding="utf-8-sig").strip()
    except FileNotFoundError:
        return True
    except (OSError, UnicodeDecodeError):
        return False  # a broken label counts as labelled; the check names it


def _orphan_labels(src: Path, images: list[Path]) -> list[Problem]:
    """Label files under SRC/labels with no image: reported, not copied."""
    expected = {image_to_label_path(p) for p in images}
    folder = src / "labels"
    orphans = sorted(p for p in folder.rglob("*.txt") if p not in expected) if folder.is_dir() else []
    return [Problem(str(p), "label file without an image; not copied", "warning") for p in orphans]
