"""Initial weights of a model trained from scratch, drawn in the reference's order.

Every conv gets PyTorch's default initialisation (``nn.Conv2d.reset_parameters``: Kaiming-uniform
weights, uniform bias) and the head its bias priors. What this module adds is the *order* of the
draws: block by block in the reference's numbering and, inside a block, in the order the reference
builds its layers. Seeded the same way (``torch.manual_seed(seed)`` before ``build_model``), a
model therefore starts from exactly the weights the reference starts from for that seed.

Why it matters: on a few hundred images the final mAP of a run depends on its initial weights by
more than two trainers differ, so trainers are only compared fairly from the same initial weights
(``benchmarks/bench_train_vs_reference.py``); and someone who moves from the reference keeps the
starting point a seed gave them.

A module whose draws do not follow its children's order says so with ``draw_order()``: the
modules and discarded weight shapes, in the order the reference draws them. YOLO11's C3k2 and
C3k do: each first builds the bottlenecks of the block it extends (C2f, C3), then replaces them.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def draw_initial_weights(model: nn.Module, strides: tuple[int, ...]) -> None:
    """Re-draw every conv of ``model`` from the global torch RNG in the reference's order, then set
    the head's bias priors. ``model.blocks`` are the numbered blocks, in order."""
    for block in model.blocks:
        _draw(block)
    model.head.init_biases(strides)


def _draw(item: nn.Module | torch.Size) -> None:
    if isinstance(item, torch.Size):  # a weight the reference draws and then throws away
        nn.init.kaiming_uniform_(torch.empty(item), a=math.sqrt(5))  # as nn.Conv2d.reset_parameters
    elif isinstance(item, nn.Conv2d):
        item.reset_parameters()
    else:
        order = item.draw_order() if hasattr(item, "draw_order") else item.children()
        for child in order:
            _draw(child)
