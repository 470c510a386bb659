"""Model summary: layer, parameter and FLOP counts, and the per-block layer table.

The figures are comparable with the ones users know from the reference's model cards:
- parameters include the DFL projection (reg_max fixed weights; a frozen conv weight there, a
  buffer here), gradients do not;
- GFLOPs: convolutions and matrix products at 2 FLOPs per multiply-add (torch's flop counter),
  plus unfused batch norm at 4 multiply-adds (8 FLOPs) per element, the reference's convention.
  Activations, pooling and upsampling count as free. Measured on the meta device: no memory, no compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from yoloforge.model.head import DFL

if TYPE_CHECKING:
    from yoloforge.model.detector import DetectionModel

BN_FLOPS_PER_ELEMENT = 8


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters, gradients): every weight including the fixed DFL projection, and those being trained."""
    fixed = sum(m.proj.numel() for m in model.modules() if isinstance(m, DFL))
    params = sum(p.numel() for p in model.parameters())
    grads = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return params + fixed, grads


def count_layers(model: nn.Module) -> int:
    """Leaf modules that compute something (convs, norms, activations, pools, concats; no Identity)."""
    return sum(1 for m in model.modules() if not any(m.children()) and not isinstance(m, nn.Identity))


def count_gflops(model: nn.Module, imgsz: int | tuple[int, int] = 640) -> float:
    """GFLOPs of one eval-mode forward pass on a (1, 3, H, W) input (see the module docstring)."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    meta_state = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    bn_elements = 0

    def count_bn(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal bn_elements
        bn_elements += output.numel()

    hooks = [m.register_forward_hook(count_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            functional_call(model, meta_state, (torch.empty(1, 3, h, w, device="meta"),))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return (counter.get_total_flops() + BN_FLOPS_PER_ELEMENT * bn_elements) / 1e9


def is_fused(model: nn.Module) -> bool:
    """True when no batch norm is left (``DetectionModel.fuse()`` folded them into the convs)."""
    return not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def summary_line(model: DetectionModel, imgsz: int | tuple[int, int] = 640) -> str:
    """'YOLOv8n summary: 129 layers, 3,157,200 parameters, 3,157,184 gradients, 8.9 GFLOPs', or
    'YOLOv8n summary (fused): 72 layers, ...' for a fused model, as the reference writes them."""
    params, grads = count_parameters(model)
    fused = " (fused)" if is_fused(model) else ""
    return (
        f"{model.display_name} summary{fused}: {count_layers(model)} layers, {params:,} parameters, "
        f"{grads:,} gradients, {count_gflops(model, imgsz):.1f} GFLOPs"
    )


def layer_table(model: DetectionModel) -> str:
    """The per-block table: idx, from (input blocks, -1 = previous), n (repeats), params, module, args."""
    rows = [f"{'idx':>3}{'from':>16}{'n':>3}{'params':>11}  {'module':<12}arguments"]
    for i, (block, source) in enumerate(zip(model.blocks, model.sources, strict=True)):
        params = sum(p.numel() for p in block.parameters())
        src = str(list(source)) if isinstance(source, tuple) else str(source)
        repeats = getattr(block, "repeats", 1)
        rows.append(
            f"{i:>3}{src:>16}{repeats:>3}{params:>11,}  {type(block).__name__:<12}{block.extra_repr()}"
        )
    return "\n".join(rows)
