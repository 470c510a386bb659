"""doctor.html: the findings table, histograms and thumbnails of the worst cases with their boxes.

Pictures are files next to the page (``charts/``, ``thumbs/``), referenced relatively, so the folder
can be moved or zipped whole. Static HTML and CSS, no script.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from yoloforge.data.images import ImageReadError, read_image, write_image
from yoloforge.doctor.charts import write_charts
from yoloforge.doctor.output import shown_value
from yoloforge.doctor.report import DoctorReport, Finding, LabelledImage
from yoloforge.draw import draw_detections

THUMBS_PER_CHECK = 8
THUMB_SIDE = 320  # long side of a thumbnail, pixels
FLAG_BGR = (0, 0, 255)  # the box a finding is about
MODEL_BGR = (255, 0, 255)  # the model's box

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; }
td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }
.ok { color: #2a7d2a; font-weight: bold; } .warn { color: #b26a00; font-weight: bold; }
.fail { color: #c62828; font-weight: bold; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; } figure { margin: 0; max-width: 660px; }
figcaption { font-size: 12px; color: #555; word-break: break-all; } img { border: 1px solid #ccc; }
"""


def write_html(
    report: DoctorReport, images: Sequence[LabelledImage], brightness: np.ndarray, min_px: int
) -> Path:
    folder = report.save_dir
    charts = write_charts(folder / "charts", images, report.names, brightness, report.imgsz, min_px)
    by_path = {image.path: image for image in reversed(images)}  # the first listing wins
    parts = [_head(report), _table(report.findings), "<h2>Histograms</h2><div class='grid'>"]
    parts += [_figure(path.relative_to(folder).as_posix(), title) for title, path in charts]
    parts.append("</div>")
    for finding in report.findings:
        thumbs = [] if finding.severity == "ok" else _thumbnails(finding, by_path, report.names, folder)
        if thumbs:
            parts.append(f"<h2 id='{finding.check}'>{finding.check}: worst {len(thumbs)}</h2>")
            parts.append(f"<p>{html.escape(finding.message)}</p><div class='grid'>{''.join(thumbs)}</div>")
    parts.append("</body></html>")
    report.html.write_text("\n".join(parts), encoding="utf-8")
    return report.html


def _head(report: DoctorReport) -> str:
    counts = ", ".join(f"{n} {split}" for split, n in report.n_images.items())
    model = f", model {html.escape(report.model)}" if report.model else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Dataset doctor</title>"
        f"<style>{_CSS}</style></head><body><h1>Dataset doctor</h1>"
        f"<p>{html.escape(str(report.data))}: {counts} images, imgsz {report.imgsz}{model}</p>"
    )


def _table(findings: Sequence[Finding]) -> str:
    rows = "".join(
        f"<tr><td>{f.check}</td><td>{html.escape(shown_value(f))}</td><td>{html.escape(f.target)}</td>"
        f"<td class='{f.severity}'>{f.severity.upper()}</td><td>{html.escape(f.message)}</td></tr>"
        for f in findings
    )
    head = "<tr><th>check</th><th>value</th><th>target</th><th></th><th>first thing to do</th></tr>"
    return f"<table>{head}{rows}</table>"


def _figure(src: str, caption: str) -> str:
    text = html.escape(caption)
    return f"<figure><img src='{html.escape(src)}' alt='{text}'><figcaption>{text}</figcaption></figure>"


def _thumbnails(
    finding: Finding, by_path: dict[str, LabelledImage], names: list[str], folder: Path
) -> list[str]:
    out = []
    for k, item in enumerate(i for i in finding.items if i.get("image") in by_path):
        if len(out) == THUMBS_PER_CHECK:
            break
        tiles = [_tile(by_path[item["image"]], item, names)]
        other = item.get("duplicate_of") or (item.get("matches") or [None])[0]
        if other in by_path:
            tiles.append(_tile(by_path[other], {}, names))
        tiles = [t for t in tiles if t is not None]
        if not tiles:
            continue
        rel = Path("thumbs") / f"{finding.check}_{k}.jpg"
        write_image(folder / rel, _side_by_side(tiles), quality=85)
        out.append(_figure(rel.as_posix(), _caption(item, other)))
    return out


def _tile(image: LabelledImage, item: dict, names: list[str]) -> np.ndarray | None:
    """The image at thumbnail size with its labels, the finding's box in red, the model's in magenta."""
    try:
        bgr = read_image(image.path)[..., ::-1]
    except ImageReadError:
        return None
    scale = THUMB_SIDE / max(bgr.shape[:2])
    small = cv2.resize(np.ascontiguousarray(bgr), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = draw_detections(small, image.boxes_xyxy * scale, image.record.classes, None, names, 1)
    for key, bgr_colour in (("box_xyxy", FLAG_BGR), ("model_box_xyxy", MODEL_BGR)):
        if key in item:
            x1, y1, x2, y2 = (int(round(v * scale)) for v in item[key])
            cv2.rectangle(out, (x1, y1), (x2, y2), bgr_colour, 2, cv2.LINE_AA)
    return out


def _side_by_side(tiles: list[np.ndarray]) -> np.ndarray:
    height = max(t.shape[0] for t in tiles)
    padded = [
        cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 4, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        for t in tiles
    ]
    return np.hstack(padded)


def _caption(item: dict, other: str | None) -> str:
    text = f"{item['split']}/{Path(item['image']).name}"
    if other:
        text += f" = {Path(other).name}"
    if "class" in item:
        text += f" · {item['class']}"
    if "model_class" in item:
        text += f" (model: {item['model_class']} {item['model_conf']:.2f})"
    for key in ("score", "px", "iou", "bits"):
        if key in item:
            text += f" · {key} {item[key]}"
    return text
