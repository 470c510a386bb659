"""The dataset config YAML, as users write it for the reference trainer.

```yaml
path: ../datasets/pets    # dataset root: absolute, or relative to this YAML file (missing: its folder)
train: images/train       # a folder of images (searched recursively), a list of folders,
val: images/val           #   or a .txt file of image paths
test:                     # optional
names: [cat, dog]         # or {0: cat, 1: dog}; ids must be 0..n-1
nc: 2                     # optional, must agree with names
```

Split entries are relative to ``path``. Lines of a .txt list are absolute, relative to ``path``, or,
when they start with ``./``, relative to the .txt file's folder (as in the reference).
``data="shapes"`` is the built-in demo dataset, generated on first use.

Every error is a ``DatasetError`` whose one line names the file, the key and the problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yoloforge.data.images import IMAGE_SUFFIXES, is_image

SPLITS = ("train", "val", "test")
DEMO_NAME = "shapes"


class DatasetError(ValueError):
    """A dataset that cannot be used as given. The message is one line naming file, key and problem."""


@dataclass(frozen=True)
class DataConfig:
    """A loaded dataset config: absolute image paths per split and the class names."""

    yaml_file: Path
    root: Path  # the resolved ``path``
    train: list[Path]
    val: list[Path]
    test: list[Path] | None
    names: list[str]

    @property
    def nc(self) -> int:
        return len(self.names)

    def images(self, split: str) -> list[Path]:
        """The image paths of ``split`` ("train", "val" or "test")."""
        if split not in SPLITS:
            raise DatasetError(f"{self.yaml_file}: unknown split '{split}': use one of {', '.join(SPLITS)}")
        paths = getattr(self, split)
        if paths is None:
            raise DatasetError(f"{self.yaml_file}: no 'test' split: add a 'test' key or choose split=val")
        return paths


def yoloforge_home() -> Path:
    """Where yoloforge keeps generated data and caches: ``$YOLOFORGE_HOME`` or ``~/.cache/yoloforge``."""
    env = os.environ.get("YOLOFORGE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "yoloforge"


def load_data_config(data: str | Path) -> DataConfig:
    """Read and check a dataset YAML; ``"shapes"`` (or ``"shapes.yaml"`` when no such file exists)
    generates the demo dataset on first use and loads it."""
    if str(data) in (DEMO_NAME, f"{DEMO_NAME}.yaml") and not Path(data).exists():
        from yoloforge.data.demo import ensure_shapes  # demo imports this module: import on use

        data = ensure_shapes()
    yaml_file = Path(data).expanduser()
    raw = _read_yaml(yaml_file, label=str(data))
    where = str(data)  # errors name the file as the user wrote it
    root = _resolve_root(raw, yaml_file, where)
    names = _parse_names(raw, where)
    splits: dict[str, list[Path] | None] = {}
    for key in SPLITS:
        value = raw.get(key)
        if value in (None, "", []):
            if key != "test":
                raise DatasetError(f"{where}: missing key '{key}': give a folder of images, a list or a .txt")
            splits[key] = None
            continue
        splits[key] = _split_images(value, key, root, where)
    return DataConfig(
        yaml_file=_absolute(yaml_file),
        root=root,
        train=splits["train"],  # type: ignore[arg-type]
        val=splits["val"],  # type: ignore[arg-type]
        test=splits["test"],
        names=names,
    )


def _read_yaml(yaml_file: Path, label: str) -> dict[str, Any]:
    if not yaml_file.is_file():
        raise DatasetError(
            f"{label}: dataset config file not found (give data=path/to/config.yaml or 'shapes')"
        )
    try:
        raw = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(f"{label}: not valid YAML ({first})") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{label}: not a YAML mapping: expected keys path, train, val, names")
    return raw


def _resolve_root(raw: dict[str, Any], yaml_file: Path, where: str) -> Path:
    value = raw.get("path")
    if value in (None, ""):
        return _absolute(yaml_file.parent)
    if not isinstance(value, str):
        raise DatasetError(f"{where}: 'path' must be a folder path, got {value!r}")
    root = _absolute(yaml_file.parent / Path(value).expanduser())
    if not root.is_dir():
        raise DatasetError(
            f"{where}: 'path' folder not found: {root} (a relative 'path' is relative to the YAML's folder)"
        )
    return root


def _parse_names(raw: dict[str, Any], where: str) -> list[str]:
    names, nc = raw.get("names"), raw.get("nc")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc < 1):
        raise DatasetError(f"{where}: 'nc' must be a positive integer, got {nc!r}")
    if names is None:
        if nc is None:
            raise DatasetError(f"{where}: missing key 'names': list the class names, e.g. names: [cat, dog]")
        return [f"class_{i}" for i in range(nc)]  # the reference's names when only nc is given
    if isinstance(names, dict):
        names = _names_from_mapping(names, where)
    elif not isinstance(names, list):
        raise DatasetError(f"{where}: 'names' must be a list or an {{id: name}} mapping, got {names!r}")
    if not names:
        raise DatasetError(f"{where}: 'names' is empty: list at least one class name")
    if nc is not None and nc != len(names):
        raise DatasetError(f"{where}: 'nc' is {nc} but 'names' has {len(names)} entries: make them agree")
    return [str(n) for n in names]


def _names_from_mapping(names: dict[Any, Any], where: str) -> list[Any]:
    try:
        ids = sorted(int(k) for k in names)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: 'names' keys must be integer class ids, got {list(names)}") from None
    if ids != list(range(len(ids))):
        raise DatasetError(f"{where}: 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids}")
    by_id = {int(k): v for k, v in names.items()}
    return [by_id[i] for i in ids]


def _split_images(value: Any, key: str, root: Path, where: str) -> list[Path]:
    entries = value if isinstance(value, list) else [value]
    images: list[Path] = []
    for entry in entries:
        if not isinstance(entry, str | Path):
            raise DatasetError(f"{where}: '{key}' entries must be folder or .txt paths, got {entry!r}")
        images += _entry_images(Path(entry).expanduser(), key, root, where)
    return images


def _entry_images(entry: Path, key: str, root: Path, where: str) -> list[Path]:
    path = _absolute(root / entry)  # an absolute entry stays as it is
    relative_note = f"(paths are relative to 'path': {root})"
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise DatasetError(f"{where}: '{key}' list file not found: {path} {relative_note}")
        images = _read_image_list(path, root)
        if not images:
            raise DatasetError(f"{where}: '{key}': no image paths found in {path}")
        return images
    if not path.is_dir():
        raise DatasetError(f"{where}: '{key}' folder not found: {path} {relative_note}")
    images = sorted(p for p in path.rglob("*") if is_image(p) and p.is_file())
    if not images:
        kinds = ", ".join(IMAGE_SUFFIXES)
        raise DatasetError(f"{where}: '{key}': no images found in {path} (looked for {kinds})")
    return images


def _read_image_list(txt: Path, root: Path) -> list[Path]:
    """Image paths listed one per line; ``./`` lines are relative to the list's folder."""
    images = []
    for line in txt.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or not is_image(line):
            continue
        base = txt.parent if line.startswith("./") else root
        images.append(_absolute(base / line))
    return images


def _absolute(path: Path) -> Path:
    """Absolute and normalised, but symlinks kept: a linked image keeps its own labels folder."""
    return Path(os.path.abspath(path))


def write_data_yaml(
    yaml_file: Path, root: Path, splits: dict[str, str], names: list[str], comment: str = ""
) -> Path:
    """Write a dataset config: ``path`` (absolute root), the splits relative to it, ``nc``, ``names``."""
    data: dict[str, Any] = {"path": str(root), **splits, "nc": len(names), "names": dict(enumerate(names))}
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    yaml_file.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return yaml_file
