"""Peak memory while predicting a long video with ``stream=True``: it must stay flat.

Writes a synthetic 640x480 video (moving shapes on noise), predicts it frame by frame with an
untrained yolov8n through the public API, and samples the process RSS every 25 frames: the
current VmRSS from /proc/self/status and the peak (ru_maxrss). Prints the curve and the growth
between frame 50 (warm: model, buffers and allocator pools in place) and the last frame.

    python benchmarks/bench_stream_memory.py              # 300 frames, imgsz 640
    python benchmarks/bench_stream_memory.py --frames 100 --imgsz 320 --threads 1
    python benchmarks/bench_stream_memory.py --keep       # a caller keeping every Results: grows

Pass: the peak grows by less than --limit-mb (20 MB) between frame 50 and the end.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def write_video(path: Path, frames: int, width: int = 640, height: int = 480, fps: float = 30.0) -> None:
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(frames):
        frame = background.copy()
        x = (i * 7) % (width - 120)
        cv2.rectangle(frame, (x, 100), (x + 120, 220), (0, 0, 255), -1)
        cv2.circle(frame, (width - x - 60, 330), 50, (0, 255, 0), -1)
        writer.write(frame)
    writer.release()


def rss_mb() -> float:
    """Current resident set size (VmRSS), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--every", type=int, default=25, help="sample memory every N frames")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--limit-mb", type=float, default=20.0)
    parser.add_argument("--keep", action="store_true", help="keep every Results (shows the check fail)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from yoloforge import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "synthetic.mp4"
        write_video(video, args.frames)
        model = YOLO("yolov8n.yaml", verbose=False)  # untrained: the memory path is the same
        threads = torch.get_num_threads()
        print(f"video: {args.frames} frames 640x480, imgsz={args.imgsz}, torch threads {threads}")
        print(f"{'frame':>6} {'VmRSS MB':>9} {'peak MB':>8} {'ms/frame':>9}")
        samples: dict[int, float] = {}
        kept = []
        start = time.perf_counter()
        results = model.predict(video, stream=True, imgsz=args.imgsz, conf=0.25, device="cpu", verbose=False)
        for n, result in enumerate(results, 1):
            if args.keep:
                kept.append(result)
            if n % args.every == 0 or n == args.frames:
                samples[n] = peak_rss_mb()
                ms = (time.perf_counter() - start) * 1e3 / n
                print(f"{n:>6} {rss_mb():>9.1f} {samples[n]:>8.1f} {ms:>9.1f}")
    base = 50 if 50 in samples else min(samples)
    growth = samples[max(samples)] - samples[base]
    verdict = "flat" if growth < args.limit_mb else "GROWING"
    last = max(samples)
    print(f"peak RSS growth, frame {base} to {last}: {growth:+.1f} MB ({verdict}; limit {args.limit_mb:g})")
    return 0 if growth < args.limit_mb else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
