"""The contracts between stages: what the data stage hands the model, loss and validator,
and what post-processing hands the metrics and the user.

Box formats are in the field names:
- ``xyxy``: corners (x1, y1, x2, y2); ``cxcywh``: centre and size.
- a trailing ``n`` (``cxcywhn``) means normalised to [0, 1] by the image width/height,
  otherwise the unit is pixels of the image named in the docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class ImageRecord:
    """One checked image of a dataset split and its cleaned labels (the label cache's row)."""

    path: str  # image file
    shape: tuple[int, int]  # (height, width) of the original image, EXIF orientation applied
    classes: np.ndarray  # (N,) int64 class ids
    boxes_cxcywhn: np.ndarray  # (N, 4) float32, normalised to the original image

    @property
    def is_background(self) -> bool:
        return len(self.classes) == 0

    def as_single_class(self) -> ImageRecord:
        """The same record with every object in class 0 (``single_cls=True``)."""
        return ImageRecord(self.path, self.shape, np.zeros_like(self.classes), self.boxes_cxcywhn)


@dataclass(frozen=True)
class Letterbox:
    """How an original image was mapped into the network input: ``input = orig * gain + pad``, per axis.

    The two gains differ slightly: a resize to whole pixels cannot keep the aspect ratio exactly
    (a 239-pixel side at 256/298 becomes 205 pixels, a gain of 0.8577 against 0.8591 for the other
    side), and boxes mapped back with one gain for both axes land up to half a pixel off.
    """

    gain: tuple[float, float]  # (gain_x, gain_y): input pixels per original pixel
    pad: tuple[float, float]  # (pad_x, pad_y) added on the left / top, in input pixels
    orig_shape: tuple[int, int]  # (height, width) of the original image

    @staticmethod
    def identity(shape: tuple[int, int]) -> Letterbox:
        """The input is the original image (``shape`` = (height, width))."""
        return Letterbox((1.0, 1.0), (0.0, 0.0), (int(shape[0]), int(shape[1])))

    def to_input(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map (N, 4) original-pixel boxes into input pixels (float32)."""
        (gx, gy), (px, py) = self.gain, self.pad
        scale = np.array([gx, gy, gx, gy], dtype=np.float32)
        shift = np.array([px, py, px, py], dtype=np.float32)
        return np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4) * scale + shift

    def to_original(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """Map (N, 4) input-pixel boxes back to original-image pixels, clipped to the image."""
        out = boxes_xyxy.clone()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad[0]) / self.gain[0]
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad[1]) / self.gain[1]
        h, w = self.orig_shape
        out[:, [0, 2]] = out[:, [0, 2]].clamp(0, w)
        out[:, [1, 3]] = out[:, [1, 3]].clamp(0, h)
        return out


@dataclass
class Sample:
    """One image ready for batching (output of a dataset's ``__getitem__``)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, network input size
    classes: np.ndarray  # (N,) int64
    boxes_xyxy: np.ndarray  # (N, 4) float32, pixels of ``image``
    path: str
    letterbox: Letterbox  # identity-like for mosaic samples (gain 1, pad 0)


@dataclass
class Batch:
    """A collated batch. Targets are flat over the batch and tied to images by ``batch_idx``."""

    images: torch.Tensor  # (B, 3, H, W) uint8 RGB
    classes: torch.Tensor  # (M,) int64
    boxes_xyxy: torch.Tensor  # (M, 4) float32, pixels of ``images``
    batch_idx: torch.Tensor  # (M,) int64, index into the batch
    paths: list[str] = field(default_factory=list)
    letterboxes: list[Letterbox] = field(default_factory=list)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            images=self.images.to(device, non_blocking=non_blocking),
            classes=self.classes.to(device, non_blocking=non_blocking),
            boxes_xyxy=self.boxes_xyxy.to(device, non_blocking=non_blocking),
            batch_idx=self.batch_idx.to(device, non_blocking=non_blocking),
            paths=self.paths,
            letterboxes=self.letterboxes,
        )

    def pin_memory(self) -> Batch:
        """Page-locked copy for fast host-to-GPU transfer (DataLoader(pin_memory=True) calls this)."""
        return Batch(
            images=self.images.pin_memory(),
            classes=self.classes.pin_memory(),
            boxes_xyxy=self.boxes_xyxy.pin_memory(),
            batch_idx=self.batch_idx.pin_memory(),
            paths=self.paths,
            letterboxes=self.letterboxes,
        )

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class Detections:
    """Detections of one image after NMS, best score first."""

    boxes_xyxy: torch.Tensor  # (N, 4) float32, pixels (input or original: the producer says which)
    scores: torch.Tensor  # (N,) float32
    classes: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.scores.shape[0]

    @staticmethod
    def empty(device: torch.device | str = "cpu") -> Detections:
        return Detections(
            torch.zeros((0, 4), device=device),
            torch.zeros((0,), device=device),
            torch.zeros((0,), dtype=torch.long, device=device),
        )
