"""Conversions to the YOLO layout behind ``yoloforge convert coco|voc``, and the helpers that write
output folders safely (``staging``, ``copy_file``, ``refuse_existing``; ``split`` uses them too).

Both write OUT/images/<split>, OUT/labels/<split> (``class cx cy w h``, normalised) and
OUT/config.yaml; images are copied (or hard-linked with ``link=True``), the inputs only read.

- COCO: one annotation json is one split (named after the file: ``instances_val2017.json`` -> val).
  Category ids are mapped to 0..n-1 in sorted id order, names kept; ``iscrowd`` boxes are skipped.
- Pascal VOC: Annotations/*.xml and JPEGImages/; ImageSets/Main/{train,val,test}.txt give the
  splits when present, else everything is one split. Names are the object names, sorted (for VOC
  itself that is its usual class order); ``difficult`` objects are skipped, as in the reference.

With a single split the config validates on the training images: ``yoloforge split`` on the
output makes a separate val split.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from yoloforge.data.config import SPLITS, DatasetError, write_data_yaml
from yoloforge.data.images import ImageReadError
from yoloforge.data.verify import image_shape

log = logging.getLogger(__name__)


@dataclass
class _Converted:
    """One image to write: where it comes from, its split and label lines."""

    image: Path
    rel: Path  # path under images/<split>/
    split: str
    lines: list[str] = field(default_factory=list)  # "class cx cy w h", normalised


def convert_coco(
    json_path: str | Path, images_dir: str | Path, out: str | Path, split: str = "", link: bool = False
) -> Path:
    """COCO detection json + its images folder -> YOLO layout in ``out``; return out/config.yaml."""
    json_path, images_dir, out = (Path(p).expanduser().absolute() for p in (json_path, images_dir, out))
    refuse_existing(out)
    coco = _read_coco(json_path)
    split = split or _split_from_name(json_path.stem)
    if split not in SPLITS:
        raise DatasetError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
    try:
        categories = sorted(coco["categories"], key=lambda c: int(c["id"]))
        index = {int(c["id"]): i for i, c in enumerate(categories)}  # sorted ids -> 0..n-1
        names = [str(c["name"]) for c in categories]
        items, n_crowd = _coco_items(coco, images_dir, split, index)
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{json_path}: not a COCO detection file ({type(e).__name__}: {e})") from None
    if n_crowd:
        log.info(f"{json_path}: {n_crowd} iscrowd annotations skipped")
    return _write(items, names, out, link, source=json_path)


def _coco_items(
    coco: dict, images_dir: Path, split: str, index: dict[int, int]
) -> tuple[list[_Converted], int]:
    """One item per COCO image with its label lines, and the number of crowd boxes skipped."""
    annotations = defaultdict(list)
    for a in coco.get("annotations", []):
        annotations[a["image_id"]].append(a)
    items, n_crowd = [], 0
    for image in coco["images"]:
        item = _Converted(images_dir / image["file_name"], Path(image["file_name"]), split)
        for a in annotations[image["id"]]:
            n_crowd += bool(a.get("iscrowd", 0))
            if not a.get("iscrowd", 0) and int(a["category_id"]) in index:
                x, y, w, h = (float(v) for v in a["bbox"])
                item.lines += _yolo_line(index[int(a["category_id"])], (x, y, x + w, y + h), image)
        items.append(item)
    return items, n_crowd


def _read_coco(json_path: Path) -> dict:
    if not json_path.is_file():
        raise DatasetError(f"{json_path}: COCO annotation file not found")
    try:
        coco = json.loads(json_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(f"{json_path}: not valid JSON ({e})") from None
    missing = [k for k in ("images", "categories") if k not in coco] if isinstance(coco, dict) else ["images"]
    if missing:
        raise DatasetError(f"{json_path}: not a COCO detection file: missing key '{missing[0]}'")
    return coco


def _split_from_name(stem: str) -> str:
    stem = stem.lower()
    return "val" if "val" in stem else "test" if "test" in stem else "train"


def _yolo_line(cls: int, box_xyxy: tuple[float, float, float, float], image: dict) -> list[str]:
    """One normalised label line for a pixel box clipped to the image; none for an empty box."""
    width, height = float(image["width"]), float(image["height"])
    x1, x2 = (min(max(v, 0.0), width) for v in (box_xyxy[0], box_xyxy[2]))
    y1, y2 = (min(max(v, 0.0), height) for v in (box_xyxy[1], box_xyxy[3]))
    if x2 <= x1 or y2 <= y1:
        return []
    cx, cy, w, h = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
    return [f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"]


def convert_voc(
    voc_dir: str | Path, out: str | Path, link: bool = False, include_difficult: bool = False
) -> Path:
    """Pascal VOC folder -> YOLO layout in ``out``; return out/config.yaml."""
    voc_dir, out = Path(voc_dir).expanduser().absolute(), Path(out).expanduser().absolute()
    refuse_existing(out)
    annotations = voc_dir / "Annotations"
    if not annotations.is_dir() or not (voc_dir / "JPEGImages").is_dir():
        raise DatasetError(f"{voc_dir}: not a Pascal VOC folder: expected Annotations/ and JPEGImages/")
    parsed = []
    for split, image_id in _voc_ids(voc_dir):
        xml_file = annotations / f"{image_id}.xml"
        if xml_file.is_file():
            parsed.append((split, _parse_voc_xml(xml_file)))
        else:
            log.warning(f"{xml_file}: annotation not found (listed in ImageSets/Main/{split}.txt); skipped")
    names = sorted({obj[0] for _, (_, _, objects) in parsed for obj in objects})
    index = {name: i for i, name in enumerate(names)}
    items = []
    for split, (filename, size, objects) in parsed:
        item = _Converted(voc_dir / "JPEGImages" / filename, Path(filename), split)
        height, width = size or _shape_or_zero(item.image)
        for name, box_xyxy, difficult in objects:
            if width and (include_difficult or not difficult):
                item.lines += _yolo_line(index[name], box_xyxy, {"height": height, "width": width})
        items.append(item)
    return _write(items, names, out, link, source=voc_dir)


def _shape_or_zero(image: Path) -> tuple[int, int]:
    """(height, width) read from the image when the xml lacks <size>; (0, 0) when unreadable."""
    try:
        return image_shape(image)
    except ImageReadError:
        return 0, 0  # the image is reported when it is copied, or the check names it


def _voc_ids(voc_dir: Path) -> Iterable[tuple[str, str]]:
    """(split, id) pairs from ImageSets/Main/{train,val,test}.txt, else every xml as "train"."""
    lists = {s: voc_dir / "ImageSets" / "Main" / f"{s}.txt" for s in ("train", "val", "test")}
    present = {s: p for s, p in lists.items() if p.is_file()}
    if not present:
        return [("train", p.stem) for p in sorted((voc_dir / "Annotations").glob("*.xml"))]
    return [
        (s, line.split()[0])
        for s, p in present.items()
        for line in p.read_text().splitlines()
        if line.strip()
    ]


def _parse_voc_xml(xml_file: Path) -> tuple[str, tuple[int, int] | None, list[tuple]]:
    """(image file name, (height, width) or None, [(name, box_xyxy pixels, difficult)])."""
    try:
        root = ET.parse(xml_file).getroot()
    except (OSError, ET.ParseError) as e:
        raise DatasetError(f"{xml_file}: not a readable VOC annotation ({e})") from None
    filename = root.findtext("filename") or f"{xml_file.stem}.jpg"
    width, height = (
        int(float(root.findtext("size/width") or 0)),
        int(float(root.findtext("size/height") or 0)),
    )
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        xmin, ymin, xmax, ymax = (float(box.findtext(k) or 0) for k in ("xmin", "ymin", "xmax", "ymax"))
        # VOC boxes are 1-based inclusive pixel indices: pixel k covers [k - 1, k] in 0-based corners
        box_xyxy = (xmin - 1, ymin - 1, xmax, ymax)
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append(((obj.findtext("name") or "").strip(), box_xyxy, difficult))
    return filename, ((height, width) if width and height else None), objects


def _write(items: list[_Converted], names: list[str], out: Path, link: bool, source: Path) -> Path:
    """Copy images, write labels and config.yaml into ``out`` (staged, renamed at the end)."""
    if not names:
        raise DatasetError(f"{source}: no categories or object names found: nothing to convert")
    splits = sorted({it.split for it in items}, key=SPLITS.index)
    n_missing = n_boxes = 0
    with staging(out) as tmp:
        for it in items:
            if not it.image.is_file():
                log.warning(f"{it.image}: image not found; skipped")
                n_missing += 1
                continue
            copy_file(it.image, tmp / "images" / it.split / it.rel, link=link)
            if it.lines:
                label = tmp / "labels" / it.split / it.rel.with_suffix(".txt")
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text("\n".join(it.lines) + "\n", encoding="utf-8")
                n_boxes += len(it.lines)
        yaml_splits = {s: f"images/{s}" for s in splits}
        yaml_splits.setdefault("train", yaml_splits[splits[0]])
        if "val" not in yaml_splits:
            yaml_splits["val"] = yaml_splits["train"]
            log.warning(
                f"{source}: no val split, config.yaml validates on {yaml_splits['val']} (see yoloforge split)"
            )
        write_data_yaml(tmp / "config.yaml", out, yaml_splits, names, f"converted from {source}")
    log.info(f"converted {len(items) - n_missing} images, {n_boxes} boxes, {len(names)} classes into {out}")
    return out / "config.yaml"


def refuse_existing(out: Path) -> None:
    """Tools never write into an existing folder (an empty one is fine)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: already exists; choose another out= (existing data is never overwritten)")


# ----------------------------------------------------------------------------------------------
# writing output folders


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """Yield a hidden folder next to ``out``; rename it to ``out`` on success, delete it on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield tmp
        refuse_existing(out)  # someone may have created it meanwhile
        if out.exists():
            out.rmdir()  # empty: replace it
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_file(src: Path, dst: Path, link: bool = False) -> None:
    """Copy (keeping the mtime), or hard-link when ``link`` and the file system allows it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        with contextlib.suppress(OSError):
            os.link(src, dst)
            return
    shutil.copy2(src, dst)
