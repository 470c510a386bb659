"""The precision plan of the training step: chosen by device and CPU capability, and its numbers."""

from __future__ import annotations

import torch

from yoloforge.model.zoo import build_model
from yoloforge.precision import Precision, training_precision


def test_amp_on_a_cpu_with_native_bf16_trains_in_bfloat16_channels_last():
    plan = training_precision(torch.device("cpu"), amp=True, cpu_bf16=True)
    assert plan == Precision("cpu", torch.bfloat16, channels_last=True)
    assert not plan.scaled  # bfloat16 has float32's range: no gradient scaler


def test_a_cpu_without_native_bf16_stays_float32_in_channels_last():
    assert training_precision(torch.device("cpu"), amp=True, cpu_bf16=False) == Precision("cpu", None, True)


def test_amp_false_is_float32_everywhere():
    for device in ("cpu", "cuda:0", "mps"):
        plan = training_precision(torch.device(device), amp=False, cpu_bf16=True)
        assert plan.dtype is None and plan.channels_last == (device == "cpu")


def test_channels_last_float32_step_is_the_same_arithmetic():
    """The layout alone changes nothing but rounding: loss and gradients as in the standard layout."""
    from yoloforge.loss.loss import DetectionLoss
    from yoloforge.structures import Batch

    torch.manual_seed(0)
    batch = Batch(
        images=(torch.rand(2, 3, 64, 64) * 255).to(torch.uint8),
        classes=torch.tensor([1, 0]),
        boxes_xyxy=torch.tensor([[10.0, 12.0, 40.0, 30.0], [5.0, 20.0, 25.0, 60.0]]),
        batch_idx=torch.tensor([0, 1]),
    )
    results = {}
    for channels_last in (False, True):
        plan = Precision("cpu", None, channels_last)
        torch.manual_seed(0)
        model = plan.model(build_model("yolov8", "n", nc=3).train())
        criterion = DetectionLoss(nc=3, reg_max=model.reg_max, strides=[int(s) for s in model.stride])
        loss = criterion(model(plan.images(batch.images.float() / 255)), batch)
        loss.total.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[channels_last] = (loss.total.detach(), grads)
    (loss_a, grad_a), (loss_b, grad_b) = results[False], results[True]
    assert grad_a.abs().max() > 0  # gradients flowed: the comparison means something
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    ratio = ((grad_b - grad_a).norm() / grad_a.norm()).item()
    assert ratio < 1e-3, ratio  # float32 rounding (5e-5 seen); bfloat16 autocast gives 0.6


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
