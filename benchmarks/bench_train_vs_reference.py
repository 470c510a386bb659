"""Train YOLOv8n from scratch with yoloforge and with the reference on the same data and settings;
score both models' predictions with one external evaluator (pycocotools) and print wall times.

    python benchmarks/bench_train_vs_reference.py --epochs 30 --imgsz 256 --batch 16 \
        [--seeds 0 1] [--peer /tmp/peer/bin/python] [--data shapes] [--out /tmp/bench_train] [--reuse]

The reference runs only when a Python with ultralytics installed is given (``--peer`` or
$YOLOFORGE_PEER_PYTHON); it is never imported here. Both train on the CPU of this machine, one
after the other (run it on an otherwise idle machine: the times are compared). For a seed both
start from the same initial weights (yoloforge draws them in the reference's order,
``yoloforge/model/init.py``), so each seed is a paired comparison of trainer and augmentation. On
a few hundred images a run's mAP50-95 still moves by about 0.01 with float-level differences (the
same start at 1 or 2 torch threads gave 0.835 and 0.845); give several seeds and compare means.
``--reuse`` takes a reference run already in --out (its log and predictions.json, from an earlier
run of this script) instead of training it again: the reference does not change between our
commits. It takes a run of ours too when it was made by the same commit of yoloforge/ (the
commit is written beside it; runs made from uncommitted changes are never reused). Seeds can
run in separate processes (``--seeds 3`` and ``--seeds 4`` at once, say, the reference being
single-threaded), then one ``--reuse`` call over all seeds prints the whole table.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

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


def package_commit() -> str | None:
    """The last commit that changed yoloforge/ or pyproject.toml; None when either has uncommitted
    changes (or git is missing): then a run of ours cannot be matched to a version."""
    root = Path(__file__).resolve().parents[1]
    paths = ["--", "yoloforge", "pyproject.toml"]
    try:
        git = functools.partial(subprocess.run, cwd=root, capture_output=True, text=True, check=True)
        dirty = git(["git", "status", "--porcelain", *paths]).stdout.strip()
        commit = git(["git", "log", "-1", "--format=%H", *paths]).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return None if dirty or not commit else commit


def train_ours(args, out: Path, seed: int) -> tuple[float, Path]:
    common = ["project=" + str(out), "exist_ok=True", f"imgsz={args.imgsz}", f"batch={args.batch}"]
    preds, stamp, commit = out / "ours_val" / "predictions.json", out / "ours_commit.txt", package_commit()
    if args.reuse and commit and preds.exists() and stamp.exists() and stamp.read_text().strip() == commit:
        print(f"seed {seed}: reusing our run in {out} (made by yoloforge at {commit[:10]})")
        return (_train_hours(out / "ours_train.log") or float("nan")) * 3600, preds
    stamp.unlink(missing_ok=True)
    wall = run(
        [sys.executable, "-m", "yoloforge", "train", f"data={args.data}", "model=yolov8n.yaml",
         f"epochs={args.epochs}", "name=ours", f"seed={seed}", *common],
        out / "ours_train.log",
    )  # fmt: skip
    best = out / "ours" / "weights" / "best.pt"
    run(
        [sys.executable, "-m", "yoloforge", "val", f"model={best}", f"data={args.data}", "save_json=True",
         "name=ours_val", "plots=False", *common],
        out / "ours_val.log",
    )  # fmt: skip
    if commit:
        stamp.write_text(commit + "\n")
    return wall, preds


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


def train_reference(args, out: Path, data_yaml: Path, seed: int) -> tuple[float, Path]:
    script = out / "reference_train.py"
    done = (out / "ref_val" / "predictions.json").exists() and (out / "reference.log").exists()
    wall = float("nan")
    if not (args.reuse and done):
        script.write_text(textwrap.dedent(REFERENCE_SCRIPT))
        env = {**os.environ, "YOLO_OFFLINE": "1"}
        cmd = [args.peer, str(script), str(data_yaml), str(args.epochs), str(args.imgsz), str(args.batch),
               str(seed), str(out)]  # fmt: skip
        t0 = time.perf_counter()
        run(cmd, out / "reference.log", env)
        wall = time.perf_counter() - t0
    else:
        print(f"seed {seed}: reusing the reference run in {out}")
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
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--peer", default=os.environ.get("YOLOFORGE_PEER_PYTHON", ""))
    p.add_argument("--out", default="/tmp/bench_train")
    p.add_argument("--reuse", action="store_true", help="reuse runs already in --out (see above)")
    args = p.parse_args()
    out = Path(args.out).resolve()
    if not (args.peer or args.reuse):
        print("reference not run: pass --peer /path/to/python-with-ultralytics")

    data = load_data_config(args.data)
    records = scan_split(data.val, data.names, prefix="val", progress=False).records
    gt = ground_truth(records, data.names)

    rows: list[tuple[str, int, float, dict]] = []  # (trainer, seed, train seconds, metrics)
    for seed in args.seeds:
        seed_out = out / f"seed{seed}"
        seed_out.mkdir(parents=True, exist_ok=True)
        wall, preds = train_ours(args, seed_out, seed)
        hours = _train_hours(seed_out / "ours_train.log")
        rows.append(("yoloforge", seed, hours * 3600 if hours else wall, cocoeval(gt, _load(preds))))
        if args.peer or args.reuse:
            wall, preds = train_reference(args, seed_out, data.yaml_file, seed)
            rows.append(("reference", seed, wall, cocoeval(gt, _load(preds))))
        _print_table(args, rows)


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def _print_table(args, rows: list[tuple[str, int, float, dict]]) -> None:
    print(
        f"\nyolov8n from scratch, data={args.data}, epochs={args.epochs}, imgsz={args.imgsz}, "
        f"batch={args.batch}, {os.cpu_count()} CPUs; mAP by pycocotools on each model's predictions.json"
    )
    print(f"{'trainer':<10} {'seed':>4} {'train time':>11} {'mAP50-95':>9} {'mAP50':>7} {'mAP75':>7}")
    for name, seed, wall, m in rows:
        print(f"{name:<10} {seed:>4} {wall:>10.0f}s {m['map']:>9.4f} {m['map50']:>7.4f} {m['map75']:>7.4f}")
    means = {}
    for name in ("yoloforge", "reference"):
        mine = [r for r in rows if r[0] == name]
        if mine:
            maps = np.array([r[3]["map"] for r in mine])
            sd = maps.std(ddof=1) if len(maps) > 1 else float("nan")
            means[name] = (np.mean([r[2] for r in mine]), maps.mean(), len(mine), sd / np.sqrt(len(maps)))
            t, m, n, se = means[name]
            print(
                f"{name:<10} mean of {n}: train time {t:.0f}s, mAP50-95 {m:.4f} "
                f"(sd {sd:.4f}, standard error {se:.4f})"
            )
    if len(means) == 2:
        (t1, m1, n1, se1), (t2, m2, n2, se2) = means["yoloforge"], means["reference"]
        diff, se = m1 - m2, float(np.hypot(se1, se2))
        verdict = "at least" if diff >= 0 else "BELOW"
        print(
            f"ours trains {t2 / t1:.2f}x as fast as the reference; our mean mAP50-95 is {verdict} theirs "
            f"({diff:+.4f}, standard error of the difference {se:.4f}; seeds {n1} and {n2})"
        )


if __name__ == "__main__":
    main()
