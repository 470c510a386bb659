"""select_device: a GPU request on a machine without a visible GPU says what was found and why."""

from __future__ import annotations

from pathlib import Path

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


# ----------------------------------------------------------------------------------------------
# sharing the CPU


def fake_proc(root, running: int, cpus: int, own_states: str):
    """A /proc with ``procs_running``, ``cpus`` cpuN lines and this process's threads in states
    ``own_states`` (one letter each, as /proc/self/task/N/stat writes them)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["cpu  1 2 3 4", *(f"cpu{i} 1 2 3 4" for i in range(cpus)), f"procs_running {running}"]
    (root / "stat").write_text("\n".join(lines) + "\n")
    for i, state in enumerate(own_states):
        task = root / "self" / "task" / str(100 + i)
        task.mkdir(parents=True)
        (task / "stat").write_text(f"{100 + i} (python (main)) {state} 1 2 3\n")
    return root


def test_runnable_elsewhere_leaves_out_this_process(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "usable_cpus", lambda: 2)
    proc = fake_proc(tmp_path, running=4, cpus=2, own_states="RSR")
    assert device.runnable_elsewhere(proc) == 2  # 4 runnable, 2 of them our own threads
    assert device.runnable_elsewhere(fake_proc(tmp_path / "idle", 1, 2, "R")) == 0


def test_runnable_elsewhere_scales_to_this_process_cpus(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "usable_cpus", lambda: 2)
    assert device.runnable_elsewhere(fake_proc(tmp_path, running=9, cpus=8, own_states="R")) == 2


def test_runnable_elsewhere_without_proc_is_zero(tmp_path):
    assert device.runnable_elsewhere(tmp_path / "missing") == 0


@pytest.mark.parametrize(
    ("others", "limit", "expected"),
    [(0, 2, 2), (1, 2, 1), (5, 2, 1), (0, 1, 1), (1, 8, 3), (0, 8, 4)],
)
def test_threads_for_now_takes_the_cpus_nothing_else_wants(monkeypatch, others, limit, expected):
    monkeypatch.setattr(device, "usable_cpus", lambda: 4 if limit == 8 else 2)
    monkeypatch.setattr(device, "runnable_elsewhere", lambda: others)
    assert device.threads_for_now(limit) == expected


def test_threads_for_now_is_capped_by_the_callers_setting(monkeypatch):
    monkeypatch.setattr(device, "usable_cpus", lambda: 4)
    monkeypatch.setattr(device, "runnable_elsewhere", lambda: 0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert device.threads_for_now() == 3
    finally:
        torch.set_num_threads(before)


def test_cpu_threads_gives_the_counts_back_even_on_error():
    import cv2

    before = torch.get_num_threads(), cv2.getNumThreads()
    with device.cpu_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before
    with pytest.raises(KeyError), device.cpu_threads(1):
        raise KeyError("x")
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before


def test_a_busy_process_is_seen(tmp_path):
    """On Linux, a busy-loop process beside this one shows up at once (an instant count, not the
    load average of the last minute)."""
    import subprocess
    import sys
    import time

    if not Path("/proc/stat").exists():
        pytest.skip("needs Linux /proc")
    baseline = min(device.runnable_elsewhere() for _ in range(20))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        seen = max(device.runnable_elsewhere() for _ in range(20))
    finally:
        busy.kill()
        busy.wait()
    assert seen >= baseline + 1


@pytest.mark.parametrize(("others", "threads"), [(0, 2), (1, 1), (3, 1)])
def test_cpu_training_plan_takes_the_free_cpus(monkeypatch, others, threads):
    from yoloforge.data import loader

    monkeypatch.setattr(device, "usable_cpus", lambda: 2)
    monkeypatch.setattr(loader, "usable_cpus", lambda: 2)
    monkeypatch.setattr(device, "runnable_elsewhere", lambda: others)
    plan = loader.plan_cpu("cpu", requested_workers=8, batch=16)
    assert plan.torch_threads == threads and plan.workers == 2
