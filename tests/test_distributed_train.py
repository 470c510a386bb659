"""Training in several CPU processes (gloo): a torchrun run end to end, and the update equality.

The update test runs one optimizer step of the real model and DetectionLoss on a fixed batch of 4
images: once in this process, once split 2 + 2 over two DistributedDataParallel ranks. With the
BatchNorm layers in eval mode (batch statistics would differ between 4 and 2 images) the weights
after the step must agree to float tolerance.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch
import torch.multiprocessing as mp

from yoloforge.distributed import free_port, launch_command, process_group
from yoloforge.loss.loss import DetectionLoss
from yoloforge.model.zoo import build_model
from yoloforge.optim import optimizer_step
from yoloforge.structures import Batch

IMGSZ = 64
NAIVE = bool(os.environ.get("YOLOFORGE_TEST_NAIVE_DDP_LOSS"))  # only to show the test can fail


def _fixed_batch() -> Batch:
    """4 random images with 1, 2, 0 and 3 boxes (an image without boxes included)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, IMGSZ, IMGSZ), generator=g, dtype=torch.uint8)
    boxes = [
        [4, 4, 30, 30],
        [10, 20, 50, 60],
        [0, 0, 16, 16],
        [8, 8, 40, 24],
        [30, 30, 62, 62],
        [2, 40, 20, 63],
    ]
    return Batch(
        images=images,
        classes=torch.tensor([0, 1, 2, 0, 1, 2]),
        boxes_xyxy=torch.tensor(boxes, dtype=torch.float32),
        batch_idx=torch.tensor([0, 1, 1, 3, 3, 3]),
    )


def _images(batch: Batch, indices: list[int]) -> Batch:
    """The images ``indices`` of ``batch`` with their boxes, renumbered from 0."""
    keep = torch.isin(batch.batch_idx, torch.tensor(indices))
    remap = {old: new for new, old in enumerate(indices)}
    return Batch(
        images=batch.images[indices],
        classes=batch.classes[keep],
        boxes_xyxy=batch.boxes_xyxy[keep],
        batch_idx=torch.tensor([remap[int(i)] for i in batch.batch_idx[keep]], dtype=torch.long),
    )


def _one_step(model: torch.nn.Module, wrapped: torch.nn.Module, criterion: DetectionLoss, batch: Batch):
    """The flat gradient of one batch, and the flat weights after one SGD step on it (gradient
    clipping included, as the trainer steps)."""
    model.train()
    for m in model.modules():  # frozen statistics: the normalisation must not depend on the split
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = criterion(wrapped(batch.images.float() / 255), batch)
    loss.total.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    optimizer_step(optimizer, None, model, max_norm=10.0)
    return grads, torch.cat([p.detach().flatten() for p in model.parameters()])


def _fresh_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("yolov8", "n", nc=3)


def _criterion(model, dist=None) -> DetectionLoss:
    return DetectionLoss(nc=3, reg_max=model.reg_max, strides=[int(s) for s in model.stride], dist=dist)


def _ddp_worker(rank: int, port: int, queue) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    )
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    with process_group(torch.device("cpu")) as dist:
        model = _fresh_model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        mine = _images(_fixed_batch(), [2 * rank, 2 * rank + 1])
        grads, weights = _one_step(model, ddp, _criterion(model, None if NAIVE else dist), mine)
        queue.put((rank, (grads.numpy(), weights.numpy())))


def test_ddp_update_equals_one_process_update_on_the_global_batch():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    model = _fresh_model()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    grads, weights = _one_step(model, model, _criterion(model), _fixed_batch())
    moved = (weights - before).abs().max().item()
    assert moved > 1e-4  # the step changed the weights: the comparison below means something
    for rank in (0, 1):
        got_grads, got_weights = (torch.from_numpy(a) for a in got[rank])
        torch.testing.assert_close(got_grads, grads, rtol=1e-4, atol=1e-5 * grads.abs().max().item())
        diff = (got_weights - weights).abs().max().item()
        assert diff < 1e-3 * moved, f"rank {rank}: max |difference| {diff} (the step moved {moved})"


def test_two_processes_under_torchrun_train_into_one_run_folder(shapes_small: Path, tmp_path: Path):
    from yoloforge.checkpoint import load_checkpoint
    from yoloforge.results_csv import read_rows

    args = ["train", f"data={shapes_small}", "model=yolov8n.yaml", "device=cpu", "workers=0", "imgsz=64"]
    args += [
        "batch=4",
        "epochs=2",
        "plots=False",
        "cache=ram",
        f"project={tmp_path}",
    ]  # each rank caches its share
    done = subprocess.run(launch_command(2, args), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["train"]  # one folder: rank 1 made no train2
    run = tmp_path / "train"
    assert [r["epoch"] for r in read_rows(run / "results.csv")] == [1, 2]
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(run / "weights" / name).epoch == 1
    log = done.stdout + done.stderr
    assert log.count("Starting training for 2 epochs") == 1  # rank 1 logs warnings and errors only


def test_global_batch_must_split_evenly_across_the_processes():
    from yoloforge.trainer import _rank_batch

    assert _rank_batch(16, 4) == 4 and _rank_batch(5, 1) == 5
    import pytest

    with pytest.raises(ValueError, match="batch=6 does not split evenly across 4 training processes"):
        _rank_batch(6, 4)


def test_sync_bn_is_a_one_line_note_and_no_op_without_several_cuda_processes(logs):
    from yoloforge.settings import TrainSettings
    from yoloforge.trainer import StartingPoint, Trainer

    trainer = Trainer(TrainSettings(sync_bn=True), StartingPoint("yolov8", "n", "yolov8n.yaml"))
    trainer.device = torch.device("cpu")
    model = _fresh_model()
    assert trainer._wrap(model) is model
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    notes = [r.getMessage() for r in logs.records if "sync_bn" in r.getMessage()]
    assert set(notes) == {"sync_bn=True only acts with several CUDA processes; ignored here"}
