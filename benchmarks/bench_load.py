"""How much slower do training and prediction get when another process wants the CPU? Ours against
the reference, idle and beside busy-loop processes, side by side.

    python benchmarks/bench_load.py [--load 1] [--rounds 3] [--epochs 2] [--images 160] [--imgsz 256]
        [--predict-runs 20] [--reference /tmp/peer/bin/python] [--skip-train] [--skip-predict]

Training: yolov8n from scratch on the demo data (``--images`` training images, ``--epochs``, batch
16, CPU, default workers; no validation), both trainers through their command lines, timed by what
each prints ("N epochs completed in X hours": set-up and final validation left out), in seconds per
epoch. Prediction: one image per ``predict()`` call, batch 1, CPU, at ``--imgsz``, each side a
long-lived process (benchmarks/bench_predict_vs_reference.py), median of ``--predict-runs`` calls.
Every round runs each side idle and then beside ``--load`` busy-loop processes at the default
priority, ours and the reference in turn, so that whatever else the machine does hits both alike;
figures are medians over rounds, and the growth factor is loaded / idle. The reference runs only
when a Python with ultralytics is given (``--reference`` or $REFERENCE_PYTHON).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict_vs_reference import DEFAULT_WEIGHTS, ROOT, Row, busy_loops  # noqa: E402

REFERENCE_TRAIN = """
import sys
from ultralytics import YOLO
data, epochs, imgsz, out = sys.argv[1:5]
YOLO("yolov8n.yaml").train(data=data, epochs=int(epochs), imgsz=int(imgsz), batch=16, device="cpu",
                           val=False, plots=False, project=out, name="ref", exist_ok=True, seed=0)
"""


def epoch_seconds(cmd: list[str], env: dict, epochs: int, log: Path) -> float:
    """Runs a training command; seconds per epoch from its "epochs completed in X hours" line."""
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    text = log.read_text(errors="replace")
    for line in text.splitlines():
        if "epochs completed in" in line:
            return float(line.split("completed in")[1].split("hours")[0]) * 3600 / epochs
    raise SystemExit(f"{cmd[0]} training failed (exit {proc.returncode}); see {log}")


def train_commands(args, data: Path, out: Path) -> dict[str, tuple[list[str], dict]]:
    ours_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    ours = [sys.executable, "-m", "yoloforge", "train", f"data={data}", "model=yolov8n.yaml",
            f"epochs={args.epochs}", f"imgsz={args.imgsz}", "batch=16", "device=cpu", "val=False",
            "plots=False", f"project={out}", "name=ours", "exist_ok=True", "seed=0"]  # fmt: skip
    commands = {"ours": (ours, ours_env)}
    if args.reference:
        script = out / "reference_train.py"
        script.write_text(textwrap.dedent(REFERENCE_TRAIN))
        cmd = [args.reference, str(script), str(data), str(args.epochs), str(args.imgsz), str(out)]
        commands["reference"] = (cmd, {**os.environ, "YOLO_OFFLINE": "1"})
    return commands


def bench_train(args, out: Path) -> dict[tuple[str, int], list[float]]:
    from yoloforge.data.demo import ensure_shapes

    data = ensure_shapes(out / "shapes", n_train=args.images, n_val=8)
    commands = train_commands(args, data, out)
    times: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for load in (0, args.load):
            for side, (cmd, env) in commands.items():
                with busy_loops(load):
                    t = epoch_seconds(cmd, env, args.epochs, out / f"{side}_{load}_{r}.log")
                times.setdefault((side, load), []).append(t)
                print(f"  train round {r + 1}: {side}, load {load}: {t:.1f} s/epoch", flush=True)
    return times


def bench_predict(args, out: Path) -> dict[tuple[str, int], list[float]]:
    kinds = {"ours-pytorch": sys.executable}
    if args.reference:
        kinds["reference-pytorch"] = args.reference
    rows = [Row(kind, python, args.weights, out) for kind, python in kinds.items()]
    times: dict[tuple[str, int], list[float]] = {}
    try:
        for row in rows:
            row.ask("load", args.imgsz)
        for _ in range(args.rounds):
            for load in (0, args.load):
                with busy_loops(load):
                    for i in range(args.predict_runs + 3):
                        for row in rows:
                            reply = row.ask("time", args.imgsz)
                            if reply.get("ok") and i >= 3:
                                times.setdefault((row.kind.split("-")[0], load), []).append(reply["ms"])
    finally:
        for row in rows:
            row.close()
    for row in rows:
        if row.note:
            print(f"  {row.kind}: {row.note}")
    return times


def table(title: str, unit: str, times: dict[tuple[str, int], list[float]], load: int) -> None:
    print(f"\n{title}: {unit}, idle and beside {load} busy-loop process(es); growth = loaded / idle")
    for side in dict.fromkeys(s for s, _ in times):
        idle, loaded = (statistics.median(times.get((side, n), [float("nan")])) for n in (0, load))
        print(f"  {side:10s} idle {idle:8.1f}   loaded {loaded:8.1f}   growth x{loaded / idle:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", type=int, default=1, help="busy-loop processes in the loaded runs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--images", type=int, default=160, help="demo training images")
    p.add_argument("--imgsz", type=int, default=256, help="training size; prediction runs at 320")
    p.add_argument("--predict-runs", type=int, default=20)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="for prediction")
    default_ref = os.environ.get("REFERENCE_PYTHON") or os.environ.get("YOLOFORGE_PEER_PYTHON", "")
    p.add_argument("--reference", default=default_ref, help="a Python with ultralytics installed")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-predict", action="store_true")
    args = p.parse_args()
    if not args.reference:
        print("reference not run: pass --reference /path/to/python-with-ultralytics")
    with tempfile.TemporaryDirectory() as tmp:
        predict = (
            {}
            if args.skip_predict
            else bench_predict(argparse.Namespace(**{**vars(args), "imgsz": 320}), Path(tmp))
        )
        train = {} if args.skip_train else bench_train(args, Path(tmp))
    load = os.getloadavg()[0]
    print(
        f"\nmachine: {os.cpu_count()} CPUs, load average at the end {load:.2f}; "
        f"medians of {args.rounds} rounds"
    )
    if predict:
        table("predict yolov8n at 320, batch 1", "ms/image", predict, args.load)
    if train:
        table(f"train yolov8n at {args.imgsz}, batch 16, {args.images} images", "s/epoch", train, args.load)


if __name__ == "__main__":
    main()
