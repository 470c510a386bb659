"""Write tests/fixtures/shapes_yolov8n.pt: best.pt of a longer run of the README demo.

    python benchmarks/make_trained_fixture.py [--out /tmp/fixture_run]

Trains yolov8n from scratch on the demo data as the README's first command does, with more epochs
and a larger image size (30 and 256, as the committed fixture was made), and copies its best.pt
(fp16 EMA weights, about 6 MB) into the test fixtures.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

README_ARGS = ["data=shapes", "model=yolov8n.yaml", "epochs=30", "imgsz=256", "batch=16"]
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "shapes_yolov8n.pt"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/fixture_run")
    args = p.parse_args()
    cmd = [sys.executable, "-m", "yoloforge", "train", *README_ARGS, f"project={args.out}", "exist_ok=True"]
    subprocess.run(cmd, check=True)
    best = Path(args.out) / "train" / "weights" / "best.pt"
    shutil.copy(best, FIXTURE)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 2**20:.1f} MB) from {best}")


if __name__ == "__main__":
    main()
