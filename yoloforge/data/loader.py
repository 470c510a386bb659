"""Loaders: collate samples into a ``Batch``, shuffle by (seed, epoch), run augmentation in workers.

Workers run on every device, CPU included, so augmentation overlaps the training step. The
training order and the mosaic switch live in ``EpochSampler``, which runs in the main process and
hands each worker a ``SampleKey(index, epoch, mosaic, partners)``; call
``TrainLoader.set_epoch(epoch)`` (and ``close_mosaic()`` for the last epochs) before iterating and
the change reaches persistent workers at once. Augmentation randomness comes from (seed, epoch,
index), not from the worker, so a run repeats exactly; the number of workers changes only which
images a mosaic may draw from (the worker's recent ones). On CPU the workers run at the lowest priority
(``worker_nice``), so they use the time the training step leaves instead of stalling it.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from yoloforge.data.dataset import SampleKey, TrainDataset, ValDataset
from yoloforge.data.shard import owned_images, val_batches
from yoloforge.device import threads_for_now, usable_cpus
from yoloforge.structures import Batch, Sample

PARTNER_WINDOW = 128  # images a mosaic draws its partners from (the reference: 8 batches of 16)
PREFETCH_BATCHES = 2  # per worker
CPU_WORKER_NICE = 19  # see worker_nice()


def collate(samples: Sequence[Sample | None]) -> Batch | None:
    """Stack same-sized samples: images (B, 3, H, W) uint8, targets flat and tied by ``batch_idx``.

    None entries (images a ``ValDataset`` could not decode) are left out; a batch of nothing but
    those collates to None, which the validator skips.
    """
    if not samples:
        raise ValueError("collate: no samples")
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    h, w = samples[0].image.shape[:2]
    images = np.empty((len(samples), 3, h, w), dtype=np.uint8)
    for i, s in enumerate(samples):
        images[i] = s.image.transpose(2, 0, 1)  # HWC -> CHW, one copy
    counts = [len(s.classes) for s in samples]
    return Batch(
        images=torch.from_numpy(images),
        classes=torch.from_numpy(np.concatenate([s.classes for s in samples]).astype(np.int64)),
        boxes_xyxy=torch.from_numpy(
            np.concatenate([s.boxes_xyxy.reshape(-1, 4) for s in samples]).astype(np.float32)
        ),
        batch_idx=torch.from_numpy(np.repeat(np.arange(len(samples), dtype=np.int64), counts)),
        paths=[s.path for s in samples],
        letterboxes=[s.letterbox for s in samples],
    )


class EpochSampler(Sampler[SampleKey]):
    """Yields ``SampleKey``s in an order that depends only on (seed, epoch).

    Two seeds give two orders, one seed the same order every run, each epoch a new one. With
    ``world_size`` > 1 each rank reads only the images it owns for the whole run (``shard.py``:
    a fixed split from the seed, so that ``cache=ram`` holds 1/world_size of the set per rank), in
    the shared epoch order: every image exactly once per epoch across the ranks. The ranks must
    take the same number of steps, so a rank whose images fall one short of another's batch count
    splits its largest batch in two (``batches``); only a rank with fewer images than batches (a
    batch of 1 per rank) repeats one.

    Mosaic/mixup partners (``window`` > 0): the keys of batch ``b`` draw their partners from ``b``
    itself and the batches before it that the same loader worker makes (``b - lanes``,
    ``b - 2 * lanes``, ...; a DataLoader deals batches to its ``lanes`` workers in turn), as many
    as hold about ``window`` images. A worker finds them all among the images it decoded recently
    (``TrainDataset`` keeps the window decoded), and a batch mixes ~``window`` images rather than
    its own 16 (the reference draws from a buffer of ~128 recent images; partners from the batch
    alone trained measurably worse). ``window`` = 0: partners from the whole dataset. The window
    reaches back into the previous epoch's batches of the same worker (a DataLoader deals every
    epoch's first batch to worker 0), so only the first epoch starts with a small window; the
    previous epoch's order follows from (seed, epoch - 1), so a resumed run draws the same windows.

    ``rect_batch`` > 0 keeps the dataset's rectangular batches together (indices ``b*rect_batch``
    onwards, see ``TrainDataset(rect=True)``): the order of the full batches is shuffled, the short
    last batch stays last, and each rank owns whole batches.

    Read the epoch when iterating: a loader (persistent workers included) creates its sampler
    iterator in ``iter(loader)``, so ``set_epoch`` must come first (``TrainLoader`` does it in order).
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        rect_batch: int = 0,
        batch: int = 16,
        window: int = 0,
        lanes: int = 1,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        if batch < 1 or lanes < 1 or window < 0:
            raise ValueError(f"batch={batch} and lanes={lanes} must be >= 1, window={window} >= 0")
        if size < world_size:
            raise ValueError(f"{size} training images cannot be shared by {world_size} processes")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.rect_batch = rect_batch
        self.batch, self.window, self.lanes = batch, window, lanes
        self.epoch = 0
        self.mosaic = True
        self.images = owned_images(size, seed, rank, world_size, rect_batch)  # this rank's, sorted
        self._mine = np.zeros(size, dtype=bool)
        self._mine[self.images] = True
        if rect_batch:  # whole rectangular batches per rank
            n_rect = math.ceil(size / rect_batch)
            if n_rect < world_size:
                raise ValueError(f"{n_rect} rectangular batches cannot be shared by {world_size} processes")
            self.steps = math.ceil(n_rect / world_size)
        else:  # the batches of the rank with the most images
            self.steps = math.ceil(math.ceil(size / world_size) / batch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int | None = None) -> np.ndarray:
        """(len(self),) image indices of this rank for ``epoch`` (default: the current epoch)."""
        return np.concatenate(self.batches(self.epoch if epoch is None else epoch))

    def __iter__(self) -> Iterator[SampleKey]:
        return (key for keys in self.batch_keys() for key in keys)

    def batch_keys(self) -> list[list[SampleKey]]:
        """This epoch's batches of keys; epoch and mosaic read once: the whole epoch sees the same."""
        epoch, mosaic = self.epoch, self.mosaic
        batches = self.batches(epoch)
        previous = self.batches(epoch - 1) if self.window and epoch > 0 else []
        keys: list[list[SampleKey]] = []
        for b, indices in enumerate(batches):
            partners = self.partner_window(batches, b, previous) if self.window else ()
            keys.append([SampleKey(i, epoch, mosaic, partners) for i in indices])
        return keys

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of image indices in ``epoch``: ``self.steps`` of them."""
        if self.rect_batch:
            batches = [b for b in self._rect_batches(epoch) if self._mine[b[0]]]
        else:
            rng = np.random.default_rng((self.seed, epoch))
            order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
            order = order[self._mine[order]].tolist()  # one process: all of it, as before sharding
            batches = [order[i : i + self.batch] for i in range(0, len(order), self.batch)]
        return _as_many_batches([list(map(int, b)) for b in batches], self.steps)

    def partner_window(
        self, batches: list[list[int]], b: int, previous: Sequence[list[int]] = ()
    ) -> tuple[int, ...]:
        """Images of batch ``b`` and of the batches its worker made before it, this epoch and then
        ``previous`` (the last epoch's batches), about ``window`` in all, oldest first, each once."""
        depth = max(1, round(self.window / self.batch))  # batches in the window
        lane = b % self.lanes
        mine = [batches[k] for k in range(lane, b + 1, self.lanes)]
        if len(mine) < depth:
            mine = [previous[k] for k in range(lane, len(previous), self.lanes)] + mine
        return tuple(dict.fromkeys(i for batch in mine[-depth:] for i in batch))

    def _rect_batches(self, epoch: int) -> list[np.ndarray]:
        """All rectangular batches in this epoch's order: full ones shuffled, the short one last."""
        starts = range(0, self.size, self.rect_batch)
        batches = [np.arange(i, min(i + self.rect_batch, self.size)) for i in starts]
        n_full = len(batches) - (self.size % self.rect_batch > 0)
        if self.shuffle:
            perm = np.random.default_rng((self.seed, epoch)).permutation(n_full)
            batches[:n_full] = [batches[i] for i in perm]
        return batches

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches(self.epoch))


def _as_many_batches(batches: list[list[int]], steps: int) -> list[list[int]]:
    """``batches`` made ``steps`` long (every rank must take as many steps): the largest batch is
    split in two while one has 2 images or more; then (fewer images than steps) the first repeats."""
    batches = list(batches)
    while len(batches) < steps:
        k = max(range(len(batches)), key=lambda j: len(batches[j]))
        if len(batches[k]) < 2:
            batches.append(batches[0])
            continue
        half = (len(batches[k]) + 1) // 2
        batches[k : k + 1] = [batches[k][:half], batches[k][half:]]
    return batches


class EpochBatches(Sampler[list[SampleKey]]):
    """The batch sampler a DataLoader reads: ``sampler``'s batches of keys (their sizes may differ
    between ranks by the split of ``_as_many_batches``, never their number)."""

    def __init__(self, sampler: EpochSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[SampleKey]]:
        return iter(self.sampler.batch_keys())

    def __len__(self) -> int:
        return self.sampler.steps


def loader_workers(requested: int, batch: int) -> int:
    """Worker processes to use: as requested, capped by the usable CPUs and the batch size."""
    return max(0, min(requested, usable_cpus(), batch))


@dataclass(frozen=True)
class CpuPlan:
    """How to share the CPU between the training step and the loader workers."""

    workers: int  # loader worker processes
    torch_threads: int  # intra-op threads for the main (training) process


def plan_cpu(device: torch.device | str, requested_workers: int, batch: int) -> CpuPlan:
    """Workers and torch threads for training on ``device``.

    On CUDA the step runs on the GPU: torch keeps its default threads. On CPU, the step takes one
    thread per usable CPU that no other process wants when training starts
    (``device.threads_for_now``: a thread team that shares its cores with another busy process
    waits on its slowest thread at every op), and the workers share the CPUs at a lower priority
    (``worker_nice``). Measured with benchmarks/bench_loader.py (2 shared cores, yolov8n, imgsz 320,
    batch 16, 2 workers, 2 torch threads): step time +3.5% over pre-made batches (-2% to +4% in
    other runs) at nice 19; +8% to +19% with the workers at normal priority.
    """
    workers = loader_workers(requested_workers, batch)
    if torch.device(device).type == "cuda":
        return CpuPlan(workers, torch.get_num_threads())
    return CpuPlan(workers, threads_for_now(usable_cpus()))


def worker_nice(device: torch.device | str) -> int:
    """Scheduling niceness of loader workers: 19 (lowest priority) when the model runs on the CPU.

    There the training step keeps every core busy with a team of torch threads that wait for each
    other; a worker at normal priority pre-empts one of them and stalls the whole team. At the
    lowest priority a worker takes the time the step leaves (and all of it while the step waits
    for a batch). On a GPU the workers compete with nothing of ours: normal priority.

    Beside another busy process the step runs on the CPUs left free (``plan_cpu``), so the workers
    are not starved: measured on 2 shared cores with one busy loop (yolov8n, imgsz 256, batch 16,
    96 images, 2 workers, one epoch, other jobs running too), 72 s at nice 19, 65 s at nice 5 and
    72 s at nice 0 with one torch thread; 227 s at nice 19 with two threads (the team waiting on its
    slowest thread), the slowdown that was blamed on the workers' priority. Again with 160 images and
    the plan's threads: 50 s at nice 19, 54 s at 10, 54 s at 5, 47 s at 0, within the run-to-run
    noise; idle, nice 0 costs 8-19% (above), so 19 stays.
    """
    return 0 if torch.device(device).type == "cuda" else CPU_WORKER_NICE


def init_worker(worker_id: int, nice: int = 0) -> None:
    """Each worker is single-threaded (parallelism comes from the workers), at priority ``nice``."""
    cv2.setNumThreads(0)
    torch.set_num_threads(1)
    if nice and hasattr(os, "nice"):  # not on Windows
        os.nice(nice)


class TrainLoader:
    """Batches of a ``TrainDataset``. Call ``set_epoch(e)`` before iterating each epoch."""

    def __init__(self, dataset: TrainDataset, sampler: EpochSampler, loader: DataLoader) -> None:
        self.dataset, self.sampler, self.loader = dataset, sampler, loader

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def close_mosaic(self) -> None:
        """Mosaic and mixup off from the next ``iter()`` on, in every worker."""
        self.sampler.mosaic = False
        self.dataset.close_mosaic()

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def close(self) -> None:
        """End the persistent worker processes now rather than at some later garbage collection
        (a process that forks while they linger can crash: seen with OpenVINO loaded in between)."""
        iterator = getattr(self.loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)  # torch keeps the method private
        if shutdown is not None:
            shutdown()
        self.loader._iterator = None


def _loader_kwargs(workers: int, device: torch.device | str) -> dict:
    kwargs: dict = dict(
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
    )
    if workers > 0:
        init = functools.partial(init_worker, nice=worker_nice(device))
        kwargs.update(persistent_workers=True, worker_init_fn=init, prefetch_factor=PREFETCH_BATCHES)
    return kwargs


def build_train_loader(
    dataset: TrainDataset,
    batch: int,
    workers: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> TrainLoader:
    """A shuffled, epoch-aware loader; ``workers`` is capped by ``loader_workers``."""
    if dataset.rect and dataset.batch_size != batch:
        raise ValueError(f"rectangular dataset made for batch {dataset.batch_size}, loader batch {batch}")
    workers = loader_workers(workers, batch)
    window = 0 if dataset.rect else max(PARTNER_WINDOW, batch)
    sampler = EpochSampler(
        len(dataset), seed, shuffle=True, rank=rank, world_size=world_size,
        rect_batch=batch if dataset.rect else 0, batch=batch, window=window, lanes=max(workers, 1),
    )  # fmt: skip
    sampler.mosaic = dataset.mosaic
    if dataset.images is not None and not set(sampler.images.tolist()) <= dataset.images.keys():
        raise ValueError(
            f"the dataset caches the images of rank {dataset.rank} of {dataset.world_size}, "
            f"the loader reads those of rank {rank} of {world_size}: give both the same rank and seed"
        )
    kwargs = _loader_kwargs(workers, device)
    loader = DataLoader(dataset, batch_sampler=EpochBatches(sampler), **kwargs)
    return TrainLoader(dataset, sampler, loader)


def build_val_loader(
    dataset: ValDataset, workers: int, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1
) -> DataLoader:
    """Reads ``dataset`` in its (aspect-sorted) order, ``dataset.batch_size`` images per batch.

    Several processes: rank r reads the batches r, r + world_size, ... (``shard.val_batches``);
    ``Validator(dist=...)`` puts the ranks' results back in one-process order.
    """
    kwargs = _loader_kwargs(loader_workers(workers, dataset.batch_size), device)
    if world_size == 1:
        return DataLoader(dataset, batch_size=dataset.batch_size, shuffle=False, drop_last=False, **kwargs)
    batches = val_batches(len(dataset), dataset.batch_size, rank, world_size)
    return DataLoader(dataset, batch_sampler=batches, **kwargs)
