"""Plain window attention (SwinIR-like): the reference the efficiency comparisons measure against.

Each layer attends inside non-overlapping windows, the windows shifted by half a window on odd
layers (with the mask that keeps wrapped-around pixels apart), with dot-product attention (Hi-IR's
default; SemanIR's is cosine, the same cost), the shared continuous position bias and post-norm, like
the Hi-IR and SemanIR layers apart from where the keys come from. Stages plug into the shared
`ColumnarFrame`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import frames
from .descriptor import Preset
from .frames import FramedModel, StageSpec
from .layers import (
    ContinuousPositionBias,
    PaddedStage,
    ResidualLayer,
    make_stage_conv,
    shape_cache,
    window_partition,
    window_reverse,
)


@shape_cache(maxsize=64)
def shift_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> Tensor:
    """`(nW, 1, N, N)` additive mask for shifted windows: -inf between pixels that the cyclic shift
    brought together from opposite borders, 0 elsewhere."""
    label = torch.zeros(1, height, width, 1, device=device)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for n, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
        label[:, rows, cols] = n
    ids = window_partition(label, (window, window)).squeeze(-1)  # (nW, N)
    mask = torch.zeros(ids.shape[0], ids.shape[1], ids.shape[1], device=device)
    return mask.masked_fill(ids[:, :, None] != ids[:, None, :], float("-inf")).unsqueeze(1)


class WindowAttention(nn.Module):
    """Multi-head dot-product attention inside (optionally shifted) windows, channels-last in and out."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int = 0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"baseline.py: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.window, self.shift = num_heads, window, shift
        self.qkv = nn.Linear(dim, 3 * dim)
        self.position_bias = ContinuousPositionBias(num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        win = self.window
        shift = self.shift if min(h, w) > win else 0  # one window covers the image: nothing to shift
        if shift:
            x = torch.roll(x, (-shift, -shift), dims=(1, 2))
        t = window_partition(self.qkv(x), (win, win))  # (B * nW, N, 3C)
        n, heads = t.shape[1], self.num_heads
        q, k, v = t.view(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # (B * nW, h, N, d)
        bias = self.position_bias.dense((win, win)).unsqueeze(0).to(q.dtype)  # (1, h, N, N)
        # 4-D masks and equal head widths let CPU and CUDA use their fused kernels
        if not shift:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            out = self._shifted_attention(q, k, v, bias, b, h, w)
        out = window_reverse(out.transpose(1, 2).reshape(-1, n, c), (win, win), h, w)
        if shift:
            out = torch.roll(out, (shift, shift), dims=(1, 2))
        return self.proj(out)

    def _shifted_attention(
        self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, b: int, h: int, w: int
    ) -> Tensor:
        """Only the windows of the last window row and column hold pixels that the cyclic shift wrapped
        around, so only they get the (window, head) mask; the others share the broadcast bias."""
        inner, border = window_groups(h // self.window, w // self.window, q.device)
        mask = bias + shift_mask(h, w, self.window, self.shift, q.device)[border].to(q.dtype)  # (nB, h, N, N)
        per_image = (b, -1, *q.shape[1:])  # (B, nW, h, N, d)
        q, k, v = (t.view(per_image) for t in (q, k, v))
        out = torch.empty_like(q)
        for windows, m in ((inner, bias), (border, mask if b == 1 else mask.repeat(b, 1, 1, 1))):
            if len(windows):
                sub = [t[:, windows].flatten(0, 1) for t in (q, k, v)]
                out[:, windows] = F.scaled_dot_product_attention(*sub, attn_mask=m).view(
                    b, len(windows), *q.shape[2:]
                )
        return out.flatten(0, 1)


@shape_cache(maxsize=64)
def window_groups(rows: int, cols: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Indices of the windows inside the grid and of those on its last row or column (row-major order)."""
    on_border = torch.zeros(rows, cols, dtype=torch.bool)
    on_border[-1, :] = on_border[:, -1] = True
    on_border = on_border.flatten()
    return (~on_border).nonzero().squeeze(1).to(device), on_border.nonzero().squeeze(1).to(device)


class WindowStage(PaddedStage):
    """Post-norm window layers, the windows shifted by half a window on odd layers; pads to the window."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        window: int,
        stage_conv: str = "conv1",
        mlp_ratio: float = 2.0,
        drop_path: Sequence[float] = (),
    ) -> None:
        rates = list(drop_path) or [0.0] * depth
        layers = [
            ResidualLayer(
                dim,
                WindowAttention(dim, num_heads, window, (i % 2) * (window // 2)),
                mlp_ratio=mlp_ratio,
                drop_path=rates[i],
            )
            for i in range(depth)
        ]
        super().__init__(layers, make_stage_conv(stage_conv, dim), window)


DEFAULTS = {
    **frames.COLUMNAR_DEFAULTS,
    "arch": "baseline",
    "window_size": 32,
    "mlp_ratio": 2.0,
    "stage_conv": "conv1",  # also the conv after the body
    "drop_path": 0.0,
}


class WindowBaseline(FramedModel):
    """The columnar frame built from window-attention stages; `model(x)` (run-time options are refused)."""

    arch = "baseline"
    columnar_defaults = DEFAULTS

    def make_stage(self, spec: StageSpec, drop_path: list[float]) -> nn.Module:
        cfg = self.config
        return WindowStage(
            spec.dim,
            spec.depth,
            spec.num_heads,
            window=cfg["window_size"],
            stage_conv=cfg["stage_conv"],
            mlp_ratio=cfg["mlp_ratio"],
            drop_path=drop_path,
        )

    def size_multiple(self, cfg: dict) -> int:
        return cfg["window_size"]


def build(config: dict) -> WindowBaseline:
    return WindowBaseline(config)


PRESETS: list[Preset] = [
    frames.sr_preset(
        "baseline",
        "baseline-swin-sr-x2",
        2,
        None,
        "the project's reference: SwinIR-like window attention, C 180, 6 x 6 layers, window 32",
    ),
    frames.sr_preset(
        "baseline",
        "baseline-t-sr-x2",
        2,
        None,
        frames.PROJECT_NOTE,
        dim=48,
        num_heads=3,
        depths=[2, 2, 2],
        window_size=8,
    ),
]
