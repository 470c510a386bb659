"""yoloforge: train, validate, run and export YOLO object detectors on your own data."""

__version__ = "0.1.0"

__all__ = ["YOLO", "__version__", "doctor"]


def __getattr__(name: str):
    # `from yoloforge import YOLO` imports torch and the stages on first use only, so that
    # `yoloforge --help` and the data tools start fast.
    if name == "YOLO":
        from yoloforge.api import YOLO

        return YOLO
    if name == "doctor":  # the package, callable as doctor(data, ...): one object however it is reached
        import yoloforge.doctor

        return yoloforge.doctor
    raise AttributeError(f"module 'yoloforge' has no attribute {name!r}")
