"""The path-aggregation neck shared by YOLOv8 and YOLO11 (PANet: Liu et al. 2018, arXiv:1803.01534).

Top-down: P5 is upsampled and fused with P4, that with P3. Bottom-up: the new P3 is downsampled
(stride-2 conv) and fused with the top-down P4, that with P5. The families differ only in the
CSP blocks they pass in. Module order is the reference's layer order.
"""

from __future__ import annotations

import torch
from torch import nn

from yoloforge.model.layers import Concat, upsample2x


class PANNeck(nn.Module):
    def __init__(
        self,
        merge_p4: nn.Module,  # CSP block on cat(up(P5), P4) -> top-down P4
        out_p3: nn.Module,  # CSP block on cat(up(P4'), P3) -> output P3
        down_p3: nn.Module,  # stride-2 conv P3 -> P4 size
        out_p4: nn.Module,  # CSP block on cat(down(P3), P4') -> output P4
        down_p4: nn.Module,  # stride-2 conv P4 -> P5 size
        out_p5: nn.Module,  # CSP block on cat(down(P4), P5) -> output P5
    ):
        super().__init__()
        self.up_p5 = upsample2x()
        self.cat_p4 = Concat()
        self.merge_p4 = merge_p4
        self.up_p4 = upsample2x()
        self.cat_p3 = Concat()
        self.out_p3 = out_p3
        self.down_p3 = down_p3
        self.cat_down_p4 = Concat()
        self.out_p4 = out_p4
        self.down_p4 = down_p4
        self.cat_down_p5 = Concat()
        self.out_p5 = out_p5

    def forward(
        self, p3: torch.Tensor, p4: torch.Tensor, p5: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backbone P3 (B, C3, H/8, W/8), P4, P5 -> neck outputs at the same three strides."""
        td_p4 = self.merge_p4(self.cat_p4([self.up_p5(p5), p4]))
        out_p3 = self.out_p3(self.cat_p3([self.up_p4(td_p4), p3]))
        out_p4 = self.out_p4(self.cat_down_p4([self.down_p3(out_p3), td_p4]))
        out_p5 = self.out_p5(self.cat_down_p5([self.down_p4(out_p4), p5]))
        return out_p3, out_p4, out_p5

    def blocks(self) -> list[nn.Module]:
        """The numbered blocks, in the reference's order (its layers 10-21 for YOLOv8)."""
        return list(self.children())
