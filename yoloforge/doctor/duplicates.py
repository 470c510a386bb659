"""Exact and near-duplicate images, within a split (wasted labelling, over-weighted scenes) and across
splits (leakage: a validation image the model trained on inflates every metric the user reads).

Exact: byte-identical files. Near: perceptual hashes (``imagehash.phash``, 256 bits) at most
``NEAR_BITS`` apart. On the demo data no two distinct images come closer than 64 bits, while a copy
resized to 30-130% and re-encoded at JPEG quality 40-75 stays within 6.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yoloforge.doctor.pixels import Pixels
from yoloforge.doctor.report import FAIL, OK, WARN, Finding, LabelledImage

NEAR_BITS = 25  # about 10% of the hash
_ROWS = 1024  # rows of the distance matrix computed at a time: 1024 x N float32


@dataclass(frozen=True)
class Link:
    """Image ``a`` duplicates image ``b`` (indices into the image list; ``a`` < ``b``)."""

    a: int
    b: int
    bits: int  # perceptual hash distance; 0 for byte-identical files
    exact: bool


def find_links(pixels: Sequence[Pixels], near_bits: int = NEAR_BITS) -> list[Link]:
    """Every pair of byte-identical or perceptually close images."""
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pixels):
        by_digest[p.digest].append(i)
    links = [Link(g[0], j, 0, True) for g in by_digest.values() for j in g[1:]]
    exact = {(link.a, link.b) for link in links}
    hashes = np.array([p.phash for p in pixels], dtype=np.float32).reshape(len(pixels), -1)
    ones = hashes.sum(1)
    for start in range(0, len(pixels), _ROWS):
        block = hashes[start : start + _ROWS]
        bits = ones[start : start + _ROWS, None] + ones[None, :] - 2 * (block @ hashes.T)  # Hamming
        rows, cols = np.nonzero(np.round(bits) <= near_bits)
        for r, j in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i < j and (i, j) not in exact and pixels[i].digest != pixels[j].digest:
                links.append(Link(i, j, int(round(bits[r, j])), False))
    return links


def duplicates_finding(images: Sequence[LabelledImage], links: Sequence[Link]) -> Finding:
    """Copies within one split: every image after the first of its group is redundant."""
    within = [link for link in links if images[link.a].split == images[link.b].split]
    seen: set[int] = set()
    items = []
    for link in sorted(within, key=lambda k: (not k.exact, k.bits)):
        if link.b in seen:
            continue
        seen.add(link.b)
        first, copy = images[link.a], images[link.b]
        items.append(
            {
                "image": copy.path,
                "split": copy.split,
                "duplicate_of": first.path,
                "exact": link.exact,
                "bits": link.bits,
            }
        )
    n_exact = sum(item["exact"] for item in items)
    n_near = len(items) - n_exact
    if not items:
        return Finding("duplicates", OK, 0, "0", "no duplicate images within a split")
    message = (
        f"{n_exact} exact and {n_near} near-duplicate images within a split: remove the copies "
        "(they count twice in training and in the metrics)"
    )
    return Finding("duplicates", WARN, len(items), "0", message, items)


def leakage_finding(images: Sequence[LabelledImage], links: Sequence[Link]) -> Finding:
    """Images of val or test that are (near) copies of an image in another split."""
    matches: dict[int, list[tuple[int, Link]]] = defaultdict(list)
    for link in links:
        a, b = images[link.a], images[link.b]
        if a.split == b.split:
            continue
        held_out, other = (link.b, link.a) if _rank(b.split) > _rank(a.split) else (link.a, link.b)
        matches[held_out].append((other, link))
    items = []
    for i, found in sorted(matches.items(), key=lambda kv: min(link.bits for _, link in kv[1])):
        found.sort(key=lambda pair: pair[1].bits)
        items.append(
            {
                "image": images[i].path,
                "split": images[i].split,
                "matches": [images[j].path for j, _ in found],
                "match_splits": [images[j].split for j, _ in found],
                "exact": found[0][1].exact,
                "bits": found[0][1].bits,
            }
        )
    if not items:
        return Finding("leakage", OK, 0, "0", "no image of val or test appears in another split")
    by_split = defaultdict(int)
    for item in items:
        by_split[item["split"]] += 1
    where = ", ".join(f"{n} {split}" for split, n in by_split.items())
    message = (
        f"{where} images are copies of images in another split: remove them from one side "
        "(leakage inflates every val metric)"
    )
    return Finding("leakage", FAIL, len(items), "0", message, items)


def _rank(split: str) -> int:
    """The held-out side of a cross-split pair: test over val over train."""
    return {"train": 0, "val": 1, "test": 2}[split]
