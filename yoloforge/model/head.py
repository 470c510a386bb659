"""The decoupled detection head with a DFL box branch (YOLOv8 / YOLO11).

Per level, a box branch predicts for each of the four sides (left, top, right, bottom) a
distribution over ``reg_max`` distances (Distribution Focal Loss: Li et al. 2020, arXiv:2006.04388),
and a class branch predicts one logit per class. Anchor-free: one prediction per feature-map cell.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from yoloforge.model.layers import ConvBnAct


class DFL(nn.Module):
    """Expected distance of each side: softmax over ``reg_max`` bins, dotted with (0, 1, ..., reg_max - 1).

    The projection is a fixed buffer (never trained, so nothing can unfreeze it by mistake)."""

    def __init__(self, reg_max: int = 16):
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer("proj", torch.arange(reg_max, dtype=torch.float), persistent=False)

    def forward(self, dist_logits: torch.Tensor) -> torch.Tensor:
        """(B, 4 * reg_max, A) logits -> (B, 4, A) distances in grid cells."""
        b, _, a = dist_logits.shape
        prob = dist_logits.view(b, 4, self.reg_max, a).softmax(2)
        return torch.einsum("bsra,r->bsa", prob, self.proj.to(prob.dtype))


def _box_branch(in_ch: int, mid_ch: int, reg_max: int) -> nn.Sequential:
    return nn.Sequential(
        ConvBnAct(in_ch, mid_ch, 3), ConvBnAct(mid_ch, mid_ch, 3), nn.Conv2d(mid_ch, 4 * reg_max, 1)
    )


def _cls_branch_v8(in_ch: int, mid_ch: int, nc: int) -> nn.Sequential:
    return nn.Sequential(ConvBnAct(in_ch, mid_ch, 3), ConvBnAct(mid_ch, mid_ch, 3), nn.Conv2d(mid_ch, nc, 1))


def _cls_branch_light(in_ch: int, mid_ch: int, nc: int) -> nn.Sequential:
    """YOLO11's lighter class branch: depthwise 3x3 then pointwise 1x1, twice."""
    return nn.Sequential(
        nn.Sequential(ConvBnAct(in_ch, in_ch, 3, groups=in_ch), ConvBnAct(in_ch, mid_ch, 1)),
        nn.Sequential(ConvBnAct(mid_ch, mid_ch, 3, groups=mid_ch), ConvBnAct(mid_ch, mid_ch, 1)),
        nn.Conv2d(mid_ch, nc, 1),
    )


class DetectHead(nn.Module):
    """Box and class branches on P3, P4, P5. Output per level: (B, 4 * reg_max + nc, H/s, W/s),
    box distribution logits first, then class logits."""

    def __init__(
        self,
        nc: int,
        in_channels: tuple[int, int, int],
        strides: tuple[int, int, int] = (8, 16, 32),
        reg_max: int = 16,
        light_cls: bool = False,
    ):
        super().__init__()
        self.nc = nc
        self.reg_max = reg_max
        self.in_channels = tuple(in_channels)
        box_ch = max(16, in_channels[0] // 4, 4 * reg_max)
        cls_ch = max(in_channels[0], min(nc, 100))
        cls_branch = _cls_branch_light if light_cls else _cls_branch_v8
        self.box_branches = nn.ModuleList(_box_branch(c, box_ch, reg_max) for c in in_channels)
        self.cls_branches = nn.ModuleList(cls_branch(c, cls_ch, nc) for c in in_channels)
        self.dfl = DFL(reg_max)
        self.init_biases(strides)

    def init_biases(self, strides: tuple[int, ...]) -> None:
        """Box logits start flat; class logits start at the prior of ~5 objects per 640x640 image
        spread over nc classes and the (640 / stride)^2 cells of the level (focal-loss-style prior)."""
        with torch.no_grad():
            for box, cls, s in zip(self.box_branches, self.cls_branches, strides, strict=True):
                box[-1].bias.fill_(2.0)  # the reference's current value (it was 1.0 before)
                cls[-1].bias.fill_(math.log(5 / self.nc / (640 / s) ** 2))

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """[P3, P4, P5] feature maps -> [P3, P4, P5] raw maps (B, 4 * reg_max + nc, H_i, W_i)."""
        return [
            torch.cat((box(x), cls(x)), 1)
            for x, box, cls in zip(levels, self.box_branches, self.cls_branches, strict=True)
        ]

    def extra_repr(self) -> str:
        return f"nc={self.nc}, in_channels={list(self.in_channels)}, reg_max={self.reg_max}"
