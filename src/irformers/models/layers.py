"""Building blocks shared by every architecture: position bias, MLP, stage-end convs, padding, windows.

Everything here is written for this project (no timm) so that SemanIR and Hi-IR differ only in their
stage. Tensors inside stages are channels-last, `(B, H, W, C)`; the frames' convolutions are NCHW.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Size2 = tuple[int, int]

# CPU inference runs token-wise and window-local work in pieces of about this many tokens, whose tensors
# stay in cache (BENCHMARKS.md: semanir-s-sr-x2 against semanir-s-sr-x2-whole, on whole feature maps)
TILE_TOKENS = 64 * 64


def to_2tuple(v: int | Sequence[int]) -> Size2:
    if isinstance(v, int):
        return (v, v)
    h, w = v
    return (int(h), int(w))


# --------------------------------------------------------------------------- padding and windows


def _reflect_pad_1d(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Reflect-pad the end of `dim` by `pad`, reflecting repeatedly when pad >= size (as numpy does).

    torch's reflect mode refuses pads as large as the input; a tiny image padded to a 32-pixel window
    needs exactly that. A size-1 axis cannot be reflected and is replicated instead.
    """
    while pad > 0:
        size = x.shape[dim]
        if size == 1:
            return torch.cat([x, x.expand(*x.shape[:dim], pad, *x.shape[dim + 1 :])], dim=dim)
        step = min(pad, size - 1)
        mirror = x.narrow(dim, size - 1 - step, step).flip(dim)
        x = torch.cat([x, mirror], dim=dim)
        pad -= step
    return x


def pad_to_multiple(
    x: torch.Tensor, multiple: int | Sequence[int], *, channels_last: bool = False
) -> torch.Tensor:
    """Reflect-pad the bottom/right of an image batch so H and W are multiples of `multiple`.

    NCHW by default, `(B, H, W, C)` with `channels_last=True`. Returns `x` itself when no padding is needed;
    the caller crops back with the sizes it kept.
    """
    mh, mw = to_2tuple(multiple)
    hdim, wdim = (1, 2) if channels_last else (x.dim() - 2, x.dim() - 1)
    ph = (-x.shape[hdim]) % mh
    pw = (-x.shape[wdim]) % mw
    if ph == 0 and pw == 0:
        return x
    if not channels_last and x.shape[hdim] > ph and x.shape[wdim] > pw and x.dim() == 4:
        return F.pad(x, (0, pw, 0, ph), mode="reflect")  # the fast path: one kernel
    return _reflect_pad_1d(_reflect_pad_1d(x, ph, hdim), pw, wdim)


def window_partition(x: torch.Tensor, window: Size2) -> torch.Tensor:
    """`(B, H, W, C)` -> `(B * nW, wh * ww, C)`, windows in raster order; H, W multiples of the window."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, window: Size2, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: `(B * nW, wh * ww, C)` -> `(B, H, W, C)`."""
    wh, ww = window
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


# --------------------------------------------------------------------------- position bias


def shape_cache(maxsize: int = 256) -> Callable[[Callable], Callable]:
    """Cache a function of sizes and devices (index tables, masks, plans): every layer of every stage asks
    for the same few. Tensors are built outside inference mode, since a cached inference tensor would
    break a later autograd call. Under `torch.compile` the function is traced instead: the compiled
    graph holds its result, and dynamo would ignore the cache anyway, with a warning per call site."""

    def decorate(build: Callable) -> Callable:
        @functools.lru_cache(maxsize=maxsize)
        def cached(*args, **kwargs):
            with torch.inference_mode(False):
                return build(*args, **kwargs)

        @functools.wraps(build)
        def table(*args, **kwargs):
            return build(*args, **kwargs) if torch.compiler.is_compiling() else cached(*args, **kwargs)

        return table

    return decorate


@shape_cache()
def relative_coords_table(window: Size2, device: torch.device | None = None) -> torch.Tensor:
    """Log-spaced relative coordinates `((2h-1) * (2w-1), 2)` of a `(h, w)` grid of positions.

    Offsets are normalised to +-8, then mapped by sign(x) * log2(|x| + 1) / log2(8), so that the bias
    MLP sees small, smoothly varying inputs whatever the window size (Swin v2's continuous bias).
    """
    h, w = window
    dy = torch.arange(-(h - 1), h, dtype=torch.float32) / max(h - 1, 1)
    dx = torch.arange(-(w - 1), w, dtype=torch.float32) / max(w - 1, 1)
    table = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2) * 8
    # built once per device: copied from the CPU at each training step, it stalled the GPU per layer
    return (torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)).to(device)


@shape_cache()
def relative_position_index(window: Size2, device: torch.device | None = None) -> torch.Tensor:
    """`(N, N)` long tensor: row of `relative_coords_table` for query i and key j of a window."""
    h, w = window
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :] + h - 1) * (2 * w - 1) + (xs[:, None] - xs[None, :] + w - 1)


def take_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`table[:, index]`, `(heads, *index.shape)`, by index_select: its backward (index_add) sums in a fixed
    order on the CPU, where advanced indexing's accumulating backward does not once the index is large
    (at 2 threads the position-bias MLP's gradients differed from one backward pass to the next)."""
    return table.index_select(1, index.reshape(-1)).view(table.shape[0], *index.shape)


class ContinuousPositionBias(nn.Module):
    """Per-head relative position bias produced by an MLP from log-spaced offsets (16 * sigmoid)."""

    def __init__(self, num_heads: int, hidden: int = 512) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_heads, bias=False)
        )

    def forward(self, window: Size2) -> torch.Tensor:
        """Bias table `(num_heads, (2h-1) * (2w-1))`; index it with `relative_position_index`.

        Computed at every call: a table cached per window went stale when weights changed without
        moving their version counters (`p.data.copy_`, a deepcopy given other weights), and measured no
        faster (semanir-s-sr-x2, hiir-b-sr-x2, CPU)."""
        weight = self.mlp[0].weight
        coords = relative_coords_table(window, weight.device).to(dtype=weight.dtype)
        return 16 * torch.sigmoid(self.mlp(coords)).transpose(0, 1)

    def dense(self, window: Size2) -> torch.Tensor:
        """Bias `(num_heads, N, N)` between every query and key of an `(h, w)` window."""
        return take_bias(self(window), relative_position_index(window, self.mlp[0].weight.device))


# --------------------------------------------------------------------------- MLP, DropPath, stage convs


def cosine_logit_scale(num_heads: int) -> nn.Parameter:
    """Swin v2's learnable per-head log temperature for cosine attention, starting at log 10."""
    return nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))


def cosine_temperature(logit_scale: torch.Tensor) -> torch.Tensor:
    """The temperature, capped at 100 so that the softmax cannot saturate; `(heads, 1, 1)`."""
    return logit_scale.clamp(max=math.log(100.0)).exp()


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples, rescaling the kept ones."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ResidualLayer(nn.Module):
    """Attention then MLP, each a residual branch: post-norm `x + LN(f(x))` (SwinIR v2, GRL) or pre-norm.

    The architectures differ only in `attn`, called as `attn(x, *context)` (SemanIR passes its dictionary).
    """

    def __init__(
        self, dim: int, attn: nn.Module, *, mlp_ratio: float = 2.0, norm: str = "post", drop_path: float = 0.0
    ) -> None:
        super().__init__()
        if norm not in ("post", "pre"):
            raise ValueError(f"norm must be 'post' or 'pre', got {norm!r}")
        self.pre_norm = norm == "pre"
        self.attn = attn
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, *context) -> torch.Tensor:
        return self.residual(x, self.attn(self.norm1(x) if self.pre_norm else x, *context))

    def residual(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The rest of the layer, given the attention's output for input x."""
        if self.pre_norm:
            x = x + self.drop_path(attended)
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = x + self.drop_path(self.norm1(attended))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class PaddedStage(nn.Module):
    """`x + conv(layers(x))`, the layers run on x reflect-padded to `multiple` (a window or a region)."""

    def __init__(self, layers: Sequence[nn.Module], conv: nn.Module, multiple: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.conv = conv
        self.multiple = multiple

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        h, w = x.shape[1:3]
        res = pad_to_multiple(x, self.multiple, channels_last=True)
        for layer in self.layers:
            res = layer(res)
        return x + self.conv(res[:, :h, :w])


class ChannelsLastConv(nn.Module):
    """Runs an NCHW conv stack on channels-last tokens, so stages can end with a convolution."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


STAGE_CONVS = ("conv1", "conv3", "linear")


def make_stage_conv(kind: str, dim: int) -> nn.Module:
    """The layer that ends a stage (and the frame's body): mixes neighbouring tokens after attention.

    `conv1`: 3x3 C->C. `conv3`: a cheaper bottleneck 3x3 C->C/4, 1x1, 3x3 C/4->C. `linear`: per-pixel.
    Works on channels-last `(B, H, W, C)`.
    """
    if kind == "conv1":
        return ChannelsLastConv(nn.Conv2d(dim, dim, 3, padding=1))
    if kind == "conv3":
        q = dim // 4
        return ChannelsLastConv(
            nn.Sequential(
                nn.Conv2d(dim, q, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(q, q, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(q, dim, 3, padding=1),
            )
        )
    if kind == "linear":
        return nn.Linear(dim, dim)
    raise ValueError(f"layers.make_stage_conv: unknown kind {kind!r}; expected one of {STAGE_CONVS}")


# --------------------------------------------------------------------------- Bayer input


class BayerBilinear(nn.Module):
    """Bilinear demosaicking of an RGGB mosaic `(B, 1, H, W)` -> `(B, 3, H, W)`: the initial
    interpolation a demosaicking network refines (its global residual is taken on this image).

    Reflect padding keeps the Bayer phase, so the frame's padding to a size multiple is safe.
    """

    def __init__(self) -> None:
        super().__init__()
        rb = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
        g = torch.tensor([[0.0, 0.25, 0.0], [0.25, 1.0, 0.25], [0.0, 0.25, 0.0]])
        self.register_buffer("kernels", torch.stack([rb, g, rb])[:, None], persistent=False)

    def forward(self, mosaic: torch.Tensor) -> torch.Tensor:
        _, c, h, w = mosaic.shape
        if c != 1:
            raise ValueError(f"BayerBilinear: expected a 1-channel RGGB mosaic, got {c} channels")
        yy = torch.arange(h, device=mosaic.device)[:, None] % 2
        xx = torch.arange(w, device=mosaic.device)[None, :] % 2
        masks = torch.stack([(yy == 0) & (xx == 0), (yy + xx) == 1, (yy == 1) & (xx == 1)]).to(mosaic.dtype)
        sparse = F.pad(mosaic * masks, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(sparse, self.kernels.to(mosaic.dtype), groups=3)
