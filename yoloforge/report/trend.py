"""Trends of a per-epoch curve: least-squares slopes with their standard error, and the epoch-to-epoch
noise, so a finding rests on several epochs rather than on one difference."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIGNIFICANT = 2.0  # |slope| / standard error above this: a real rise or fall, not noise
MIN_POINTS = 4  # fewer validated epochs than this: no slope is fitted


@dataclass(frozen=True)
class Trend:
    """y ~ a + slope * epoch over epochs first..last (``points`` of them)."""

    slope: float  # per epoch
    stderr: float  # standard error of the slope
    first: int
    last: int
    points: int

    @property
    def t(self) -> float:
        """Slope in units of its standard error (inf for a perfect line)."""
        if self.stderr > 0:
            return self.slope / self.stderr
        return 0.0 if self.slope == 0 else math.copysign(math.inf, self.slope)

    @property
    def rising(self) -> bool:
        return self.t > SIGNIFICANT

    @property
    def falling(self) -> bool:
        return self.t < -SIGNIFICANT

    def text(self, digits: int = 4) -> str:
        """'+0.0123 ± 0.0021 per epoch (epochs 7-16)'."""
        return (
            f"{self.slope:+.{digits}f} ± {self.stderr:.{digits}f} per epoch (epochs {self.first}-{self.last})"
        )


def finite(epochs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The epochs that have a value (validation may skip epochs: NaN there)."""
    ok = np.isfinite(values) & np.isfinite(epochs)
    return epochs[ok], values[ok]


def fit(epochs: np.ndarray, values: np.ndarray) -> Trend | None:
    """Least-squares line through the finite points; None with fewer than MIN_POINTS."""
    x, y = finite(np.asarray(epochs, float), np.asarray(values, float))
    if len(x) < MIN_POINTS:
        return None
    (slope, _), cov = np.polyfit(x, y, 1, cov=True)  # cov scaled by the residual variance (n - 2 dof)
    stderr = math.sqrt(max(float(cov[0, 0]), 0.0))
    return Trend(float(slope), stderr, int(x[0]), int(x[-1]), len(x))


def fit_last(epochs: np.ndarray, values: np.ndarray, k: int) -> Trend | None:
    """The trend over the last ``k`` epochs that have a value."""
    x, y = finite(np.asarray(epochs, float), np.asarray(values, float))
    return fit(x[-k:], y[-k:])


def window(points: int) -> int:
    """How many final epochs a trend looks at: a third of the run, 4 to 10."""
    return int(min(10, max(MIN_POINTS, points // 3)))


def noise(values: np.ndarray) -> float:
    """Epoch-to-epoch noise (standard deviation) of a curve, blind to a straight or gently bending
    trend: second differences of independent noise of std s have std s * sqrt(6)."""
    y = np.asarray(values, float)
    y = y[np.isfinite(y)]
    if len(y) < MIN_POINTS:
        return math.nan
    return float(np.std(np.diff(y, 2), ddof=1) / math.sqrt(6))
