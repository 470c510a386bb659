#!/usr/bin/env bash
# One CUDA GPU, under 8 minutes: train 3 epochs on the demo data with AMP and batch=-1 (autobatch),
# validate, predict, export to ONNX (and predict with onnxruntime's CUDA provider when installed).
# Prints training images/s and the peak GPU memory; with REFERENCE_VENV=/path/to/venv (a virtual
# environment with ultralytics installed), also the reference's images/s at the same settings.
#
#   bash benchmarks/gpu_check.sh                        # from the repository root
#   REFERENCE_VENV=/opt/ref-venv GPU_CHECK_OUT=/tmp/gc bash benchmarks/gpu_check.sh
#
# Offline: the model is built from yolov8n.yaml (no download); the demo data is generated once.
# images/s is measured on epoch 2 (every training image once; epoch 1 holds autobatch and warm-up).
# DEVICE and BATCH (default 0 and -1) exist only to try the script's steps elsewhere.
set -euo pipefail

PYTHON=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
IMGSZ=${IMGSZ:-640}
EPOCHS=3
mkdir -p "$OUT"
started=$SECONDS

step() { printf '\n== %s (%ds)\n' "$1" "$((SECONDS - started))"; }
fail() { printf 'gpu_check: %s\n' "$1" >&2; exit 1; }

step "machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c 'import torch, sys; ok = torch.cuda.is_available(); print("torch", torch.__version__, "cuda", torch.version.cuda, "available:", ok); sys.exit(0 if ok else 1)' \
    || fail "torch sees no CUDA GPU here; this check needs one"

step "demo data"
DATA=$("$PYTHON" -c 'from yoloforge.data.demo import ensure_shapes; print(ensure_shapes())')
echo "$DATA"

step "train: yolov8n.yaml, $EPOCHS epochs, imgsz $IMGSZ, AMP, batch=-1"
"$PYTHON" - "$DATA" "$OUT" "$IMGSZ" "$EPOCHS" "${DEVICE:-0}" "${BATCH:--1}" <<'PY'
import sys

import torch
import yaml

from yoloforge import YOLO
from yoloforge.data.config import load_data_config
from yoloforge.data.scan import scan_split
from yoloforge.results_csv import read_rows

data, out, imgsz, epochs, device, batch = sys.argv[1:7]
YOLO("yolov8n.yaml").train(data=data, epochs=int(epochs), imgsz=int(imgsz), batch=float(batch), amp=True,
                           device=device, val=False, plots=False, project=out, name="train", exist_ok=True)
rows = read_rows(f"{out}/train/results.csv")
chosen = yaml.safe_load(open(f"{out}/train/args.yaml"))["batch"]
cfg = load_data_config(data)
n = len(scan_split(cfg.train, cfg.names, prefix="train", progress=False).records)
ips = n / (rows[1]["time"] - rows[0]["time"])
memory = "no GPU"
if torch.cuda.is_available():
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    memory = f"{torch.cuda.max_memory_allocated(0) / 2**30:.2f} GiB of {total:.1f} GiB"
print(f"RESULT ours: batch {chosen} (from batch={batch}), {ips:.1f} training images/s (epoch 2), "
      f"peak GPU memory {memory}")
PY
BEST="$OUT/train/weights/best.pt"
[ -f "$BEST" ] || fail "training left no $BEST"

step "val"
"$PYTHON" -m yoloforge val model="$BEST" data="$DATA" device=0 half=True

step "predict"
SOURCE=$(dirname "$DATA")/images/val
[ -d "$SOURCE" ] || SOURCE=$(dirname "$DATA")
"$PYTHON" -m yoloforge predict model="$BEST" source="$SOURCE" device=0 project="$OUT" name=predict exist_ok=True

step "export: onnx"
if "$PYTHON" -c 'import onnx, onnxruntime' 2>/dev/null; then
    "$PYTHON" -m yoloforge export model="$BEST" format=onnx
    ONNX="${BEST%.pt}.onnx"
    PROVIDERS=$("$PYTHON" -c 'import onnxruntime as o; print(",".join(o.get_available_providers()))')
    echo "onnxruntime providers: $PROVIDERS"
    if [[ $PROVIDERS == *CUDAExecutionProvider* ]]; then
        "$PYTHON" -m yoloforge predict model="$ONNX" source="$SOURCE" device=0 project="$OUT" name=predict_onnx exist_ok=True
    else
        echo "onnxruntime has no CUDA provider (pip install onnxruntime-gpu): ONNX predict on CUDA skipped"
        "$PYTHON" -m yoloforge predict model="$ONNX" source="$SOURCE" device=cpu project="$OUT" name=predict_onnx exist_ok=True
    fi
else
    echo "onnx / onnxruntime not installed (pip install -e '.[export]'): export skipped"
fi

if [ -n "${REFERENCE_VENV:-}" ]; then
    step "reference: same settings, in $REFERENCE_VENV"
    REF_PYTHON="$REFERENCE_VENV/bin/python"
    [ -x "$REF_PYTHON" ] || fail "REFERENCE_VENV=$REFERENCE_VENV has no bin/python"
    (cd "$OUT" && "$REF_PYTHON" - "$DATA" "$OUT" "$IMGSZ" "$EPOCHS" <<'PY'
import csv, sys
import torch
from ultralytics import YOLO

data, out, imgsz, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
YOLO("yolov8n.yaml").train(data=data, epochs=epochs, imgsz=imgsz, batch=-1, amp=True, device=0, val=False,
                           plots=False, project=out, name="reference", exist_ok=True)
rows = list(csv.DictReader(open(f"{out}/reference/results.csv")))
rows = [{k.strip(): v for k, v in r.items()} for r in rows]
if "time" in rows[0]:
    import glob, os, yaml
    cfg = yaml.safe_load(open(data))
    root = cfg.get("path") or os.path.dirname(data)
    train = os.path.join(root, cfg["train"]) if not os.path.isabs(cfg["train"]) else cfg["train"]
    n = len([f for f in glob.glob(os.path.join(train, "*")) if f.lower().endswith((".jpg", ".jpeg", ".png"))])
    ips = n / (float(rows[1]["time"]) - float(rows[0]["time"]))
    print(f"RESULT reference: {ips:.1f} training images/s (epoch 2), "
          f"peak GPU memory {torch.cuda.max_memory_allocated(0) / 2**30:.2f} GiB")
else:
    print("RESULT reference: its results.csv has no time column; compare the epoch times in its log above")
PY
    )
else
    echo
    echo "reference not run (set REFERENCE_VENV to a virtual environment with ultralytics to compare)"
fi

step "done"
echo "outputs in $OUT"
