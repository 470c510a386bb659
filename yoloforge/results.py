"""What prediction hands the user: ``Results`` per image, with its detections as ``Boxes``.

Boxes are kept in original-image pixels; the other formats are views computed on demand:

    r.boxes.xyxy    (N, 4) corners, pixels      r.boxes.xyxyn   (N, 4) corners, normalised
    r.boxes.xywh    (N, 4) centre/size, pixels  r.boxes.xywhn   (N, 4) centre/size, normalised
    r.boxes.conf    (N,)  confidence            r.boxes.cls     (N,)  class id (float, as the reference)
    r.boxes.data    (N, 6) x1, y1, x2, y2, conf, cls
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yoloforge.boxes import box_iou
from yoloforge.data.images import write_image

log = logging.getLogger(__name__)

Array = torch.Tensor | np.ndarray


class Boxes:
    """Detections of one image: ``data`` (N, 6) = x1, y1, x2, y2 (original pixels), conf, cls.

    Works on a torch tensor or, after ``.numpy()``, on a numpy array; every property returns
    the same kind as ``data``.
    """

    def __init__(self, data: Array, orig_shape: tuple[int, int]):
        if data.ndim != 2 or data.shape[1] != 6:
            raise ValueError(f"Boxes data must be (N, 6) x1, y1, x2, y2, conf, cls; got {tuple(data.shape)}")
        self.data = data
        self.orig_shape = tuple(orig_shape)  # (height, width)

    @property
    def xyxy(self) -> Array:
        return self.data[:, :4]

    @property
    def conf(self) -> Array:
        return self.data[:, 4]

    @property
    def cls(self) -> Array:
        return self.data[:, 5]

    @property
    def xywh(self) -> Array:
        """(N, 4) centre x, centre y, width, height in pixels."""
        x1, y1, x2, y2 = (self.data[:, i] for i in range(4))
        return _stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])

    @property
    def xyxyn(self) -> Array:
        return self.xyxy / self._whwh()

    @property
    def xywhn(self) -> Array:
        return self.xywh / self._whwh()

    def _whwh(self) -> Array:
        h, w = self.orig_shape
        scale = [w, h, w, h]
        if isinstance(self.data, torch.Tensor):
            return torch.tensor(scale, dtype=self.data.dtype, device=self.data.device)
        return np.array(scale, dtype=self.data.dtype)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Any) -> Boxes:
        """``boxes[0]``, ``boxes[1:3]``, ``boxes[boxes.conf > 0.5]``: a Boxes of the selected rows."""
        rows = self.data[index]
        return Boxes(rows.reshape(-1, 6) if rows.ndim == 1 else rows, self.orig_shape)

    def cpu(self) -> Boxes:
        return self if isinstance(self.data, np.ndarray) else Boxes(self.data.cpu(), self.orig_shape)

    def numpy(self) -> Boxes:
        if isinstance(self.data, np.ndarray):
            return self
        return Boxes(self.data.detach().cpu().numpy(), self.orig_shape)

    def to(self, *args: Any, **kwargs: Any) -> Boxes:
        return Boxes(torch.as_tensor(self.data).to(*args, **kwargs), self.orig_shape)

    def __repr__(self) -> str:
        return f"Boxes(n={len(self)}, orig_shape={self.orig_shape})\ndata={self.data!r}"


def _stack(columns: list[Array]) -> Array:
    if isinstance(columns[0], torch.Tensor):
        return torch.stack(columns, -1)
    return np.stack(columns, -1)


@dataclass
class Results:
    """The detections of one image or video frame, with the image they were found in."""

    orig_img: np.ndarray  # (H, W, 3) uint8 BGR, as cv2.imread gives it
    path: str
    names: dict[int, str]
    boxes: Boxes
    speed: dict[str, float] = field(default_factory=dict)  # preprocess/inference/postprocess, ms per image

    @property
    def orig_shape(self) -> tuple[int, int]:
        """(height, width) of ``orig_img``."""
        return tuple(self.orig_img.shape[:2])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> Results:
        """A Results holding only the selected detections (same image)."""
        return Results(self.orig_img, self.path, self.names, self.boxes[index], self.speed)

    def cpu(self) -> Results:
        return Results(self.orig_img, self.path, self.names, self.boxes.cpu(), self.speed)

    def numpy(self) -> Results:
        return Results(self.orig_img, self.path, self.names, self.boxes.numpy(), self.speed)

    # --- text ----------------------------------------------------------------------------------
    def verbose(self) -> str:
        """Counts per class, as in the prediction log: '2 5euros, 1 10euro, ' or '(no detections), '."""
        if len(self) == 0:
            return "(no detections), "
        classes = np.asarray(self.boxes.numpy().cls).astype(int)
        ids, counts = np.unique(classes, return_counts=True)
        return "".join(
            f"{n} {self.names.get(c, c)}{'s' if n > 1 else ''}, "
            for c, n in zip(ids.tolist(), counts.tolist(), strict=True)
        )

    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict[str, Any]]:
        """One dict per detection: {name, class, confidence, box: {x1, y1, x2, y2}} (pixels, or
        fractions of the image with ``normalize``)."""
        boxes = self.boxes.numpy()
        corners = boxes.xyxyn if normalize else boxes.xyxy
        out = []
        for (x1, y1, x2, y2), conf, cls in zip(
            corners.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True
        ):
            out.append(
                {
                    "name": self.names.get(int(cls), str(int(cls))),
                    "class": int(cls),
                    "confidence": round(conf, decimals),
                    "box": {
                        k: round(v, decimals)
                        for k, v in zip(("x1", "y1", "x2", "y2"), (x1, y1, x2, y2), strict=True)
                    },
                }
            )
        return out

    def to_json(self, normalize: bool = False, decimals: int = 5) -> str:
        """``summary()`` as a JSON string."""
        return json.dumps(self.summary(normalize, decimals), indent=2)

    def label_lines(self, save_conf: bool = False) -> list[str]:
        """YOLO label lines 'class cx cy w h [conf]', normalised to the image, best first."""
        boxes = self.boxes.numpy()
        lines = []
        for cls, xywhn, conf in zip(
            boxes.cls.tolist(), boxes.xywhn.tolist(), boxes.conf.tolist(), strict=True
        ):
            values = [*xywhn, conf] if save_conf else xywhn
            lines.append(" ".join([str(int(cls)), *(f"{v:.6g}" for v in values)]))
        return lines

    def save_txt(self, txt_file: str | Path, save_conf: bool = False) -> str:
        """Write ``label_lines`` to ``txt_file`` (YOLO format, class first, normalised cxcywh), the
        form Label Studio and YOLO datasets import. An image without detections gets an empty file."""
        path = Path(txt_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = self.label_lines(save_conf)
        path.write_text("".join(line + "\n" for line in lines))
        return str(path)

    # --- pictures ------------------------------------------------------------------------------
    def plot(self, conf: bool = True, labels: bool = True, line_width: int | None = None) -> np.ndarray:
        """A copy of ``orig_img`` with the boxes drawn, labelled 'name 0.87' -> (H, W, 3) BGR."""
        from yoloforge.draw import draw_detections

        boxes = self.boxes.numpy()
        return draw_detections(
            self.orig_img,  # copied by draw_detections
            boxes.xyxy,
            boxes.cls,
            boxes.conf if conf else None,
            self.names,
            line_width=line_width or None,
            labels=labels,
        )

    def save(self, filename: str | Path | None = None, **plot_args: Any) -> str:
        """Write ``plot(**plot_args)`` to ``filename`` (default: results_<image name>); returns the path."""
        path = Path(filename) if filename is not None else Path(f"results_{Path(self.path).name}")
        return str(write_image(path, self.plot(**plot_args)))

    def show(self, **plot_args: Any) -> None:
        """Open a window with ``plot(**plot_args)`` until a key is pressed. Where no window can
        open (no display, or opencv-python-headless, which yoloforge installs), one warning line
        and nothing else: save the picture with ``save()`` instead."""
        from yoloforge.draw import gui_problem, show_window

        problem = gui_problem() or show_window(self.path, self.plot(**plot_args), wait_ms=0)
        if problem is None:
            return
        log.warning(
            "show() needs a display and OpenCV with GUI support (%s); save the picture with "
            "results[0].save('out.jpg')",
            problem,
        )

    def save_crop(self, save_dir: str | Path, file_name: str | Path = "im.jpg") -> list[str]:
        """Write each detected box as its own picture: ``save_dir/<class name>/<file_name stem>.jpg``,
        numbered im.jpg, im2.jpg, ... when the name is taken (as the reference numbers them).
        Boxes are cut as detected (no margin), clipped to the image, at least one pixel. Returns
        the paths written, in detection order."""
        boxes = self.boxes.numpy()
        h, w = self.orig_shape
        stem = Path(file_name).stem
        written = []
        for (x1, y1, x2, y2), cls in zip(boxes.xyxy.tolist(), boxes.cls.tolist(), strict=True):
            left, top = min(max(math.floor(x1), 0), w - 1), min(max(math.floor(y1), 0), h - 1)
            right, bottom = max(min(math.ceil(x2), w), left + 1), max(min(math.ceil(y2), h), top + 1)
            folder = Path(save_dir) / self.names.get(int(cls), str(int(cls)))
            path = _free_path(folder, stem, ".jpg")  # write_image makes the folder
            written.append(str(write_image(path, self.orig_img[top:bottom, left:right])))
        return written

    def __repr__(self) -> str:
        return f"Results(path={self.path!r}, orig_shape={self.orig_shape}, detections={len(self)})"


def _free_path(folder: Path, stem: str, suffix: str) -> Path:
    """folder/stem.jpg, or the first free of folder/stem2.jpg, stem3.jpg, ..."""
    path, n = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, n = folder / f"{stem}{n}{suffix}", n + 1
    return path


# ----------------------------------------------------------------------------------------------
# matching two sets of detections (exported vs PyTorch, or predictions vs ground truth)


@dataclass(frozen=True)
class BoxMatch:
    """Greedy one-to-one matching of boxes ``a`` to boxes ``b`` of the same class, best IoU first."""

    pairs: list[tuple[int, int, float]]  # (index in a, index in b, IoU)
    unmatched_a: list[int]
    unmatched_b: list[int]

    @property
    def min_iou(self) -> float:
        """Lowest IoU among the pairs (1.0 when there are none)."""
        return min((iou for _, _, iou in self.pairs), default=1.0)


def match_boxes(
    a_xyxy: Array, a_classes: Array, b_xyxy: Array, b_classes: Array, min_iou: float = 0.5
) -> BoxMatch:
    """Pair boxes of ``a`` (N, 4) with boxes of ``b`` (M, 4), same pixel frame, same class only,
    greedily by IoU; pairs below ``min_iou`` are not made. Identical boxes count as IoU 1, also
    when clipping to the image left them with no area.

    E.g. recall on ground truth: ``len(m.pairs) / len(gt)`` with
    ``m = match_boxes(r.boxes.xyxy, r.boxes.cls, gt_xyxy, gt_classes)``.
    """
    a_box, b_box = torch.as_tensor(a_xyxy).float().cpu(), torch.as_tensor(b_xyxy).float().cpu()
    a_cls, b_cls = torch.as_tensor(a_classes).long().cpu(), torch.as_tensor(b_classes).long().cpu()
    a_box, b_box = a_box.reshape(-1, 4), b_box.reshape(-1, 4)
    iou = box_iou(a_box, b_box)  # (N, M)
    iou[(a_box[:, None] == b_box[None]).all(-1)] = 1.0  # identical boxes match, even zero-area ones
    iou[a_cls[:, None] != b_cls[None, :]] = -1.0
    pairs: list[tuple[int, int, float]] = []
    free_a, free_b = set(range(len(a_box))), set(range(len(b_box)))
    for flat in torch.argsort(iou.flatten(), descending=True).tolist():
        i, j = divmod(flat, iou.shape[1])
        value = float(iou[i, j])
        if value < min_iou:
            break
        if i in free_a and j in free_b:
            pairs.append((i, j, value))
            free_a.discard(i)
            free_b.discard(j)
    return BoxMatch(pairs, sorted(free_a), sorted(free_b))
