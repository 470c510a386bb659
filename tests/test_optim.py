"""Optimizer choice and groups, weight-decay scaling, lr schedule, warmup, EMA and the optimizer step."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from yoloforge.optim import (
    ModelEMA,
    Schedule,
    auto_iterations,
    build_optimizer,
    lr_factor,
    optimizer_step,
    param_groups,
    resolve_optimizer,
    scaled_weight_decay,
    warmup_iterations,
)
from yoloforge.settings import OptimSettings


def small_net() -> nn.Sequential:
    """4 weights with decay (3 convs, 1 linear), 3 norm weights (2 BN, 1 LayerNorm), 5 biases."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.SiLU(),
        nn.Conv2d(8, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.SiLU(),
        nn.Conv2d(8, 4, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.LayerNorm(4),
        nn.Linear(4, 2),
    )


def test_param_groups_membership():
    net = small_net()
    groups = param_groups(net)
    assert [len(groups.weights), len(groups.norm_weights), len(groups.biases)] == [4, 3, 5]
    assert groups.weights[0] is net[0].weight and groups.weights[-1] is net[10].weight
    assert groups.norm_weights == [net[1].weight, net[4].weight, net[9].weight]
    assert [id(p) for p in groups.biases] == [id(net[i].bias) for i in (1, 4, 6, 9, 10)]
    assert sum(p.numel() for g in (groups.weights, groups.norm_weights, groups.biases) for p in g) == sum(
        p.numel() for p in net.parameters()
    )


def test_auto_picks_adamw_with_fitted_lr_for_short_runs(caplog):
    with caplog.at_level(logging.INFO, logger="yoloforge.optim"):
        optimizer, resolved = build_optimizer(small_net(), OptimSettings(), nc=2, iterations=10_000, batch=16)
    assert (resolved.name, resolved.lr0, resolved.momentum) == ("AdamW", 0.001667, 0.9)  # 0.01 / 6
    assert isinstance(optimizer, torch.optim.AdamW)
    assert all(g["betas"] == (0.9, 0.999) and g["lr"] == 0.001667 for g in optimizer.param_groups)
    assert resolved.warmup_bias_lr == 0.0  # auto starts the bias warmup at 0
    groups = "3 weight(decay=0.0), 4 weight(decay=0.0005), 5 bias(decay=0.0)"
    assert f"AdamW(lr=0.001667, momentum=0.9) with parameter groups {groups}" in caplog.text
    assert resolve_optimizer(OptimSettings(), nc=80, iterations=1, batch=16).lr0 == 0.000119  # 0.01 / 84


def test_auto_picks_sgd_for_long_runs():
    optimizer, resolved = build_optimizer(small_net(), OptimSettings(), nc=2, iterations=10_001, batch=16)
    assert (resolved.name, resolved.lr0, resolved.momentum) == ("SGD", 0.01, 0.9)
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in optimizer.param_groups)


def test_explicit_optimizers_use_the_settings():
    settings = OptimSettings(optimizer="SGD", lr0=0.02, momentum=0.937)
    optimizer, resolved = build_optimizer(small_net(), settings, nc=2, iterations=1, batch=16)
    assert (resolved.lr0, resolved.momentum, resolved.warmup_bias_lr) == (0.02, 0.937, 0.1)
    assert optimizer.param_groups[0]["nesterov"]
    adam, _ = build_optimizer(
        small_net(), OptimSettings(optimizer="Adam", lr0=0.001), nc=2, iterations=1, batch=16
    )
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["betas"] == (0.937, 0.999)


def test_groups_order_decay_and_initial_lr():
    optimizer, resolved = build_optimizer(
        small_net(), OptimSettings(optimizer="SGD"), nc=2, iterations=1, batch=32
    )
    # batch 32: accumulate 2, weight decay 0.0005 * 32 * 2 / 64 = 0.0005
    assert [g["param_group"] for g in optimizer.param_groups] == ["weight", "norm", "bias"]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0005, 0.0, 0.0]
    assert [len(g["params"]) for g in optimizer.param_groups] == [4, 3, 5]
    assert all(g["initial_lr"] == 0.01 for g in optimizer.param_groups)
    assert resolved.accumulate == 2


def test_weight_decay_scales_with_images_per_step():
    assert scaled_weight_decay(0.0005, batch=16, nbs=64) == pytest.approx(0.0005)  # 4 batches of 16
    assert scaled_weight_decay(0.0005, batch=24, nbs=64) == pytest.approx(0.0005625)  # 3 x 24 = 72 images
    assert scaled_weight_decay(0.0005, batch=128, nbs=64) == pytest.approx(0.001)  # 1 batch of 128
    assert scaled_weight_decay(0.0005, batch=1, nbs=64) == pytest.approx(0.0005)  # 64 batches of 1


def test_auto_iterations():
    assert auto_iterations(num_images=1000, batch=16, nbs=64, epochs=3) == 16 * 3  # ceil(1000 / 64)
    assert auto_iterations(num_images=1000, batch=128, nbs=64, epochs=3) == 8 * 3  # ceil(1000 / 128)


def test_lr_factor_linear_and_cosine():
    assert lr_factor(0, 100, 0.01, cos_lr=False) == pytest.approx(1.0)
    assert lr_factor(25, 100, 0.01, cos_lr=False) == pytest.approx(0.75 * 0.99 + 0.01)
    assert lr_factor(50, 100, 0.01, cos_lr=False) == pytest.approx(0.505)
    assert lr_factor(100, 100, 0.01, cos_lr=False) == pytest.approx(0.01)
    assert lr_factor(0, 100, 0.01, cos_lr=True) == pytest.approx(1.0)
    # (1 - cos(pi / 4)) / 2 = 0.1464466 of the way down
    assert lr_factor(25, 100, 0.01, cos_lr=True) == pytest.approx(1 - 0.1464466 * 0.99)
    assert lr_factor(50, 100, 0.01, cos_lr=True) == pytest.approx(0.505)
    assert lr_factor(100, 100, 0.01, cos_lr=True) == pytest.approx(0.01)


def test_warmup_iterations():
    assert warmup_iterations(3.0, epochs=100, batches_per_epoch=50) == 150
    assert warmup_iterations(3.0, epochs=2, batches_per_epoch=50) == 50  # never the last epoch
    assert warmup_iterations(3.0, epochs=1, batches_per_epoch=50) == 0
    assert warmup_iterations(0.0, epochs=100, batches_per_epoch=50) == 0
    assert warmup_iterations(0.5, epochs=10, batches_per_epoch=7) == 4  # round(3.5)
    assert warmup_iterations(3.0, epochs=100, batches_per_epoch=5, min_iterations=100) == 100


def sgd_schedule() -> tuple[torch.optim.Optimizer, Schedule]:
    settings = OptimSettings(optimizer="SGD", lr0=0.01, momentum=0.937)
    optimizer, resolved = build_optimizer(small_net(), settings, nc=2, iterations=1, batch=16)
    schedule = Schedule.build(settings, resolved, epochs=10, batches_per_epoch=4)  # 3 epochs = 12 steps
    return optimizer, schedule


def test_warmup_endpoints_and_midpoint():
    optimizer, schedule = sgd_schedule()
    assert (schedule.warmup_steps, schedule.accumulate) == (12, 4)
    lrs = lambda: [g["lr"] for g in optimizer.param_groups]  # noqa: E731  weight, norm, bias
    momenta = lambda: [g["momentum"] for g in optimizer.param_groups]  # noqa: E731

    assert schedule.warmup(optimizer, step=0, epoch=0) == 1
    assert lrs() == pytest.approx([0.0, 0.0, 0.1]) and momenta() == pytest.approx([0.8] * 3)

    # step 6 of 12, in epoch 1 (lr factor 0.901): half way from the start values to the epoch's lr
    target = 0.01 * lr_factor(1, 10, 0.01, False)
    assert schedule.warmup(optimizer, step=6, epoch=1) == round(2.5)  # 2
    assert lrs() == pytest.approx([target / 2, target / 2, (0.1 + target) / 2])
    assert momenta() == pytest.approx([(0.8 + 0.937) / 2] * 3)

    target = 0.01 * lr_factor(3, 10, 0.01, False)
    assert schedule.warmup(optimizer, step=12, epoch=3) == 4
    assert lrs() == pytest.approx([target] * 3) and momenta() == pytest.approx([0.937] * 3)

    for g in optimizer.param_groups:
        g["lr"] = 123.0
    assert schedule.warmup(optimizer, step=13, epoch=3) == 4  # after warmup: nothing is touched
    assert lrs() == [123.0] * 3


def test_start_epoch_sets_scheduled_lr():
    optimizer, schedule = sgd_schedule()
    schedule.start_epoch(optimizer, 5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01 * (0.5 * 0.99 + 0.01)] * 3)


def test_warmup_leaves_adam_betas():
    optimizer, resolved = build_optimizer(small_net(), OptimSettings(), nc=2, iterations=1, batch=16)
    schedule = Schedule.build(OptimSettings(), resolved, epochs=10, batches_per_epoch=4)
    schedule.warmup(optimizer, step=0, epoch=0)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 0.0, 0.0]  # auto: bias lr starts at 0
    assert all(g["betas"] == (0.9, 0.999) for g in optimizer.param_groups)


def test_accumulate_capped_by_run_length():
    _, resolved = build_optimizer(small_net(), OptimSettings(), nc=2, iterations=1, batch=4)  # accumulate 16
    assert Schedule.build(OptimSettings(), resolved, epochs=2, batches_per_epoch=3).accumulate == 6


def test_ema_decay_ramp():
    ema = ModelEMA(nn.Linear(2, 2))
    assert ema.decay(1) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))  # 0.0004998
    assert ema.decay(2000) == pytest.approx(0.9999 * (1 - math.exp(-1)))  # 0.632057
    assert ema.decay(100_000) == pytest.approx(0.9999, abs=1e-12)


def test_ema_update_is_weighted_average():
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    ema = ModelEMA(model, updates=1999)  # next update is number 2000: d = 0.632057
    before = ema.ema.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    d = 0.9999 * (1 - math.exp(-1))
    torch.testing.assert_close(ema.ema.weight, d * before + (1 - d) * model.weight)
    assert ema.updates == 2000


def test_ema_of_constant_model_is_the_model():
    torch.manual_seed(0)
    model = small_net()
    model(torch.rand(2, 3, 8, 8))  # BN running stats move away from their init
    ema = ModelEMA(nn.DataParallel(model))  # wrappers are unwrapped
    for _ in range(5):
        ema.update(nn.DataParallel(model))
    assert type(ema.ema) is nn.Sequential and not ema.ema.training
    assert not any(p.requires_grad for p in ema.ema.parameters())
    for (name, a), b in zip(ema.ema.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_ema_state_dict_round_trip():
    torch.manual_seed(0)
    model = small_net()
    ema = ModelEMA(model)
    with torch.no_grad():
        model[0].weight.mul_(2)
    ema.update(model)
    resumed = ModelEMA(small_net())
    resumed.load_state_dict(ema.state_dict())
    assert resumed.updates == 1 and resumed.decay() == ema.decay()
    torch.testing.assert_close(resumed.ema[0].weight, ema.ema[0].weight)


def gradient_of_norm_50() -> tuple[nn.Linear, torch.Tensor]:
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
    return layer, torch.tensor([[30.0, 40.0]])  # the gradient we give it: norm 50


@pytest.mark.parametrize("scaler", [None, "disabled", "enabled"])
def test_optimizer_step_clips_steps_and_zeroes(scaler):
    layer, grad = gradient_of_norm_50()
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    loss = (layer.weight * grad).sum()  # d/dw = grad
    if scaler is not None:
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=scaler == "enabled")
        loss = scaler.scale(loss)  # gradients 1024 times larger when enabled, unscaled by the step
    loss.backward()
    norm = optimizer_step(optimizer, scaler, layer, max_norm=10.0)
    assert norm.item() == pytest.approx(50.0)
    # clipped to norm 10: (6, 8); SGD lr 1: w - (6, 8)
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[1.0 - 6.0, 2.0 - 8.0]]))
    assert layer.weight.grad is None
