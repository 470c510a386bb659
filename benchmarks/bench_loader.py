"""Does the data loader slow training down? Training steps fed by the real loader vs pre-made batches.

    python benchmarks/bench_loader.py [--steps 20] [--workers -1] [--threads -1] [--nice -1]
                                      [--imgsz 320] [--batch 16] [--reference /tmp/peer/bin/python]

Model yolov8n (nc=3) in training mode; a step is forward, a simple loss (sum of the output means),
backward and an SGD step, on the demo dataset's train split (``data=shapes``, 256-320 px JPEGs) with
the default augmentation (mosaic on). Workers and torch threads default to what the trainer uses
(``loader.plan_cpu``; on CPU the workers run at nice 19, ``loader.worker_nice``). Blocks of steps on
pre-made batches (made by the same loader beforehand, so the work per step is the same) alternate
with blocks of steps that pull their batch from the loader (persistent workers, epoch after
epoch), ``--steps`` timed steps of each (see ``alternating_blocks``). Prints the median step time
of each mode, images/s and the slowdown: the median over rounds of the ratio of the two blocks'
medians, so that a change in the machine's load (other processes) between rounds cancels out.

First it prints the cost of one augmented sample in this process and, with ``--reference``, the
reference's cost for one sample of its training dataset on the same images; last, the loader
alone (images/s with the same workers, no training).

Measured (2 CPU cores shared with other jobs, so single rounds vary; 40 steps per mode):
pre-made 1.336 s/step, loader 1.367 s/step, slowdown +3.5% with the default plan (2 workers at
nice 19, 2 torch threads); +16.9% with ``--nice 0``. One sample: 5.1 ms, the reference 5.9 ms.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator

import cv2
import torch

from yoloforge.data import loader as loader_module
from yoloforge.data.config import load_data_config
from yoloforge.data.dataset import TrainDataset
from yoloforge.data.demo import NAMES, ensure_shapes
from yoloforge.data.loader import (
    PARTNER_WINDOW,
    PREFETCH_BATCHES,
    EpochSampler,
    TrainLoader,
    build_train_loader,
    plan_cpu,
)
from yoloforge.data.scan import scan_split
from yoloforge.model.zoo import build_model
from yoloforge.settings import AugmentSettings
from yoloforge.structures import Batch

REFERENCE_SNIPPET = """
import json, sys, time, logging
from ultralytics.cfg import get_cfg
from ultralytics.data.build import build_yolo_dataset
from ultralytics.utils import LOGGER
LOGGER.setLevel(logging.ERROR)
images, names, imgsz, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = get_cfg(overrides={"imgsz": imgsz})
data = {"names": dict(enumerate(names)), "nc": len(names), "channels": 3}
ds = build_yolo_dataset(cfg, images, 16, data, mode="train")
for i in range(8): ds[i]
start = time.perf_counter()
for i in range(n): ds[i % len(ds)]
print(json.dumps({"ms_per_sample": (time.perf_counter() - start) / n * 1000}))
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    p.add_argument("--workers", type=int, default=-1, help="loader workers (-1: as the trainer plans)")
    p.add_argument("--threads", type=int, default=-1, help="torch threads (-1: as the trainer plans)")
    p.add_argument("--nice", type=int, default=-1, help="CPU worker niceness (-1: the library's, 19)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reference", default="", help="python of an environment with ultralytics")
    return p.parse_args()


def make_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[Batch], None]:
    def step(batch: Batch) -> None:
        images = batch.images.float() / 255  # (B, 3, H, W) in [0, 1], as the trainer feeds the model
        loss = sum(level.mean() for level in model(images))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def endless(loader: TrainLoader) -> Iterator[Batch]:
    """Batches of epoch 0, 1, 2, ... as the trainer draws them."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


def timed(step: Callable[[Batch], None], batches: Iterator[Batch]) -> float:
    """Seconds of one step, waiting for its batch included."""
    start = time.perf_counter()
    step(next(batches))
    return time.perf_counter() - start


def alternating_blocks(
    step: Callable[[Batch], None], premade: list[Batch], fed: Iterator[Batch], steps: int, settle: int
) -> list[tuple[list[float], list[float]]]:
    """Seconds per step in rounds of two blocks: ``settle`` + 4 pre-made steps, then ``settle`` + 4
    loader steps; the first ``settle`` steps of a block are not kept. Rounds until ``steps``
    loader steps are kept; returns (pre-made, loader) times per round.

    ``settle`` (at least the loader's prefetch depth) keeps the batches the workers still make
    after a loader block out of the timed pre-made steps, and the ones made ahead during a
    pre-made block out of the timed loader steps, so neither mode is charged for the other.
    """
    cycle = itertools.cycle(premade)
    rounds: list[tuple[list[float], list[float]]] = []
    while 4 * len(rounds) < steps:
        fixed = [timed(step, cycle) for _ in range(settle + 4)][settle:]
        loaded = [timed(step, fed) for _ in range(settle + 4)][settle:]
        rounds.append((fixed, loaded))
        print(f"round {len(rounds)}: pre-made {statistics.median(fixed):.3f} s/step, "
              f"loader {statistics.median(loaded):.3f} s/step", flush=True)  # fmt: skip
    return rounds


def loader_alone(loader: TrainLoader, n_batches: int) -> float:
    """Images per second the loader delivers with nothing else to do (after a warm-up batch)."""
    it = iter(loader)
    next(it)
    start, images = time.perf_counter(), 0
    for batch in itertools.islice(it, n_batches):
        images += len(batch)
    return images / (time.perf_counter() - start)


def sample_ms(dataset: TrainDataset, batch: int, n: int = 64) -> float:
    """Milliseconds per sample, keys (and so mosaic partners) as the training loader makes them."""
    cv2.setNumThreads(0)  # as in a worker
    sampler = EpochSampler(len(dataset), seed=1, batch=batch, window=PARTNER_WINDOW)
    keys = list(itertools.islice(iter(sampler), n))
    start = time.perf_counter()
    for key in keys:
        dataset[key]
    return (time.perf_counter() - start) / n * 1000


def reference_sample_ms(python: str, images: str, imgsz: int, n: int = 64) -> float:
    args = [python, "-c", REFERENCE_SNIPPET, images, json.dumps(NAMES), str(imgsz), str(n)]
    env = {"YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["ms_per_sample"]


def main() -> None:
    args = parse_args()
    plan = plan_cpu("cpu", 8, args.batch)
    workers = plan.workers if args.workers < 0 else args.workers
    threads = plan.torch_threads if args.threads < 0 else args.threads
    torch.set_num_threads(threads)
    config = load_data_config(ensure_shapes())
    records = scan_split(config.train, config.names, prefix="train", progress=False).records
    dataset = TrainDataset(records, args.imgsz, AugmentSettings(), seed=0)
    # per-sample costs first, while nothing else of ours runs
    print(f"one sample      : {sample_ms(dataset, args.batch):.1f} ms (this process, 1 OpenCV thread)")
    if args.reference:
        ms = reference_sample_ms(args.reference, str(config.train[0].parent), args.imgsz)
        print(f"reference sample: {ms:.1f} ms (its training dataset, same images)")
    if args.nice >= 0:  # a benchmark-only override, to compare priorities
        loader_module.CPU_WORKER_NICE = args.nice
    loader = build_train_loader(dataset, batch=args.batch, workers=workers, seed=0)
    premade = list(itertools.islice(iter(loader), 4))  # made by the same loader: the same work per step

    torch.manual_seed(0)
    model = build_model("yolov8", "n", nc=len(NAMES)).train()
    step = make_step(model, torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9))
    settle = max(1, workers * PREFETCH_BATCHES)  # batches a loader has in flight
    rounds = alternating_blocks(step, premade, endless(loader), args.steps, settle)

    # the machine's load (other processes) may change between rounds but hardly within one
    ratio = statistics.median(statistics.median(b) / statistics.median(a) for a, b in rounds)
    t_fixed = statistics.median(t for a, _ in rounds for t in a)
    t_fed = statistics.median(t for _, b in rounds for t in b)
    print(f"\nyolov8n imgsz={args.imgsz} batch={args.batch} torch_threads={threads} workers={workers} "
          f"nice={loader_module.worker_nice('cpu')} ({args.steps} steps per mode, medians)")  # fmt: skip
    print(f"pre-made tensors: {t_fixed:.3f} s/step  {args.batch / t_fixed:6.1f} images/s")
    print(f"real loader     : {t_fed:.3f} s/step  {args.batch / t_fed:6.1f} images/s")
    print(f"slowdown        : {100 * (ratio - 1):+.1f}%  (median of the rounds' ratios; target <= +10%)")
    print(f"loader alone    : {loader_alone(loader, 10):.0f} images/s with {workers} workers")


if __name__ == "__main__":
    main()
