"""Compound scaling: one architecture, five sizes (n/s/m/l/x), from three numbers (EfficientNet-style)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    depth: float  # multiplies the number of repeated inner blocks
    width: float  # multiplies channel counts
    max_channels: int  # channel counts are capped at this before the width multiplier

    def channels(self, base: int) -> int:
        """Channels of a layer whose base (width 1.0) count is ``base``: rounded up to a multiple of 8."""
        return math.ceil(min(base, self.max_channels) * self.width / 8) * 8

    def repeats(self, base: int) -> int:
        """Repeats of a block whose base count is ``base`` (a single block is never scaled)."""
        return max(round(base * self.depth), 1) if base > 1 else base
