"""Choosing the device and describing the machine, the first line users read."""

from __future__ import annotations

import os
import platform
import shutil
import sys

import torch


class DeviceError(ValueError):
    """A device setting that this machine cannot honour; the message says what to do."""


def select_device(spec: str | int | None) -> torch.device:
    """'' -> first CUDA GPU if there is one, else CPU; 'cpu'; 0 / '0' / 'cuda:0'; '0,1' -> cuda:0
    (the other GPUs are used by torchrun/DDP, one process each); 'mps'."""
    spec = _normalised(spec)
    if spec in ("", "none"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError("device=mps: Apple MPS is not available on this machine; use device=cpu")
        return torch.device("mps")
    ids = [s for s in spec.split(",") if s]
    if not all(s.isdigit() for s in ids):
        raise DeviceError(f"device={spec!r} is not valid: use cpu, mps, 0, or a list like 0,1")
    if not torch.cuda.is_available():
        raise DeviceError(f"device={spec}: {why_no_gpu()}")
    count = torch.cuda.device_count()
    bad = [i for i in ids if int(i) >= count]
    if bad:
        raise DeviceError(f"device={spec}: GPU {bad[0]} does not exist; this machine has {count} GPU(s)")
    local_rank = int(os.environ.get("LOCAL_RANK", "-1"))
    index = int(ids[local_rank]) if 0 <= local_rank < len(ids) else int(ids[0])
    return torch.device(f"cuda:{index}")


def gpu_ids(spec: str | int | list[int] | None) -> list[int]:
    """The GPU indices a device setting names: '0,1', [0, 1], '[0, 1]', 'cuda:0,1' -> [0, 1];
    [] for '', 'cpu', 'mps'. Checks nothing against the machine (``select_device`` does)."""
    ids = _normalised(spec).split(",")
    return [int(s) for s in ids if s.isdigit()] if all(s.isdigit() for s in ids) else []


def _normalised(spec: str | int | list[int] | None) -> str:
    """'0,1' for any of '0, 1', [0, 1], (0, 1), '[0, 1]' (a list written out by the settings), 'cuda:0,1'."""
    if spec is None:
        return ""
    if isinstance(spec, list | tuple):
        spec = ",".join(str(s) for s in spec)
    return str(spec).strip().lower().strip("[]()").replace("cuda:", "").replace(" ", "")


def why_no_gpu() -> str:
    """What this machine's torch and environment say about the missing GPU, with the likely cause."""
    version = torch.__version__
    cuda = torch.version.cuda
    hip = getattr(torch.version, "hip", None)
    if cuda is None and hip is None:
        return (
            f"no GPU can be used: torch {version} is a CPU-only build; "
            "use device=cpu, or install a CUDA build of torch (see pytorch.org/get-started)"
        )
    build = f"a CUDA {cuda}" if cuda is not None else f"a ROCm {hip}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        cause = f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU; unset it or name a GPU (e.g. 0)"
    elif visible is not None:
        cause = (
            f"CUDA_VISIBLE_DEVICES={visible!r} names no GPU this machine has (or the driver is not loaded); "
            "unset it or use an index nvidia-smi lists"
        )
    elif cuda is not None and shutil.which("nvidia-smi") is None:
        cause = "nvidia-smi was not found, so the NVIDIA driver is likely not installed or not loaded"
    elif cuda is not None:
        cause = f"nvidia-smi is present; run it: the driver may be too old for CUDA {cuda} or not see the GPU"
    else:
        cause = "the ROCm driver may not be loaded; run rocm-smi to check"
    return f"torch {version} is {build} build but sees no GPU: {cause}; or use device=cpu"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> str:
    """'yoloforge 0.1.0 Python-3.11.7 torch-2.14.1 CPU (Intel Xeon ...)'."""
    from yoloforge import __version__

    py = ".".join(map(str, sys.version_info[:3]))
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        hw = f"CUDA:{device.index} ({p.name}, {p.total_memory / 2**20:.0f}MiB)"
    elif device.type == "mps":
        hw = f"MPS ({cpu_name()})"
    else:
        hw = f"CPU ({cpu_name()})"
    return f"yoloforge {__version__} Python-{py} torch-{torch.__version__} {hw}"


def use_all_cores() -> int:
    """Give torch every core of this process (never one thread by accident); returns the count."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them in /proc/cpuinfo (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16).

    Elsewhere torch emulates bf16 on the CPU, slower than fp32: bf16 stays off there.
    """
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)
