"""Datasets and loaders: collate, shuffling by (seed, epoch), mosaic switch, rect validation, RAM cache."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from system_marks import needs_nice

from yoloforge.data import dataset as dataset_module
from yoloforge.data.augment import resize_long_side
from yoloforge.data.dataset import SampleKey, TrainDataset, ValDataset, take_fraction
from yoloforge.data.letterbox import letterbox
from yoloforge.data.loader import (
    EpochSampler,
    build_train_loader,
    build_val_loader,
    collate,
    loader_workers,
    plan_cpu,
    usable_cpus,
    worker_nice,
)
from yoloforge.settings import AugmentSettings
from yoloforge.structures import ImageRecord, Letterbox, Sample

GEOMETRY_OFF = AugmentSettings(
    hsv_h=0, hsv_s=0, hsv_v=0, degrees=0, translate=0, scale=0, shear=0, perspective=0,
    flipud=0, fliplr=0, mosaic=1.0, mixup=0,
)  # fmt: skip


def make_records(folder: Path, shapes: list[tuple[int, int]], suffix: str = ".png") -> list[ImageRecord]:
    """One image per (height, width): grey noise with a white rectangle, the middle half of it."""
    import cv2

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (h, w) in enumerate(shapes):
        image = rng.integers(0, 100, (h, w, 3), dtype=np.uint8)
        x1, y1, bw, bh = w // 4, h // 4, w // 2, h // 2
        image[y1 : y1 + bh, x1 : x1 + bw] = 255
        path = folder / f"{i}{suffix}"
        cv2.imwrite(str(path), image)
        box = np.array([[(x1 + bw / 2) / w, (y1 + bh / 2) / h, bw / w, bh / h]], np.float32)
        records.append(ImageRecord(str(path), (h, w), np.array([i % 3]), box))
    return records


@pytest.fixture
def records(tmp_path: Path) -> list[ImageRecord]:
    return make_records(tmp_path / "images", [(48, 64), (64, 48), (40, 80), (64, 64), (30, 60), (60, 30)])


# ---------------------------------------------------------------------------------------------
# collate and sampling


def test_collate_hand_case():
    lb = Letterbox.identity((2, 3))
    image_a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    a = Sample(image_a, np.array([4]), np.array([[0, 0, 1, 1]], np.float32), "a.jpg", lb)
    b = Sample(np.zeros((2, 3, 3), np.uint8), np.zeros(0, np.int64), np.zeros((0, 4), np.float32), "b", lb)
    c = Sample(np.zeros((2, 3, 3), np.uint8), np.array([1, 2]), np.ones((2, 4), np.float32), "c", lb)
    batch = collate([a, b, c])
    assert batch.images.shape == (3, 3, 2, 3) and batch.images.dtype == torch.uint8
    assert batch.images[0, 2, 1, 0] == image_a[1, 0, 2]  # (B, C, H, W) from (H, W, C)
    assert batch.classes.tolist() == [4, 1, 2] and batch.classes.dtype == torch.int64
    assert batch.batch_idx.tolist() == [0, 2, 2]
    assert batch.boxes_xyxy.shape == (3, 4) and batch.boxes_xyxy.dtype == torch.float32
    assert batch.paths == ["a.jpg", "b", "c"] and len(batch.letterboxes) == 3


def test_sampler_orders_depend_on_seed_and_epoch():
    def order(seed: int, epoch: int) -> list[int]:
        sampler = EpochSampler(50, seed=seed)
        sampler.set_epoch(epoch)
        return [k.index for k in sampler]

    assert order(0, 0) == order(0, 0)  # one seed: the same order every run
    assert order(0, 0) != order(1, 0)  # two seeds: two orders
    assert order(0, 0) != order(0, 1)  # each epoch a new order
    assert sorted(order(3, 2)) == list(range(50))
    keys = list(EpochSampler(5, shuffle=False))
    assert keys == [SampleKey(i, 0, True) for i in range(5)]


def test_sampler_ranks_read_each_image_once():
    ranks = [EpochSampler(10, seed=2, rank=r, world_size=3, batch=2) for r in range(3)]
    parts = [[k.index for k in s] for s in ranks]
    assert sorted(map(len, parts)) == [3, 3, 4] and [len(p) for p in parts] == [len(s) for s in ranks]
    assert sorted(sum(parts, [])) == list(range(10))  # each image once, no padding
    assert [len(s.batches(0)) for s in ranks] == [2, 2, 2]  # as many steps on every rank
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(10, rank=3, world_size=3)


def test_sampler_partner_windows():
    """Batch b draws partners from itself and the batches b-2, b-4, ... its worker made before."""
    sampler = EpochSampler(22, seed=0, batch=4, window=12, lanes=2)
    keys = list(sampler)
    order = [k.index for k in keys]
    batches = [order[i : i + 4] for i in range(0, 22, 4)]  # the last one is short (2 images)
    for b, batch in enumerate(batches):
        window = [i for k in range(max(b - 4, b % 2), b + 1, 2) for i in batches[k]]
        assert all(keys[order.index(i)].partners == tuple(window) for i in batch)
    assert keys[0].partners == tuple(batches[0])  # the first epoch's first batch: just itself
    assert len(keys[-1].partners) == 4 + 4 + 2  # batches 1, 3 and the short 5
    # later epochs reach back into the previous epoch's batches of the same worker
    sampler.set_epoch(1)
    keys1 = list(sampler)
    order1 = [k.index for k in keys1]
    batches1 = [order1[i : i + 4] for i in range(0, 22, 4)]
    for b, batch in enumerate(batches1):
        lane = [batches[k] for k in range(b % 2, 6, 2)] + [batches1[k] for k in range(b % 2, b + 1, 2)]
        window = tuple(dict.fromkeys(i for chunk in lane[-3:] for i in chunk))
        assert all(keys1[order1.index(i)].partners == window for i in batch)
    assert keys1[0].partners[:8] == tuple(batches[2] + batches[4])  # worker 0's last two of epoch 0
    assert all(k.partners == () for k in EpochSampler(10, batch=4))  # window 0: the whole dataset
    with pytest.raises(ValueError, match="lanes"):
        EpochSampler(10, lanes=0)


def test_rect_sampler_keeps_batches_whole():
    def batches(epoch: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
        sampler = EpochSampler(10, seed=1, rank=rank, world_size=world_size, rect_batch=3)
        sampler.set_epoch(epoch)
        order = [k.index for k in sampler]
        assert len(order) == len(sampler)
        return [order[i : i + 3] for i in range(0, len(order), 3)]

    one = batches(0)
    assert sorted(map(tuple, one)) == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9,)]
    assert one[-1] == [9]  # the short batch stays last, where a loader's last chunk is
    assert {tuple(b) for b in batches(0)} == {tuple(b) for b in batches(1)}
    assert any(batches(e) != one for e in range(1, 6))  # the batch order changes with the epoch
    owned = [EpochSampler(10, seed=1, rank=r, world_size=3, rect_batch=3).batches(0) for r in range(3)]
    assert [len(r) for r in owned] == [2, 2, 2]  # 4 batches over 3 ranks: two ranks split theirs
    assert sorted(i for r in owned for b in r for i in b) == list(range(10))  # each image once
    assert all(len({i // 3 for i in b}) == 1 for r in owned for b in r)  # a split stays in its batch


def test_rect_training_batches(records):
    ds = TrainDataset(records, 128, AugmentSettings(), rect=True, batch_size=2)
    aspects = [r.shape[0] / r.shape[1] for r in ds.records]
    assert aspects == sorted(aspects) and not ds.mosaic
    assert ds.batch_shapes == [(64, 128), (128, 128), (128, 96)]  # wide, mixed (square), tall
    loader = build_train_loader(ds, batch=2, workers=0, seed=0)
    shapes = []
    for batch in loader:
        h, w = batch.images.shape[-2:]
        shapes.append((h, w))
        boxes = batch.boxes_xyxy
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert sorted(shapes) == sorted(ds.batch_shapes)
    with pytest.raises(ValueError, match="batch"):
        build_train_loader(ds, batch=3, workers=0)


def test_a_batch_decodes_each_image_once(records, monkeypatch):
    decoded = []
    real = dataset_module.read_resized
    monkeypatch.setattr(
        dataset_module, "read_resized", lambda r, *a, **k: decoded.append(r) or real(r, *a, **k)
    )
    ds = TrainDataset(records, 64, AugmentSettings(mixup=1.0))  # mosaic + mixup: 8 images per sample
    loader = build_train_loader(ds, batch=len(records), workers=0)
    (batch,) = list(loader)
    assert len(decoded) == len(records) and len(batch) == len(records)


class DecodeLog(TrainDataset):
    """Appends the index of every image it decodes to a file named after its process."""

    log_dir: Path

    def _image(self, index: int) -> np.ndarray:
        import os

        if index not in self._recent:
            with open(self.log_dir / f"{os.getpid()}.txt", "a") as f:
                f.write(f"{index}\n")
        return super()._image(index)


def test_partners_come_from_images_the_worker_decoded(tmp_path):
    """Two workers, 32 images, batches of 4: each image is decoded once per epoch, yet mosaics
    draw from all the batches their worker made this epoch (up to 128 images)."""
    records = make_records(tmp_path / "images", [(40, 48)] * 32)
    ds = DecodeLog(records, 64, AugmentSettings(mixup=0.5), seed=1)
    ds.log_dir = tmp_path
    loader = build_train_loader(ds, batch=4, workers=2, seed=0)
    lanes = max(loader.loader.num_workers, 1)  # 2, or fewer on a machine with fewer CPUs
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        assert sum(len(b) for b in loader) == 32
        logs = [f.read_text().split() for f in tmp_path.glob("*.txt")]
        assert len(logs) == lanes
        counts = Counter(sum(logs, []))
        assert set(counts) == {str(i) for i in range(32)}
        assert max(counts.values()) == epoch + 1  # (a few stay decoded from one epoch to the next)
    loader.set_epoch(0)
    windows = {len(k.partners) for k in loader.sampler}
    assert windows == {4 * k for k in range(1, 8 // lanes + 1)}  # grows batch by batch in each worker
    loader.set_epoch(1)  # then starts from the worker's images of the epoch before
    assert min(len(k.partners) for k in loader.sampler) > 32 // lanes


class NiceProbe(ValDataset):
    """Reports the niceness of the process that makes each sample, in ``Sample.path``."""

    def __getitem__(self, index: int) -> Sample:
        import os

        sample = super().__getitem__(index)
        sample.path = str(os.nice(0))
        return sample


@needs_nice
def test_cpu_workers_run_at_the_lowest_priority(records):
    import os

    assert worker_nice("cpu") == 19 and worker_nice("cuda:0") == 0
    (batch,) = list(build_val_loader(NiceProbe(records[:2], 32, batch_size=2), workers=1, device="cpu"))
    assert batch.paths == [str(min(19, os.nice(0) + 19))] * 2


def test_worker_counts_are_capped():
    assert loader_workers(8, batch=4) == min(4, usable_cpus())
    assert loader_workers(0, batch=16) == 0
    assert loader_workers(1, batch=16) == 1
    plan = plan_cpu("cpu", 8, 16)
    assert plan.workers == min(8, usable_cpus()) and plan.torch_threads >= 1


# ---------------------------------------------------------------------------------------------
# training dataset


def test_train_samples_repeat_by_seed_epoch_and_index(records):
    ds = TrainDataset(records, 64, AugmentSettings(degrees=10), seed=0)
    a, b = ds[SampleKey(2, epoch=1)], ds[SampleKey(2, epoch=1)]
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes_xyxy, b.boxes_xyxy)
    assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8
    assert not np.array_equal(a.image, ds[SampleKey(2, epoch=2)].image)
    other_seed = TrainDataset(records, 64, AugmentSettings(degrees=10), seed=1)
    assert not np.array_equal(a.image, other_seed[SampleKey(2, epoch=1)].image)
    assert a.path == records[2].path and a.classes.dtype == np.int64


def letterboxed(record: ImageRecord, imgsz: int) -> np.ndarray:
    from yoloforge.data.images import read_image

    return letterbox(resize_long_side(read_image(record.path), imgsz), (imgsz, imgsz))[0]


def test_close_mosaic_gives_plain_letterboxed_images(records):
    ds = TrainDataset(records, 64, GEOMETRY_OFF)
    with_mosaic = ds[0]
    assert not np.array_equal(with_mosaic.image, letterboxed(records[0], 64))
    ds.close_mosaic()
    without = ds[0]
    np.testing.assert_array_equal(without.image, letterboxed(records[0], 64))
    # the white rectangle (the middle half of a 48x64 image) after letterboxing into 64x64
    np.testing.assert_allclose(without.boxes_xyxy, [[16, 8 + 12, 48, 8 + 36]])


def test_close_mosaic_reaches_persistent_workers(records):
    ds = TrainDataset(records, 64, GEOMETRY_OFF)
    loader = build_train_loader(ds, batch=3, workers=1, seed=0)
    assert loader.loader.persistent_workers
    loader.set_epoch(0)
    first = list(loader)
    loader.close_mosaic()
    loader.set_epoch(1)
    second = list(loader)
    plain = {r.path: letterboxed(r, 64) for r in records}
    assert not all(np.array_equal(b.images[i].permute(1, 2, 0).numpy(), plain[p]) for b in first
                   for i, p in enumerate(b.paths))  # fmt: skip
    for batch in second:
        for i, path in enumerate(batch.paths):
            np.testing.assert_array_equal(batch.images[i].permute(1, 2, 0).numpy(), plain[path])


def test_batches_repeat_for_the_same_worker_count(records):
    """Samples are a pure function of (seed, epoch, workers): the worker count decides which
    images each batch's mosaics may draw from, nothing else."""
    ds = TrainDataset(records, 64, AugmentSettings(degrees=5, mixup=0.5), seed=3)
    runs = []
    for workers in (0, 0, 2, 2):
        loader = build_train_loader(ds, batch=2, workers=workers, seed=3)
        loader.set_epoch(2)
        runs.append(list(loader))
    for one, other in (runs[:2], runs[2:]):
        assert len(one) == len(other) == 3
        for a, b in zip(one, other, strict=True):
            assert a.paths == b.paths
            assert torch.equal(a.images, b.images) and torch.equal(a.boxes_xyxy, b.boxes_xyxy)
            assert torch.equal(a.batch_idx, b.batch_idx)
    assert [a.paths for a in runs[0]] == [b.paths for b in runs[2]]  # the order does not change


def test_fraction_takes_the_first_records(records):
    assert take_fraction(records, 0.5) == records[:3]
    assert take_fraction(records, 0.01) == records[:1]
    assert len(TrainDataset(records, 64, AugmentSettings(), fraction=0.5)) == 3
    with pytest.raises(ValueError, match="fraction"):
        take_fraction(records, 0)


# ---------------------------------------------------------------------------------------------
# validation dataset


def test_val_rect_batches_hand_computed(tmp_path):
    # aspects (h/w): 0.75, 0.375, 1.333, 1.0 -> sorted 0.375, 0.75 | 1.0, 1.333
    recs = make_records(tmp_path, [(48, 64), (24, 64), (64, 48), (32, 32)])
    ds = ValDataset(recs, imgsz=64, batch_size=2, stride=32)
    assert [r.shape for r in ds.records] == [(24, 64), (48, 64), (32, 32), (64, 48)]
    # wide batch: height ceil(0.75 * 64/32 + 0.5) * 32 = 64, width ceil(2 + 0.5) * 32 = 96
    assert ds.batch_shapes == [(64, 96), (96, 96)]
    batches = list(build_val_loader(ds, workers=0))
    assert [tuple(b.images.shape) for b in batches] == [(2, 3, 64, 96), (2, 3, 96, 96)]
    assert [p for b in batches for p in b.paths] == [r.path for r in ds.records]


def test_val_samples_map_back_to_the_original(records):
    ds = ValDataset(records, imgsz=64, batch_size=2)
    for i, record in enumerate(ds.records):
        sample = ds[i]
        assert sample.image.shape[:2] == ds.input_shape(i)
        h, w = record.shape
        box = sample.boxes_xyxy.round().astype(int)[0]  # the white rectangle, in input pixels
        assert sample.image[box[1] + 1 : box[3] - 1, box[0] + 1 : box[2] - 1].min() >= 250
        original = sample.letterbox.to_original(torch.from_numpy(sample.boxes_xyxy))
        expected = [w // 4, h // 4, w // 4 + w // 2, h // 4 + h // 2]
        np.testing.assert_allclose(original[0].numpy(), expected, atol=0.5)


def test_val_square_without_rect(records):
    ds = ValDataset(records, imgsz=64, batch_size=4, rect=False)
    assert all(ds[i].image.shape == (64, 64, 3) for i in range(len(ds)))
    assert [r.path for r in ds.records] == [r.path for r in records]


# ---------------------------------------------------------------------------------------------
# RAM cache


def test_ram_cache_gives_the_same_samples_and_logs_its_size(records, caplog):
    with caplog.at_level(logging.INFO, logger="yoloforge.data.dataset"):
        cached = ValDataset(records, imgsz=64, batch_size=2, cache_ram=True)
    assert "val: Caching images (0.0GB RAM)" in caplog.text
    plain = ValDataset(records, imgsz=64, batch_size=2)
    for i in range(len(records)):
        np.testing.assert_array_equal(cached[i].image, plain[i].image)
    train_cached = TrainDataset(records, 64, AugmentSettings(), cache_ram=True)
    train_plain = TrainDataset(records, 64, AugmentSettings())
    np.testing.assert_array_equal(train_cached[SampleKey(1, 4)].image, train_plain[SampleKey(1, 4)].image)


def test_ram_cache_refuses_when_memory_is_short(records, monkeypatch):
    monkeypatch.setattr(dataset_module, "available_ram", lambda: 1000)
    with pytest.raises(MemoryError, match=r"cache=ram needs .*GB .* only 0.0GB RAM is available"):
        TrainDataset(records, 64, AugmentSettings(), cache_ram=True)
    monkeypatch.setattr(dataset_module, "available_ram", lambda: None)  # unknown: cache anyway
    assert TrainDataset(records, 64, AugmentSettings(), cache_ram=True).images is not None


def test_available_ram_reads_the_system():
    ram = dataset_module.available_ram()
    assert ram is None or ram > 0


def test_fast_jpeg_decode_keeps_the_labels_on_the_pixels(tmp_path):
    """Decoding a big JPEG at reduced size must give the same geometry as a full decode."""
    (record,) = make_records(tmp_path, [(300, 400)], suffix=".jpg")
    ds = TrainDataset([record], 96, AugmentSettings())
    item = ds.load(0)
    assert item.image.shape == (72, 96, 3)
    x1, y1, x2, y2 = item.boxes_xyxy.round().astype(int)[0]
    assert item.image[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].min() > 200
    assert item.image[: y1 - 2].max() < 150


def test_letterbox_maps_the_image_extent_back_per_axis():
    """A resize to whole pixels scales the axes differently (239 x 298 at 256: 205 x 256); the way
    back must undo each axis, or boxes near the far edge land up to half a pixel off."""
    _, lb = letterbox(np.zeros((239, 298, 3), np.uint8), (256, 256))
    assert lb.gain == pytest.approx((256 / 298, 205 / 239))
    extent = torch.tensor([[lb.pad[0], lb.pad[1], lb.pad[0] + 256, lb.pad[1] + 205]])
    assert lb.to_original(extent).tolist() == [pytest.approx([0, 0, 298, 239], abs=1e-4)]


def test_val_sample_maps_back_to_the_original_pixels(tmp_path):
    """Resize (long side to imgsz) and letterbox in one mapping: the visible image, found in the
    padded input, maps back onto the whole original image."""
    (record,) = make_records(tmp_path, [(239, 298)])
    sample = ValDataset([record], imgsz=256, batch_size=1, rect=False)[0]
    content = np.argwhere((sample.image != 114).any(axis=2))
    (y1, x1), (y2, x2) = content.min(0), content.max(0) + 1
    assert (x2 - x1, y2 - y1) == (256, 205)
    back = sample.letterbox.to_original(torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32))
    assert back.tolist() == [pytest.approx([0, 0, 298, 239], abs=1e-3)]
