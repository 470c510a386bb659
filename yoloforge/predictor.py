"""Prediction: frames from a source -> letterbox -> model -> NMS -> ``Results`` in original pixels.

    predictor = Predictor(model, names, PredictSettings(conf=0.25))
    for result in predictor.stream("video.mp4"):   # one Results per image or frame, lazily
        ...

``model`` is a PyTorch ``DetectionModel`` (a fused copy runs on the settings' device) or an
``ExportedModel`` from ``backends`` (same call contract). On the CPU the copy is channels_last
(with ``half=True``, its convolutions in bfloat16 where the CPU computes bf16 natively, boxes decoded
in float32), and each batch takes one torch thread per CPU that no other process wants at that
moment (``device.threads_for_now``), the caller's thread count given back after.

Nothing is collected: frames are decoded one batch at a time and each Results is handed over as
soon as it exists, so memory stays flat on long videos and webcams when the caller does not keep
them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from yoloforge.backends import ExportedModel
from yoloforge.boxes import non_max_suppression
from yoloforge.data.images import IMAGE_SUFFIXES, write_image
from yoloforge.data.letterbox import letterbox, stride_multiple
from yoloforge.device import cpu_threads, native_bf16, select_device, threads_for_now
from yoloforge.model.detector import DetectionModel
from yoloforge.results import Boxes, Results
from yoloforge.runs import next_run_dir
from yoloforge.settings import PredictSettings
from yoloforge.sources import Frame, FrameSource, open_source, stem_of
from yoloforge.structures import Letterbox

log = logging.getLogger(__name__)


@dataclass
class Runner:
    """A model ready to run: ``forward(images (B, 3, H, W) float [0, 1]) -> (B, 4 + nc, A)``."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    dtype: torch.dtype  # of the input images
    stride: int  # input height and width must be multiples of it
    fixed_shape: tuple[int, int] | None  # (height, width) a static exported model expects
    channels_last: bool = False  # the model wants (B, 3, H, W) images stored as (B, H, W, 3)
    bf16: bool = False  # convolutions in bfloat16 (CPU autocast), decoding in float32


def inference_copy(
    model: torch.nn.Module, device: torch.device, half: bool, channels_last: bool = False
) -> torch.nn.Module:
    """A fused eval copy on ``device``, float16 if ``half``; the caller's model stays as it was
    (unfused, trainable), so predicting never changes what ``YOLO.train`` or a checkpoint sees."""
    model = copy.deepcopy(model).float().eval().fuse().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last:  # oneDNN's fast convolutions on CPU; ~10% at batch 1
        model = model.to(memory_format=torch.channels_last)
    return model.half() if half else model


def prepare_runner(model: torch.nn.Module | ExportedModel, device_spec: str, half: bool) -> Runner:
    """``half``: float16 on CUDA; on a CPU with native bf16 (``native_bf16``), convolutions in
    bfloat16. Not by default: bf16 moves boxes by about a pixel and scores by about 0.01, enough for
    a box near ``conf`` to come and go, and users compare predict with their exported models."""
    device = select_device(device_spec)
    if isinstance(model, ExportedModel):
        model.to(device)
        return Runner(model, device, torch.float32, model.stride, model.fixed_shape)
    on_cpu = device.type == "cpu"
    bf16 = half and on_cpu and isinstance(model, DetectionModel) and native_bf16()
    if half and device.type != "cuda":
        if not bf16:
            log.warning(
                "half=True needs CUDA or a CPU with native bf16 (AVX512-BF16, AMX); predicting in "
                "float32 on %s",
                device.type,
            )
        half = False
    net = inference_copy(model, device, half, channels_last=on_cpu)
    forward = functools.partial(_bf16_forward, net) if bf16 else net
    dtype = torch.float16 if half else torch.float32
    return Runner(forward, device, dtype, int(net.stride.max()), None, channels_last=on_cpu, bf16=bf16)


def _bf16_forward(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The network in bfloat16, the box decoding in float32: bf16 keeps 8 bits of mantissa, too
    few for pixel coordinates at 640 (steps of 4 px), plenty for the logits the decoding reads."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = net.features(images)
    return net.decode([f.float() for f in feats])


@dataclass
class SpeedTotals:
    """Milliseconds summed over every image seen (no per-image list: memory stays flat)."""

    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    images: int = 0
    last_shape: tuple[int, ...] = field(default=())

    def add(self, speed: dict[str, float], n: int, shape: tuple[int, ...]) -> None:
        self.preprocess += speed["preprocess"] * n
        self.inference += speed["inference"] * n
        self.postprocess += speed["postprocess"] * n
        self.images += n
        self.last_shape = shape

    def line(self, batch: int) -> str:
        n = max(self.images, 1)
        shape = (min(batch, self.images), *self.last_shape[1:])
        return (
            f"Speed: {self.preprocess / n:.1f}ms preprocess, {self.inference / n:.1f}ms inference, "
            f"{self.postprocess / n:.1f}ms postprocess per image at shape {shape}"
        )


class Predictor:
    """Runs a detector over any source; see ``stream``."""

    def __init__(self, model: torch.nn.Module | ExportedModel, names: list[str], settings: PredictSettings):
        self.settings = settings
        self.names = dict(enumerate(names))
        self.runner = prepare_runner(model, settings.device, settings.half)
        self.imgsz = stride_multiple(settings.imgsz, self.runner.stride, "predicting at")
        if self.runner.fixed_shape is not None and self.runner.fixed_shape != (self.imgsz, self.imgsz):
            h, w = self.runner.fixed_shape
            log.info("The exported model takes %dx%d inputs: predicting at that size", h, w)

    def stream(self, source: Any) -> Iterator[Results]:
        """Check ``source`` now (a missing file fails here), then yield one Results per image or
        video frame as it is computed."""
        frames = open_source(source, self.settings.vid_stride, self.runner.stride)
        has_video = any(item.kind in ("video", "stream") for item in frames.items)
        if has_video and not self.settings.stream:
            log.warning("predicting a video or stream without stream=True keeps every result in memory")
        save_dir = None
        if self.settings.save or self.settings.save_txt:
            save_dir = next_run_dir(self.settings.project, self.settings.name, self.settings.exist_ok)
        return self._run(frames, save_dir)

    def _run(self, frames: FrameSource, save_dir: Path | None) -> Iterator[Results]:
        s = self.settings
        writer = ResultWriter(save_dir, s.save, s.save_txt, s.save_conf, s.line_width, s.vid_stride, s.show)
        totals = SpeedTotals()
        try:
            for batch in _batches(frames, max(s.batch, 1)):
                results, shape = self.predict_batch(batch)
                totals.add(results[0].speed, len(results), shape)
                for frame, result in zip(batch, results, strict=True):
                    if s.verbose:
                        log.info(
                            "%s%dx%d %s%.1fms",
                            _log_prefix(frame),
                            *shape[2:],
                            result.verbose(),
                            result.speed["inference"],
                        )
                    writer.write(result, frame)
                    yield result
        finally:
            writer.close()
        if s.verbose and totals.images:
            log.info(totals.line(max(s.batch, 1)))
        if frames.skipped:
            n, total = len(frames.skipped), len(frames)
            log.warning(
                "%d of %d image%s could not be read and were skipped", n, total, "s" if total > 1 else ""
            )
        if save_dir is not None:
            log.info("Results saved to %s", save_dir)
        if s.save_txt:
            n = writer.labels_written
            log.info("%d label%s saved to %s", n, "s" if n != 1 else "", save_dir / "labels")

    def predict_batch(self, frames: list[Frame]) -> tuple[list[Results], tuple[int, ...]]:
        """Frames -> Results (boxes in original pixels) and the network input shape (B, 3, H, W)."""
        with self._threads():
            sync = _synchronizer(self.runner.device)
            start = time.perf_counter()
            images, letterboxes = self.preprocess(frames)
            sync()
            t_pre = time.perf_counter()
            with torch.inference_mode():
                preds = self.runner.forward(images)  # (B, 4 + nc, A)
            sync()
            t_inf = time.perf_counter()
            s = self.settings
            detections = non_max_suppression(
                preds.float(), s.conf, s.iou, s.max_det, s.classes, agnostic=s.agnostic_nms
            )
        results = [
            _to_results(frame, det.boxes_xyxy, det.scores, det.classes, box, self.names)
            for frame, det, box in zip(frames, detections, letterboxes, strict=True)
        ]
        sync()
        end, n = time.perf_counter(), len(frames)
        speed = {
            "preprocess": (t_pre - start) * 1e3 / n,
            "inference": (t_inf - t_pre) * 1e3 / n,
            "postprocess": (end - t_inf) * 1e3 / n,
        }
        for result in results:
            result.speed = dict(speed)
        return results, tuple(images.shape)

    def _threads(self) -> contextlib.AbstractContextManager:
        """On the CPU, one torch and OpenCV thread per CPU that is free now (see
        ``device.threads_for_now``), the caller's counts given back after; elsewhere as they are."""
        if self.runner.device.type != "cpu":
            return contextlib.nullcontext()
        return cpu_threads(threads_for_now())

    def preprocess(self, frames: list[Frame]) -> tuple[torch.Tensor, list[Letterbox]]:
        """Frames -> (B, 3, H, W) float [0, 1] RGB on the device, and each frame's letterbox."""
        runner = self.runner
        if frames[0].tensor is not None:  # already network input: no letterbox
            if len({tuple(f.tensor.shape) for f in frames}) > 1:
                raise ValueError("tensor sources of different shapes cannot share a batch; use batch=1")
            images = torch.stack([f.tensor for f in frames])
            letterboxes = [Letterbox.identity(tuple(f.tensor.shape[-2:])) for f in frames]
            images = images.to(runner.device, runner.dtype)
            if runner.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            return images, letterboxes
        shape = runner.fixed_shape or input_shape(
            [f.image_bgr.shape[:2] for f in frames], self.imgsz, runner.stride
        )
        boxed = [letterbox(f.image_bgr, shape) for f in frames]
        bhwc = torch.from_numpy(np.stack([image for image, _ in boxed])).to(runner.device)  # (B, H, W, 3) BGR
        if runner.channels_last:  # the (B, 3, H, W) view of BHWC memory is channels_last already
            images = bhwc.flip(3).permute(0, 3, 1, 2)  # BGR -> RGB
        else:
            images = bhwc.permute(0, 3, 1, 2).flip(1).contiguous()
        return images.to(runner.dtype).div_(255), [box for _, box in boxed]


def input_shape(shapes: list[tuple[int, int]], imgsz: int, stride: int) -> tuple[int, int]:
    """Network input (height, width) for a batch of original (height, width) shapes.

    Images of one shape get the reference's minimal padding: scaled to fit ``imgsz``, then padded
    up to the next multiple of ``stride`` (a 480x640 photo at imgsz=640 runs at 480x640). Mixed
    shapes share the square ``imgsz`` x ``imgsz``.
    """
    if len(set(shapes)) > 1:
        return imgsz, imgsz
    h, w = shapes[0]
    gain = min(imgsz / h, imgsz / w)
    return tuple(math.ceil(round(v * gain) / stride) * stride for v in (h, w))  # type: ignore[return-value]


def _to_results(
    frame: Frame,
    boxes_xyxy: torch.Tensor,  # (N, 4) network-input pixels
    scores: torch.Tensor,
    classes: torch.Tensor,
    box: Letterbox,
    names: dict[int, str],
) -> Results:
    boxes_orig = box.to_original(boxes_xyxy)  # (N, 4) original-image pixels
    data = torch.cat((boxes_orig, scores[:, None], classes[:, None].float()), 1)
    return Results(frame.image_bgr, frame.path, names, Boxes(data, frame.image_bgr.shape[:2]))


def _log_prefix(frame: Frame) -> str:
    """'image 1/3 a.jpg: ', 'video 1/1 (frame 5/300) v.mp4: ', or '0: ' for a webcam/stream."""
    if frame.kind == "video":
        total = frame.frames or "?"
        return f"video {frame.index}/{frame.count} (frame {frame.frame}/{total}) {frame.path}: "
    if frame.kind == "stream":
        return f"{frame.index - 1}: "
    return f"image {frame.index}/{frame.count} {frame.path}: "


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    iterator = iter(frames)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """Timing on CUDA needs the queued kernels finished; elsewhere nothing to wait for."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


# ----------------------------------------------------------------------------------------------
# saving and showing


class ResultWriter:
    """Writes what ``save`` / ``save_txt`` / ``show`` ask for, one Results at a time.

    Images: ``save_dir/<name>`` annotated; videos and streams: ``save_dir/<stem>.mp4`` (mp4v) at
    the source frame rate divided by ``vid_stride``, so the saved video lasts as long as the source;
    labels: ``save_dir/labels/<stem>.txt``, ``<stem>_<frame>.txt`` for video frames.
    One video writer is open at a time: sources are read in order.
    """

    def __init__(
        self,
        save_dir: Path | None,
        save: bool,
        save_txt: bool,
        save_conf: bool,
        line_width: int,
        vid_stride: int,
        show: bool,
    ):
        self.save_dir = save_dir
        self.save_images = save and save_dir is not None
        self.save_txt = save_txt and save_dir is not None
        self.save_conf = save_conf
        self.line_width = line_width or None
        self.vid_stride = vid_stride
        self.window = Window() if show else None
        self.labels_written = 0
        self._video_key: tuple[int, str] | None = None
        self._video: cv2.VideoWriter | None = None

    def write(self, result: Results, frame: Frame) -> None:
        plotted = None
        if self.save_images or self.window is not None:
            plotted = result.plot(line_width=self.line_width)
        if self.save_images:
            if frame.kind == "image":
                _imwrite(self.save_dir / Path(frame.path).name, plotted)
            else:
                self._video_writer(frame, plotted.shape).write(plotted)
        if self.save_txt:
            name = stem_of(frame.path) + (f"_{frame.frame}" if frame.kind != "image" else "")
            result.save_txt(self.save_dir / "labels" / f"{name}.txt", save_conf=self.save_conf)
            self.labels_written += 1
        if self.window is not None:
            self.window.show(frame.path, plotted)

    def _video_writer(self, frame: Frame, shape: tuple[int, ...]) -> cv2.VideoWriter:
        key = (frame.index, frame.path)
        if key != self._video_key:
            self.close()
            path = self.save_dir / f"{stem_of(frame.path)}.mp4"
            fps = max(frame.fps / self.vid_stride, 1.0)
            self._video = cv2.VideoWriter(
                str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (shape[1], shape[0])
            )
            if not self._video.isOpened():
                raise OSError(f"{path}: cannot open a video writer (mp4v codec missing from OpenCV?)")
            self._video_key = key
        return self._video

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
        self._video, self._video_key = None, None


class Window:
    """``show=True``: a cv2.imshow window per result when this machine can open one; otherwise
    one warning line (the same check as ``Results.show()``), then nothing."""

    def __init__(self) -> None:
        from yoloforge.draw import gui_problem

        problem = gui_problem()
        self.enabled = problem is None
        if problem:
            _warn_no_window(problem)

    def show(self, title: str, image_bgr: np.ndarray) -> None:
        from yoloforge.draw import show_window

        if not self.enabled:
            return
        problem = show_window(title, image_bgr, wait_ms=1)
        if problem:
            self.enabled = False
            _warn_no_window(problem)


def _warn_no_window(problem: str) -> None:
    log.warning(
        "show=True needs a display and OpenCV with GUI support (%s); results are not shown, "
        "save them with save=True",
        problem,
    )


def _imwrite(path: Path, image_bgr: np.ndarray) -> None:
    """The annotated image under its source's name (JPEG data when the name has no image suffix;
    an unknown suffix gets .jpg appended)."""
    known = path.suffix.lower() in ("", *IMAGE_SUFFIXES)
    write_image(path if known else path.with_name(path.name + ".jpg"), image_bgr)
