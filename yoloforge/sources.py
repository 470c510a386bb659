"""Where prediction frames come from: files, folders, globs, videos, webcams, URLs and in-memory images.

``open_source`` checks the source at once (a missing file fails before any model runs) and returns
a ``FrameSource``; iterating it decodes one frame at a time, so a 10-hour video or a webcam never
piles up in memory. Every frame comes out as an OpenCV-style BGR image, the form ``Results.orig_img``
keeps, whatever the source gave.
"""

from __future__ import annotations

import glob
import logging
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np
import torch

from yoloforge.data.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, ImageReadError, read_image

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtmp", "rtsps", "http", "https", "tcp", "udp")
URL_TIMEOUT_S = 30.0


class SourceError(ValueError):
    """A source that does not exist or cannot be read; the message names it."""


@dataclass
class Frame:
    """One image to predict on, as decoded from its source."""

    image_bgr: np.ndarray  # (H, W, 3) uint8 BGR, original resolution
    path: str  # file, URL, webcam index, or a made-up name (image0.jpg) for in-memory images
    kind: str  # "image", "video" or "stream"
    index: int  # 1-based position of this file / stream in the source ("image 2/5")
    count: int  # number of files / streams in the source
    frame: int = 0  # 1-based frame number in its video or stream; 0 for still images
    frames: int = 0  # frames in the video; 0 for images and live streams
    fps: float = 0.0  # frame rate of the video or stream; 0 for images
    tensor: torch.Tensor | None = None  # (3, H, W) float RGB in [0, 1] when the source was a tensor


@dataclass(frozen=True)
class _Item:
    kind: str  # "file", "url_image", "video", "stream", "array", "tensor"
    value: Any  # path / URL / webcam index / BGR array / (3, H, W) tensor
    name: str


class FrameSource:
    """An ordered, checked list of items; iterate it for ``Frame``s, decoded lazily."""

    def __init__(self, items: list[_Item], vid_stride: int = 1):
        self.items = items
        self.vid_stride = vid_stride
        self.skipped: list[str] = []  # unreadable images left out by the last iteration

    @property
    def is_live(self) -> bool:
        """True when a webcam or network stream is among the items (it may never end)."""
        return any(item.kind == "stream" for item in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Frame]:
        """Frames in order. Among several items, an image file that does not decode is skipped with
        one warning naming it (and listed in ``skipped``); a single one stays an ImageReadError."""
        count = len(self.items)
        self.skipped = []
        for index, item in enumerate(self.items, 1):
            if item.kind in ("video", "stream"):
                yield from _read_video(item, index, count, self.vid_stride)
                continue
            try:
                frame = _read_still(item, index, count)
            except ImageReadError as e:
                if count == 1:
                    raise
                log.warning("skipping image %d/%d: %s", index, count, e)
                self.skipped.append(item.name)
                continue
            yield frame


def open_source(source: Any, vid_stride: int = 1, stride: int = 32) -> FrameSource:
    """Check ``source`` and list what it holds.

    Accepts an image or video path, a folder (sorted), a glob, a list of any of these or of
    arrays, a webcam index (0 or "0"), an RTSP/HTTP stream URL, an http(s) URL of an image, a numpy
    array (H, W, 3) BGR as OpenCV reads it, a PIL image (RGB), or a float tensor (3, H, W) or
    (B, 3, H, W) in [0, 1], RGB, with H and W multiples of ``stride`` (used as is, no letterbox).
    """
    if vid_stride < 1:
        raise SourceError(f"vid_stride={vid_stride}: must be 1 or more")
    if source is None or (isinstance(source, str) and not source.strip()):
        raise SourceError("source is empty: pass an image, folder, video, URL, array, or 0 for the webcam")
    parts = list(source) if isinstance(source, list | tuple) else [source]
    if not parts:
        raise SourceError("source is an empty list")
    items: list[_Item] = []
    for part in parts:
        items.extend(_resolve(part, stride, len(items)))
    if not items:
        raise SourceError(f"source={source}: no images or videos found (suffixes: {_suffix_list()})")
    return FrameSource(items, vid_stride)


# ----------------------------------------------------------------------------------------------
# resolving what the user passed into items


def _resolve(part: Any, stride: int, position: int) -> list[_Item]:
    if isinstance(part, torch.Tensor):
        return _tensor_items(part, stride, position)
    if isinstance(part, np.ndarray):
        return [_Item("array", _array_to_bgr(part), f"image{position}.jpg")]
    if _is_pil(part):
        rgb = np.asarray(part.convert("RGB"))
        return [_Item("array", np.ascontiguousarray(rgb[:, :, ::-1]), _pil_name(part, position))]
    if isinstance(part, int) and not isinstance(part, bool):
        return [_Item("stream", part, str(part))]
    if isinstance(part, str | Path):
        return _path_items(str(part).strip())
    raise SourceError(
        f"source of type {type(part).__name__} is not supported: pass a path, URL, webcam index, "
        "numpy array, PIL image or torch tensor"
    )


def _path_items(text: str) -> list[_Item]:
    if text.isdigit():
        return [_Item("stream", int(text), text)]
    scheme = urlparse(text).scheme.lower()
    if scheme in STREAM_SCHEMES:
        is_image = Path(urlparse(text).path).suffix.lower() in IMAGE_SUFFIXES
        if is_image and scheme in ("http", "https"):
            return [_Item("url_image", text, text)]
        return [_Item("stream", text, text)]
    path = Path(text).expanduser()
    if any(c in text for c in "*?["):
        paths = sorted(glob.glob(str(path), recursive=True))
        items = [_file_item(Path(p)) for p in paths if _is_media(Path(p))]
        if not items:
            raise SourceError(f"source={text}: the pattern matches no images or videos")
        return items
    if path.is_dir():
        return [_file_item(p) for p in sorted(path.iterdir()) if p.is_file() and _is_media(p)]
    if path.is_file():
        if not _is_media(path):
            raise SourceError(f"source={text}: '{path.suffix}' is not an image or video ({_suffix_list()})")
        return [_file_item(path)]
    raise SourceError(f"source={text}: file or folder not found")


def stem_of(path: str) -> str:
    """A file-name stem for a frame's path: 'a' for /x/a.jpg or rtsp://host/live/a.sdp, '0' for webcam 0."""
    return Path(urlparse(path).path if "://" in path else path).stem or "stream"


def _file_item(path: Path) -> _Item:
    kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "file"
    return _Item(kind, str(path), str(path))


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES


def _suffix_list() -> str:
    return " ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)


def _array_to_bgr(array: np.ndarray) -> np.ndarray:
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] not in (1, 3, 4))
    ):
        raise SourceError(
            f"numpy source of shape {array.shape} and dtype {array.dtype}: expected uint8 (H, W, 3) BGR "
            "as cv2.imread returns it"
        )
    if array.ndim == 2 or array.shape[2] == 1:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    return array


def _is_pil(obj: Any) -> bool:
    # PIL is optional: recognise its images without importing it
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "convert")


def _pil_name(image: Any, position: int) -> str:
    filename = getattr(image, "filename", "")
    return str(filename) if filename else f"image{position}.jpg"


def _tensor_items(tensor: torch.Tensor, stride: int, position: int) -> list[_Item]:
    images = tensor.unsqueeze(0) if tensor.ndim == 3 else tensor  # (B, 3, H, W)
    if images.ndim != 4 or images.shape[1] != 3:
        raise SourceError(f"tensor source of shape {tuple(tensor.shape)}: expected (B, 3, H, W) or (3, H, W)")
    h, w = images.shape[-2:]
    if h % stride or w % stride:
        raise SourceError(
            f"tensor source of shape {tuple(tensor.shape)}: height and width must be multiples of {stride} "
            "(tensors are used as they are, without letterbox)"
        )
    if not images.is_floating_point() or images.min() < 0 or images.max() > 1:
        raise SourceError("tensor source: expected float values in [0, 1] (divide uint8 images by 255)")
    return [_Item("tensor", image, f"image{position + i}.jpg") for i, image in enumerate(images)]


# ----------------------------------------------------------------------------------------------
# decoding


def _read_still(item: _Item, index: int, count: int) -> Frame:
    tensor = None
    if item.kind == "file":
        image_bgr = cv2.cvtColor(read_image(item.value), cv2.COLOR_RGB2BGR)
    elif item.kind == "url_image":
        image_bgr = _download_image(item.value)
    elif item.kind == "tensor":
        tensor = item.value
        rgb = (tensor.detach().float() * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        image_bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    else:  # "array"
        image_bgr = item.value
    return Frame(image_bgr, item.name, "image", index, count, tensor=tensor)


def _download_image(url: str) -> np.ndarray:
    """Fetch an image URL into memory (nothing is written to disk) -> (H, W, 3) BGR."""
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            data = np.frombuffer(response.read(), dtype=np.uint8)
    except OSError as e:
        raise SourceError(f"source={url}: cannot download ({getattr(e, 'reason', e)})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"{url}: the downloaded data is not a readable image")
    return image


def _read_video(item: _Item, index: int, count: int, vid_stride: int) -> Iterator[Frame]:
    """Decode frames 1, 1 + vid_stride, 1 + 2 * vid_stride, ... one at a time."""
    capture = cv2.VideoCapture(item.value)
    try:
        if not capture.isOpened():
            what = f"webcam {item.value}" if isinstance(item.value, int) else item.name
            raise SourceError(f"source={item.name}: cannot open {what} (missing, busy or not a video)")
        live = item.kind == "stream"
        if live:  # keep the newest frames: a slow model should not fall further and further behind
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        frames = 0 if live else max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if 0 < fps < 1000 else 30.0  # some streams report 0 or nonsense
        number = 0  # frames read from the capture so far, decoded or skipped
        while True:
            ok, image_bgr = capture.read()
            if not ok:
                break
            number += 1
            kind = "stream" if live else "video"
            yield Frame(image_bgr, item.name, kind, index, count, number, frames, fps)
            for _ in range(vid_stride - 1):  # skipped frames are grabbed, not decoded
                if not capture.grab():
                    return
                number += 1
        if number == 0:
            raise SourceError(f"source={item.name}: no frame could be decoded")
    finally:
        capture.release()
