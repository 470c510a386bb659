"""``yoloforge benchmark``: every export format of one model, side by side.

    rows = run_benchmark(load_model("best.pt"), BenchmarkSettings(data="config.yaml", imgsz=256))

Each format is exported into the benchmark folder (``runs/detect/benchmark``; the user's own
``best.onnx`` beside the weights is never overwritten), then validated on the dataset's val split at
batch 1: the row holds the file size, mAP50-95 and the validator's inference ms/image (the forward
pass alone; letterboxing and NMS are the same code for every format). A format whose package is not
installed, or whose export fails, gets a row with the one-line reason instead of numbers.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from yoloforge.backends import ExportedModelError, load_exported
from yoloforge.device import select_device
from yoloforge.evaluate import run_validation
from yoloforge.exporter import FORMAT_NAMES, ExportError, export, file_size
from yoloforge.loading import LoadedModel
from yoloforge.runs import next_run_dir
from yoloforge.settings import BenchmarkSettings, ExportSettings, SettingsError, ValSettings

log = logging.getLogger(__name__)

FORMATS = ("pytorch", "torchscript", "onnx", "openvino")


@dataclass(frozen=True)
class BenchmarkRow:
    format: str  # 'PyTorch', 'TorchScript', 'ONNX', 'OpenVINO'
    path: str  # the file or folder measured; '' when none was written
    size_mb: float | None
    map50_95: float | None  # on the val split, batch 1
    ms_per_image: float | None  # the validator's inference time: the model's forward pass alone
    problem: str = ""  # why this format has no figures; '' when it has them


def run_benchmark(loaded: LoadedModel, settings: BenchmarkSettings) -> list[BenchmarkRow]:
    """One row per format of ``settings.formats`` (all when empty), logged as a table and written
    to ``benchmark.csv`` in the benchmark folder."""
    if not settings.data:
        raise SettingsError("benchmark: data= is required (the dataset config yaml, or 'shapes')")
    formats = chosen_formats(settings.formats)
    folder = next_run_dir(settings.project, settings.name)
    # exports go to the benchmark folder: the model's own exports beside it stay untouched
    stem = loaded.path.name if loaded.path else f"{loaded.family}{loaded.size}.pt"
    local = replace(loaded, path=folder / stem)
    rows = []
    for fmt in formats:
        if fmt == "pytorch":  # not guarded: a dataset that cannot be read stops the benchmark here
            rows.append(_pytorch_row(loaded, settings, folder))
        else:
            rows.append(_export_row(local, fmt, settings, folder))
    log.info("%s", format_table(rows, title=_title(loaded, settings)))
    write_csv(rows, folder / "benchmark.csv")
    log.info("Results saved to %s", folder)
    return rows


def chosen_formats(text: str) -> tuple[str, ...]:
    """'onnx,openvino' -> ('onnx', 'openvino') in FORMATS order; '' -> all of FORMATS."""
    wanted = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise SettingsError(f"formats={text} is not valid: choose among {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in wanted) if wanted else FORMATS


def _pytorch_row(loaded: LoadedModel, settings: BenchmarkSettings, folder: Path) -> BenchmarkRow:
    val = _val_settings(settings, folder, "pt")
    metrics = run_validation(loaded.model, dict(enumerate(loaded.names)), val)
    size = loaded.path.stat().st_size / 1e6 if loaded.path else None
    path = str(loaded.path) if loaded.path else f"{loaded.family}{loaded.size}"
    return BenchmarkRow("PyTorch", path, size, metrics.box.map, metrics.speed["inference"])


def _export_row(loaded: LoadedModel, fmt: str, settings: BenchmarkSettings, folder: Path) -> BenchmarkRow:
    name = FORMAT_NAMES[fmt]
    try:
        path = export(loaded, ExportSettings(format=fmt, imgsz=settings.imgsz, device=settings.device))
        runtime = load_exported(path)
        val = _val_settings(settings, folder, fmt)
        metrics = run_validation(runtime, dict(enumerate(runtime.names)), val)
    except (ImportError, ExportError, ExportedModelError) as e:
        log.warning("benchmark: %s skipped: %s", name, e)
        return BenchmarkRow(name, "", None, None, None, problem=str(e).splitlines()[0])
    return BenchmarkRow(name, str(path), file_size(path) / 1e6, metrics.box.map, metrics.speed["inference"])


def _val_settings(settings: BenchmarkSettings, folder: Path, name: str) -> ValSettings:
    return ValSettings(
        data=settings.data,
        imgsz=settings.imgsz,
        batch=1,  # ms/image as one image at a time gives it, the latency users feel
        device=settings.device,
        workers=settings.workers,
        plots=False,
        verbose=False,
        project=str(folder),
        name=f"val_{name}",
        exist_ok=True,
    )


def _title(loaded: LoadedModel, settings: BenchmarkSettings) -> str:
    model = loaded.path.name if loaded.path else f"{loaded.family}{loaded.size}"
    device = select_device(settings.device).type
    return f"Benchmark of {model} on {settings.data} (val split, batch 1), imgsz={settings.imgsz}, {device}"


def format_table(rows: list[BenchmarkRow], title: str = "") -> str:
    """The rows as an aligned text table; a row without figures shows its reason."""
    lines = [title] if title else []
    lines.append(f"{'format':<12} {'size (MB)':>9}  {'mAP50-95':>8}  {'ms/image':>8}  file")
    for r in rows:
        if r.problem:
            lines.append(f"{r.format:<12} {'-':>9}  {'-':>8}  {'-':>8}  {r.problem}")
            continue
        size = f"{r.size_mb:.1f}" if r.size_mb is not None else "-"
        lines.append(f"{r.format:<12} {size:>9}  {r.map50_95:>8.4f}  {r.ms_per_image:>8.1f}  {r.path}")
    return "\n".join(lines)


def write_csv(rows: list[BenchmarkRow], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in fields(BenchmarkRow)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
