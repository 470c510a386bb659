"""The explicit map from the reference's state-dict keys to ours.

The reference names its numbered blocks ``model.{i}`` and their parts ``cv1``, ``cv2``, ``m``, ...;
we keep its block order and shapes but name the parts ourselves. A key is mapped by walking our
module tree alongside it: ``model.{i}`` selects ``model.blocks[i]``, then each part name is
translated by the table of the block type we are in, list indices pass through, and the last
name (weight, bias, running_mean, ...) is the tensor's own.

    model.4.m.0.cv1.conv.weight  ->  backbone.stage_p3.inner.0.conv1.conv.weight
"""

from __future__ import annotations

from torch import nn

from yoloforge.model.head import DetectHead
from yoloforge.model.layers import (
    C2PSA,
    SPPF,
    Attention,
    Bottleneck,
    C2f,
    C3k,
    C3k2,
    ConvBnAct,
    PSABlock,
)

SKIP = None  # parts with nothing to load: the DFL projection is a constant here

# Per block type: reference part name -> our attribute name.
PART_NAMES: dict[type[nn.Module], dict[str, str | None]] = {
    ConvBnAct: {"conv": "conv", "bn": "bn"},
    Bottleneck: {"cv1": "conv1", "cv2": "conv2"},
    C2f: {"cv1": "split_conv", "cv2": "merge_conv", "m": "inner"},
    C3k2: {"cv1": "split_conv", "cv2": "merge_conv", "m": "inner"},
    C3k: {"cv1": "main_conv", "cv2": "skip_conv", "cv3": "merge_conv", "m": "bottlenecks"},
    SPPF: {"cv1": "reduce", "cv2": "merge"},
    C2PSA: {"cv1": "split_conv", "cv2": "merge_conv", "m": "blocks"},
    PSABlock: {"attn": "attn", "ffn": "ffn"},
    Attention: {"qkv": "qkv", "proj": "proj", "pe": "pos_enc"},
    DetectHead: {"cv2": "box_branches", "cv3": "cls_branches", "dfl": SKIP},
}
CONTAINERS = (nn.Sequential, nn.ModuleList)  # their parts are indices, the same on both sides
TENSOR_LEAVES = (nn.Conv2d, nn.BatchNorm2d)  # the next name is a tensor name


class KeyMapError(ValueError):
    """A reference key that has no place in our model (a different architecture or a fused model)."""


def map_reference_key(model: nn.Module, key: str, block_paths: dict[int, str] | None = None) -> str | None:
    """Our state-dict key for the reference's ``key`` (``model.{i}.{...}``); None for parts we skip.

    ``model`` is a DetectionModel; ``block_paths`` (from ``block_path_table``) saves recomputing paths.
    """
    parts = key.split(".")
    if len(parts) < 3 or parts[0] != "model" or not parts[1].isdigit():
        raise KeyMapError(f"'{key}' is not a 'model.<block>.<...>' key")
    blocks = model.blocks
    index = int(parts[1])
    if index >= len(blocks):
        raise KeyMapError(f"'{key}': block {index} does not exist (the model has {len(blocks)})")
    paths = block_paths if block_paths is not None else block_path_table(model)
    module: nn.Module = blocks[index]
    ours = [paths[index]]
    for name in parts[2:-1]:
        if isinstance(module, CONTAINERS):
            if not name.isdigit() or int(name) >= len(module):
                raise KeyMapError(f"'{key}': no part '{name}' in {type(module).__name__} of {len(module)}")
            ours.append(name)
            module = module[int(name)]
            continue
        table = PART_NAMES.get(type(module))
        if table is None or name not in table:
            raise KeyMapError(f"'{key}': no part '{name}' in our {type(module).__name__}")
        if table[name] is SKIP:
            return None
        ours.append(table[name])
        module = getattr(module, table[name])
    if not isinstance(module, TENSOR_LEAVES):
        raise KeyMapError(f"'{key}': ends in our {type(module).__name__}, not in a conv or batch norm")
    ours.append(parts[-1])
    return ".".join(ours)


def block_path_table(model: nn.Module) -> dict[int, str]:
    """Block index -> its attribute path in our model ('backbone.stem', 'neck.out_p3', 'head', ...)."""
    path_of = {id(m): name for name, m in model.named_modules()}
    return {i: path_of[id(block)] for i, block in enumerate(model.blocks)}
