"""Which training images each process owns when several processes train (torchrun).

The split is fixed for the whole run, from the seed alone: a rank owns every world_size-th entry of
one seeded permutation. Each epoch a rank reads its own images in a new order (loader.EpochSampler),
so every image is read exactly once per epoch across the ranks, and with ``cache=ram`` a rank keeps
only its own images in memory (about 1/world_size of the set), once, for the whole run.

Why fixed rather than a new split every epoch (torch's DistributedSampler): a new split would
need every rank to hold the whole set in RAM, or to re-read images each epoch. What a fixed split
gives up is small: the global batch is still a fresh random draw each epoch, stratified by rank
(rank r's share of it comes from rank r's images), and the gradient is the mean over the whole
global batch either way; only BatchNorm statistics, which are per rank anyway, see images from one
shard. One process owns everything, so its order is exactly what it was before sharding.
"""

from __future__ import annotations

import numpy as np

SHARD_STREAM = 0x5A4D  # keeps the split's random stream apart from the epoch orders' (seed, epoch)


def owned(size: int, seed: int, rank: int, world_size: int) -> np.ndarray:
    """Sorted ids (of images, or of rectangular batches) that ``rank`` owns among ``size``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    if world_size == 1:
        return np.arange(size)
    perm = np.random.default_rng((seed, SHARD_STREAM)).permutation(size)
    return np.sort(perm[rank::world_size])


def owned_images(size: int, seed: int, rank: int, world_size: int, rect_batch: int = 0) -> np.ndarray:
    """Sorted image indices of ``rank``; with ``rect_batch`` it owns whole rectangular batches
    (images ``b * rect_batch`` onwards, see ``TrainDataset(rect=True)``). The short last batch is
    dealt last, so it joins a rank that holds one batch more than others, never the only one of a rank."""
    if not rect_batch:
        return owned(size, seed, rank, world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    n_full, short = divmod(size, rect_batch)
    deal = (
        np.random.default_rng((seed, SHARD_STREAM)).permutation(n_full)
        if world_size > 1
        else np.arange(n_full)
    )
    deal = np.append(deal, n_full) if short else deal
    starts = np.sort(deal[rank::world_size]) * rect_batch
    return np.concatenate([np.arange(s, min(s + rect_batch, size)) for s in starts] or [np.zeros(0, int)])


def val_batches(size: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """Rank ``rank``'s share of validation: whole batches ``rank``, ``rank + world_size``, ... of
    the one-process batches, so each image is validated once, in the very batch (same padding,
    same neighbours) one process would validate it in, and the metrics come out identical."""
    starts = range(rank * batch_size, size, world_size * batch_size)
    return [list(range(s, min(s + batch_size, size))) for s in starts]
