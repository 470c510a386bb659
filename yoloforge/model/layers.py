"""The building blocks of YOLOv8 and YOLO11 (Ultralytics, 2023-2024; CSP from Wang et al. 2019).

Every block keeps the reference's layer order and shapes, so that published weights map onto it
one to one (see ``keymap.py``); the attribute names are our own. Shapes are (B, C, H, W).
"""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-3  # the reference trains with these batch-norm settings
BN_MOMENTUM = 0.03


class ConvBnAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU, 'same' padding. ``fuse()`` folds the BN into the conv."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        """Fold batch norm into the convolution (inference only). Does nothing when already fused."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fold_batch_norm(self.conv, self.bn)
            self.bn = nn.Identity()

    def extra_repr(self) -> str:
        c = self.conv
        return f"{c.in_channels}, {c.out_channels}, kernel={c.kernel_size[0]}, stride={c.stride[0]}" + (
            f", groups={c.groups}" if c.groups > 1 else ""
        )


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing ``bn(conv(x))`` in eval mode:
    w' = w * gamma / s, b' = beta + (b - mean) * gamma / s, with s = sqrt(var + eps)."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (out_ch,)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_(bn.bias + (conv_bias - bn.running_mean) * scale)
    fused.requires_grad_(False)
    return fused


class Bottleneck(nn.Module):
    """Two convs with a residual connection: x + conv2(conv1(x)). Keeps the channel count;
    the middle has ``int(ch * expand)`` channels."""

    def __init__(
        self, ch: int, shortcut: bool = True, kernels: tuple[int, int] = (3, 3), expand: float = 1.0
    ):
        super().__init__()
        hidden = int(ch * expand)
        self.conv1 = ConvBnAct(ch, hidden, kernels[0])
        self.conv2 = ConvBnAct(hidden, ch, kernels[1])
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class C2f(nn.Module):
    """CSP block of YOLOv8: split into two halves, chain ``n`` bottlenecks on the second half,
    concatenate the halves and every bottleneck output, merge with a 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int, n: int = 1, shortcut: bool = False, expand: float = 0.5):
        super().__init__()
        self.hidden = int(out_ch * expand)
        self.expand = expand
        self.repeats = n
        self.shortcut = shortcut
        self.split_conv = ConvBnAct(in_ch, 2 * self.hidden)
        self.merge_conv = ConvBnAct((2 + n) * self.hidden, out_ch)
        self.inner = nn.ModuleList(self._inner_block(shortcut) for _ in range(n))

    def _inner_block(self, shortcut: bool) -> nn.Module:
        return Bottleneck(self.hidden, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.split_conv(x).chunk(2, 1))  # 2 x (B, hidden, H, W)
        for block in self.inner:
            parts.append(block(parts[-1]))
        return self.merge_conv(torch.cat(parts, 1))

    def extra_repr(self) -> str:
        c_in, c_out = self.split_conv.conv.in_channels, self.merge_conv.conv.out_channels
        return f"{c_in}, {c_out}, n={self.repeats}, shortcut={self.shortcut}"


class C3k(nn.Module):
    """CSP block with three convs (C3 of YOLOv5) used inside YOLO11's C3k2: one branch runs ``n``
    bottlenecks, the other is a 1x1 conv; both are concatenated and merged."""

    def __init__(self, ch: int, n: int = 2, shortcut: bool = True, kernel: int = 3):
        super().__init__()
        hidden = ch // 2
        self.main_conv = ConvBnAct(ch, hidden)
        self.skip_conv = ConvBnAct(ch, hidden)
        self.merge_conv = ConvBnAct(2 * hidden, ch)
        self.bottlenecks = nn.Sequential(*(Bottleneck(hidden, shortcut, (kernel, kernel)) for _ in range(n)))

    def draw_order(self) -> list[nn.Module | torch.Size]:
        """The order of the reference's initial draws (``model/init.py``): its C3k builds the
        three convs, then the bottlenecks of the C3 it extends (a 1x1 and a 3x3 conv each, later
        replaced), then its own bottlenecks."""
        c = self.main_conv.conv.out_channels
        discarded = [torch.Size((c, c, 1, 1)), torch.Size((c, c, 3, 3))] * len(self.bottlenecks)
        return [self.main_conv, self.skip_conv, self.merge_conv, *discarded, self.bottlenecks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge_conv(torch.cat((self.bottlenecks(self.main_conv(x)), self.skip_conv(x)), 1))


class C3k2(C2f):
    """YOLO11's CSP block: C2f whose inner blocks are either bottlenecks or C3k blocks."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        n: int = 1,
        use_c3k: bool = False,
        expand: float = 0.5,
        shortcut: bool = True,
    ):
        self.use_c3k = use_c3k
        super().__init__(in_ch, out_ch, n, shortcut, expand)

    def _inner_block(self, shortcut: bool) -> nn.Module:
        if self.use_c3k:
            return C3k(self.hidden, 2, shortcut)
        return Bottleneck(self.hidden, shortcut, expand=0.5)  # unlike C2f's, a narrower middle

    def draw_order(self) -> list[nn.Module | torch.Size]:
        """The order of the reference's initial draws (``model/init.py``): its C3k2 builds the
        outer convs, then the C2f bottlenecks it inherits (two 3x3 convs each, later replaced),
        then its own inner blocks."""
        c = self.hidden
        discarded = [torch.Size((c, c, 3, 3))] * (2 * self.repeats)
        return [self.split_conv, self.merge_conv, *discarded, self.inner]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", c3k={self.use_c3k}, expand={self.expand:g}"


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools (= pools of 5, 9, 13), concatenated."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 5):
        super().__init__()
        hidden = in_ch // 2
        self.reduce = ConvBnAct(in_ch, hidden)
        self.merge = ConvBnAct(hidden * 4, out_ch)
        self.pool = nn.MaxPool2d(kernel, stride=1, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.reduce(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.merge(torch.cat(y, 1))

    def extra_repr(self) -> str:
        return (
            f"{self.reduce.conv.in_channels}, {self.merge.conv.out_channels}, kernel={self.pool.kernel_size}"
        )


class Attention(nn.Module):
    """Multi-head self-attention over all positions of a feature map, plus a depthwise 3x3
    positional encoding of the values. Keys and queries are half the head size (attn_ratio 0.5)."""

    def __init__(self, dim: int, num_heads: int, attn_ratio: float = 0.5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim**-0.5
        self.qkv = ConvBnAct(dim, dim + 2 * self.key_dim * num_heads, act=False)
        self.proj = ConvBnAct(dim, dim, act=False)
        self.pos_enc = ConvBnAct(dim, dim, 3, groups=dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.head_dim], dim=2)  # (B, heads, d, N)
        attn = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)  # (B, heads, N, N)
        out = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pos_enc(v.reshape(b, c, h, w))
        return self.proj(out)


class PSABlock(nn.Module):
    """Attention then a 1x1-conv feed-forward (2x expansion), each with a residual connection."""

    def __init__(self, ch: int, num_heads: int):
        super().__init__()
        self.attn = Attention(ch, num_heads)
        self.ffn = nn.Sequential(ConvBnAct(ch, 2 * ch), ConvBnAct(2 * ch, ch, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.ffn(x)


class C2PSA(nn.Module):
    """YOLO11's attention block at P5: split in halves, run ``n`` PSA blocks on one, merge."""

    def __init__(self, ch: int, n: int = 1):
        super().__init__()
        self.hidden = ch // 2
        self.repeats = n
        self.split_conv = ConvBnAct(ch, 2 * self.hidden)
        self.merge_conv = ConvBnAct(2 * self.hidden, ch)
        self.blocks = nn.Sequential(*(PSABlock(self.hidden, max(self.hidden // 64, 1)) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.split_conv(x).split((self.hidden, self.hidden), dim=1)
        return self.merge_conv(torch.cat((a, self.blocks(b)), 1))

    def extra_repr(self) -> str:
        return f"{2 * self.hidden}, n={self.repeats}"


class Concat(nn.Module):
    """Concatenate feature maps along channels (a numbered block of the reference's layer list)."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


def upsample2x() -> nn.Upsample:
    return nn.Upsample(scale_factor=2, mode="nearest")
