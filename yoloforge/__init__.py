"""yoloforge: train, validate, run and export YOLO object detectors on your own data."""

__version__ = "0.1.0"

from yoloforge.api import YOLO  # noqa: E402

__all__ = ["YOLO", "__version__"]
