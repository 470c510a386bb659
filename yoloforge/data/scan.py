"""Check every image and label of a split once, name each problem with its file, cache the result.

The label of ``.../images/a/x.jpg`` is ``.../labels/a/x.txt``; an image without a label file, or
with an empty one, is a background. The checks of one image and one label file are in verify.py:
an image that does not decode is skipped and counted as corrupt (severity ``error``), and so is one
whose label file is not UTF-8 text (its objects are unknown); bad label lines are dropped or fixed
(``warning``). User files are never rewritten.

The cache is ``labels/<split>.yoloforge.cache`` (the labels folder with a suffix appended; the
reference writes ``<split>.cache`` there in its own format, and the two tools must not overwrite each
other's), or ``<common labels folder>.<split>.yoloforge.cache`` when a split spans several folders,
or, when that folder is missing or read-only, a file under ``yoloforge_home()/label-caches``. It is
an .npz of plain arrays (loaded with ``allow_pickle=False``) holding the records and the problems,
and it is rebuilt when any image or label file changes (path, size, mtime), when the names change,
or when ``CACHE_VERSION`` changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from yoloforge.data.config import yoloforge_home
from yoloforge.data.images import ImageReadError
from yoloforge.data.verify import image_shape, parse_label_text
from yoloforge.structures import ImageRecord

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_SUFFIX = ".yoloforge.cache"
MAX_LOGGED = 20  # problems logged per split by default; check_dataset logs them all


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset, named by its file."""

    path: str  # the image or label file (or labels folder) concerned
    message: str
    severity: str  # "error": the image is skipped; "warning": a label line dropped or fixed

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class ScanResult:
    """The checked split: usable records (backgrounds included) and everything found wrong."""

    records: list[ImageRecord]
    n_images: int  # usable images, backgrounds included
    n_backgrounds: int  # usable images with no or an empty label file
    n_corrupt: int  # images skipped
    n_missing_labels: int  # usable images without a label file (part of the backgrounds)
    problems: list[Problem] = field(default_factory=list)
    labels_dir: Path = Path()
    cache_path: Path | None = None
    from_cache: bool = False

    @property
    def n_boxes(self) -> int:
        return sum(len(r.classes) for r in self.records)

    def summary(self, prefix: str) -> str:
        """The reference's line: ``train: Scanning <labels dir>... 301 images, 25 backgrounds, 0 corrupt``."""
        return (
            f"{prefix}: Scanning {self.labels_dir}... {self.n_images} images, "
            f"{self.n_backgrounds} backgrounds, {self.n_corrupt} corrupt"
        )


def image_to_label_path(image: str | Path) -> Path:
    """``.../images/a/x.jpg`` -> ``.../labels/a/x.txt`` (the LAST ``/images/`` is replaced).

    Without an ``images`` folder in the path, the label sits next to the image.
    """
    text = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in text:
        head, tail = text.rsplit(sa, 1)
        text = head + sb + tail
    return Path(os.path.splitext(text)[0] + ".txt")  # strings: pathlib is slow for 100k files


def scan_split(
    images: list[Path],
    names: list[str],
    prefix: str,
    progress: bool = True,
    max_logged: int | None = MAX_LOGGED,
) -> ScanResult:
    """Check ``images`` and their labels (from the cache when nothing changed) and log the summary.

    ``prefix`` is the split's name ("train"); ``max_logged=None`` logs every problem.
    """
    images = [p if isinstance(p, Path) else Path(p) for p in images]
    if not images:
        return ScanResult([], 0, 0, 0, 0)
    labels = [image_to_label_path(p) for p in images]
    label_dirs = {os.path.dirname(p) for p in labels}
    labels_dir = Path(os.path.commonpath(label_dirs)) if len(label_dirs) > 1 else labels[0].parent
    preferred = _cache_path(labels_dir, prefix, several=len(label_dirs) > 1)
    digest = _fingerprint(images, labels, names)
    result = _load_cache(preferred, digest) or _load_cache(_fallback_cache_path(preferred), digest)
    if result is None:
        result = _scan(images, labels, len(names), f"{prefix}: Scanning {labels_dir}...", progress)
        result.labels_dir = labels_dir
        result.cache_path = _save_cache(result, preferred, digest)
    _log_result(result, prefix, max_logged)
    return result


def _log_result(result: ScanResult, prefix: str, max_logged: int | None) -> None:
    log.info(result.summary(prefix))
    shown = result.problems if max_logged is None else result.problems[:max_logged]
    for problem in shown:
        log.warning(f"{prefix}: {problem}")
    if len(shown) < len(result.problems):
        more = len(result.problems) - len(shown)
        log.warning(f"{prefix}: {more} more problems (yoloforge check data=... lists them all)")


# ----------------------------------------------------------------------------------------------
# scanning


@dataclass
class _Checked:
    record: ImageRecord | None  # None: the image is skipped
    problems: list[Problem]
    label_missing: bool


def _scan(images: list[Path], labels: list[Path], nc: int, desc: str, progress: bool) -> ScanResult:
    result = ScanResult([], 0, 0, 0, 0)
    result.problems += _shared_labels(images, labels)
    bar = tqdm(total=len(images), desc=desc, disable=not progress, unit="img", leave=False)
    for checked in _check_all(images, labels, nc):
        result.problems += checked.problems
        record = checked.record
        if record is None:
            result.n_corrupt += 1
        else:
            result.records.append(record)
            result.n_images += 1
            result.n_backgrounds += record.is_background
            result.n_missing_labels += checked.label_missing
        bar.update()
        bar.set_postfix_str(f"{result.n_images} images, {result.n_corrupt} corrupt", refresh=False)
    bar.close()
    if result.n_images and result.n_missing_labels == result.n_images:
        result.problems.append(_no_labels_problem(images[0], labels[0]))
    return result


def _check_all(images: list[Path], labels: list[Path], nc: int) -> Iterator[_Checked]:
    """Check pairs in order. Threads overlap file reads (slow or network disks) and the full decodes
    of non-JPEG/PNG images (OpenCV releases the GIL); header parsing itself is Python."""
    if len(images) < 32:
        yield from (_check_one(i, lb, nc) for i, lb in zip(images, labels, strict=True))
        return
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(_check_one, images, labels, [nc] * len(images), chunksize=1)


def _check_one(image: Path, label: Path, nc: int) -> _Checked:
    try:
        shape = image_shape(image)
    except ImageReadError as e:
        return _Checked(None, [Problem(str(image), f"{e}; image skipped", "error")], False)
    missing = not label.is_file()
    try:
        text = "" if missing else label.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        reason = "is not UTF-8 text" if isinstance(e, UnicodeDecodeError) else f"is unreadable ({e})"
        problem = Problem(str(label), f"label file {reason}; image {image} skipped", "error")
        return _Checked(None, [problem], False)
    classes, boxes, messages = parse_label_text(text, nc)
    problems = [Problem(str(label), m, "warning") for m in messages]
    record = ImageRecord(path=str(image), shape=shape, classes=classes, boxes_cxcywhn=boxes)
    return _Checked(record, problems, missing)


def _shared_labels(images: list[Path], labels: list[Path]) -> list[Problem]:
    """Images that share one label file (x.jpg and x.png) both get its objects: say so."""
    first: dict[Path, Path] = {}
    problems = []
    for image, label in zip(images, labels, strict=True):
        if label in first:
            message = f"shares its label file {label} with {first[label]}"
            problems.append(Problem(str(image), message, "warning"))
        else:
            first[label] = image
    return problems


def _no_labels_problem(image: Path, label: Path) -> Problem:
    message = f"no label files found, every image is a background (the label of {image} is {label})"
    return Problem(str(label.parent), message, "warning")


# ----------------------------------------------------------------------------------------------
# cache


def _cache_path(labels_dir: Path, split: str, several: bool) -> Path:
    """Next to the labels folder; named after the split too when it spans ``several`` folders."""
    name = f"{labels_dir.name}.{split}" if several else labels_dir.name
    return labels_dir.parent / f"{name}{CACHE_SUFFIX}"


def _fallback_cache_path(preferred: Path) -> Path:
    key = hashlib.sha1(str(preferred.absolute()).encode()).hexdigest()[:16]
    return yoloforge_home() / "label-caches" / f"{preferred.name.split('.')[0]}-{key}{CACHE_SUFFIX}"


def _fingerprint(images: list[Path], labels: list[Path], names: list[str]) -> str:
    """Changes when any file's path, size or mtime changes, the names change or the format does."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, list(names)]).encode())
    for path in (*images, *labels):
        try:
            st = path.stat()
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\0missing\n".encode())
    return h.hexdigest()


def _save_cache(result: ScanResult, preferred: Path, digest: str) -> Path | None:
    arrays = _to_arrays(result, digest)
    for path in (preferred, _fallback_cache_path(preferred)):
        if path is not preferred:
            path.parent.mkdir(parents=True, exist_ok=True)  # never create folders in the user's dataset
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)  # atomic: a reader sees the old cache or the new one
            return path
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            log.debug(f"cannot write label cache {path}: {e}")
    log.warning(f"label cache not saved ({preferred} and the user cache folder are not writable)")
    return None


def _to_arrays(result: ScanResult, digest: str) -> dict[str, np.ndarray]:
    records, problems = result.records, result.problems
    meta = {
        "version": CACHE_VERSION,
        "hash": digest,
        "labels_dir": str(result.labels_dir),
        "n_corrupt": result.n_corrupt,
        "n_missing_labels": result.n_missing_labels,
    }
    return {
        "meta": np.array(json.dumps(meta)),
        "paths": np.array([r.path for r in records], dtype=str),
        "shapes": np.array([r.shape for r in records], dtype=np.int64).reshape(-1, 2),
        "counts": np.array([len(r.classes) for r in records], dtype=np.int64),
        "classes": np.concatenate([r.classes for r in records] or [np.zeros(0, np.int64)]),
        "boxes": np.concatenate([r.boxes_cxcywhn for r in records] or [np.zeros((0, 4), np.float32)]),
        "problem_paths": np.array([p.path for p in problems], dtype=str),
        "problem_messages": np.array([p.message for p in problems], dtype=str),
        "problem_severities": np.array([p.severity for p in problems], dtype=str),
    }


def _load_cache(path: Path, digest: str) -> ScanResult | None:
    """The cached result, or None when the file is missing, stale, of another version or broken."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            if meta.get("version") != CACHE_VERSION or meta.get("hash") != digest:
                return None
            return _from_arrays(dict(z.items()), meta, path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.debug(f"label cache {path} unreadable ({e}); scanning again")
        return None


def _from_arrays(z: dict[str, np.ndarray], meta: dict, path: Path) -> ScanResult:
    ends = np.cumsum(z["counts"])
    starts = ends - z["counts"]
    records = [
        ImageRecord(
            path=str(p),
            shape=(int(s[0]), int(s[1])),
            classes=z["classes"][a:b].copy(),
            boxes_cxcywhn=z["boxes"][a:b].copy(),
        )
        for p, s, a, b in zip(z["paths"], z["shapes"], starts, ends, strict=True)
    ]
    problems = [
        Problem(str(p), str(m), str(s))
        for p, m, s in zip(z["problem_paths"], z["problem_messages"], z["problem_severities"], strict=True)
    ]
    return ScanResult(
        records=records,
        n_images=len(records),
        n_backgrounds=int((z["counts"] == 0).sum()),
        n_corrupt=int(meta["n_corrupt"]),
        n_missing_labels=int(meta["n_missing_labels"]),
        problems=problems,
        labels_dir=Path(meta["labels_dir"]),
        cache_path=path,
        from_cache=True,
    )
