"""Fetching the published weights (``yolov8n.pt`` ... ``yolo11x.pt``) from the official release.

Written to a temporary file in the target folder and renamed when complete and checked (a zip that
torch.save could have written), so an interrupted download, or a proxy's error page, never leaves
a ``.pt`` behind that every later run would trip over. Offline, one clear error says what to do.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from yoloforge.checkpoint import CheckpointError, check_archive
from yoloforge.model.zoo import MODEL_NAMES

log = logging.getLogger(__name__)

RELEASE_URL = "https://github.com/ultralytics/assets/releases/download/v8.3.0/{name}"
PUBLISHED = tuple(f"{name}.pt" for name in MODEL_NAMES)
CHUNK = 1 << 16


class WeightsNotFoundError(FileNotFoundError):
    """Published weights are not on disk and could not be downloaded. The message says what to do."""


def fetch_published(
    name: str,
    folder: Path,
    timeout: float = 30.0,
    opener: Callable[..., Any] = urllib.request.urlopen,
) -> Path:
    """Download the published ``name`` (e.g. 'yolov8n.pt') into ``folder`` unless it is there.

    ``opener`` is ``urllib.request.urlopen`` (replaceable in tests). Raises ValueError for a name
    that is not published, WeightsNotFoundError when the download fails.
    """
    if name not in PUBLISHED:
        raise ValueError(f"'{name}' is not a published model: use one of {', '.join(PUBLISHED)}")
    folder = Path(folder)
    target = folder / name
    if target.is_file():
        return target
    url = RELEASE_URL.format(name=name)
    log.info("Downloading %s to %s", url, target)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _download(url, target, timeout, opener)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsNotFoundError(
            f"{name} is not in {folder} and could not be downloaded from {url} ({reason}). "
            f"Put the file there (or pass its path as model=), or train from scratch with "
            f"model={name.removesuffix('.pt')}.yaml"
        ) from None
    return target


def _download(url: str, target: Path, timeout: float, opener: Callable[..., Any]) -> None:
    """Stream ``url`` into a temp file beside ``target`` with a progress bar, then rename it."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and tmp.stat().st_size != total:
            raise ConnectionError(f"incomplete download: {tmp.stat().st_size} of {total} bytes")
        try:
            check_archive(tmp)
        except CheckpointError:
            raise ConnectionError("what arrived is not a PyTorch checkpoint") from None
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
