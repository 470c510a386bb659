"""Datasets that turn checked ``ImageRecord``s into ``Sample``s for training and validation.

``TrainDataset`` augments (``augment.py``). Indexing with a ``SampleKey`` (what
``loader.EpochSampler`` yields) carries the epoch, the mosaic switch and the mosaic partners into
worker processes, persistent ones included; a sample is a pure function of the key and the seed,
so a run repeats exactly with the same number of loader workers. A plain ``int`` means epoch 0, the
dataset's own mosaic switch and partners from the whole dataset.

``ValDataset`` letterboxes without augmentation, in rectangular batches: images sorted by aspect
ratio and each batch padded to the smallest stride-multiple shape that holds its images.
``TrainDataset(rect=True)`` makes the same kind of batches for training (``rect=True``): no
mosaic, each image letterboxed to its batch's shape before the random affine.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from yoloforge.data.augment import Labeled, augment, resize_long_side, scaled_boxes, without_mosaic
from yoloforge.data.images import ImageReadError, read_image
from yoloforge.data.letterbox import letterbox, rect_shape
from yoloforge.data.shard import owned_images, val_batches
from yoloforge.settings import AugmentSettings
from yoloforge.structures import ImageRecord, Letterbox, Sample

log = logging.getLogger(__name__)

RAM_SAFETY = 0.5  # keep 50% headroom over the estimate: the process needs memory for more than images
VAL_RECT_PAD = 0.5  # half a stride of margin around rectangular validation batches (as the reference)
TRAIN_RECT_PAD = 0.0  # rectangular training batches fit their images without margin (as the reference)
RECENT_IMAGES = 64  # decoded images a process keeps at least for reuse as partners


@dataclass(frozen=True)
class SampleKey:
    """Which sample to make: image ``index`` in ``epoch``, with or without mosaic.

    ``partners``: the images mosaic and mixup draw from; () means the whole dataset. The
    sampler passes the images of this batch and of the worker's recent batches, so that a worker
    decodes each image once and finds the partners among its recent images (as the reference
    draws them from a buffer of recently loaded images).
    """

    index: int
    epoch: int = 0
    mosaic: bool = True
    partners: tuple[int, ...] = ()


def take_fraction(records: Sequence[ImageRecord], fraction: float) -> list[ImageRecord]:
    """The first ``fraction`` of the records (at least one), as the reference's ``fraction=``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must be in (0, 1]")
    return list(records[: max(1, round(len(records) * fraction))])


# ---------------------------------------------------------------------------------------------
# RAM cache


def resized_shape(shape: tuple[int, int], imgsz: int) -> tuple[int, int]:
    """(height, width) of an image of ``shape`` after ``resize_long_side`` to imgsz."""
    h0, w0 = shape
    r = imgsz / max(h0, w0)
    return min(imgsz, max(1, round(h0 * r))), min(imgsz, max(1, round(w0 * r)))


def read_resized(record: ImageRecord, imgsz: int, shrink_interp: int, fast: bool = False) -> np.ndarray:
    """Image of ``record`` resized so its long side is imgsz.

    ``fast`` decodes JPEGs at 1/2, 1/4 or 1/8 size when that still leaves the long side at
    least imgsz (a 640x480 JPEG at imgsz 320 decodes 2.5x faster); training only, so that
    validation sees every pixel of the file (and shrinks it with INTER_AREA).
    """
    reduce = 1
    while fast and reduce < 8 and max(record.shape) / (2 * reduce) >= imgsz:
        reduce *= 2
    return resize_long_side(read_image(record.path, reduce), imgsz, shrink_interp)


def available_ram() -> int | None:
    """Bytes of memory available to new allocations, or None when the system does not say."""
    try:
        import psutil  # optional: not a dependency

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_ram_cache(records: Sequence[ImageRecord], imgsz: int, prefix: str) -> int:
    """Estimate the bytes ``cache_ram`` needs, log them, raise MemoryError when they do not fit."""
    needed = sum(h * w * 3 for h, w in (resized_shape(r.shape, imgsz) for r in records))
    available = available_ram()
    if available is not None and needed * (1 + RAM_SAFETY) > available:
        raise MemoryError(
            f"{prefix}cache=ram needs {needed / 1e9:.1f}GB (+{RAM_SAFETY:.0%} headroom) but only "
            f"{available / 1e9:.1f}GB RAM is available; train with cache=False or a smaller imgsz"
        )
    log.info("%sCaching images (%.1fGB RAM)", prefix, needed / 1e9)
    return needed


def cache_images(
    records: Sequence[ImageRecord], imgsz: int, shrink_interp: int, prefix: str, fast: bool = False
) -> list[np.ndarray]:
    """Decode and resize every image once, in threads (OpenCV releases the GIL)."""
    check_ram_cache(records, imgsz, prefix)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda r: read_resized(r, imgsz, shrink_interp, fast), records))


# ---------------------------------------------------------------------------------------------
# rectangular batches


def aspect_order(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    """(order, sorted h/w aspects): the records sorted by aspect ratio, stable."""
    aspects = np.array([r.shape[0] / r.shape[1] for r in records], dtype=np.float64)
    order = np.argsort(aspects, kind="stable")
    return order, aspects[order]


def batch_shapes(
    sorted_aspects: np.ndarray, batch_size: int, imgsz: int, stride: int, pad: float
) -> list[tuple[int, int]]:
    """(height, width) per batch of consecutive images: wide batches keep the width at imgsz,
    tall ones the height; square when the batch holds both."""
    shapes = []
    for start in range(0, len(sorted_aspects), batch_size):
        chunk = sorted_aspects[start : start + batch_size]
        lo, hi = float(chunk.min()), float(chunk.max())
        aspect = hi if hi < 1 else lo if lo > 1 else 1.0
        shapes.append(rect_shape(aspect, imgsz, stride, pad))
    return shapes


# ---------------------------------------------------------------------------------------------
# datasets


class TrainDataset(Dataset):
    """Augmented training samples, imgsz x imgsz; with ``rect``, in rectangular batches.

    With ``rect`` the records are reordered by aspect ratio (``self.records`` is that order) and
    image i belongs to batch ``i // batch_size``, whose shape is ``input_shape(i)``; a sampler
    must keep those batches together (``loader.EpochSampler(rect_batch=...)``). Mosaic and mixup
    are off: they need square samples.

    ``cache_ram`` with ``rank`` / ``world_size`` (several training processes): only the images this
    rank owns are decoded and kept (``shard.owned_images`` of ``seed``; the sampler of the same
    rank and seed reads nothing else), so the processes together hold the set once, not once each.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        imgsz: int,
        augment: AugmentSettings,
        seed: int = 0,
        cache_ram: bool = False,
        fraction: float = 1.0,
        rect: bool = False,
        batch_size: int = 16,
        stride: int = 32,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not records:
            raise ValueError("TrainDataset: no images to train on")
        self.records = take_fraction(records, fraction)
        self.imgsz = imgsz
        self.rect, self.batch_size = rect, batch_size
        self.batch_shapes: list[tuple[int, int]] = []
        if rect:
            order, aspects = aspect_order(self.records)
            self.records = [self.records[i] for i in order]
            self.batch_shapes = batch_shapes(aspects, batch_size, imgsz, stride, TRAIN_RECT_PAD)
            augment = without_mosaic(augment)
        self.settings = augment
        self.seed = seed
        self.mosaic = augment.mosaic > 0  # switched off by close_mosaic()
        self.rank, self.world_size = rank, world_size
        self.images: dict[int, np.ndarray] | None = None  # index -> resized image (cache_ram)
        if cache_ram:
            mine = owned_images(len(self.records), seed, rank, world_size, batch_size if rect else 0).tolist()
            decoded = cache_images([self.records[i] for i in mine], imgsz, cv2.INTER_LINEAR, "train: ", True)
            self.images = dict(zip(mine, decoded, strict=True))
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()  # this process's, oldest first
        self._recent_limit = RECENT_IMAGES  # grows to the sampler's partner window

    def __len__(self) -> int:
        return len(self.records)

    def close_mosaic(self) -> None:
        """Mosaic and mixup off from now on, in this process. With a loader, call the loader's
        ``close_mosaic()``: its sampler carries the switch to the worker processes."""
        self.mosaic = False

    def load(self, index: int) -> Labeled:
        """Image ``index`` resized so its long side is imgsz, with its boxes in pixels."""
        record = self.records[index]
        image = self._image(index)
        boxes = scaled_boxes(record.boxes_cxcywhn, image.shape[:2])
        return Labeled(image, record.classes.astype(np.int64), boxes)

    def _image(self, index: int) -> np.ndarray:
        """From the RAM cache, else from this process's recent images, else decoded (and kept)."""
        if self.images is not None and index in self.images:
            return self.images[index]
        image = self._recent.pop(index, None)
        if image is None:
            image = read_resized(self.records[index], self.imgsz, cv2.INTER_LINEAR, fast=True)
        self._recent[index] = image  # (re)inserted as the most recent
        if len(self._recent) > self._recent_limit:
            self._recent.popitem(last=False)
        return image

    def _keep_recent(self, window: Sequence[int]) -> None:
        """Keep exactly the recent images in ``window`` (the sampler's windows only move forward)."""
        wanted = set(window)
        self._recent_limit = max(RECENT_IMAGES, len(wanted))
        for index in [i for i in self._recent if i not in wanted]:
            del self._recent[index]

    def __getitem__(self, key: int | SampleKey) -> Sample:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), 0, self.mosaic)
        rng = np.random.default_rng((self.seed, key.epoch, key.index))
        settings = self.settings if key.mosaic else without_mosaic(self.settings)
        if key.partners and key.mosaic:
            self._keep_recent(key.partners)
        partners = key.partners or range(len(self))
        shape = self.batch_shapes[key.index // self.batch_size] if self.rect else None
        item = augment(self.load, key.index, partners, self.imgsz, settings, rng, shape)
        h, w = item.image.shape[:2]
        return Sample(
            image=item.image,
            classes=item.classes,
            boxes_xyxy=item.boxes_xyxy,
            path=self.records[key.index].path,
            letterbox=Letterbox.identity((h, w)),  # augmented: no way back
        )


class ValDataset(Dataset):
    """Letterboxed validation samples; with ``rect``, in rectangular batches of ``batch_size``.

    With ``rect`` the records are reordered by aspect ratio (``self.records`` is that order), so
    a loader must read them in order, ``batch_size`` at a time (``loader.build_val_loader``).
    Without ``rect`` every input is ``shape`` (height, width; default imgsz x imgsz), e.g. the
    input of a static-shape export. An image that passed the scan but does not decode now (a file
    changed or damaged since) is skipped with a warning: ``__getitem__`` gives None, which
    ``loader.collate`` leaves out. ``rank`` / ``world_size``: ``cache_ram`` keeps only the batches
    that rank validates (``loader.build_val_loader`` with the same rank).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        imgsz: int,
        batch_size: int,
        stride: int = 32,
        rect: bool = True,
        cache_ram: bool = False,
        shape: tuple[int, int] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.imgsz, self.batch_size, self.stride, self.rect = imgsz, batch_size, stride, rect
        self.shape = tuple(shape) if shape is not None else (imgsz, imgsz)
        self.records, self.batch_shapes = list(records), []
        if rect and records:
            order, aspects = aspect_order(records)
            self.records = [records[i] for i in order]
            self.batch_shapes = batch_shapes(aspects, batch_size, imgsz, stride, VAL_RECT_PAD)
        self.rank, self.world_size = rank, world_size
        self.images: dict[int, np.ndarray] | None = None  # index -> resized image (cache_ram)
        if cache_ram:  # several processes: each keeps the batches it validates (shard.val_batches)
            mine = [i for b in val_batches(len(self.records), batch_size, rank, world_size) for i in b]
            decoded = cache_images([self.records[i] for i in mine], imgsz, cv2.INTER_AREA, "val: ")
            self.images = dict(zip(mine, decoded, strict=True))

    def __len__(self) -> int:
        return len(self.records)

    def input_shape(self, index: int) -> tuple[int, int]:
        """(height, width) of the network input for image ``index``."""
        return self.batch_shapes[index // self.batch_size] if self.rect else self.shape

    def __getitem__(self, index: int) -> Sample | None:
        record = self.records[index]
        if self.images is not None and index in self.images:
            image = self.images[index]
        else:
            try:
                image = read_resized(record, self.imgsz, cv2.INTER_AREA)
            except ImageReadError as e:
                log.warning("val: skipping %s (%s)", record.path, str(e).removeprefix(f"{record.path}: "))
                return None
        (h0, w0), (h1, w1) = record.shape, image.shape[:2]
        image, lb = letterbox(image, self.input_shape(index), scaleup=False)
        gain = (w1 / w0 * lb.gain[0], h1 / h0 * lb.gain[1])  # the resize, then the letterbox, per axis
        lb = Letterbox(gain=gain, pad=lb.pad, orig_shape=record.shape)
        boxes = lb.to_input(scaled_boxes(record.boxes_cxcywhn, record.shape))
        return Sample(image, record.classes.astype(np.int64), boxes, record.path, lb)
