"""Hyperparameter evolution on the demo data for a fixed budget: does the search find better settings?

    python benchmarks/bench_tune.py --iterations 10 --epochs 5 --imgsz 128

Runs ``YOLO(model).tune(...)`` (the same code as ``yoloforge tune``) on the built-in 'shapes' demo data
from scratch, then prints each trial's fitness (0.1 x mAP50 + 0.9 x mAP50-95 on the demo val set)
next to trial 1, which trains with the default hyperparameters (under SGD: the search needs an
explicit optimizer for lr0 and momentum to mean anything), and, for reference, one training with
every default including optimizer=auto. Short trials are noisy: two trainings of the same settings
differ by about 0.01 in fitness on this data (``--repeat-default`` measures that here).
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--repeat-default", action="store_true", help="train the defaults twice more (noise)")
    parser.add_argument("--out", default="", help="folder for the runs (default: a temp folder)")
    args = parser.parse_args()

    from yoloforge import YOLO

    logging.getLogger("yoloforge").setLevel(logging.WARNING)  # the table below is the output
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_tune_"))
    common = dict(data="shapes", epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=0, plots=False)

    t0 = time.time()
    auto = YOLO(args.model).train(project=str(out), name="default_auto", **common)
    auto_fitness = auto.fitness
    print(f"defaults (optimizer=auto): fitness {auto_fitness:.4f}  ({time.time() - t0:.0f} s)", flush=True)
    noise = []
    if args.repeat_default:
        for seed in (1, 2):
            m = YOLO(args.model).train(
                project=str(out), name=f"default_seed{seed}", **{**common, "seed": seed}
            )
            noise.append(m.fitness)
            print(f"defaults (optimizer=auto), seed {seed}: fitness {m.fitness:.4f}", flush=True)

    t0 = time.time()
    YOLO(args.model).tune(project=str(out), iterations=args.iterations, **common)
    seconds = time.time() - t0
    with (out / "tune" / "tune_results.csv").open() as f:
        rows = list(csv.DictReader(f))
    start = float(rows[0]["fitness"])
    print(
        f"\n{'trial':>5} {'fitness':>8} {'vs trial 1':>10} {'mAP50':>7} {'mAP50-95':>9}  lr0       momentum"
    )
    for r in rows:
        fit = float(r["fitness"])
        print(
            f"{r['iteration']:>5} {fit:8.4f} {fit - start:+10.4f} {float(r['metrics/mAP50(B)']):7.3f} "
            f"{float(r['metrics/mAP50-95(B)']):9.3f}  {float(r['lr0']):<9.4g} {float(r['momentum']):.3f}"
        )
    best = max(rows, key=lambda r: float(r["fitness"]))
    print(
        f"\n{len(rows)} trials x {args.epochs} epochs at imgsz {args.imgsz} in {seconds:.0f} s; "
        f"trial 1 (defaults, SGD) {start:.4f}, best trial {best['iteration']} {float(best['fitness']):.4f} "
        f"({float(best['fitness']) - start:+.4f}); defaults with optimizer=auto {auto_fitness:.4f}"
        + (
            f"; seed spread of the defaults {max(noise + [auto_fitness]) - min(noise + [auto_fitness]):.4f}"
            if noise
            else ""
        )
    )
    print(f"folder: {out / 'tune'}")


if __name__ == "__main__":
    main()
