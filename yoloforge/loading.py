"""From what the user passes as ``model`` to a ready torch module and its class names.

- ``yolov8n.yaml`` / ``yolov8n`` / ``yolo11s``: build an untrained model (80 classes);
- a ``.pt`` file: one of our checkpoints (loaded with ``weights_only=True``), or a detection
  checkpoint written by ultralytics (read by the restricted importer in ``model.weights``,
  never running pickled code); TorchScript archives, truncated and crafted files are refused
  with one line naming the file (``checkpoint.check_archive``) before anything is unpickled;
- a published name (``yolov8n.pt``) that is not on disk: fetched from the official release.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from yoloforge.checkpoint import Checkpoint, CheckpointError, checkpoint_from, is_ours, read_plain
from yoloforge.model.weights import load_foreign_checkpoint
from yoloforge.model.zoo import build_model, parse_model_name

log = logging.getLogger(__name__)

DEFAULT_NC = 80


class ModelSourceError(ValueError):
    """``model=`` names nothing we can build or load; the message says what to do."""


@dataclass
class LoadedModel:
    model: torch.nn.Module  # DetectionModel, float32, eval mode, on the CPU
    family: str
    size: str
    names: list[str]
    path: Path | None = None  # the checkpoint file, None when built from a name
    checkpoint: Checkpoint | None = None  # ours, when the file is ours
    pretrained: dict[str, torch.Tensor] | None = None  # weights in our key names (for fine-tuning)
    train_args: dict | None = None  # settings of the run that wrote the file


def weights_dir() -> Path:
    """Where published weights are downloaded: $YOLOFORGE_WEIGHTS_DIR or ~/.cache/yoloforge/weights."""
    env = os.environ.get("YOLOFORGE_WEIGHTS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "yoloforge" / "weights"


def load_model(spec: str | Path) -> LoadedModel:
    spec_str = str(spec)
    path = Path(spec_str)
    suffix = path.suffix.lower()
    if path.is_dir() and not _is_model_name(spec_str):
        raise ModelSourceError(_folder_message(spec_str, path))
    if suffix in (".yaml", ".yml", "") and not path.is_file():
        family, size = _parse(spec_str)
        model = build_model(family, size, nc=DEFAULT_NC).eval()
        return LoadedModel(model, family, size, [str(i) for i in range(DEFAULT_NC)])
    if suffix != ".pt":
        raise ModelSourceError(
            f"model={spec_str}: unsupported file type '{suffix}'; use a .pt checkpoint, a model name "
            "like yolov8n.yaml, or an exported .onnx/.torchscript file for prediction"
        )
    return _load_pt(_find_weights(path))


def _is_model_name(spec: str) -> bool:
    try:
        parse_model_name(spec)
    except ValueError:
        return False
    return True


def _folder_message(spec: str, folder: Path) -> str:
    """A run folder given as model=: point at the checkpoint inside it."""
    found = [folder / rel for rel in ("weights/best.pt", "weights/last.pt", "best.pt", "last.pt")]
    found = [p for p in found if p.is_file()] or sorted(folder.glob("*.pt"))
    example = found[0] if found else folder / "weights" / "best.pt"
    return f"model={spec} is a folder; give a checkpoint file such as {example}"


def _parse(spec: str) -> tuple[str, str]:
    try:
        return parse_model_name(spec)
    except ValueError as e:
        raise ModelSourceError(f"model={spec}: {e}") from None


def _find_weights(path: Path) -> Path:
    if path.is_file():
        return path
    if path.parent != Path("."):  # an explicit path that does not exist
        raise ModelSourceError(f"model={path}: file not found")
    cached = weights_dir() / path.name
    if cached.is_file():
        return cached
    _parse(path.name)  # a published name, or a clear error
    from yoloforge.model.weights import fetch_published

    return fetch_published(path.name, weights_dir())


def _load_pt(path: Path) -> LoadedModel:
    plain = read_plain(path)  # refuses TorchScript, truncated and crafted files in one line
    if is_ours(plain):
        ckpt = checkpoint_from(plain, path)
        model = _model_for(ckpt, path)
        state = {k: v.float() for k, v in ckpt.model.items()}
        model.load_state_dict(state)
        return LoadedModel(
            model.eval(), ckpt.family, ckpt.size, list(ckpt.names), path, ckpt, state, dict(ckpt.train_args)
        )
    foreign = load_foreign_checkpoint(path)
    model = build_model(foreign.family, foreign.size, nc=foreign.nc)
    model.load_state_dict(foreign.state_dict)
    return LoadedModel(
        model.eval(),
        foreign.family,
        foreign.size,
        list(foreign.names),
        path,
        None,
        foreign.state_dict,
        dict(foreign.train_args or {}),
    )


CLASS_BIAS = "head.cls_branches.0.2.bias"  # (nc,) in both families: tells nc before we build


def _model_for(ckpt: Checkpoint, path: Path) -> torch.nn.Module:
    """The architecture ``ckpt`` names, checked against its weights (keys and shapes) so that a
    damaged or crafted file ends in one line, and a huge nc is refused before it is allocated."""
    bias = ckpt.model.get(CLASS_BIAS)
    if bias is None or tuple(bias.shape) != (ckpt.nc,):
        found = "no class layer" if bias is None else f"a class layer of shape {tuple(bias.shape)}"
        raise CheckpointError(f"{path}: damaged checkpoint (nc={ckpt.nc}, but its weights have {found})")
    try:
        model = build_model(ckpt.family, ckpt.size, nc=ckpt.nc)
    except ValueError as e:
        raise CheckpointError(f"{path}: damaged checkpoint ({e})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ckpt.model))
    extra = sorted(set(ckpt.model) - set(expected))
    wrong = [k for k in expected if k in ckpt.model and ckpt.model[k].shape != expected[k].shape]
    if missing or extra or wrong:
        what = (
            f"'{wrong[0]}' has shape {tuple(ckpt.model[wrong[0]].shape)}, {ckpt.family}{ckpt.size} "
            f"expects {tuple(expected[wrong[0]].shape)}"
            if wrong
            else f"{len(missing)} weights missing, {len(extra)} unknown, e.g. {(missing or extra)[0]}"
        )
        raise CheckpointError(f"{path}: damaged checkpoint ({what})")
    return model
