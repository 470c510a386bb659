"""Batch-1 CPU prediction latency, ours against the reference, on the same weights and image.

    python benchmarks/bench_predict_vs_reference.py [--imgsz 320 640] [--runs 30] [--load 0]
        [--reference /tmp/peer/bin/python] [--weights tests/fixtures/reference/yolov8n.pt]

Rows: ours through PyTorch, ONNX (onnxruntime) and OpenVINO (when the ``openvino`` package is
installed and our exporter takes ``format=openvino``; otherwise the row says why it is missing),
``--half`` adds ours with ``half=True`` (bfloat16 on CPUs with native bf16),
and the reference through PyTorch and ONNX when a Python with ultralytics is given (``--reference``
or $REFERENCE_PYTHON; it is never imported here). Each row is a long-lived process that loads its
model once, then times one ``predict()`` call per request, one image per call, as users call it
(the image is a decoded BGR array, so JPEG decoding is not in the figure). The processes take turns
call by call (ours, the reference, ours, ...) so that whatever else the machine does hits every
row alike; each figure is the median of ``--runs`` calls after ``--warmup`` untimed ones.

The weights default to the reference-format yolov8n checkpoint in tests/fixtures (80 classes,
weights that give boxes to suppress): our loader imports it, the reference loads it natively.
``--load N`` starts N busy-loop processes at the default priority for the whole measurement, to
see how each side holds up on a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = ROOT / "tests" / "fixtures" / "reference" / "yolov8n.pt"
BUSY_LOOP = "while True: pass"
REPLY = "@reply "  # a worker's answer lines start with it

# ----------------------------------------------------------------------------------------------
# worker side: runs in our interpreter or in the reference's, imports only what its row needs


def _synthetic_image(h: int = 1080, w: int = 810):
    """A photo-sized BGR image with smooth structure (the same for every row)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _load_model(kind: str, weights: Path, imgsz: int, workdir: Path):
    """A model object with ``predict``; exports go to a folder of their own per size."""
    impl, backend = kind.split("-")[:2]
    if impl == "ours":
        from yoloforge import YOLO
    else:
        from ultralytics import YOLO
    if backend == "pytorch":
        return YOLO(str(weights))
    folder = workdir / f"{kind}-{imgsz}"
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / "model.pt"
    local.write_bytes(weights.read_bytes())
    exported = YOLO(str(local)).export(format=backend, imgsz=imgsz)
    return YOLO(str(exported))


def worker(kind: str, weights: Path, workdir: Path) -> None:
    """Rows ending in -half predict with half=True (bf16 on a CPU that has it natively).

    Answers 'load IMGSZ' (load or export the model, predict once) with the number of boxes, and
    'time IMGSZ' with one predict call's milliseconds."""
    image = _synthetic_image()
    models: dict[int, object] = {}
    options = {"device": "cpu", "verbose": False, **({"half": True} if kind.endswith("-half") else {})}
    replies, sys.stdout = sys.stdout, sys.stderr  # whatever the libraries print stays out of the replies
    for line in sys.stdin:
        verb, imgsz = line.split()
        size = int(imgsz)
        try:
            if verb == "load":
                models[size] = _load_model(kind, weights, size, workdir)
                out = models[size].predict(image, imgsz=size, **options)
                reply = {"ok": True, "boxes": len(out[0].boxes)}
            else:
                start = time.perf_counter()
                models[size].predict(image, imgsz=size, **options)
                reply = {"ok": True, "ms": (time.perf_counter() - start) * 1e3}
        except Exception as e:  # reported as the row's note, the other rows go on
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0][:200]}
        print(REPLY + json.dumps(reply), file=replies, flush=True)


# ----------------------------------------------------------------------------------------------
# driver side


class Row:
    """One long-lived worker process: a model kind in one interpreter."""

    def __init__(self, kind: str, python: str, weights: Path, workdir: Path):
        self.kind, self.note = kind, ""
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"}
        if kind.startswith("ours"):
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cmd = [python, str(Path(__file__).resolve()), "--worker", kind, "--weights", str(weights)]
        cmd += ["--workdir", str(workdir)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        self.times: dict[int, list[float]] = {}
        self.boxes: dict[int, int] = {}

    def ask(self, verb: str, imgsz: int) -> dict:
        if self.note:
            return {"ok": False}
        self.proc.stdin.write(f"{verb} {imgsz}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        while line and not line.startswith(REPLY):  # something a library printed
            line = self.proc.stdout.readline()
        reply = json.loads(line[len(REPLY) :]) if line else {"ok": False, "error": "worker exited"}
        if not reply["ok"]:
            self.note = reply.get("error", "failed")
        return reply

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@contextmanager
def busy_loops(n: int):
    """``n`` CPU-bound processes at the default priority while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def openvino_available() -> str:
    """'' when an OpenVINO row can run, else why not."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return "skipped: the openvino package is not installed"
    import dataclasses

    from yoloforge.settings import ExportSettings

    field = next(f for f in dataclasses.fields(ExportSettings) if f.name == "format")
    if "openvino" not in (field.metadata.get("choices") or ()):
        return "skipped: our exporter does not take format=openvino yet"
    return ""


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"


def measure(rows: list[Row], sizes: list[int], runs: int, warmup: int) -> None:
    """Rows take turns call by call within their group: the PyTorch rows, then the exported ones.
    onnxruntime and OpenVINO keep their thread pools spinning for a while after each call, so a
    PyTorch row timed right after one would find the CPUs busy (ours then predicts on one thread,
    as it does beside any busy process) and measure the other runtime's spin, not itself."""
    groups = [
        [r for r in rows if r.kind.split("-")[1] == "pytorch"],
        [r for r in rows if r.kind.split("-")[1] != "pytorch"],
    ]
    for size in sizes:
        for row in rows:
            reply = row.ask("load", size)
            if reply.get("ok"):
                row.boxes[size] = reply["boxes"]
        for group in groups:
            for i in range(warmup + runs):
                for row in group:
                    reply = row.ask("time", size)
                    if reply.get("ok") and i >= warmup:
                        row.times.setdefault(size, []).append(reply["ms"])


def report(rows: list[Row], sizes: list[int], skipped: dict[str, str]) -> None:
    print(f"\n{'row':20s}" + "".join(f"{f'ms@{s}':>12s}{'boxes':>7s}" for s in sizes))
    for row in rows:
        cells = ""
        for s in sizes:
            times = row.times.get(s)
            cells += (
                f"{statistics.median(times):12.1f}{row.boxes.get(s, 0):7d}" if times else f"{'-':>12s}{'':7s}"
            )
        print(f"{row.kind:20s}{cells}{'  ' + row.note if row.note else ''}")
    for kind, why in skipped.items():
        print(f"{kind:20s}{why}")
    by_kind = {r.kind: r for r in rows}
    ours, ref = by_kind.get("ours-pytorch"), by_kind.get("reference-pytorch")
    if ours and ref:
        for s in sizes:
            if ours.times.get(s) and ref.times.get(s):
                ratio = statistics.median(ours.times[s]) / statistics.median(ref.times[s])
                print(f"PyTorch at {s}: ours / reference = {ratio:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--load", type=int, default=0, help="busy-loop processes running beside it")
    default_ref = os.environ.get("REFERENCE_PYTHON") or os.environ.get("YOLOFORGE_PEER_PYTHON", "")
    p.add_argument("--reference", default=default_ref, help="a Python with ultralytics installed")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--no-export", action="store_true", help="PyTorch rows only")
    p.add_argument("--half", action="store_true", help="and ours with half=True (bf16 where native)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.weights, args.workdir)

    kinds = {"ours-pytorch": sys.executable}
    if args.half:
        kinds["ours-pytorch-half"] = sys.executable
    skipped: dict[str, str] = {}
    if not args.no_export:
        kinds["ours-onnx"] = sys.executable
        why = openvino_available()
        if why:
            skipped["ours-openvino"] = why
        else:
            kinds["ours-openvino"] = sys.executable
    if args.reference:
        kinds["reference-pytorch"] = args.reference
        if not args.no_export:
            kinds["reference-onnx"] = args.reference
    else:
        skipped["reference"] = "not run: pass --reference /path/to/python-with-ultralytics"
    start_load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [Row(kind, python, args.weights, Path(tmp)) for kind, python in kinds.items()]
        try:
            with busy_loops(args.load):
                measure(rows, args.imgsz, args.runs, args.warmup)
        finally:
            for row in rows:
                row.close()
    print(f"median of {args.runs} calls per row, batch 1, CPU, {args.load} busy-loop process(es) beside it")
    print(
        f"machine: {os.cpu_count()} CPUs; 1-minute load average {start_load} at the start, "
        f"{load_average()} at the end"
    )
    report(rows, args.imgsz, skipped)


if __name__ == "__main__":
    main()
