"""Sharded validation: two gloo processes validate their shares of the images and rank 0's metrics
equal a one-process validation of the same weights exactly (the trained fixture, so there are
real detections, matches and confusions to get wrong).

Rank 0 also validates everything alone in the same process (same threads, same kernels), so the
comparison is of the sharding and gathering alone. 8 images in batches of 3 (3 batches: rank 0
validates two, rank 1 one) and in batches of 8 (rank 1 validates nothing).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from yoloforge.distributed import Distributed, free_port, process_group

FIXTURE = Path(__file__).parent / "fixtures" / "shapes_yolov8n.pt"
IMGSZ = 128


def _validate(config: str, batch_size: int, dist: Distributed, out: Path) -> dict | None:
    from yoloforge.checkpoint import load_checkpoint
    from yoloforge.data.config import load_data_config
    from yoloforge.data.dataset import ValDataset
    from yoloforge.data.loader import build_val_loader
    from yoloforge.data.scan import scan_split
    from yoloforge.loss.loss import DetectionLoss
    from yoloforge.model.zoo import build_model
    from yoloforge.validator import Validator

    data = load_data_config(config)
    records = scan_split(data.val, data.names, prefix="val", progress=False).records
    ckpt = load_checkpoint(FIXTURE)
    model = build_model(ckpt.family, ckpt.size, nc=ckpt.nc)
    model.load_state_dict({k: v.float() for k, v in ckpt.model.items()})
    criterion = DetectionLoss(nc=ckpt.nc, reg_max=model.reg_max, strides=[int(s) for s in model.stride])
    ds = ValDataset(records, IMGSZ, batch_size, rank=dist.rank, world_size=dist.world_size, cache_ram=True)
    loader = build_val_loader(ds, 0, "cpu", dist.rank, dist.world_size)
    plots = batch_size == 3  # plots cost seconds: once is enough
    validator = Validator(
        data.names, save_dir=out, plots=plots, save_json=True, criterion=criterion, progress=False, dist=dist
    )
    result = validator.run(model, loader, "cpu")
    seen = {"losses": result.losses.numpy(), "cached": len(ds.images), "files": sorted(os.listdir(out))}
    if result.metrics is None:
        return seen
    box = result.metrics.box
    return seen | {
        "arrays": {k: getattr(box, k) for k in ("all_ap", "p", "r", "f1", "instances", "images", "p_curve")},
        "matrix": result.metrics.confusion_matrix.matrix if plots else None,
        "seen": result.metrics.seen,
        "json": (out / "predictions.json").read_text(),
        "map": box.map,
    }


def _worker(rank: int, port: int, config: str, tmp: str, queue) -> None:
    env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    os.environ.update(env, MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with process_group(torch.device("cpu")) as dist:
        for batch_size in (3, 8):
            out = Path(tmp) / f"sharded{batch_size}_{rank}"  # a folder per rank: who wrote what
            out.mkdir()
            sharded = _validate(config, batch_size, dist, out)
            alone = None
            if rank == 0:
                alone_dir = Path(tmp) / f"alone{batch_size}_{rank}"
                alone_dir.mkdir()
                alone = _validate(config, batch_size, Distributed(), alone_dir)
            queue.put((rank, batch_size, sharded, alone))


def test_sharded_validation_equals_one_process_validation_exactly(shapes_small: Path, tmp_path: Path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, port, str(shapes_small), str(tmp_path), queue)) for r in (0, 1)
    ]
    for p in procs:
        p.start()
    got = {
        (rank, bs): (sharded, alone)
        for rank, bs, sharded, alone in (queue.get(timeout=120) for _ in range(4))
    }
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for batch_size, rank1_cached in ((3, 3), (8, 0)):
        sharded, alone = got[(0, batch_size)]
        assert alone["map"] > 0.1  # real detections and matches: the comparison means something
        assert sharded["seen"] == alone["seen"] == 8
        for key, value in alone["arrays"].items():
            np.testing.assert_array_equal(sharded["arrays"][key], value, err_msg=key)
        np.testing.assert_array_equal(sharded["matrix"], alone["matrix"])
        assert sharded["json"] == alone["json"]  # predictions.json in one-process order
        rank1, _ = got[(1, batch_size)]
        assert sharded["cached"] + rank1["cached"] == 8 and rank1["cached"] == rank1_cached
        for losses in (sharded["losses"], rank1["losses"]):  # every rank gets the mean over all batches
            np.testing.assert_allclose(losses, alone["losses"], rtol=1e-5)
        assert rank1["files"] == []  # rank 0 alone writes plots and predictions.json
        if batch_size == 3:
            assert {"val_batch0_pred.jpg", "confusion_matrix.png"} <= set(sharded["files"])
