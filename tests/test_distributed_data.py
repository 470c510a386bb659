"""Training data over several processes, without starting any: the loaders of rank 0 and rank 1 of 2
are built side by side in this process, as each rank builds its own.

Each image is read exactly once per epoch across the ranks (15 images: no padding duplicates, as
many steps on both ranks), the order is new the next epoch, even with persistent loader workers
(whose iterator must be made after set_epoch), and cache=ram keeps about half the images per rank.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections import Counter
from pathlib import Path

import pytest

from yoloforge.data.config import load_data_config
from yoloforge.data.dataset import TrainDataset
from yoloforge.data.loader import build_train_loader
from yoloforge.data.scan import scan_split
from yoloforge.settings import AugmentSettings

FRACTION = 15 / 16  # 15 of the 16 images: the ranks own 8 and 7


@pytest.fixture(scope="module")
def records(shapes_small: Path):
    data = load_data_config(shapes_small)
    return scan_split(data.train, data.names, prefix="train", progress=False).records


def _loaders(records, workers: int, cache: bool = False):
    sets = [
        TrainDataset(
            records, 64, AugmentSettings(), seed=3, fraction=FRACTION, cache_ram=cache, rank=r, world_size=2
        )
        for r in (0, 1)
    ]
    return [
        build_train_loader(ds, batch=4, workers=workers, seed=3, rank=r, world_size=2)
        for r, ds in enumerate(sets)
    ]


def _epoch(loader, epoch: int) -> list[list[str]]:
    loader.set_epoch(epoch)
    return [batch.paths for batch in loader]


def test_each_image_once_per_epoch_across_ranks_and_a_new_order_each_epoch(records):
    # In a spawned process of its own: forking loader workers from the pytest process, then loading
    # OpenVINO (the export tests), made every later fork of this process crash in glibc.
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        pool.submit(_each_image_once, records).result()


def _each_image_once(records) -> None:
    loaders = _loaders(records, workers=1)  # one persistent worker per rank
    assert all(lo.loader.persistent_workers for lo in loaders)
    paths = [str(r.path) for r in records[:15]]
    orders = []
    for epoch in (0, 1, 2):
        per_rank = [_epoch(lo, epoch) for lo in loaders]
        assert [len(b) for b in per_rank] == [len(lo) for lo in loaders] == [2, 2]  # as many steps
        seen = Counter(str(p) for batches in per_rank for batch in batches for p in batch)
        assert sorted(seen) == sorted(paths) and set(seen.values()) == {1}  # each exactly once
        for lo, batches in zip(loaders, per_rank, strict=True):  # the iterator saw this epoch
            expected = [str(lo.dataset.records[i].path) for i in lo.sampler.order(epoch)]
            assert [str(p) for batch in batches for p in batch] == expected
        orders.append(per_rank)
    assert orders[0] != orders[1] != orders[2]  # a new order every epoch
    mine = [{p for batch in orders[0][r] for p in batch} for r in (0, 1)]  # a fixed share per rank
    assert all({p for batch in orders[e][r] for p in batch} == mine[r] for e in (1, 2) for r in (0, 1))
    for lo in loaders:
        lo.close()


def test_cache_ram_keeps_about_one_half_per_rank(records):
    loaders = _loaders(records, workers=0, cache=True)
    cached = [lo.dataset.images for lo in loaders]
    assert sorted(len(c) for c in cached) == [7, 8] and not set(cached[0]) & set(cached[1])
    nbytes = [sum(image.nbytes for image in c.values()) for c in cached]
    full = TrainDataset(records, 64, AugmentSettings(), seed=3, fraction=FRACTION, cache_ram=True).images
    total = sum(image.nbytes for image in full.values())
    assert sum(nbytes) == total and all(0.35 * total < n < 0.65 * total for n in nbytes)
    for lo, c in zip(loaders, cached, strict=True):  # the rank reads (and mixes in) only its own images
        for epoch in (0, 1):
            lo.set_epoch(epoch)
            keys = [k for batch in lo.sampler.batch_keys() for k in batch]
            assert {k.index for k in keys} | {i for k in keys for i in k.partners} <= set(c)
    other = TrainDataset(
        records, 64, AugmentSettings(), seed=3, fraction=FRACTION, cache_ram=True, world_size=2
    )
    with pytest.raises(ValueError, match="caches the images of rank 0 of 2"):
        build_train_loader(other, batch=4, workers=0, seed=3, rank=1, world_size=2)
