"""CPU prediction speed-ups change nothing users see: bf16 only when asked (half=True) and where the
CPU has it natively, the caller's thread counts given back, and the boxes of plain float32."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yoloforge import YOLO, predictor
from yoloforge.data.demo import ensure_shapes
from yoloforge.predictor import Predictor, Runner, prepare_runner
from yoloforge.results import match_boxes
from yoloforge.settings import PredictSettings, build
from yoloforge.sources import Frame

FIXTURE = Path(__file__).parent / "fixtures" / "shapes_yolov8n.pt"
IMGSZ = 256


@pytest.fixture(scope="module")
def trained() -> YOLO:
    return YOLO(FIXTURE)


@pytest.fixture(scope="module")
def unseen_images(tmp_path_factory) -> list[np.ndarray]:
    """Demo images the fixture never saw, cropped to non-square shapes (letterbox padding on
    either side)."""
    root = tmp_path_factory.mktemp("unseen")
    ensure_shapes(root, n_train=2, n_val=8, seed=2026)
    paths = sorted((root / "images" / "val").glob("*.jpg"))
    images = [cv2.imread(str(p)) for p in paths]
    return [  # left 60% (tall) or top 70% (wide)
        np.ascontiguousarray(im[:, : im.shape[1] * 6 // 10] if i % 2 else im[: im.shape[0] * 7 // 10])
        for i, im in enumerate(images)
    ]


def settings(**overrides) -> PredictSettings:
    return build(
        PredictSettings, {"device": "cpu", "imgsz": IMGSZ, "verbose": False, "conf": 0.25, **overrides}
    )


def conv_output_dtypes(runner: Runner) -> list[torch.dtype]:
    """The dtypes the first convolution produced while ``runner`` predicted one image."""
    net = runner.forward.args[0] if hasattr(runner.forward, "args") else runner.forward
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    seen: list[torch.dtype] = []
    handle = first.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        with torch.inference_mode():
            runner.forward(torch.rand(1, 3, 64, 96).contiguous(memory_format=torch.channels_last))
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("native", [True, False])
def test_half_on_the_cpu_is_bf16_where_the_cpu_has_it(trained, monkeypatch, native):
    monkeypatch.setattr(predictor, "native_bf16", lambda: native)
    runner = prepare_runner(trained.model, "cpu", half=True)
    assert runner.bf16 is native and runner.channels_last and runner.dtype == torch.float32
    assert conv_output_dtypes(runner) == [torch.bfloat16 if native else torch.float32]
    out = runner.forward(torch.rand(1, 3, 64, 96))
    assert out.dtype == torch.float32  # boxes are decoded in float32 either way


def test_float32_by_default_even_where_bf16_is_native(trained, monkeypatch):
    """Exported models run in float32: predict's default must find the same boxes."""
    monkeypatch.setattr(predictor, "native_bf16", lambda: True)
    runner = prepare_runner(trained.model, "cpu", half=False)
    assert not runner.bf16 and conv_output_dtypes(runner) == [torch.float32]


def plain_fp32(model: YOLO) -> Predictor:
    """The unoptimised path: the unfused model, contiguous float32 input, torch's own threads."""
    plain = Predictor(model.model, list(model.names.values()), settings())
    net = predictor.copy.deepcopy(model.model).float().eval()
    plain.runner = Runner(net, torch.device("cpu"), torch.float32, 32, None)
    return plain


def test_optimised_cpu_path_finds_the_boxes_of_plain_fp32(trained, unseen_images, monkeypatch):
    monkeypatch.setattr(predictor, "native_bf16", lambda: True)  # exercise bf16 on any CPU
    fast = Predictor(trained.model, list(trained.names.values()), settings(half=True))
    assert fast.runner.bf16 and fast.runner.channels_last
    plain = plain_fp32(trained)
    total = 0
    for image in unseen_images:
        a, b = next(plain.stream(image)), next(fast.stream(image))
        assert len(a.boxes) == len(b.boxes)
        match = match_boxes(a.boxes.xyxy, a.boxes.cls, b.boxes.xyxy, b.boxes.cls, min_iou=0.95)
        assert len(match.pairs) == len(a.boxes), (match.unmatched_a, match.unmatched_b)
        for i, j, _ in match.pairs:
            assert abs(float(a.boxes.conf[i]) - float(b.boxes.conf[j])) < 0.03
        total += len(a.boxes)
    assert total >= len(unseen_images)  # a real model, so the comparison means something
    assert not b.boxes.data.is_inference()  # users may edit their results in place


def test_channels_last_input_holds_the_same_pixels(trained):
    image = np.random.default_rng(0).integers(0, 255, (70, 110, 3), dtype=np.uint8)
    image[30:40, 50:60] = (10, 20, 30)  # BGR
    frame = Frame(image_bgr=image, path="x.png", kind="image", index=1, count=1)
    p = Predictor(trained.model, list(trained.names.values()), settings(imgsz=128))
    fast, _ = p.preprocess([frame])
    p.runner = Runner(p.runner.forward, p.runner.device, torch.float32, 32, None, channels_last=False)
    plain, _ = p.preprocess([frame])
    assert fast.is_contiguous(memory_format=torch.channels_last) and plain.is_contiguous()
    assert fast.shape == plain.shape == (1, 3, 96, 128)
    assert torch.equal(fast, plain)
    # 110 -> 128 wide (gain 1.164), 70 -> 81 tall, padded to 96: (35, 55) lands near (48, 64)
    assert (fast[0, :, 48, 64] * 255).round().tolist() == [30, 20, 10]  # RGB


def test_predict_gives_back_the_callers_thread_counts(trained, monkeypatch):
    monkeypatch.setattr(predictor, "threads_for_now", lambda: 1)
    torch_before, cv2_before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        torch.set_num_threads(3)
        cv2.setNumThreads(3)
        p = Predictor(trained.model, list(trained.names.values()), settings(imgsz=64))
        during: list[tuple[int, int]] = []
        forward = p.runner.forward
        p.runner.forward = lambda x: (
            during.append((torch.get_num_threads(), cv2.getNumThreads())) or forward(x)
        )
        list(p.stream(np.zeros((40, 60, 3), np.uint8)))
        assert during == [(1, 1)]
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (3, 3)

        def fails(x):
            raise RuntimeError("boom")

        p.runner.forward = fails
        with pytest.raises(RuntimeError, match="boom"):
            list(p.stream(np.zeros((40, 60, 3), np.uint8)))
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (3, 3)
    finally:
        torch.set_num_threads(torch_before)
        cv2.setNumThreads(cv2_before)
