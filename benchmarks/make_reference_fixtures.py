"""Write the reference-parity fixtures in tests/fixtures/reference/ with the reference implementation.

Run in the separate environment that has ultralytics installed (never a yoloforge dependency):

    YOLO_OFFLINE=1 /tmp/peer/bin/python benchmarks/make_reference_fixtures.py

For each model it builds the architecture from the reference's yaml, perturbs every parameter and
every batch-norm statistic (so that a wrong or missing weight changes the output), and saves it the
way the reference saves (fp16 model objects in a pickled dict):
- yolov8n.pt        as ``YOLO.save`` / a published release asset writes it (80 classes);
- yolov8s_nc5.pt    the same, 5 classes;
- yolo11n_nc2_last.pt as its trainer writes last.pt: ``model=None``, the model under ``ema``, fp16
                    SGD state (BN-weight and bias groups only, to keep the file small), train_args,
                    epoch, numpy best_fitness.
Then it loads each file back with the reference (fp16 -> float, what its users get) and stores a
fixed input and the reference's eval output in reference_io.pt (plain tensors, weights_only-safe).
"""

from __future__ import annotations

import json
from copy import deepcopy
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import ultralytics
from ultralytics import YOLO
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel, load_checkpoint
from ultralytics.utils.torch_utils import convert_optimizer_state_dict_to_fp16

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "reference"
INPUT_SHAPE = (2, 3, 96, 128)  # multiples of 32, non-square; P5 is 3x4
MODELS = [  # file stem, yaml, nc, format
    ("yolov8n", "yolov8n.yaml", 80, "save"),
    ("yolov8s_nc5", "yolov8s.yaml", 5, "save"),
    ("yolo11n_nc2_last", "yolo11n.yaml", 2, "trainer"),
]


def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every parameter gets multiplicative and additive noise; BN statistics become non-trivial."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # not the DFL projection
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=gen))
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
        for branch in model.model[-1].cv3:  # class logits around 0, so scores span (0, 1), not ~1e-5
            branch[-1].bias.copy_(torch.randn(branch[-1].bias.shape, generator=gen))


def build(yaml: str, nc: int, gen: torch.Generator) -> DetectionModel:
    model = DetectionModel(yaml, nc=nc, verbose=False)
    model.names = {i: f"class_{i}" for i in range(nc)}
    perturb(model, gen)
    return model


def save_like_yolo_save(model: DetectionModel, path: Path) -> None:
    wrapper = YOLO(model.yaml["yaml_file"])
    wrapper.model = model
    wrapper.save(str(path))


def save_like_trainer(model: DetectionModel, path: Path) -> None:
    args = get_cfg(overrides={"model": model.yaml["yaml_file"], "data": "custom.yaml", "epochs": 5})
    model.args = args  # the trainer attaches its settings namespace to the model
    # The trainer's SGD groups are (conv weights with decay, BN weights, biases); to keep the file small
    # the optimizer here holds only the last two: same structure, a fraction of the bytes.
    bn_weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    biases = [m.bias for m in model.modules() if getattr(m, "bias", None) is not None]
    optimizer = torch.optim.SGD(
        [{"params": bn_weights, "weight_decay": 0.0}, {"params": biases, "weight_decay": 0.0}],
        lr=0.0,  # a real step would saturate these random weights; the state is what matters here
        momentum=0.937,
        nesterov=True,
    )
    model.train()
    preds = model(torch.rand(1, 3, 64, 64))  # training output: a dict of tensors (or list in older versions)
    tensors = preds.values() if isinstance(preds, dict) else preds
    sum(t.sum() for t in tensors if torch.is_tensor(t)).backward()
    optimizer.step()
    optimizer.zero_grad()
    ema = deepcopy(model).eval().half()
    ckpt = {
        "epoch": 4,
        "best_fitness": np.float64(0.4321),
        "model": None,
        "ema": ema,
        "updates": 123,
        "optimizer": convert_optimizer_state_dict_to_fp16(optimizer.state_dict()),
        "train_args": vars(args),
        "train_metrics": {"metrics/mAP50(B)": np.float64(0.5), "fitness": np.float64(0.4321)},
        "train_results": {"epoch": [1, 2, 3, 4, 5], "train/box_loss": [1.5, 1.4, 1.3, 1.2, 1.1]},
        "date": datetime.now().astimezone().isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
    }
    torch.save(ckpt, path)


def reference_output(path: Path, images: torch.Tensor) -> torch.Tensor:
    """What a user of the reference gets: the fp16 checkpoint loaded as float, eval mode, unfused."""
    model, _ = load_checkpoint(str(path), device="cpu", fuse=False)
    with torch.no_grad():
        out = model(images)
    return (out[0] if isinstance(out, (tuple, list)) else out).float()


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the reference's own initialisation draws from the global generator
    OUT.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(20240601)
    images = torch.rand(INPUT_SHAPE, generator=gen)
    io: dict[str, torch.Tensor] = {"images": images}
    manifest = {"ultralytics": ultralytics.__version__, "torch": torch.__version__}
    manifest["input"] = list(INPUT_SHAPE)
    for stem, yaml, nc, fmt in MODELS:
        path = OUT / f"{stem}.pt"
        model = build(yaml, nc, gen)
        (save_like_yolo_save if fmt == "save" else save_like_trainer)(model, path)
        out = reference_output(path, images)
        io[stem] = out
        boxes, scores = out[:, :4], out[:, 4:]
        manifest[stem] = {
            "yaml": yaml,
            "nc": nc,
            "format": fmt,
            "bytes": path.stat().st_size,
            "output": list(out.shape),
            "boxes_range": [round(boxes.min().item(), 2), round(boxes.max().item(), 2)],
            "scores_range": [round(scores.min().item(), 4), round(scores.max().item(), 4)],
        }
        print(stem, manifest[stem])
    torch.save(io, OUT / "reference_io.pt")
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
