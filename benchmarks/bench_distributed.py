"""Training throughput in one process against several: images/s, and the scaling efficiency.

    python benchmarks/bench_distributed.py [--procs 2] [--images 64] [--imgsz 128] [--batch 16]
        [--epochs 4] [--workers 0] [--out /tmp/bench_distributed] [--no-cpu] [--no-gpu]

CPU (gloo): 1 process with N torch threads against N processes of 1 thread each (torchrun), N =
--procs (default: the usable CPUs). GPUs, when there are any: 1 GPU against all of them
(``device=0,1,...``, yoloforge launching torchrun itself). Every configuration trains the same
global batch on the demo data (--images training images, generated once into --out) with val=False;
images/s comes from results.csv's cumulative ``time`` column, over the epochs after the first
(start-up, first batches) and before the last (the final validation), each epoch being every
training image once. Scaling efficiency = images/s of n workers / (n x images/s of one).
Run it on an otherwise idle machine: the configurations are compared by wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from yoloforge.data.demo import ensure_shapes
from yoloforge.device import usable_cpus
from yoloforge.distributed import launch_command
from yoloforge.results_csv import read_rows


def images_per_second(run_dir: Path, n_images: int) -> float:
    """Training images/s between the end of epoch 1 and the end of the last-but-one epoch."""
    rows = read_rows(run_dir / "results.csv")
    if len(rows) < 3:
        sys.exit(f"{run_dir}: results.csv has {len(rows)} rows; use --epochs 3 or more")
    seconds = rows[-2]["time"] - rows[0]["time"]
    return n_images * (len(rows) - 2) / seconds


def train(name: str, command: list[str], threads: int, args, data: Path) -> Path:
    """Run one configuration into --out/name; exits with its log's tail when it fails."""
    project = args.out / "runs"
    shutil.rmtree(project / name, ignore_errors=True)
    settings = [f"data={data}", "model=yolov8n.yaml", f"imgsz={args.imgsz}", f"batch={args.batch}"]
    settings += [f"epochs={args.epochs}", f"workers={args.workers}", "val=False", "plots=False"]
    settings += [f"project={project}", f"name={name}", "exist_ok=True"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    log = args.out / f"{name}.log"
    with log.open("w") as f:
        done = subprocess.run([*command, *settings], stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        sys.exit(f"{name} failed (exit {done.returncode}):\n{log.read_text()[-2000:]}")
    return project / name


def row(label: str, ips: float, note: str = "") -> str:
    return f"{label:<36}{ips:10.1f}  {note}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procs", type=int, default=usable_cpus())
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_distributed"))
    p.add_argument("--no-cpu", action="store_true")
    p.add_argument("--no-gpu", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = ensure_shapes(args.out / "data", n_train=args.images, n_val=8)
    one = [sys.executable, "-m", "yoloforge", "train"]
    print(f"yolov8n, {args.images} images, imgsz {args.imgsz}, global batch {args.batch}, ", end="")
    print(f"workers={args.workers}, {args.epochs} epochs")
    print(f"{'configuration':<36}{'images/s':>10}")
    if not args.no_cpu:
        n = args.procs
        base = images_per_second(train("cpu_1x", [*one, "device=cpu"], n, args, data), args.images)
        print(row(f"CPU: 1 process x {n} threads", base), flush=True)
        multi = train("cpu_nx", launch_command(n, ["train", "device=cpu"]), 1, args, data)
        ips = images_per_second(multi, args.images)
        print(row(f"CPU: {n} processes x 1 thread (gloo)", ips, f"{ips / base:.2f}x the one process"))
    gpus = torch.cuda.device_count()
    if gpus and not args.no_gpu:
        threads = torch.get_num_threads()
        base = images_per_second(train("gpu_1", [*one, "device=0"], threads, args, data), args.images)
        print(row("1 GPU", base), flush=True)
        if gpus > 1:
            ids = ",".join(map(str, range(gpus)))
            run = train("gpu_all", [*one, f"device={ids}"], threads, args, data)
            ips = images_per_second(run, args.images)
            print(row(f"{gpus} GPUs (nccl)", ips, f"scaling efficiency {ips / (gpus * base):.0%}"))
    elif not args.no_gpu:
        print("GPUs: none on this machine (CUDA not run)")


if __name__ == "__main__":
    main()
