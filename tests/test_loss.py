"""Detection loss: each term by hand on a single anchor and GT, normalisation, empty targets, AMP,
and that a tiny model's loss falls when trained on one batch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from yoloforge.loss.loss import DetectionLoss, dfl, expected_distances
from yoloforge.settings import LossSettings
from yoloforge.structures import Batch

REG_MAX = 16
NEG = -1e4  # a logit whose probability is 0 in float32


def side_logits(probs: list[float]) -> list[float]:
    """REG_MAX bin logits giving these probabilities to the first bins and 0 to the rest."""
    return [math.log(p) for p in probs] + [NEG] * (REG_MAX - len(probs))


def make_batch(
    boxes: list[list[float]], classes: list[int], batch_idx: list[int], n: int, size: int
) -> Batch:
    return Batch(
        images=torch.zeros((n, 3, size, size), dtype=torch.uint8),
        classes=torch.tensor(classes, dtype=torch.long),
        boxes_xyxy=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        batch_idx=torch.tensor(batch_idx, dtype=torch.long),
    )


def single_anchor_feats(n: int = 1) -> torch.Tensor:
    """One 1 x 1 map of stride 8: one anchor at pixel (4, 4), 2 classes.

    Distances (stride units): left has bins 0 / 1 at 0.25 / 0.75, so 0.75; top, right and bottom have
    0.5 / 0.5, so 0.5. The predicted box is (-0.25, 0, 1, 1) cells. Class logits (-1, 2).
    """
    dist = side_logits([0.25, 0.75]) + side_logits([0.5, 0.5]) * 3
    return torch.tensor([dist + [-1.0, 2.0]] * n).reshape(n, 4 * REG_MAX + 2, 1, 1).requires_grad_()


# Hand computation for the single anchor against the GT (0, 0, 8, 8) px = (0, 0, 1, 1) cells, class 1:
# CIoU of (-0.25, 0, 1, 1) with (0, 0, 1, 1): IoU = 1 / 1.25 = 0.8; centres 0.125 apart: rho^2 = 0.015625,
#   enclosing box 1.25 x 1: c^2 = 2.5625; v = 4 / pi^2 * (atan 1.25 - atan 1)^2 = 0.0049628,
#   a = v / (v + 0.2) = 0.024213; CIoU = 0.8 - 0.0060976 - 0.0001202 = 0.7937823
CIOU = 0.7937823
# The target score of the only positive is its CIoU (its alignment is the GT's best): t = CIOU, and the
# sum of target scores is max(t, 1) = 1.
# box: (1 - CIoU) * t                                                  = 0.1636920
# DFL: target distances 0.5 each side: left -(0.5 ln .25 + 0.5 ln .75) = 0.8369882, others ln 2;
#      mean 0.7291074, times t                                         = 0.5787526
# cls: BCE(-1, 0) + BCE(2, t) = softplus(-1) + softplus(2) - 2 t       = 0.8526251
SINGLE_PARTS = [7.5 * 0.1636920, 0.5 * 0.8526251, 1.5 * 0.5787526]


def test_expected_distances_are_softmax_means():
    uniform = torch.zeros(1, 4 * REG_MAX)
    assert expected_distances(uniform, REG_MAX)[0].tolist() == pytest.approx([7.5] * 4)
    one_hot = torch.tensor(([NEG] * 3 + [0.0] + [NEG] * (REG_MAX - 4)) * 4)[None]  # all mass on bin 3
    assert expected_distances(one_hot, REG_MAX)[0].tolist() == pytest.approx([3.0] * 4)


def test_dfl_by_hand():
    logits = torch.tensor([[side_logits([0.25, 0.75])] * 4])  # (N=1, 4, REG_MAX)
    # target 0.5 between bins 0 and 1: -(0.5 ln 0.25 + 0.5 ln 0.75)
    assert dfl(logits, torch.full((1, 4), 0.5)).item() == pytest.approx(0.8369882, abs=1e-6)
    # target on bin 1 exactly: -ln 0.75
    assert dfl(logits, torch.full((1, 4), 1.0)).item() == pytest.approx(0.2876821, abs=1e-6)


def test_single_anchor_each_term_by_hand():
    criterion = DetectionLoss(nc=2, strides=(8,))
    out = criterion([single_anchor_feats()], make_batch([[0, 0, 8, 8]], [1], [0], n=1, size=8))
    assert out.parts.tolist() == pytest.approx(SINGLE_PARTS, abs=1e-5)
    assert out.total.item() == pytest.approx(sum(SINGLE_PARTS), abs=1e-5)
    assert not out.parts.requires_grad and out.total.requires_grad


def test_gains_scale_the_parts():
    criterion = DetectionLoss(nc=2, strides=(8,), gains=LossSettings(box=1.0, cls=2.0, dfl=0.0))
    out = criterion([single_anchor_feats()], make_batch([[0, 0, 8, 8]], [1], [0], n=1, size=8))
    assert out.parts.tolist() == pytest.approx([0.1636920, 2 * 0.8526251, 0.0], abs=1e-5)


def test_normalised_by_sum_of_target_scores_and_scaled_by_batch_size():
    # two identical images: sums double, and the target score sum 2 t = 1.5876 > 1 now divides them
    criterion = DetectionLoss(nc=2, strides=(8,))
    out = criterion([single_anchor_feats(2)], make_batch([[0, 0, 8, 8]] * 2, [1, 1], [0, 1], n=2, size=8))
    expected = [7.5 * (1 - CIOU), 0.5 * 0.8526251 / CIOU, 1.5 * 0.7291074]
    assert out.parts.tolist() == pytest.approx(expected, abs=1e-5)
    assert out.total.item() == pytest.approx(2 * sum(expected), abs=1e-4)


def test_background_image_adds_only_class_loss():
    criterion = DetectionLoss(nc=2, strides=(8,))
    feats = single_anchor_feats(2)
    out = criterion([feats], make_batch([[0, 0, 8, 8]], [1], [0], n=2, size=8))  # image 1 has no GT
    background_bce = math.log1p(math.exp(-1)) + math.log1p(math.exp(2))  # both targets 0
    assert out.parts[0].item() == pytest.approx(SINGLE_PARTS[0], abs=1e-5)
    assert out.parts[2].item() == pytest.approx(SINGLE_PARTS[2], abs=1e-5)
    assert out.parts[1].item() == pytest.approx(SINGLE_PARTS[1] + 0.5 * background_bce, abs=1e-5)


def test_empty_batch_gives_finite_loss_and_gradients():
    torch.manual_seed(0)
    feats = [torch.randn(2, 4 * REG_MAX + 3, s, s, requires_grad=True) for s in (4, 2, 1)]
    out = DetectionLoss(nc=3)(feats, make_batch([], [], [], n=2, size=32))
    assert out.parts[0].item() == 0.0 and out.parts[2].item() == 0.0
    assert torch.isfinite(out.total)
    out.total.backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)
    # class loss: BCE against all-zero targets, divided by max(0, 1) = 1
    expected = 0.5 * sum(nn.functional.softplus(f[:, 4 * REG_MAX :]).sum() for f in feats)
    assert out.parts[1].item() == pytest.approx(expected.item(), rel=1e-5)


def test_float32_under_autocast():
    torch.manual_seed(0)
    feats = [torch.randn(1, 4 * REG_MAX + 2, s, s) for s in (4, 2, 1)]
    batch = make_batch([[2, 3, 20, 30]], [1], [0], n=1, size=32)
    criterion = DetectionLoss(nc=2)
    low = [f.bfloat16() for f in feats]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = criterion(low, batch)
    assert out.total.dtype == torch.float32
    expected = criterion([f.float() for f in low], batch)  # the same maps, in float32
    torch.testing.assert_close(out.parts, expected.parts)


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(ValueError, match="channels"):
        DetectionLoss(nc=3, strides=(8,))(
            [torch.zeros(1, 4 * REG_MAX + 2, 1, 1)], make_batch([], [], [], 1, 8)
        )


class TinyDetector(nn.Module):
    """Strides 8, 16, 32 on a 32 x 32 input: maps of 4 x 4, 2 x 2 and 1 x 1."""

    def __init__(self, nc: int) -> None:
        super().__init__()

        def down(in_ch: int, out_ch: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 2, 1), nn.BatchNorm2d(out_ch), nn.SiLU())

        self.stem = nn.Sequential(down(3, 8), down(8, 16), down(16, 16))  # stride 8
        self.p4, self.p5 = down(16, 16), down(16, 16)
        self.heads = nn.ModuleList(nn.Conv2d(16, 4 * REG_MAX + nc, 1) for _ in range(3))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.stem(x)
        p4 = self.p4(p3)
        return [head(p) for head, p in zip(self.heads, (p3, p4, self.p5(p4)), strict=True)]


STEPS = 15


def test_tiny_model_loss_decreases_on_one_batch():
    torch.manual_seed(0)
    model = TinyDetector(nc=2)
    batch = make_batch([[2, 2, 14, 14], [16, 8, 30, 30], [4, 10, 28, 22]], [0, 1, 1], [0, 0, 1], n=2, size=32)
    images = torch.rand(2, 3, 32, 32)
    criterion = DetectionLoss(nc=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(STEPS):
        out = criterion(model.features(images), batch)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        losses.append(out.total.item())
    assert losses[-1] < 0.75 * losses[0]
