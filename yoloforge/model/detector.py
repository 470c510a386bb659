"""DetectionModel: backbone -> neck -> head, plus decoding of the raw head maps into boxes and scores.

Training consumes ``features(images)``, the raw per-level maps; inference gets ``decode(...)`` of
them: (B, 4 + nc, A) with boxes as (cx, cy, w, h) in input pixels, then sigmoid class scores,
anchors ordered P3, P4, P5, each row-major (the reference's layout, so results compare 1:1).
"""

from __future__ import annotations

import torch
from torch import nn

from yoloforge.boxes import dist_to_cxcywh, make_anchors
from yoloforge.model.head import DetectHead
from yoloforge.model.layers import ConvBnAct
from yoloforge.model.summary import is_fused, layer_table, summary_line

STRIDES = (8, 16, 32)
DISPLAY_FAMILY = {"yolov8": "YOLOv8", "yolo11": "YOLO11"}


class DetectionModel(nn.Module):
    """A YOLO detector. Input: float images (B, 3, H, W) in [0, 1], H and W multiples of 32.

    ``blocks`` are the numbered top-level blocks in the reference's order (0..22 for YOLOv8,
    0..23 for YOLO11, the head last); ``freeze=N`` freezes blocks 0..N-1.
    """

    def __init__(
        self,
        family: str,
        size: str,
        backbone: nn.Module,
        neck: nn.Module,
        head: DetectHead,
        sources: tuple[int | tuple[int, ...], ...],
    ):
        super().__init__()
        self.family = family
        self.size = size
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.sources = sources  # input block of each block, for the layer table
        self.register_buffer("stride", torch.tensor(STRIDES, dtype=torch.float), persistent=False)
        self._anchor_cache: tuple[tuple, torch.Tensor, torch.Tensor] | None = None
        if len(self.blocks) != len(sources):
            raise AssertionError(f"{len(self.blocks)} blocks but {len(sources)} sources")

    @property
    def nc(self) -> int:
        return self.head.nc

    @property
    def reg_max(self) -> int:
        return self.head.reg_max

    @property
    def name(self) -> str:
        """'yolov8n', 'yolo11s', ... (the name ``build_model`` and ``parse_model_name`` take)."""
        return f"{self.family}{self.size}"

    @property
    def display_name(self) -> str:
        """'YOLOv8n', 'YOLO11s', ..."""
        return DISPLAY_FAMILY.get(self.family, self.family) + self.size

    @property
    def blocks(self) -> list[nn.Module]:
        """The numbered top-level blocks, in order: backbone, neck, head."""
        return [*self.backbone.blocks(), *self.neck.blocks(), self.head]

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> [P3, P4, P5], each (B, 4 * reg_max + nc, H/s, W/s) for s = 8, 16, 32:
        box distribution logits first, then class logits. What the loss consumes."""
        h, w = images.shape[-2:]
        if not _tracing() and (h % 32 or w % 32):
            raise ValueError(f"input size {h}x{w}: height and width must be multiples of 32")
        p3, p4, p5 = self.backbone(images)
        return self.head(list(self.neck(p3, p4, p5)))

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Raw maps from ``features`` -> (B, 4 + nc, A): cx, cy, w, h in input pixels, then sigmoid
        class scores. A = sum of H_i * W_i; anchors P3 first, each level row-major."""
        dist_logits, cls_logits = torch.cat([f.flatten(2) for f in feats], 2).split(
            (4 * self.reg_max, self.nc), 1
        )  # (B, 4 * reg_max, A), (B, nc, A)
        anchor_points, stride_per_anchor = self._anchors(feats)  # (A, 2) grid cells, (A, 1)
        dist = self.head.dfl(dist_logits)  # (B, 4, A) left, top, right, bottom in grid cells
        boxes_cxcywh = dist_to_cxcywh(dist, anchor_points.T.unsqueeze(0), dim=1) * stride_per_anchor.T
        return torch.cat((boxes_cxcywh, cls_logits.sigmoid()), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Training mode: ``features(images)``. Eval mode: ``decode(features(images))``, one tensor."""
        feats = self.features(images)
        return feats if self.training else self.decode(feats)

    def _anchors(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor points and strides for these map sizes, cached until the input shape changes.
        Recomputed while tracing for export, so that exported graphs keep dynamic shapes."""
        shapes = tuple(tuple(f.shape[-2:]) for f in feats)
        key = (shapes, feats[0].device, feats[0].dtype)
        tracing = _tracing()
        if tracing or self._anchor_cache is None or self._anchor_cache[0] != key:
            points, strides = make_anchors(
                [f.shape[-2:] for f in feats], list(STRIDES), device=feats[0].device, dtype=feats[0].dtype
            )
            if tracing:
                return points, strides
            self._anchor_cache = (key, points, strides)
        return self._anchor_cache[1], self._anchor_cache[2]

    def fuse(self) -> DetectionModel:
        """Fold every batch norm into its convolution, for inference. Idempotent; returns self.

        A fused model cannot be trained (no batch norms, the folded convs frozen): ``train()``
        then raises instead of letting an optimizer silently skip most of the weights."""
        for module in self.modules():
            if isinstance(module, ConvBnAct):
                module.fuse()
        return self

    def train(self, mode: bool = True) -> DetectionModel:
        if mode and is_fused(self):
            raise RuntimeError(
                f"this {self.display_name} is fused for inference (batch norms folded into the convs) "
                "and cannot be trained; load the checkpoint again to train, e.g. YOLO('best.pt').train(...)"
            )
        return super().train(mode)

    def summary(self, imgsz: int | tuple[int, int] = 640) -> str:
        """'YOLOv8n summary: 129 layers, 3,157,200 parameters, 3,157,184 gradients, 8.9 GFLOPs'."""
        return summary_line(self, imgsz)

    def layer_table(self) -> str:
        """One row per numbered block: idx, from, n, params, module, arguments."""
        return layer_table(self)


def _tracing() -> bool:
    """True while the model is being traced, compiled or exported (shapes may be symbolic)."""
    compiler = getattr(torch, "compiler", None)
    return (
        torch.jit.is_tracing()
        or bool(compiler and getattr(compiler, "is_compiling", lambda: False)())
        or bool(compiler and getattr(compiler, "is_exporting", lambda: False)())
    )
