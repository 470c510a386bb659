"""select_device: a GPU request on a machine without a visible GPU says what was found and why."""

from __future__ import annotations

import pytest
import torch

from yoloforge import device
from yoloforge.device import DeviceError, select_device


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """torch sees no GPU; the tests choose the build and the environment."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch, "__version__", "2.5.1+test")
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return monkeypatch


def gpu_error(spec: str) -> str:
    with pytest.raises(DeviceError) as info:
        select_device(spec)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"device={spec}: ")
    return message


def test_cpu_only_build(no_gpu: pytest.MonkeyPatch):
    no_gpu.setattr(torch.version, "cuda", None)
    message = gpu_error("0,1")
    assert "torch 2.5.1+test is a CPU-only build" in message
    assert "install a CUDA build of torch" in message and "device=cpu" in message


def test_cuda_build_without_a_driver(no_gpu: pytest.MonkeyPatch):
    no_gpu.setattr(torch.version, "cuda", "12.4")
    no_gpu.setattr(device.shutil, "which", lambda name: None)
    message = gpu_error("0,1")
    assert "torch 2.5.1+test is a CUDA 12.4 build but sees no GPU" in message
    assert "nvidia-smi was not found" in message and "driver" in message
    assert "install a CUDA build" not in message  # it is one already


def test_cuda_build_with_a_driver_that_sees_nothing(no_gpu: pytest.MonkeyPatch):
    no_gpu.setattr(torch.version, "cuda", "12.4")
    no_gpu.setattr(device.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    message = gpu_error("0")
    assert "CUDA 12.4 build but sees no GPU" in message and "run it" in message


@pytest.mark.parametrize("visible", ["", "-1"])
def test_cuda_visible_devices_hides_every_gpu(no_gpu: pytest.MonkeyPatch, visible: str):
    no_gpu.setattr(torch.version, "cuda", "12.4")
    no_gpu.setenv("CUDA_VISIBLE_DEVICES", visible)
    message = gpu_error("0")
    assert f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU" in message


def test_cuda_visible_devices_names_a_missing_gpu(no_gpu: pytest.MonkeyPatch):
    no_gpu.setattr(torch.version, "cuda", "12.4")
    no_gpu.setenv("CUDA_VISIBLE_DEVICES", "3")
    message = gpu_error("0")
    assert "CUDA_VISIBLE_DEVICES='3' names no GPU this machine has" in message


def test_rocm_build(no_gpu: pytest.MonkeyPatch):
    no_gpu.setattr(torch.version, "cuda", None)
    no_gpu.setattr(torch.version, "hip", "6.2")
    message = gpu_error("0")
    assert "ROCm 6.2 build but sees no GPU" in message


def test_cpu_and_defaults_need_no_gpu(no_gpu: pytest.MonkeyPatch):
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("") == torch.device("cpu")
    assert select_device(None) == torch.device("cpu")


def test_a_bad_spec_is_named():
    with pytest.raises(DeviceError, match=r"device='gpu' is not valid"):
        select_device("gpu")


def test_native_bf16_follows_the_cpu_flags():
    from yoloforge.device import native_bf16

    assert native_bf16(frozenset({"avx512f", "avx512_bf16"}))
    assert native_bf16(frozenset({"amx_tile", "amx_bf16"}))
    assert not native_bf16(frozenset({"avx512f", "avx2"}))  # emulated there: slower than fp32
    assert not native_bf16(frozenset())
