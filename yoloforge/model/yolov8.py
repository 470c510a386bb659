"""YOLOv8 detection (Ultralytics, 2023): C2f backbone, SPPF, PAN neck of C2f blocks, DFL head.

Layer numbers (the reference's, kept in published weights) are in the comments.
"""

from __future__ import annotations

import torch
from torch import nn

from yoloforge.model.detector import DetectionModel
from yoloforge.model.head import DetectHead
from yoloforge.model.layers import SPPF, C2f, ConvBnAct
from yoloforge.model.neck import PANNeck
from yoloforge.model.scale import Scale

# Where each numbered block takes its input from (-1 = the previous block), for the layer table.
SOURCES: tuple[int | tuple[int, ...], ...] = (
    *(-1,) * 10,  # 0-9 backbone
    -1, (-1, 6), -1,  # 10-12 up P5, cat P4, top-down P4
    -1, (-1, 4), -1,  # 13-15 up P4, cat P3, out P3
    -1, (-1, 12), -1,  # 16-18 down, cat, out P4
    -1, (-1, 9), -1,  # 19-21 down, cat, out P5
    (15, 18, 21),  # 22 head
)  # fmt: skip


class YOLOv8Backbone(nn.Module):
    """Stem and four stride-2 stages (P2..P5), each a conv then a C2f, then SPPF at P5."""

    def __init__(self, scale: Scale):
        super().__init__()
        ch, n = scale.channels, scale.repeats
        self.stem = ConvBnAct(3, ch(64), 3, 2)  # 0  P1/2
        self.down_p2 = ConvBnAct(ch(64), ch(128), 3, 2)  # 1  P2/4
        self.stage_p2 = C2f(ch(128), ch(128), n(3), shortcut=True)  # 2
        self.down_p3 = ConvBnAct(ch(128), ch(256), 3, 2)  # 3  P3/8
        self.stage_p3 = C2f(ch(256), ch(256), n(6), shortcut=True)  # 4
        self.down_p4 = ConvBnAct(ch(256), ch(512), 3, 2)  # 5  P4/16
        self.stage_p4 = C2f(ch(512), ch(512), n(6), shortcut=True)  # 6
        self.down_p5 = ConvBnAct(ch(512), ch(1024), 3, 2)  # 7  P5/32
        self.stage_p5 = C2f(ch(1024), ch(1024), n(3), shortcut=True)  # 8
        self.sppf = SPPF(ch(1024), ch(1024))  # 9

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> P3 (B, C, H/8, W/8), P4 (H/16), P5 (H/32)."""
        x = self.stage_p2(self.down_p2(self.stem(x)))
        p3 = self.stage_p3(self.down_p3(x))
        p4 = self.stage_p4(self.down_p4(p3))
        p5 = self.sppf(self.stage_p5(self.down_p5(p4)))
        return p3, p4, p5

    def blocks(self) -> list[nn.Module]:
        return list(self.children())


def build_yolov8(size: str, scale: Scale, nc: int) -> DetectionModel:
    ch, n = scale.channels, scale.repeats
    neck = PANNeck(
        merge_p4=C2f(ch(1024) + ch(512), ch(512), n(3)),  # 12
        out_p3=C2f(ch(512) + ch(256), ch(256), n(3)),  # 15  P3/8 out
        down_p3=ConvBnAct(ch(256), ch(256), 3, 2),  # 16
        out_p4=C2f(ch(256) + ch(512), ch(512), n(3)),  # 18  P4/16 out
        down_p4=ConvBnAct(ch(512), ch(512), 3, 2),  # 19
        out_p5=C2f(ch(512) + ch(1024), ch(1024), n(3)),  # 21  P5/32 out
    )
    head = DetectHead(nc, (ch(256), ch(512), ch(1024)))  # 22
    return DetectionModel("yolov8", size, YOLOv8Backbone(scale), neck, head, SOURCES)
