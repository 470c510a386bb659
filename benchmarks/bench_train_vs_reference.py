"""Train YOLOv8n from scratch with yoloforge and with the reference on the same data and settings;
score both models' predictions with one external evaluator (pycocotools) and print wall times.

    python benchmarks/bench_train_vs_reference.py --epochs 30 --imgsz 256 --batch 16 \
        [--peer /tmp/peer/bin/python] [--data shapes] [--out /tmp/bench_train]

The reference runs only when a Python with ultralytics installed is given (``--peer`` or
$YOLOFORGE_PEER_PYTHON); it is never imported here. Both train on the CPU of this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from yoloforge.coco import cocoeval, ground_truth
from yoloforge.data.config import load_data_config
from yoloforge.data.scan import scan_split


def run(cmd: list[str], log_file: Path, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    with log_file.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed (exit {proc.returncode}); see {log_file}")
    return time.perf_counter() - t0


def train_ours(args, out: Path) -> tuple[float, Path]:
    common = ["project=" + str(out), "exist_ok=True", f"imgsz={args.imgsz}", f"batch={args.batch}"]
    wall = run(
        [sys.executable, "-m", "yoloforge", "train", f"data={args.data}", "model=yolov8n.yaml",
         f"epochs={args.epochs}", "name=ours", f"seed={args.seed}", *common],
        out / "ours_train.log",
    )  # fmt: skip
    best = out / "ours" / "weights" / "best.pt"
    run(
        [sys.executable, "-m", "yoloforge", "val", f"model={best}", f"data={args.data}", "save_json=True",
         "name=ours_val", "plots=False", *common],
        out / "ours_val.log",
    )  # fmt: skip
    return wall, out / "ours_val" / "predictions.json"


REFERENCE_SCRIPT = """
import sys, time
from ultralytics import YOLO
data, epochs, imgsz, batch, seed, out = sys.argv[1:7]
model = YOLO("yolov8n.yaml")
model.train(data=data, epochs=int(epochs), imgsz=int(imgsz), batch=int(batch), seed=int(seed),
            project=out, name="ref", exist_ok=True, device="cpu", plots=False)
best = YOLO(f"{out}/ref/weights/best.pt")
best.val(data=data, imgsz=int(imgsz), batch=int(batch), save_json=True, project=out, name="ref_val",
         exist_ok=True, device="cpu", plots=False)
"""


def train_reference(args, out: Path, data_yaml: Path) -> tuple[float, Path]:
    script = out / "reference_train.py"
    script.write_text(textwrap.dedent(REFERENCE_SCRIPT))
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    cmd = [args.peer, str(script), str(data_yaml), str(args.epochs), str(args.imgsz), str(args.batch),
           str(args.seed), str(out)]  # fmt: skip
    t0 = time.perf_counter()
    run(cmd, out / "reference.log", env)
    wall = time.perf_counter() - t0
    # its wall time includes its final validation; subtract what it reports for training alone
    train_hours = _train_hours(out / "reference.log")
    preds = json.loads((out / "ref_val" / "predictions.json").read_text())
    for p in preds:  # the reference writes category_id = class index + 1 for custom datasets
        p["category_id"] -= 1
    fixed = out / "ref_val" / "predictions_0based.json"
    fixed.write_text(json.dumps(preds))
    return (train_hours * 3600 if train_hours else wall), fixed


def _train_hours(log: Path) -> float | None:
    """Training time without set-up and final validation: both trainers print
    "N epochs completed in X hours." """
    for line in log.read_text(errors="replace").splitlines():
        if "epochs completed in" in line:
            return float(line.split("completed in")[1].split("hours")[0])
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shapes")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peer", default=os.environ.get("YOLOFORGE_PEER_PYTHON", ""))
    p.add_argument("--out", default="/tmp/bench_train")
    args = p.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    data = load_data_config(args.data)
    records = scan_split(data.val, data.names, prefix="val", progress=False).records
    gt = ground_truth(records, data.names)

    ours_wall, ours_json = train_ours(args, out)
    ours_train_hours = _train_hours(out / "ours_train.log")
    ours = cocoeval(gt, json.loads(ours_json.read_text()))
    rows = [("yoloforge", ours_train_hours * 3600 if ours_train_hours else ours_wall, ours)]
    if args.peer:
        ref_wall, ref_json = train_reference(args, out, data.yaml_file)
        rows.append(("reference", ref_wall, cocoeval(gt, json.loads(ref_json.read_text()))))
    else:
        print("reference not run: pass --peer /path/to/python-with-ultralytics")

    print(
        f"\nyolov8n from scratch, data={args.data}, epochs={args.epochs}, imgsz={args.imgsz}, "
        f"batch={args.batch}, {os.cpu_count()} CPUs; mAP by pycocotools on each model's predictions.json"
    )
    print(f"{'trainer':<10} {'train time':>11} {'mAP50-95':>9} {'mAP50':>7} {'mAP75':>7}")
    for name, wall, m in rows:
        print(f"{name:<10} {wall:>10.0f}s {m['map']:>9.4f} {m['map50']:>7.4f} {m['map75']:>7.4f}")
    if len(rows) == 2:
        speedup = rows[1][1] / rows[0][1]
        verdict = "at least" if rows[0][2]["map"] >= rows[1][2]["map"] else "BELOW"
        print(f"ours is {speedup:.2f}x the reference's speed; our mAP50-95 is {verdict} the reference's")


if __name__ == "__main__":
    main()
