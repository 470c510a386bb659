"""YOLO11 detection (Ultralytics, 2024): C3k2 blocks, SPPF, a C2PSA attention block at P5,
PAN neck of C3k2 blocks, DFL head with a lighter (depthwise) class branch.

Layer numbers (the reference's, kept in published weights) are in the comments.
"""

from __future__ import annotations

import torch
from torch import nn

from yoloforge.model.detector import DetectionModel
from yoloforge.model.head import DetectHead
from yoloforge.model.layers import C2PSA, SPPF, C3k2, ConvBnAct
from yoloforge.model.neck import PANNeck
from yoloforge.model.scale import Scale

# Where each numbered block takes its input from (-1 = the previous block), for the layer table.
SOURCES: tuple[int | tuple[int, ...], ...] = (
    *(-1,) * 11,  # 0-10 backbone
    -1, (-1, 6), -1,  # 11-13 up P5, cat P4, top-down P4
    -1, (-1, 4), -1,  # 14-16 up P4, cat P3, out P3
    -1, (-1, 13), -1,  # 17-19 down, cat, out P4
    -1, (-1, 10), -1,  # 20-22 down, cat, out P5
    (16, 19, 22),  # 23 head
)  # fmt: skip

LARGE_SIZES = ("m", "l", "x")  # these use C3k inner blocks everywhere


class YOLO11Backbone(nn.Module):
    """Stem and four stride-2 stages (P2..P5), each a conv then a C3k2; SPPF and C2PSA at P5."""

    def __init__(self, scale: Scale, c3k: bool):
        super().__init__()
        ch, n = scale.channels, scale.repeats
        self.stem = ConvBnAct(3, ch(64), 3, 2)  # 0  P1/2
        self.down_p2 = ConvBnAct(ch(64), ch(128), 3, 2)  # 1  P2/4
        self.stage_p2 = C3k2(ch(128), ch(256), n(2), c3k, expand=0.25)  # 2
        self.down_p3 = ConvBnAct(ch(256), ch(256), 3, 2)  # 3  P3/8
        self.stage_p3 = C3k2(ch(256), ch(512), n(2), c3k, expand=0.25)  # 4
        self.down_p4 = ConvBnAct(ch(512), ch(512), 3, 2)  # 5  P4/16
        self.stage_p4 = C3k2(ch(512), ch(512), n(2), use_c3k=True)  # 6
        self.down_p5 = ConvBnAct(ch(512), ch(1024), 3, 2)  # 7  P5/32
        self.stage_p5 = C3k2(ch(1024), ch(1024), n(2), use_c3k=True)  # 8
        self.sppf = SPPF(ch(1024), ch(1024))  # 9
        self.psa = C2PSA(ch(1024), n(2))  # 10

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> P3 (B, C, H/8, W/8), P4 (H/16), P5 (H/32)."""
        x = self.stage_p2(self.down_p2(self.stem(x)))
        p3 = self.stage_p3(self.down_p3(x))
        p4 = self.stage_p4(self.down_p4(p3))
        p5 = self.psa(self.sppf(self.stage_p5(self.down_p5(p4))))
        return p3, p4, p5

    def blocks(self) -> list[nn.Module]:
        return list(self.children())


def build_yolo11(size: str, scale: Scale, nc: int) -> DetectionModel:
    ch, n = scale.channels, scale.repeats
    c3k = size in LARGE_SIZES
    neck = PANNeck(
        merge_p4=C3k2(ch(1024) + ch(512), ch(512), n(2), c3k),  # 13
        out_p3=C3k2(ch(512) + ch(512), ch(256), n(2), c3k),  # 16  P3/8 out (backbone P3 has 512)
        down_p3=ConvBnAct(ch(256), ch(256), 3, 2),  # 17
        out_p4=C3k2(ch(256) + ch(512), ch(512), n(2), c3k),  # 19  P4/16 out
        down_p4=ConvBnAct(ch(512), ch(512), 3, 2),  # 20
        out_p5=C3k2(ch(512) + ch(1024), ch(1024), n(2), use_c3k=True),  # 22  P5/32 out
    )
    head = DetectHead(nc, (ch(256), ch(512), ch(1024)), light_cls=True)  # 23
    return DetectionModel("yolo11", size, YOLO11Backbone(scale, c3k), neck, head, SOURCES)
