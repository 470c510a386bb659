"""The ``YOLO`` facade users know: build or load a model, then train, val, predict or export.

Each method turns keyword settings into the frozen settings of its stage and hands them to that
stage; the facade itself holds no training logic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yoloforge.console import setup_console
from yoloforge.loading import LoadedModel, load_model
from yoloforge.settings import ExportSettings, PredictSettings, TrainSettings, ValSettings, build


class YOLO:
    """``YOLO("yolov8n.pt")``, ``YOLO("yolo11s.yaml")``, ``YOLO("runs/detect/train/weights/best.pt")``."""

    def __init__(self, model: str | Path = "yolov8n.pt", verbose: bool = True):
        setup_console(verbose)
        self.source = str(model)
        self._exported = None
        from yoloforge.backends import exported_format, load_exported

        if exported_format(self.source) is not None:  # .onnx, .torchscript, an OpenVINO folder
            self._exported = load_exported(self.source)
            self._loaded = None
        else:
            self._loaded: LoadedModel | None = load_model(self.source)
        self.metrics = None
        self._predictor = None

    # --- what the user can read ----------------------------------------------------------------
    @property
    def model(self):
        """The torch module (a ``DetectionModel``), or the runtime wrapper of an exported file."""
        return self._loaded.model if self._loaded is not None else self._exported

    @property
    def names(self) -> dict[int, str]:
        names = self._loaded.names if self._loaded is not None else self._exported.names
        return dict(enumerate(names))

    @property
    def task(self) -> str:
        """Always 'detect': yoloforge trains and runs detectors only."""
        return "detect"

    @property
    def ckpt_path(self) -> str | None:
        return str(self._loaded.path) if self._loaded is not None and self._loaded.path else None

    def info(self) -> str:
        """The model summary line, e.g. 'YOLOv8n summary: 129 layers, 3,157,200 parameters, ...'."""
        text = self._require_torch("info").model.summary(imgsz=640)
        import logging

        logging.getLogger("yoloforge").info(text)
        return text

    # --- modes ---------------------------------------------------------------------------------
    def train(self, callbacks: list | None = None, **overrides: Any):
        """Train on ``data=``; returns the final validation metrics. Afterwards this object holds best.pt.

        ``device=[0, 1]`` (or ``"0,1"``) trains in one process per GPU, launched through torchrun;
        it returns None (the metrics are in the run's results.csv) and takes no callbacks (they
        would run in another process). CPU processes: ``torchrun --nproc-per-node=N -m yoloforge
        train device=cpu ...``.
        """
        from yoloforge.trainer import StartingPoint, Trainer, train_settings_for_resume

        loaded = self._require_torch("train")
        resume_dir = None
        if overrides.get("resume"):
            if loaded.checkpoint is None:
                raise ValueError(
                    f"resume=True needs a last.pt written by yoloforge training; {self.source} is not one"
                )
            settings = build(TrainSettings, train_settings_for_resume(loaded.checkpoint, overrides))
            ckpt = loaded.checkpoint
            if ckpt.optimizer is None:
                raise ValueError(f"{self.source} holds no optimizer state (a best.pt?); resume from last.pt")
            if ckpt.epoch + 1 >= settings.epochs:
                raise ValueError(
                    f"{self.source}: training already finished at {ckpt.epoch + 1} epochs; "
                    f"pass epochs=N (N > {ckpt.epoch + 1}) to train further, or drop resume=True to fine-tune"
                )
            resume_dir = loaded.path.resolve().parent.parent
        else:
            overrides = {"model": self.source, **overrides}
            settings = build(TrainSettings, overrides)
        from yoloforge import launch

        if launch.wants_processes(settings.device):
            return self._train_in_processes(settings, overrides, callbacks)
        start = StartingPoint(
            family=loaded.family,
            size=loaded.size,
            source=self.source,
            weights=loaded.pretrained,
            resume=loaded.checkpoint if resume_dir else None,
            resume_dir=resume_dir,
        )
        trainer = Trainer(settings, start, callbacks=callbacks)
        self.metrics = trainer.fit()
        best = trainer.weights_dir / "best.pt"
        if best.exists():
            self.source, self._loaded = str(best), load_model(best)
        self.trainer = trainer
        return self.metrics

    def _train_in_processes(self, settings: TrainSettings, overrides: dict[str, Any], callbacks) -> None:
        from yoloforge.distributed import DistributedError
        from yoloforge.launch import train_in_processes

        if callbacks:
            raise ValueError(
                f"device={settings.device}: callbacks cannot reach the training processes; "
                "train on one device, or run torchrun yourself with the callbacks in your script"
            )
        launched = train_in_processes(self.source, settings, overrides)
        if launched.returncode != 0:
            raise DistributedError(
                f"training in several processes failed (exit status {launched.returncode}); "
                "the failing process's error is above"
            )
        best = launched.run_dir / "weights" / "best.pt"
        if best.exists():
            self.source, self._loaded = str(best), load_model(best)
        self.metrics = None
        return None

    def tune(self, **overrides: Any) -> dict[str, float]:
        """Search training hyperparameters: ``iterations`` trials, each a fresh training of this
        model with mutated hyperparameters (``tuner="ray"``: Ray Tune trials). Tune settings are
        ``TuneSettings``; every other key is a train setting for every trial. Returns the best
        trial's row of tune_results.csv (fitness, metrics, hyperparameters)."""
        import logging

        from yoloforge.tune import run_tune

        self._require_torch("tune")
        return run_tune(self.source, overrides, log=logging.getLogger("yoloforge.tune").info)

    def val(self, **overrides: Any):
        """Validate on ``data=`` (the training data when omitted); returns metrics (``.box.map`` ...).

        imgsz, data and single_cls default to the training run's (an export: its input size)."""
        from yoloforge.evaluate import run_validation

        remembered = self._remembered("imgsz", "data", "single_cls")
        settings = build(ValSettings, {"model": self.source, **overrides}, fallbacks=remembered)
        if "data" not in overrides and settings.data and settings.data == remembered.get("data"):
            self._check_remembered_data(settings.data)
        self.metrics = run_validation(self.model, self.names, settings)
        return self.metrics

    def predict(self, source: Any = None, stream: bool = False, **overrides: Any):
        """Detect objects in images, folders, videos, a webcam (0) or arrays; a list of Results,
        or a generator of them with ``stream=True``. imgsz defaults to the training run's."""
        from yoloforge.predictor import Predictor

        settings = build(
            PredictSettings,
            {"model": self.source, "stream": stream, **overrides},
            fallbacks=self._remembered("imgsz"),
        )
        # building a predictor copies and fuses the model: reuse it while model and settings stay
        key = (id(self.model), settings)
        if self._predictor is None or self._predictor[0] != key:
            self._predictor = (key, Predictor(self.model, list(self.names.values()), settings))
        results = self._predictor[1].stream(source)
        return results if stream else list(results)

    def __call__(self, source: Any = None, stream: bool = False, **overrides: Any):
        return self.predict(source, stream=stream, **overrides)

    def export(self, **overrides: Any) -> str:
        """Write an ONNX or TorchScript file (or an OpenVINO folder, ``format="openvino"``) next to
        the checkpoint; returns its path."""
        from yoloforge.exporter import export

        loaded = self._require_torch("export")
        remembered = self._remembered("imgsz")
        settings = build(ExportSettings, {"model": self.source, **overrides}, fallbacks=remembered)
        return str(export(loaded, settings))

    def benchmark(self, **overrides: Any) -> list:
        """Export to every format into a benchmark folder and measure each on ``data=``'s val split:
        a list of ``BenchmarkRow`` (format, size, mAP50-95, ms/image, or why a format could not run).
        imgsz and data default to the training run's."""
        from yoloforge.benchmark import run_benchmark
        from yoloforge.settings import BenchmarkSettings

        loaded = self._require_torch("benchmark")
        remembered = self._remembered("imgsz", "data")
        settings = build(BenchmarkSettings, {"model": self.source, **overrides}, fallbacks=remembered)
        return run_benchmark(loaded, settings)

    def fuse(self) -> YOLO:
        """Fold batch norms into convolutions, in place (faster inference, same predictions).
        Idempotent; returns self. ``train()`` afterwards still starts from the unfused weights
        the file holds. An exported model is left as it is (its graph is fixed)."""
        if self._loaded is not None:
            self._loaded.model.fuse()
        return self

    def _remembered(self, *keys: str) -> dict[str, Any]:
        """What the file remembers of how it was made, for settings the user leaves out: the
        training run's settings (a .pt) or the input size of an export."""
        if self._exported is not None:
            h, w = self._exported.imgsz
            return {"imgsz": max(h, w)} if "imgsz" in keys else {}
        args = (self._loaded.train_args if self._loaded is not None else None) or {}
        out = {k: args[k] for k in keys if args.get(k) not in (None, "")}
        if isinstance(out.get("imgsz"), list | tuple):  # other trainers may keep (h, w)
            out["imgsz"] = max(out["imgsz"])
        # a value of an unexpected type (a foreign checkpoint) is not the user's mistake: drop it
        expected = {"imgsz": int, "data": str, "single_cls": bool}
        return {k: v for k, v in out.items() if isinstance(v, expected.get(k, object))}

    def _check_remembered_data(self, data: str) -> None:
        """One line when the training run's dataset cannot be found from here."""
        from yoloforge.data.config import DEMO_NAME, DatasetError

        if data in (DEMO_NAME, f"{DEMO_NAME}.yaml") or Path(data).expanduser().is_file():
            return
        raise DatasetError(
            f"{Path(self.source).name} was trained on data={data}, which is not found from here; "
            "pass data=path/to/config.yaml"
        )

    def _require_torch(self, what: str) -> LoadedModel:
        if self._loaded is None:
            raise ValueError(
                f"{what} needs a PyTorch model (.pt or a model name); {self.source} is an export"
            )
        return self._loaded

    def __repr__(self) -> str:
        return f"YOLO({self.source!r})"
