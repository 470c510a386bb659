"""The model zoo: family and size names, the size table, and ``build_model``."""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from yoloforge.model.detector import STRIDES, DetectionModel
from yoloforge.model.init import draw_initial_weights
from yoloforge.model.scale import Scale
from yoloforge.model.yolo11 import build_yolo11
from yoloforge.model.yolov8 import build_yolov8

# (depth, width, max_channels) per size: the reference's published scaling constants.
SIZES: dict[str, dict[str, Scale]] = {
    "yolov8": {
        "n": Scale(0.33, 0.25, 1024),
        "s": Scale(0.33, 0.50, 1024),
        "m": Scale(0.67, 0.75, 768),
        "l": Scale(1.00, 1.00, 512),
        "x": Scale(1.00, 1.25, 512),
    },
    "yolo11": {
        "n": Scale(0.50, 0.25, 1024),
        "s": Scale(0.50, 0.50, 1024),
        "m": Scale(0.50, 1.00, 512),
        "l": Scale(1.00, 1.00, 512),
        "x": Scale(1.00, 1.50, 512),
    },
}
BUILDERS: dict[str, Callable[[str, Scale, int], DetectionModel]] = {
    "yolov8": build_yolov8,
    "yolo11": build_yolo11,
}
MODEL_NAMES: tuple[str, ...] = tuple(f"{family}{size}" for family, sizes in SIZES.items() for size in sizes)

_NAME = re.compile(r"^(yolov8|yolo11)([nslmx])$")


def parse_model_name(name: str) -> tuple[str, str]:
    """'yolov8n', 'yolov8n.yaml', 'yolo11s.pt', 'YOLOv8n', 'weights/yolov8n.pt' -> (family, size).

    Raises ValueError naming the valid names.
    """
    stem = re.sub(r"\.(ya?ml|pt)$", "", name.strip().replace("\\", "/").rsplit("/", 1)[-1], flags=re.I)
    match = _NAME.match(stem.lower())
    if match is None:
        raise ValueError(
            f"unknown model name '{name}': use one of {', '.join(MODEL_NAMES)} "
            "(optionally with .yaml to build or .pt for published weights)"
        )
    return match.group(1), match.group(2)


def build_model(family: str, size: str, nc: int = 80) -> DetectionModel:
    """An untrained detector, e.g. ``build_model("yolov8", "n", nc=3)``.

    Its initial weights come from the global torch RNG, drawn as the reference draws them: after
    ``torch.manual_seed(s)`` it starts from the reference's initial weights for seed s.
    """
    if family not in SIZES or size not in SIZES[family]:
        raise ValueError(f"unknown model {family}{size}: use one of {', '.join(MODEL_NAMES)}")
    if nc < 1:
        raise ValueError(f"nc={nc}: the number of classes must be at least 1")
    with torch.random.fork_rng(devices=[]):  # construction's own draws are thrown away ...
        model = BUILDERS[family](size, SIZES[family][size], nc)
    draw_initial_weights(model, STRIDES)  # ... and the weights drawn in the reference's order
    return model
