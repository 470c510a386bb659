"""The user's own defaults (``yoloforge settings device=cpu workers=2``), kept in one YAML file.

The file is ``$YOLOFORGE_CONFIG_DIR/settings.yaml`` when that variable is set, else
``settings.yaml`` in the platform's config folder: ``$XDG_CONFIG_HOME/yoloforge`` or
``~/.config/yoloforge`` on Linux, ``~/Library/Application Support/yoloforge`` on macOS,
``%APPDATA%\\yoloforge`` on Windows. It is a flat mapping of setting names to values::

    # yoloforge user defaults: yoloforge settings key=value sets one, key= removes it
    device: cpu
    workers: 2

Any setting of train, val, predict or export may be stored, except:

- ``PER_RUN``: what names a run's inputs and outputs (model, data, source, cfg, name, ...) or only
  makes sense for one run (resume, classes). Those are given on the command line every time.
- ``ONLY_IN`` keys, which mean different things in different modes, apply to the modes named
  there only: ``conf`` is the prediction threshold (validation keeps 0.001, which mAP needs) and
  ``batch`` is a training/validation batch (an exported model's batch is part of the model).

``settings.build`` reads the file on every call, nothing is cached and nothing is process-wide,
and applies it as the lowest layer above the built-in defaults. A value is checked with the same
``coerce`` (types and ranges) as on the command line, both when it is written and when it is read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from yoloforge.files import write_text_atomic
from yoloforge.settings import (
    ExportSettings,
    PredictSettings,
    SettingsError,
    TrainSettings,
    ValSettings,
    coerce,
    flat_fields,
    unknown_key_message,
)

MODES: dict[str, type] = {
    "train": TrainSettings,
    "val": ValSettings,
    "predict": PredictSettings,
    "export": ExportSettings,
}
PER_RUN = frozenset(
    {"model", "data", "source", "cfg", "resume", "name", "exist_ok", "split", "stream", "classes"}
)
ONLY_IN: dict[str, tuple[str, ...]] = {"conf": ("predict",), "batch": ("train", "val")}
HEADER = "# yoloforge user defaults: yoloforge settings key=value sets one, key= removes it\n"


def config_dir() -> Path:
    """The folder of the settings file (not created here)."""
    if os.environ.get("YOLOFORGE_CONFIG_DIR"):
        return Path(os.environ["YOLOFORGE_CONFIG_DIR"]).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(base) / "yoloforge"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "yoloforge"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "yoloforge"


def settings_file() -> Path:
    return config_dir() / "settings.yaml"


def storable_keys() -> dict[str, list[str]]:
    """Every key the file may hold -> the modes it applies to, in the order of MODES."""
    out: dict[str, list[str]] = {}
    for mode, cls in MODES.items():
        for key in flat_fields(cls):
            if key not in PER_RUN and mode in ONLY_IN.get(key, (mode,)):
                out.setdefault(key, []).append(mode)
    return out


def check(key: str, value: Any) -> Any:
    """The value as the settings hold it; SettingsError (one line) for a key or value not allowed."""
    return coerce(key, value, _owner(key))


def _owner(key: str) -> type:
    """The settings class that holds ``key``; SettingsError when the file may not store it."""
    if key in PER_RUN:
        raise SettingsError(
            f"'{key}' cannot be a stored default: it is chosen for each run on the command line"
        )
    modes = storable_keys()
    if key not in modes:
        raise SettingsError(unknown_key_message(key, modes))
    return flat_fields(MODES[modes[key][0]])[key][1]


def load() -> dict[str, Any]:
    """The stored defaults, checked; {} without a file. A bad file raises SettingsError naming it."""
    path = settings_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(_bad_file(path, f"cannot be read ({e})")) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SettingsError(_bad_file(path, f"is not valid YAML ({str(e).splitlines()[0]})")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(_bad_file(path, "is not a mapping of key: value"))
    out = {}
    for key, value in data.items():
        try:
            out[str(key)] = check(str(key), value)
        except SettingsError as e:
            raise SettingsError(_bad_file(path, str(e))) from None
    return out


def _bad_file(path: Path, why: str) -> str:
    return f"{path}: {why}; fix the file or run 'yoloforge settings reset'"


def defaults_for(cls: type) -> dict[str, Any]:
    """The stored defaults that apply to the settings class of one mode (none for other classes)."""
    mode = next((name for name, mode_cls in MODES.items() if mode_cls is cls), None)
    if mode is None:
        return {}
    stored = load()
    if not stored:
        return {}
    modes = storable_keys()
    return {k: v for k, v in stored.items() if mode in modes[k]}


def update(changes: dict[str, str]) -> dict[str, Any]:
    """Set (``key=value``) or remove (``key=``) stored defaults; every change is checked before the
    file is written, so a bad one writes nothing. Returns the stored defaults afterwards."""
    stored = load()
    for key, value in changes.items():
        if value == "":
            _owner(key)  # removing a key that cannot be stored is a typo too
            stored.pop(key, None)
        else:
            stored[key] = check(key, value)
    write(stored)
    return stored


def write(values: dict[str, Any]) -> Path:
    """Replace the file atomically (temp file in the same folder, then rename); no values, no file."""
    path = settings_file()
    if not values:
        path.unlink(missing_ok=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    text = HEADER + yaml.safe_dump(dict(sorted(values.items())), sort_keys=False, allow_unicode=True)
    return write_text_atomic(path, text)


def reset() -> bool:
    """Remove the file; True when there was one."""
    path = settings_file()
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed
