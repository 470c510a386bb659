"""Training in several processes through torch.distributed: the one owner of rank state.

torchrun (``python -m torch.distributed.run``) starts one process per device and tells each who it
is through the environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Here that
environment becomes a ``Distributed`` value, joined to a process group for the length of a
``with process_group(device):`` block, and handed to whoever needs it. Nothing is kept at module
level: a process that is not under torchrun gets ``Distributed()`` (rank 0 of 1), whose collectives
are no-ops, so single-process code calls them without asking.

    with process_group(device) as dist:
        if dist.is_main:
            ...                            # files, plots, logs: rank 0 only
        stop = dist.any(local_stop)        # a decision every rank takes together
        rows = dist.gather(my_rows)        # a list on rank 0, None elsewhere

Backends: NCCL for CUDA devices, gloo for CPU processes (one machine or several), which is also how
the tests run all of this without a GPU.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # rank 0 plots and validates while the others wait


class DistributedError(RuntimeError):
    """The process group could not be set up; the message says which variable or device to fix."""


@dataclass(frozen=True)
class Distributed:
    """Who this process is among the training processes, and the collectives between them."""

    rank: int = 0
    local_rank: int = 0  # index of this process on its machine: picks its GPU
    world_size: int = 1
    backend: str = ""  # 'nccl' or 'gloo'; '' for a single process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints the epoch table."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """``obj`` of rank ``src`` on every rank (any picklable value: a decision, a path)."""
        if not self.enabled:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=src, device=self._collective_device())
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` as a list in rank order on rank 0; None on the other ranks."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)  # gather_object is not supported by NCCL
        return out if self.is_main else None

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on at least one (stop, NaN, interrupt)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (a new tensor on the device of ``tensor``)."""
        if not self.enabled:
            return tensor.clone()
        t = tensor.detach().to(self._collective_device(), copy=True)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
        return t.to(tensor.device)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block, then the others (e.g. rank 0 writes a label cache, the rest read it)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def _collective_device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def from_environment(environ: dict[str, str] | None = None) -> Distributed:
    """The rank, local rank and world size torchrun set, without joining anything.

    A process outside torchrun (no WORLD_SIZE, or 1) is ``Distributed()``.
    """
    env = os.environ if environ is None else environ
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DistributedError(
            "RANK, LOCAL_RANK and WORLD_SIZE must be integers; start the processes with torchrun"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise DistributedError(
            f"RANK={rank} does not fit WORLD_SIZE={world_size}; start the processes with torchrun"
        )
    return Distributed(rank=rank, local_rank=local_rank, world_size=world_size)


@contextlib.contextmanager
def process_group(
    device: torch.device, timeout: datetime.timedelta = DEFAULT_TIMEOUT, environ: dict[str, str] | None = None
) -> Iterator[Distributed]:
    """Join the process group torchrun describes for the block, and leave it afterwards.

    One process: yields ``Distributed()`` and touches nothing. Several: NCCL on CUDA (this process
    is pinned to ``device``), gloo on CPU; the group is destroyed on the way out, however the block
    ends, so a later ``train()`` in the same process starts clean.
    """
    me = from_environment(environ)
    if not me.enabled:
        yield me
        return
    if torch_dist.is_initialized():  # the caller runs its own group (e.g. inside a larger job)
        yield Distributed(me.rank, me.local_rank, me.world_size, torch_dist.get_backend())
        return
    if device.type == "cuda":
        backend = "nccl"
        torch.cuda.set_device(device)
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise DistributedError(
            f"device={device.type}: training in several processes needs CUDA GPUs or the CPU"
        )
    torch_dist.init_process_group(backend, timeout=timeout, rank=me.rank, world_size=me.world_size)
    try:
        yield Distributed(me.rank, me.local_rank, me.world_size, backend)
    finally:
        torch_dist.destroy_process_group()


@contextlib.contextmanager
def quiet_unless_main(dist: Distributed, logger: str = "yoloforge") -> Iterator[None]:
    """Ranks other than 0 log only warnings and errors for the block: one console, rank 0's."""
    target = logging.getLogger(logger)
    level = target.level
    if not dist.is_main:
        target.setLevel(logging.WARNING)
    try:
        yield
    finally:
        target.setLevel(level)


def free_port() -> int:
    """A TCP port free on this machine now, for a launcher's rendezvous on localhost."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(nproc: int, program_args: Sequence[str], port: int | None = None) -> list[str]:
    """The command that runs ``python -m yoloforge <program_args>`` in ``nproc`` processes on this
    machine through torchrun (``python -m torch.distributed.run``): no temporary script files."""
    if nproc < 1:
        raise ValueError(f"nproc={nproc} must be at least 1")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--nnodes=1",
        "--master-addr=127.0.0.1",
        f"--master-port={port or free_port()}",
        "-m",
        "yoloforge",
        *program_args,
    ]
