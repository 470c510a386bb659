"""Write tests/fixtures/reference/initial_weights.json: the reference's seeded initial weights.

Run in the separate environment that has ultralytics installed (never a yoloforge dependency):

    YOLO_OFFLINE=1 /tmp/peer/bin/python benchmarks/make_reference_init_fixture.py

For each (model, nc, seed) it seeds as the reference's trainer does before it builds a model from
scratch, builds the model from the reference's yaml and records, per randomly initialised tensor
(reference key names), its first three values and its sum. tests/test_model.py checks that
``torch.manual_seed(seed); build_model(...)`` draws the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import ultralytics
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import init_seeds

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "reference" / "initial_weights.json"
CASES = [("yolov8n", 3, 0), ("yolov8s", 80, 1), ("yolo11n", 3, 0), ("yolo11s", 5, 2)]  # model, nc, seed


def main() -> None:
    out = {"ultralytics": ultralytics.__version__, "torch": torch.__version__, "models": []}
    for name, nc, seed in CASES:
        init_seeds(seed)
        model = DetectionModel(f"{name}.yaml", nc=nc, verbose=False)
        tensors = {
            k: {"first": v.flatten()[:3].tolist(), "sum": v.double().sum().item()}
            for k, v in model.state_dict().items()
            if v.dtype.is_floating_point and v.numel() > 1 and v.std() > 0 and ".dfl." not in k
        }
        out["models"].append({"model": name, "nc": nc, "seed": seed, "tensors": tensors})
        print(f"{name} nc={nc} seed={seed}: {len(tensors)} random tensors")
    OUT.write_text(json.dumps(out, indent=1))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
