"""Prediction: every source type, letterbox in and rescale out, Results formats, saving, logging."""

from __future__ import annotations

import functools
import http.server
import json
import logging
import threading
import types

import cv2
import numpy as np
import pytest
import torch

from yoloforge import predictor as predictor_module
from yoloforge.data.images import ImageReadError
from yoloforge.model.zoo import build_model
from yoloforge.predictor import Predictor, input_shape
from yoloforge.results import Boxes, Results, match_boxes
from yoloforge.settings import PredictSettings, build
from yoloforge.sources import SourceError, open_source

NAMES = ["circle", "square", "triangle"]


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """yolov8n with 3 classes whose outputs depend on the image, like a trained model's.

    Random weights alone give flat, saturated outputs. Here batch-norm statistics come from 16
    ``random_image``s, then the last head layers are scaled so that on those images class logits
    spread with std 1 around -2.5 (a few percent of anchors pass conf=0.25: ~20 detections per
    image, best scores 0.4-0.8) and box-distribution logits with std 0.5 around a decaying bias
    (boxes of a few grid cells).
    """
    torch.manual_seed(seed)
    model = build_model("yolov8", "n", nc=3)
    images = np.stack([random_image(128, 128, seed=100 + i) for i in range(16)])[..., ::-1]  # RGB
    calibration = torch.from_numpy(images.copy()).permute(0, 3, 1, 2).float() / 255
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in batch_norms:
            bn.momentum = 1.0  # running stats := this batch's statistics
        model.train()(calibration)
        for bn in batch_norms:
            bn.momentum = 0.03
        model.eval()
        levels = model.neck(*model.backbone(calibration))
        for x, box, cls in zip(levels, model.head.box_branches, model.head.cls_branches, strict=True):
            for branch, std in ((cls, 1.0), (box, 0.5)):
                branch[-1].bias.zero_()
                branch[-1].weight.mul_(std / branch(x).std())
            cls[-1].bias.fill_(-2.5)
            box[-1].bias.copy_(-0.6 * torch.arange(16.0).repeat(4))
    return model


def make_predictor(model, **overrides) -> Predictor:
    settings = build(
        PredictSettings, {"device": "cpu", "conf": 0.25, "imgsz": 128, "verbose": False, **overrides}
    )
    return Predictor(model, NAMES, settings)


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 BGR with smooth blobs (JPEG-friendly, structure for the model to see)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(h // 8, 1), max(w // 8, 1), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def write_video(path, frames: int, h: int = 96, w: int = 128, fps: float = 10.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        writer.write(random_image(h, w, seed=i))
    writer.release()


def same_detections(a: Results, b: Results, min_iou: float = 0.99) -> None:
    assert len(a) == len(b) > 0
    match = match_boxes(a.boxes.xyxy, a.boxes.cls, b.boxes.xyxy, b.boxes.cls, min_iou=min_iou)
    assert len(match.pairs) == len(a), f"unmatched: {match.unmatched_a} / {match.unmatched_b}"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return tiny_model()


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "b.png"), random_image(96, 128, seed=1))
    cv2.imwrite(str(folder / "a.png"), random_image(120, 90, seed=2))
    cv2.imwrite(str(folder / "c.jpg"), random_image(64, 64, seed=3))
    (folder / "notes.txt").write_text("not an image")
    return folder


# ----------------------------------------------------------------------------------------------
# sources


def test_folder_glob_and_list_give_sorted_images(model, image_dir):
    folder = [r.path for r in make_predictor(model).stream(image_dir)]
    assert [p.rsplit("/", 1)[-1] for p in folder] == ["a.png", "b.png", "c.jpg"]
    globbed = [r.path for r in make_predictor(model).stream(str(image_dir / "*.png"))]
    assert globbed == folder[:2]
    listed = make_predictor(model).stream([image_dir / "c.jpg", str(image_dir / "a.png")])
    assert [r.path for r in listed] == [folder[2], folder[0]]


def test_numpy_pil_and_file_sources_agree(model, tmp_path):
    image_bgr = random_image(96, 128)
    cv2.imwrite(str(tmp_path / "x.png"), image_bgr)  # lossless
    from_file = next(make_predictor(model).stream(tmp_path / "x.png"))
    from_array = next(make_predictor(model).stream(image_bgr))
    assert from_array.orig_img is image_bgr and from_array.path == "image0.jpg"
    np.testing.assert_array_equal(from_file.orig_img, image_bgr)  # files come out BGR too
    same_detections(from_file, from_array, min_iou=0.9999)
    pil = pytest.importorskip("PIL.Image")
    from_pil = next(make_predictor(model).stream(pil.fromarray(image_bgr[:, :, ::-1].copy())))
    np.testing.assert_array_equal(from_pil.orig_img, image_bgr)
    same_detections(from_pil, from_array, min_iou=0.9999)


def test_tensor_source_skips_letterbox(model):
    image_bgr = random_image(96, 128)  # multiples of 32 and imgsz=128: the letterbox is the identity
    rgb = torch.from_numpy(image_bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    from_array = next(make_predictor(model).stream(image_bgr))
    from_tensor = list(make_predictor(model, imgsz=640).stream(rgb[None].repeat(2, 1, 1, 1)))
    assert len(from_tensor) == 2 and from_tensor[0].orig_shape == (96, 128)
    np.testing.assert_array_equal(from_tensor[0].orig_img, image_bgr)
    same_detections(from_tensor[0], from_array, min_iou=0.9999)
    with pytest.raises(SourceError, match="multiples of 32"):
        make_predictor(model).stream(torch.rand(3, 100, 128))
    with pytest.raises(SourceError, match=r"\[0, 1\]"):
        make_predictor(model).stream(torch.rand(3, 96, 128) * 255)


def test_video_stream_is_lazy_and_strided(model, tmp_path):
    write_video(tmp_path / "v.mp4", frames=7)
    results = make_predictor(model, vid_stride=2, stream=True).stream(tmp_path / "v.mp4")
    assert isinstance(results, types.GeneratorType)
    frames = [r.path for r in results]
    assert len(frames) == 4  # frames 1, 3, 5, 7
    source = open_source(tmp_path / "v.mp4", vid_stride=3)
    assert [f.frame for f in source] == [1, 4, 7]


def test_image_url_is_downloaded(model, image_dir):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(image_dir))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/b.png"
        from_url = next(make_predictor(model).stream(url))
    finally:
        server.shutdown()
    from_file = next(make_predictor(model).stream(image_dir / "b.png"))
    assert from_url.path == url
    np.testing.assert_array_equal(from_url.orig_img, from_file.orig_img)
    same_detections(from_url, from_file, min_iou=0.9999)


def test_webcam_index_and_bad_sources_fail_with_their_name(model, tmp_path):
    assert open_source(0).items[0].kind == "stream" and open_source("0").items[0].value == 0
    assert open_source("rtsp://host/live").is_live
    with pytest.raises(SourceError, match="missing.jpg: file or folder not found"):
        make_predictor(model).stream(tmp_path / "missing.jpg")
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(SourceError, match="not an image or video"):
        make_predictor(model).stream(tmp_path / "data.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images or videos found"):
        make_predictor(model).stream(tmp_path / "empty")
    with pytest.raises(SourceError, match="expected uint8"):
        make_predictor(model).stream(np.zeros((8, 8, 3), np.float32))


# ----------------------------------------------------------------------------------------------
# letterbox in, rescale out


class BrightBoxModel(torch.nn.Module):
    """A stand-in detector: one detection (class 1, score 0.9) around the bright pixels of the input."""

    def __init__(self):
        super().__init__()
        self.register_buffer("stride", torch.tensor([8.0, 16.0, 32.0]))
        self.inputs: list[tuple[int, ...]] = []

    def fuse(self):
        return self

    def forward(self, images):  # (B, 3, H, W) -> (B, 4 + 3, 1)
        self.inputs.append(tuple(images.shape))
        out = torch.zeros(len(images), 7, 1)
        for i, image in enumerate(images):
            ys, xs = torch.nonzero(image.float().mean(0) > 0.5, as_tuple=True)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            out[i, :4, 0] = torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)).float()
            out[i, 5, 0] = 0.9
        return out


@pytest.mark.parametrize(("shapes", "batch"), [([(150, 250)], 1), ([(150, 250), (300, 120)], 2)])
def test_known_box_survives_letterbox_and_back(shapes, batch):
    boxes = [(40, 30, 200, 110), (20, 100, 90, 260)]  # x1, y1, x2, y2 in original pixels
    images = []
    for (h, w), (x1, y1, x2, y2) in zip(shapes, boxes, strict=False):
        image = np.zeros((h, w, 3), np.uint8)
        image[y1:y2, x1:x2] = 255
        images.append(image)
    predictor = make_predictor(BrightBoxModel(), imgsz=160, batch=batch)
    results = list(predictor.stream(images))
    expected_input = (len(shapes), 3, 96, 160) if len(shapes) == 1 else (2, 3, 160, 160)
    assert predictor.runner.forward.inputs == [
        expected_input
    ]  # minimal padding for one shape, square for mixed shapes
    for result, box in zip(results, boxes, strict=False):
        assert result.boxes.cls.tolist() == [1.0]
        np.testing.assert_allclose(result.boxes.xyxy[0].numpy(), box, atol=2.0)  # resize blurs edges


def test_input_shape_matches_reference_rules():
    assert input_shape([(480, 640)], 640, 32) == (480, 640)
    assert input_shape([(720, 1280)], 640, 32) == (384, 640)  # 360 -> next multiple of 32
    assert input_shape([(100, 100)], 640, 32) == (640, 640)  # small images are scaled up
    assert input_shape([(480, 640), (640, 480)], 320, 32) == (320, 320)


# ----------------------------------------------------------------------------------------------
# Results


def test_boxes_formats_hand_computed():
    boxes = Boxes(torch.tensor([[10.0, 20.0, 50.0, 60.0, 0.9, 1.0], [0, 0, 200, 100, 0.5, 0]]), (100, 200))
    assert boxes.xywh[0].tolist() == [30.0, 40.0, 40.0, 40.0]
    np.testing.assert_allclose(boxes.xywhn[0].numpy(), [0.15, 0.4, 0.2, 0.4])
    np.testing.assert_allclose(boxes.xyxyn[1].numpy(), [0, 0, 1, 1])
    assert boxes.conf.tolist() == pytest.approx([0.9, 0.5]) and boxes.cls.tolist() == [1.0, 0.0]
    first = boxes[0]
    assert len(first) == 1 and first.data.shape == (1, 6)
    as_numpy = boxes.numpy()
    assert isinstance(as_numpy.xywhn, np.ndarray)
    np.testing.assert_allclose(as_numpy.xywhn, boxes.xywhn.numpy())
    assert len(boxes[boxes.conf > 0.6]) == 1


def test_results_formats_are_consistent(model, tmp_path):
    result = next(make_predictor(model, conf=0.2).stream(random_image(96, 160)))
    assert len(result) > 0 and result.boxes.data.shape == (len(result), 6)
    assert set(result.speed) == {"preprocess", "inference", "postprocess"}
    h, w = result.orig_shape
    xyxy = result.boxes.xyxy
    assert (xyxy[:, [0, 2]] >= 0).all() and (xyxy[:, [0, 2]] <= w).all() and (xyxy[:, [1, 3]] <= h).all()
    # xywhn -> pixels xyxy round trip
    cx, cy, bw, bh = (result.boxes.xywhn * torch.tensor([w, h, w, h])).unbind(1)
    back = torch.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), 1)
    torch.testing.assert_close(back, xyxy, atol=1e-3, rtol=0)
    summary = json.loads(result.to_json())
    assert len(summary) == len(result)
    assert summary[0]["name"] == NAMES[summary[0]["class"]]
    assert summary[0]["box"]["x1"] == pytest.approx(float(xyxy[0, 0]), abs=1e-4)
    result.save_txt(tmp_path / "l.txt")
    lines = (tmp_path / "l.txt").read_text().splitlines()
    assert len(lines) == len(result)
    fields = lines[0].split()
    assert len(fields) == 5 and fields[0] == str(int(result.boxes.cls[0]))
    np.testing.assert_allclose([float(v) for v in fields[1:]], result.boxes.xywhn[0].numpy(), atol=1e-5)
    assert len(result.label_lines(save_conf=True)[0].split()) == 6


def test_plot_and_save_draw_on_a_copy(tmp_path):
    image = np.zeros((100, 200, 3), np.uint8)
    boxes = Boxes(torch.tensor([[20.0, 30.0, 120.0, 80.0, 0.87, 1.0]]), (100, 200))
    result = Results(image, "x.jpg", dict(enumerate(NAMES)), boxes)
    plotted = result.plot()
    assert plotted.shape == image.shape and image.max() == 0 and plotted.max() > 0
    boxes_only = result.plot(labels=False)
    assert 0 < (boxes_only > 0).sum() < (plotted > 0).sum()  # the label is gone, the box is not
    assert boxes_only[45:65, 40:100].max() == 0  # inside the box stays untouched
    path = result.save(tmp_path / "out.png")
    np.testing.assert_array_equal(cv2.imread(path), plotted)


def test_match_boxes_hand_case():
    a = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    b = torch.tensor([[21.0, 20, 31, 30], [0, 0, 10, 10], [50, 50, 60, 60]])
    match = match_boxes(a, [0, 1, 2], b, [1, 0, 0], min_iou=0.5)
    assert sorted(p[:2] for p in match.pairs) == [(0, 1), (1, 0)]  # the third differs in class
    assert match.unmatched_a == [2] and match.unmatched_b == [2]
    assert match.pairs[0][2] == 1.0 and match.min_iou == pytest.approx(90 / 110)


# ----------------------------------------------------------------------------------------------
# saving, logging, settings


def test_save_and_save_txt_write_run_folders(model, image_dir, tmp_path, logs):
    write_video(image_dir / "v.mp4", frames=3)
    project = tmp_path / "runs"
    overrides = {"save": True, "save_txt": True, "project": str(project), "verbose": True, "conf": 0.2}
    results = list(make_predictor(model, **overrides).stream(image_dir))
    run = project / "predict"
    assert sorted(p.name for p in run.iterdir()) == ["a.png", "b.png", "c.jpg", "labels", "v.mp4"]
    assert cv2.imread(str(run / "a.png")).shape == results[0].orig_img.shape
    video = cv2.VideoCapture(str(run / "v.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    video.release()
    labels = sorted(p.name for p in (run / "labels").iterdir())
    assert labels == ["a.txt", "b.txt", "c.txt", "v_1.txt", "v_2.txt", "v_3.txt"]
    assert len((run / "labels" / "b.txt").read_text().splitlines()) == len(results[1])
    text = logs.text
    assert f"image 1/4 {image_dir / 'a.png'}: 128x96 " in text
    assert "video 4/4 (frame 2/3)" in text and "Speed: " in text and f"Results saved to {run}" in text
    list(make_predictor(model, **overrides).stream(image_dir / "a.png"))
    assert (project / "predict2" / "a.png").is_file()


def test_predict_leaves_model_untouched_and_filters_classes(model, logs, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(predictor_module, "native_bf16", lambda: False)  # half=True has no bf16 to use
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predictor = make_predictor(model, conf=0.1, classes=(1,), half=True, show=True)
    results = list(predictor.stream(random_image(64, 96)))
    assert results[0].boxes.cls.unique().tolist() == [1.0]
    assert model.state_dict().keys() == before.keys()  # not fused
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert "half=True needs CUDA" in logs.text and "results are not shown" in logs.text


def test_unreadable_images_are_skipped_with_a_line_each(model, image_dir, logs):
    (image_dir / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (image_dir / "empty.png").write_bytes(b"")
    results = list(make_predictor(model, verbose=True).stream(image_dir))
    assert [r.path.rsplit("/", 1)[-1] for r in results] == ["a.png", "b.png", "c.jpg"]
    warnings = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    assert list(dict.fromkeys(warnings)) == [  # each record reaches caplog twice here
        f"skipping image 3/5: {image_dir / 'bad.jpg'}: not a readable image",
        f"skipping image 5/5: {image_dir / 'empty.png'}: not a readable image",
        "2 of 5 images could not be read and were skipped",
    ]
    assert f"image 4/5 {image_dir / 'c.jpg'}: " in logs.text  # the others keep their numbers
    with pytest.raises(ImageReadError, match="bad.jpg: not a readable image"):
        list(make_predictor(model).stream(image_dir / "bad.jpg"))  # one file asked for: an error
