"""Time the label check (first scan) and the cached load, and the reference's on the same images.

    python benchmarks/bench_scan.py [--images 400] [--side 0] [--repeats 3] [--reference /tmp/peer/bin/python]

Images: the demo dataset's train split (256-320 px JPEGs), or, with ``--side 1920``, the same images
re-encoded at that long side (photo-sized: header reading vs decoding matters there). Prints the
median of the repeats in ms per 1000 images. The reference (ultralytics, if its interpreter is
given) is timed building its detection dataset, which scans labels the same way (cold: its cache
deleted first; warm: from its cache).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import cv2

from yoloforge.data.demo import NAMES, ensure_shapes
from yoloforge.data.scan import CACHE_SUFFIX, scan_split

REFERENCE_SNIPPET = """
import json, sys, time, logging
from pathlib import Path
from ultralytics.cfg import get_cfg
from ultralytics.data.build import build_yolo_dataset
from ultralytics.utils import LOGGER
LOGGER.setLevel(logging.ERROR)
images, names, repeats = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
cache = Path(images.replace("/images/", "/labels/")).with_suffix(".cache")
data = {"names": dict(enumerate(names)), "nc": len(names), "channels": 3}
cold, warm = [], []
for _ in range(repeats):
    cache.unlink(missing_ok=True)
    for times in (cold, warm):
        t = time.perf_counter()
        build_yolo_dataset(get_cfg(), images, 16, data, mode="val")
        times.append(time.perf_counter() - t)
print(json.dumps({"cold": cold, "warm": warm}))
"""


def make_images(root: Path, n: int, side: int) -> list[Path]:
    config = ensure_shapes(root / "shapes", n_train=n, n_val=1)
    images = sorted((config.parent / "images" / "train").glob("*.jpg"))
    if not side:
        return images
    big = root / "big"
    (big / "images" / "train").mkdir(parents=True)
    (big / "labels").symlink_to(config.parent / "labels")
    out = []
    for path in images:
        image = cv2.imread(str(path))
        scale = side / max(image.shape[:2])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        out.append(big / "images" / "train" / path.name)
        cv2.imwrite(str(out[-1]), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return out


def time_ours(images: list[Path], repeats: int) -> tuple[list[float], list[float]]:
    cache = images[0].parent.parent.parent / "labels" / f"train{CACHE_SUFFIX}"
    cold, warm = [], []
    for _ in range(repeats):
        cache.unlink(missing_ok=True)
        for times in (cold, warm):
            t = time.perf_counter()
            result = scan_split(images, NAMES, "train", progress=False)
            times.append(time.perf_counter() - t)
        assert result.from_cache and result.n_images == len(images)
    return cold, warm


def time_reference(python: str, images: list[Path], repeats: int) -> tuple[list[float], list[float]]:
    folder = str(images[0].parent)
    cmd = [python, "-c", REFERENCE_SNIPPET, folder, json.dumps(NAMES), str(repeats)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={"YOLO_OFFLINE": "1", "PATH": ""}, check=True
    )
    times = json.loads(done.stdout.strip().splitlines()[-1])
    return times["cold"], times["warm"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--side", type=int, default=0, help="re-encode at this long side (0: demo size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", default="", help="python interpreter with ultralytics installed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp), args.images, args.side)
        shape = cv2.imread(str(images[0])).shape[:2]
        print(
            f"{len(images)} JPEGs, first {shape[1]}x{shape[0]}, median of {args.repeats}, ms per 1000 images"
        )
        rows = [("yoloforge", *time_ours(images, args.repeats))]
        if args.reference:
            rows.append(("reference", *time_reference(args.reference, images, args.repeats)))
        for name, cold, warm in rows:
            per_1000 = 1000 * 1000 / len(images)
            print(
                f"{name:<10} first scan {statistics.median(cold) * per_1000:8.0f}   "
                f"cached {statistics.median(warm) * per_1000:8.0f}"
            )


if __name__ == "__main__":
    main()
