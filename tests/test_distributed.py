"""distributed.py: rank state from torchrun's environment and the collectives, on CPU with gloo.

Two real processes (torch.multiprocessing) join a gloo group on localhost, as torchrun would start
them; what each saw comes back through a queue.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.multiprocessing as mp

from yoloforge.distributed import (
    Distributed,
    DistributedError,
    from_environment,
    launch_command,
    process_group,
)


def _worker(rank: int, world_size: int, port: int, queue) -> None:
    env = {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    import os

    os.environ.update(env)
    torch.set_num_threads(1)
    with process_group(torch.device("cpu")) as dist:
        seen = {
            "rank": dist.rank,
            "backend": dist.backend,
            "broadcast": dist.broadcast(f"from rank {dist.rank}"),
            "gather": dist.gather({"rank": dist.rank, "rows": list(range(dist.rank + 1))}),
            "any_one": dist.any(dist.rank == 1),
            "any_none": dist.any(False),
            "sum": dist.sum(torch.tensor([1.0, float(dist.rank)])).tolist(),
        }
        dist.barrier()
    seen["initialized_after"] = torch.distributed.is_initialized()
    queue.put(seen)


def test_two_gloo_processes_broadcast_gather_and_agree():
    from yoloforge.distributed import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    seen = sorted((queue.get(timeout=120) for _ in procs), key=lambda s: s["rank"])
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert [s["backend"] for s in seen] == ["gloo", "gloo"]
    assert [s["broadcast"] for s in seen] == ["from rank 0", "from rank 0"]
    assert seen[0]["gather"] == [{"rank": 0, "rows": [0]}, {"rank": 1, "rows": [0, 1]}]
    assert seen[1]["gather"] is None
    assert [s["any_one"] for s in seen] == [True, True]
    assert [s["any_none"] for s in seen] == [False, False]
    assert [s["sum"] for s in seen] == [[2.0, 1.0], [2.0, 1.0]]
    assert not any(s["initialized_after"] for s in seen)  # the group is left behind on exit


def test_one_process_is_rank_zero_of_one_and_collectives_are_identity():
    with process_group(torch.device("cpu"), environ={}) as dist:
        assert dist == Distributed()
        assert dist.is_main and not dist.enabled
        assert dist.broadcast(3) == 3 and dist.gather("x") == ["x"] and dist.any(True)
        t = torch.tensor([1.0])
        assert dist.sum(t).tolist() == [1.0] and dist.sum(t) is not t
    assert not torch.distributed.is_initialized()


def test_environment_is_read_and_checked():
    d = from_environment({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (d.rank, d.local_rank, d.world_size, d.is_main, d.enabled) == (3, 1, 4, False, True)
    with pytest.raises(DistributedError, match="RANK=4 does not fit WORLD_SIZE=4"):
        from_environment({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(DistributedError, match="integers"):
        from_environment({"RANK": "a", "WORLD_SIZE": "2"})


def test_launch_command_runs_the_package_through_torchrun():
    cmd = launch_command(2, ["train", "data=shapes", "device=0,1"], port=29555)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in cmd and "--master-port=29555" in cmd
    assert cmd[-5:] == ["-m", "yoloforge", "train", "data=shapes", "device=0,1"]
