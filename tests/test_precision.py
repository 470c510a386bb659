"""The precision plan of the training step: chosen by device and CPU capability, and its numbers."""

from __future__ import annotations

import torch

from yoloforge.model.zoo import build_model
from yoloforge.precision import Precision, training_precision


def test_amp_on_a_cpu_with_native_bf16_trains_in_bfloat16_channels_last():
    plan = training_precision(torch.device("cpu"), amp=True, cpu_bf16=True)
    assert plan == Precision("cpu", torch.bfloat16, channels_last=True)
    assert not plan.scaled  # bfloat16 has float32's range: no gradient scaler


def test_a_cpu_without_native_bf16_stays_float32():
    assert training_precision(torch.device("cpu"), amp=True, cpu_bf16=False) == Precision("cpu", None, False)


def test_amp_false_is_float32_everywhere():
    for device in ("cpu", "cuda:0", "mps"):
        plan = training_precision(torch.device(device), amp=False, cpu_bf16=True)
        assert plan.dtype is None and not plan.channels_last


def test_cuda_amp_is_float16_with_a_scaler():
    plan = training_precision(torch.device("cuda:0"), amp=True)
    assert plan.dtype == torch.float16 and plan.scaled


def test_bfloat16_channels_last_step_matches_float32_loosely_and_keeps_float32_weights():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    outs = {}
    for name, plan in {
        "fp32": Precision("cpu", None, False),
        "bf16": Precision("cpu", torch.bfloat16, True),
    }.items():
        torch.manual_seed(0)
        model = plan.model(build_model("yolov8", "n", nc=3).eval())
        with torch.no_grad(), plan.autocast():
            feats = model(plan.images(images))
        outs[name] = [f.float() for f in feats]
        assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast casts per op only
        if plan.channels_last:
            conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
            assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(outs["fp32"], outs["bf16"], strict=True):
        assert a.shape == b.shape
        rel = (a - b).abs().mean() / a.abs().mean()
        assert 0 < rel < 0.05  # bfloat16 differs (it ran), but only by its rounding


def test_checkpoints_of_channels_last_weights_are_written_in_standard_layout():
    from yoloforge.checkpoint import state_to

    conv = Precision("cpu", torch.bfloat16, True).model(torch.nn.Conv2d(3, 8, 3))
    assert not conv.weight.is_contiguous()
    saved = state_to(conv.state_dict(), torch.float16)
    assert saved["weight"].is_contiguous() and saved["weight"].dtype == torch.float16
