"""Choosing the device and describing the machine, the first line users read."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

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
    n = usable_cpus()
    torch.set_num_threads(n)
    return n


# ----------------------------------------------------------------------------------------------
# sharing the CPU: how many threads a piece of work should use now
#
# A torch (OpenMP) thread team is as fast as its slowest thread: when another process takes one
# of the cores, every parallel op waits for the thread that lost its core, while the others spin.
# Measured on 2 shared cores, yolov8n predict at 320 with one busy-loop process beside it: 2
# threads 120-320 ms per image, 1 thread 33 ms; a training epoch 227 s with 2 threads, 72 s with 1
# (see loader.worker_nice). So work takes one thread per CPU that nothing else wants at that moment,
# never fewer than one. OMP_WAIT_POLICY=PASSIVE (threads sleep instead of spinning) softens the
# collapse (2 threads: 40 ms) but must be set before torch is imported, would change the process of
# a library user, and makes every parallel op pay a wake-up; it is not set.


def usable_cpus() -> int:
    """CPUs this process may run on (respects affinity masks / container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def runnable_elsewhere(proc: Path = Path("/proc")) -> int:
    """Tasks of other processes that are running or ready to run right now, on this process's CPUs.

    Linux counts runnable tasks machine-wide (``procs_running`` in /proc/stat); this process's own
    running threads are taken off, and where this process may use only some of the machine's CPUs,
    the rest is scaled to that share. 0 where /proc cannot tell (macOS, Windows).
    """
    try:
        stat = (proc / "stat").read_text()
        running = int(next(line.split()[1] for line in stat.splitlines() if line.startswith("procs_running")))
    except (OSError, StopIteration, ValueError, IndexError):
        return 0
    others = max(running - _own_running_threads(proc / "self" / "task"), 0)
    machine = max(sum(1 for line in stat.splitlines() if line[:3] == "cpu" and line[3:4].isdigit()), 1)
    return round(others * min(usable_cpus() / machine, 1.0))


def _own_running_threads(tasks: Path) -> int:
    """This process's threads in state R (running or runnable); at least 1, the one asking."""
    count = 0
    try:
        for task in tasks.iterdir():
            with contextlib.suppress(OSError):
                stat = (task / "stat").read_text()
                count += stat[stat.rindex(")") + 2 : stat.rindex(")") + 3] == "R"
    except OSError:
        return 1
    return max(count, 1)


def threads_for_now(limit: int | None = None) -> int:
    """Intra-op threads for the next piece of work: one per usable CPU that no other process wants
    right now, at least 1, at most ``limit`` (default: torch's current setting, so a user's
    ``torch.set_num_threads`` or OMP_NUM_THREADS stays an upper bound)."""
    limit = torch.get_num_threads() if limit is None else limit
    idle = usable_cpus() - runnable_elsewhere()
    return max(1, min(limit, idle))


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads and ``n`` OpenCV threads, then give the
    caller's counts back (nothing process-wide stays changed)."""
    import cv2  # here: the CPU paths alone need it

    before = torch.get_num_threads(), cv2.getNumThreads()
    if n != before[0]:
        torch.set_num_threads(n)
    if n != before[1]:
        cv2.setNumThreads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before[0]:
            torch.set_num_threads(before[0])
        if cv2.getNumThreads() != before[1]:
            cv2.setNumThreads(before[1])


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
