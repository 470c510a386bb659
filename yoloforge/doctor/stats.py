"""Counts against the advanced guide's numbers: images and instances per class, background share,
class imbalance, classes missing from val or test; and the variety of sizes, lighting and sources.

The guide's figures: >= 1,500 images and >= 10,000 labelled instances per class, 0-10% background
images, images from varied times, lighting, cameras and sources. The imbalance and variety limits
are ours (the guide gives none) and are named so in the targets.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yoloforge.doctor.report import FAIL, OK, WARN, Finding, LabelledImage

MIN_IMAGES_PER_CLASS = 1500
MIN_INSTANCES_PER_CLASS = 10_000
MAX_BACKGROUND_SHARE = 0.10
MAX_IMBALANCE = 10.0  # largest / smallest class in train (ours)
DOMINANT_SHARE = 0.9  # one folder / one image size holding more than this dominates (ours)
MIN_BRIGHTNESS_SPREAD = 20.0  # grey levels between the 10th and 90th percentile (ours)


@dataclass(frozen=True)
class ClassCounts:
    """Per class of one split: images that hold it and its labelled instances."""

    images: np.ndarray  # (nc,) int64
    instances: np.ndarray  # (nc,) int64


def class_counts(images: Sequence[LabelledImage], nc: int) -> ClassCounts:
    per_image = np.zeros(nc, np.int64)
    instances = np.zeros(nc, np.int64)
    for image in images:
        classes = image.record.classes
        instances += np.bincount(classes, minlength=nc)[:nc]
        per_image[np.unique(classes)] += 1
    return ClassCounts(per_image, instances)


def count_table(by_split: dict[str, ClassCounts], names: list[str]) -> list[dict]:
    return [
        {"class": name, "split": split, "images": int(c.images[k]), "instances": int(c.instances[k])}
        for split, c in by_split.items()
        for k, name in enumerate(names)
    ]


def per_class_finding(
    check: str, counts: np.ndarray, names: list[str], minimum: int, table: list[dict]
) -> Finding:
    """images_per_class or instances_per_class of train against the guide's minimum."""
    what = "images" if check == "images_per_class" else "instances"
    k = int(np.argmin(counts))
    smallest = int(counts[k])
    target = f">= {minimum:,}"
    short = [names[i] for i in np.flatnonzero(counts < minimum)]
    if smallest == 0:
        message = f"class '{names[k]}' has no {what} in train: label some, or remove it from names"
        return Finding(check, FAIL, smallest, target, message, table)
    if not short:
        return Finding(check, OK, smallest, target, f"every class has {target} {what} in train", table)
    message = (
        f"{len(short)} of {len(names)} classes below {minimum:,} {what} in train (fewest: '{names[k]}' "
        f"with {smallest:,}): label more {what} of those classes first"
    )
    return Finding(check, WARN, smallest, target, message, table)


def missing_in_held_out(by_split: dict[str, ClassCounts], names: list[str]) -> list[str]:
    """'class in split' for every class with no instance in val or test."""
    return [
        f"'{names[k]}' in {split}"
        for split, c in by_split.items()
        if split != "train"
        for k in np.flatnonzero(c.instances == 0)
    ]


def with_missing_classes(finding: Finding, missing: list[str]) -> Finding:
    """instances_per_class, with classes that val or test lack (their AP cannot be measured)."""
    if not missing:
        return finding
    message = (
        f"no instances of {', '.join(missing)} (their AP cannot be measured): add some; " + finding.message
    )
    severity = FAIL if finding.severity == FAIL else WARN
    return Finding(finding.check, severity, finding.value, finding.target, message, finding.items)


def backgrounds_finding(by_split: dict[str, list[LabelledImage]]) -> Finding:
    items = []
    for split, images in by_split.items():
        n = sum(image.record.is_background for image in images)
        items.append(
            {"split": split, "backgrounds": n, "images": len(images), "share": _share(n, len(images))}
        )
    train = items[0]
    share, target = train["share"], f"0-{MAX_BACKGROUND_SHARE:.0%}"
    if share <= MAX_BACKGROUND_SHARE:
        return Finding(
            "backgrounds", OK, share, target, f"{share:.0%} of train images are backgrounds", items
        )
    message = (
        f"{share:.0%} of train images are backgrounds (no labels): if they hold objects, label them; "
        f"otherwise drop some, down to about {MAX_BACKGROUND_SHARE:.0%}"
    )
    return Finding("backgrounds", WARN, share, target, message, items)


def imbalance_finding(train: ClassCounts, names: list[str]) -> Finding:
    counts = train.instances
    big, small = int(np.argmax(counts)), int(np.argmin(counts))
    target = f"<= {MAX_IMBALANCE:g} (ours)"
    items = [
        {"class": n, "instances": int(c)}
        for n, c in sorted(zip(names, counts, strict=True), key=lambda x: -x[1])
    ]
    if len(names) == 1:
        return Finding("imbalance", OK, 1.0, target, "one class: nothing to balance", items)
    if counts[small] == 0:
        message = f"class '{names[small]}' has no train instances: label some, or remove it from names"
        return Finding("imbalance", WARN, None, target, message, items)
    ratio = round(float(counts[big] / counts[small]), 2)
    if ratio <= MAX_IMBALANCE:
        return Finding("imbalance", OK, ratio, target, f"largest/smallest class: {ratio:g}", items)
    message = (
        f"'{names[big]}' has {ratio:g}x the instances of '{names[small]}': label more of the rare classes "
        "(they will be found less often)"
    )
    return Finding("imbalance", WARN, ratio, target, message, items)


def variety_finding(images: Sequence[LabelledImage], brightness: np.ndarray, imgsz: int) -> Finding:
    """Spread of sizes, aspect ratios, lighting and source folders; a warning when one dominates."""
    n = len(images)
    sizes = Counter(image.shape for image in images)
    ((top_size, top_count),) = sizes.most_common(1)
    train = [image for image in images if image.split == "train"]  # splits are folders by design
    folders = Counter(os.path.dirname(image.path) for image in train)
    ((top_folder, folder_count),) = folders.most_common(1) or [("", 0)]
    lit = brightness[np.isfinite(brightness)]
    p10, p90 = np.percentile(lit, [10, 90]) if lit.size else (0.0, 0.0)
    long_sides = np.array([max(image.shape) for image in images])
    upscaled, downscaled = long_sides < imgsz / 2, long_sides > 3 * imgsz
    aspect = np.array([image.shape[1] / image.shape[0] for image in images])
    value = {
        "sizes": len(sizes),
        "commonest_size_share": _share(top_count, n),
        "aspect_ratio_p10_p90": [round(float(x), 2) for x in np.percentile(aspect, [10, 90])],
        "brightness_p10_p90": [round(float(p10), 1), round(float(p90), 1)],
        "train_folders": len(folders),
        "much_smaller_than_imgsz": _share(int(upscaled.sum()), n),
        "much_larger_than_imgsz": _share(int(downscaled.sum()), n),
    }
    warnings = []
    if n >= 20 and top_count / n > DOMINANT_SHARE:
        h, w = top_size
        warnings.append(f"{top_count / n:.0%} of the images are {w}x{h}: add images from other cameras")
    if len(folders) > 1 and folder_count / max(len(train), 1) > DOMINANT_SHARE:
        share = folder_count / len(train)
        warnings.append(f"{share:.0%} of the train images come from {top_folder}: add other sources")
    if n >= 20 and p90 - p10 < MIN_BRIGHTNESS_SPREAD:
        warnings.append(
            f"lighting hardly varies (mean grey {p10:.0f}-{p90:.0f} for 80% of the images): "
            "add other times of day and lighting"
        )
    if upscaled.mean() > 0.5:
        native = int(np.ceil(np.median(long_sides) / 32) * 32)
        warnings.append(
            f"{upscaled.mean():.0%} of the images are under half of imgsz={imgsz}: "
            f"train at about their size, imgsz={native}"
        )
    if downscaled.mean() > 0.5:
        warnings.append(f"{downscaled.mean():.0%} of the images are over 3x imgsz={imgsz}: see small_objects")
    target = f"no condition > {DOMINANT_SHARE:.0%} (ours)"
    odd = np.flatnonzero(upscaled | downscaled)
    items = [
        {"image": images[i].path, "split": images[i].split, "shape_hw": list(images[i].shape)} for i in odd
    ]
    if not warnings:
        message = f"{len(sizes)} image sizes, {len(folders)} folders, mean grey {p10:.0f}-{p90:.0f}"
        return Finding("variety", OK, value, target, message, items)
    return Finding("variety", WARN, value, target, "; ".join(warnings), items)


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
