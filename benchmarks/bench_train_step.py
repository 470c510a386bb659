"""The bare training step of a detector (forward, backward, optimizer step) in each precision plan.

    python benchmarks/bench_train_step.py [--model yolov8n] [--imgsz 192] [--batch 16] [--threads 1]
        [--repeats 8] [--cpu-time] [--emulated-bf16]

Prints images/s for float32, bfloat16 autocast, channels_last, and both (what amp=True picks on a
CPU with native bf16, yoloforge/precision.py). ``--cpu-time`` times with the process's CPU clock
instead of the wall clock: with one thread on a machine that others share, it still compares the
plans fairly (it counts only this process's own work). On a CPU without native bf16 the bfloat16
plans are skipped (torch emulates them, about 10x slower) unless ``--emulated-bf16`` asks for them.
"""

from __future__ import annotations

import argparse
import time

import torch

from yoloforge.device import native_bf16
from yoloforge.model.zoo import build_model, parse_model_name
from yoloforge.precision import Precision

PLANS = {
    "float32": Precision("cpu", None, channels_last=False),
    "bfloat16": Precision("cpu", torch.bfloat16, channels_last=False),
    "float32 + channels_last": Precision("cpu", None, channels_last=True),
    "bfloat16 + channels_last": Precision("cpu", torch.bfloat16, channels_last=True),
}


def images_per_s(plan: Precision, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    family, size = parse_model_name(args.model)
    model = plan.model(build_model(family, size, nc=3).train())
    images = plan.images(torch.rand(args.batch, 3, args.imgsz, args.imgsz))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    clock = time.process_time if args.cpu_time else time.perf_counter

    def step() -> float:
        t0 = clock()
        with plan.autocast():
            feats = model(images)
        loss = sum(f.float().square().mean() for f in feats)  # float32 outside autocast, as training
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return clock() - t0

    for _ in range(3):
        step()
    times = sorted(step() for _ in range(args.repeats))
    return args.batch / times[len(times) // 2]


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--imgsz", type=int, default=192)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--cpu-time", action="store_true")
    parser.add_argument("--emulated-bf16", action="store_true", help="time bfloat16 without native support")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{args.model} imgsz {args.imgsz} batch {args.batch}, {args.threads} thread(s), "
        f"native bf16: {native_bf16()}, clock: {'CPU' if args.cpu_time else 'wall'}"
    )
    base = None
    for name, plan in PLANS.items():
        if plan.dtype is not None and not (native_bf16() or args.emulated_bf16):
            print(f"  {name:26s} skipped: no native bf16 here (--emulated-bf16 times it anyway)")
            continue
        ips = images_per_s(plan, args)
        base = base or ips
        print(f"  {name:26s} {ips:7.1f} images/s  {ips / base:5.2f}x")


if __name__ == "__main__":
    main()
