"""Hi-IR: hierarchical information flow (L1 window -> L2 dilated inside a region -> L3 across regions).

The spec is docs/hiir.md of the project; this module holds the token groupings, the attention, the
stage and the presets. The frames (columnar SR and U-shaped) are shared with SemanIR.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import frames
from .descriptor import Preset
from .frames import FramedModel, StageSpec
from .layers import (
    TILE_TOKENS,
    ContinuousPositionBias,
    PaddedStage,
    ResidualLayer,
    cosine_logit_scale,
    cosine_temperature,
    make_stage_conv,
    shape_cache,
)

# ----------------------------------------------------------------------------------------------------
# Groupings. Every level is the same operation at a different scale: cut the image into blocks of
# size*stride pixels and gather, inside each block, the size[0] x size[1] pixels that share one offset
# modulo stride. L1: size p, stride 1 (p x p windows). L2: size P/p, stride p (same in-window offset
# across the windows of a region). L3: size = regions per block, stride P (same in-region offset across
# regions). One reshape + one fixed permutation, so the inverse is exact.
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """A rectangle of the image (pixels) that one uniform grouping covers."""

    top: int
    left: int
    height: int
    width: int
    size: tuple[int, int]  # tokens per group along H and W (the position-bias grid)
    stride: tuple[int, int]  # pixels between neighbouring tokens of a group


def group(x: Tensor, size: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """(B, H, W, C) -> (groups, size[0] * size[1], C); H, W multiples of size * stride."""
    b, h, w, c = x.shape
    (n1, n2), (s1, s2) = size, stride
    x = x.reshape(b, h // (n1 * s1), n1, s1, w // (n2 * s2), n2, s2, c)
    return x.permute(0, 1, 4, 3, 6, 2, 5, 7).reshape(-1, n1 * n2, c)


def ungroup(
    groups: Tensor, shape: tuple[int, int, int], size: tuple[int, int], stride: tuple[int, int]
) -> Tensor:
    """Exact inverse of `group`: (groups, n, C) -> (B, H, W, C) with shape = (B, H, W).

    Also takes attention's per-head layout (groups, heads, n, C / heads) and undoes both in one copy.
    """
    b, h, w = shape
    (n1, n2), (s1, s2) = size, stride
    grid = (b, h // (n1 * s1), w // (n2 * s2), s1, s2)
    if groups.dim() == 4:
        x = groups.reshape(*grid, groups.shape[1], n1, n2, groups.shape[-1])
        return x.permute(0, 1, 6, 3, 2, 7, 4, 5, 8).reshape(b, h, w, -1)
    x = groups.reshape(*grid, n1, n2, groups.shape[-1])
    return x.permute(0, 1, 5, 3, 2, 6, 4, 7).reshape(b, h, w, -1)


def _balanced_spans(n: int, most: int) -> list[tuple[int, int, int]]:
    """Cut n regions into ceil(n / most) blocks of near-equal size: (start, block size, block count).

    Equal-as-possible blocks (17 -> 9 + 8, not 16 + 1) keep every L3 group large; the blocks of one size
    are contiguous, so at most two uniform spans per axis.
    """
    count = -(-n // most)
    small, big = divmod(n, count)
    spans = [(0, small + 1, big), (big * (small + 1), small, count - big)]
    return [s for s in spans if s[2] > 0]


@shape_cache()
def plan(
    level: int,
    height: int,
    width: int,
    window: int,
    region: int,
    l3_max_regions: int = 16,
    permute: bool = True,
    region_rows: int | None = None,
) -> tuple[Piece, ...]:
    """The pieces that group a (height, width) image at `level` (1, 2 or 3); sizes multiples of `region`.

    `permute=False` is the paper's no-permutation ablation: L2 groups of (P/p)^2 consecutive pixels of the
    region in raster order instead of the dilated ones. `region_rows` (L3 only) says the image is a band
    of `region_rows` rows of every region (see `by_region_rows`).
    """
    rows = region_rows or region
    if level != 3 and rows != region:
        raise ValueError("hiir.py: region_rows applies to L3 only")
    if height % rows or width % region or region % window:
        raise ValueError(
            f"hiir.py: image {height}x{width} must be a multiple of the region {region}, "
            f"itself a multiple of the window {window}"
        )
    whole = (0, 0, height, width)
    if level == 1:
        return (Piece(*whole, (window, window), (1, 1)),)
    if level == 2:
        g = region // window
        if permute:
            return (Piece(*whole, (g, g), (window, window)),)
        n = g * g
        rows, cols = (n // region, region) if n >= region else (1, n)
        if rows * cols != n or region % rows or region % cols:
            raise ValueError(f"hiir.py: no-permutation groups of {n} pixels do not tile a {region} region")
        return (Piece(*whole, (rows, cols), (1, 1)),)
    if level == 3:
        return tuple(
            Piece(r0 * rows, c0 * region, bh * nr * rows, bw * nc * region, (bh, bw), (rows, region))
            for r0, bh, nr in _balanced_spans(height // rows, l3_max_regions)
            for c0, bw, nc in _balanced_spans(width // region, l3_max_regions)
        )
    raise ValueError(f"hiir.py: level must be 1, 2 or 3, got {level}")


def group_pieces(x: Tensor, pieces: tuple[Piece, ...]) -> list[Tensor]:
    """Group every piece of a plan: one (groups, n, C) tensor per piece."""
    return [
        group(x[:, p.top : p.top + p.height, p.left : p.left + p.width], p.size, p.stride) for p in pieces
    ]


def ungroup_pieces(groups: list[Tensor], pieces: tuple[Piece, ...], batch: int) -> Tensor:
    """Inverse of `group_pieces`: reassemble the pieces (row-major in the plan) into (B, H, W, C)."""
    rows: dict[int, list[Tensor]] = {}
    for g, p in zip(groups, pieces, strict=True):
        rows.setdefault(p.top, []).append(ungroup(g, (batch, p.height, p.width), p.size, p.stride))
    bands = [r[0] if len(r) == 1 else torch.cat(r, dim=2) for r in rows.values()]
    return bands[0] if len(bands) == 1 else torch.cat(bands, dim=1)


# CPU: groups this small (L2, L3 on small images) attend by batched matmuls; the fused kernel's per-group
# overhead dominates there and grows with threads (measured in docs/hiir.md, Attention)
SMALL_GROUP_TOKENS = 16


def by_tiles(fn: Callable[[Tensor, Tensor], Tensor], y: Tensor, x: Tensor, region: int) -> Tensor:
    """`fn(y_tile, x_tile)` over tiles of whole regions of (B, H, W, C) tensors, reassembled."""
    side = max(region, int(TILE_TOKENS**0.5) // region * region)
    out = torch.empty_like(y)
    for top in range(0, y.shape[1], side):
        for left in range(0, y.shape[2], side):
            window = (slice(None), slice(top, top + side), slice(left, left + side))
            out[window] = fn(y[window], x[window])
    return out


def by_region_rows(l3: LevelAttention, y: Tensor) -> Tensor:
    """`l3(y)` in bands of rows of every region, about `TILE_TOKENS` tokens each, reassembled.

    An L3 group holds the pixels at one offset inside the regions of a block, so the pixels of a band
    of offset rows, taken from every region, form whole groups: the band is attended on its own.
    """
    region = l3.grouping["region"]
    rows = max(1, min(region, TILE_TOKENS * region // y.shape[1] // y.shape[2]))
    out = torch.empty_like(y)
    src, dst = y.unflatten(1, (-1, region)), out.unflatten(1, (-1, region))
    for top in range(0, region, rows):
        band = src[:, :, top : top + rows]  # the last band may be shorter
        height = band.shape[2]
        dst[:, :, top : top + height] = l3(band.flatten(1, 2), height).unflatten(1, (-1, height))
    return out


# ----------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------


class LevelAttention(nn.Module):
    """Multi-head attention inside the groups of one level, with that level's position bias.

    q and k are `qk_dim` wide (C/2 in Version 3 and at every L3, C at L1/L2 of Versions 1-2), v is always
    C wide: the output has C channels so the next level (or the projection) reads it directly.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        level: int,
        *,
        qk_dim: int,
        window: int,
        region: int,
        l3_max_regions: int = 16,
        permute: bool = True,
        attn_type: str = "dot",
    ) -> None:
        super().__init__()
        if qk_dim % num_heads or dim % num_heads:
            raise ValueError(
                f"hiir.py: widths {qk_dim} (q, k) and {dim} (v) must divide by {num_heads} heads"
            )
        if attn_type not in ("dot", "cosine"):
            raise ValueError(f"hiir.py: attn_type must be 'dot' or 'cosine', got {attn_type!r}")
        if region % window:  # else every forward fails: regions are grouped into whole windows
            raise ValueError(f"hiir.py: region_size {region} must be a multiple of window_size {window}")
        self.dim, self.num_heads, self.qk_dim, self.level = dim, num_heads, qk_dim, level
        self.grouping = dict(window=window, region=region, l3_max_regions=l3_max_regions, permute=permute)
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim)
        self.position_bias = ContinuousPositionBias(num_heads)
        # cosine similarity needs a learnable temperature (Swin v2's log-space scale, capped at 100)
        self.logit_scale = cosine_logit_scale(num_heads) if attn_type == "cosine" else None

    def forward(self, x: Tensor, region_rows: int | None = None) -> Tensor:
        b, h, w, _ = x.shape
        pieces = plan(self.level, h, w, **self.grouping, region_rows=region_rows)
        groups = group_pieces(x, pieces)  # before qkv (per token): a C-wide copy, not a 2C-wide one
        return ungroup_pieces(
            [self._attend(self.qkv(g), p.size) for g, p in zip(groups, pieces, strict=True)], pieces, b
        )

    def _attend(self, t: Tensor, size: tuple[int, int]) -> Tensor:
        """(groups, n, 2 qk_dim + C) -> (groups, heads, n, C / heads): `ungroup` undoes the heads too."""
        n, heads = t.shape[1], self.num_heads
        q, k, v = (
            u.reshape(-1, n, heads, u.shape[-1] // heads).transpose(1, 2)
            for u in t.split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        )
        bias = self.position_bias.dense(size).unsqueeze(0)  # 4-D: CPU flash kernel
        scale = q.shape[-1] ** -0.5
        if self.logit_scale is not None:
            q = F.normalize(q, dim=-1) * cosine_temperature(self.logit_scale)
            k, scale = F.normalize(k, dim=-1), 1.0
        if n <= SMALL_GROUP_TOKENS and q.device.type == "cpu":
            scores = torch.matmul(q * scale, k.transpose(-2, -1))
            return torch.matmul(scores.add_(bias).softmax(-1), v)
        if q.shape[-1] < v.shape[-1] and q.device.type != "meta":
            # half-width q, k: zero-pad to v's width (no logit changes) so that the fused SDPA kernels,
            # which need equal widths, apply; not on meta, where MACs are counted: padding is no work
            pad = (0, v.shape[-1] - q.shape[-1])
            q, k = F.pad(q, pad), F.pad(k, pad)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=scale)

    def extra_repr(self) -> str:
        return f"level={self.level}, heads={self.num_heads}, qk_dim={self.qk_dim}, " + ", ".join(
            f"{k}={v}" for k, v in self.grouping.items()
        )


Segments = tuple[tuple[tuple[int, bool], ...], ...]


def attention_segments(version: int, layer_index: int = 0, use_l3: bool = True) -> Segments:
    """The levels of one layer's attention, as segments that each end with an output projection.

    Each level is (level, half-width q/k). Version 3 (final): L1 -> L2 -> L3, half q/k, one projection.
    Version 2: L1 with its projection, then L2 -> L3. Version 1: L1 on even layers, L2 on odd ones,
    each followed by L3. Versions 1-2 use full-width q/k for L1/L2; their L3 step is the half-width
    one of Version 3 (this reproduces the reported sizes of the ablation models).
    """
    l3 = ((3, True),) if use_l3 else ()
    if version == 3:
        return (((1, True), (2, True), *l3),)
    if version == 2:
        return (((1, False),), ((2, False), *l3))
    if version == 1:
        return (((1 + layer_index % 2, False), *l3),)
    raise ValueError(f"hiir.py: version must be 1, 2 or 3, got {version}")


class HiAttention(nn.Module):
    """Levels chained with no projection between them inside a segment; a projection ends each segment."""

    def __init__(self, dim: int, num_heads: int, segments: Segments, **level_options) -> None:
        super().__init__()
        self.segments = nn.ModuleList(
            nn.ModuleList(
                LevelAttention(dim, num_heads, level, qk_dim=dim // 2 if half else dim, **level_options)
                for level, half in segment
            )
            for segment in segments
        )
        self.projs = nn.ModuleList(nn.Linear(dim, dim) for _ in segments)
        self.region = level_options["region"]

    def steps(self) -> list[nn.Module]:
        """The levels and projections in the order they apply."""
        return [m for levels, proj in zip(self.segments, self.projs, strict=True) for m in (*levels, proj)]

    def forward(self, x: Tensor) -> Tensor:
        for step in self.steps():
            x = step(x)
        return x


class HiIRLayer(ResidualLayer):
    """Residual Hi-IR attention + MLP, with a tiled path for CPU inference on large images."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        segments: Segments,
        *,
        mlp_ratio: float = 2.0,
        norm: str = "post",
        drop_path: float = 0.0,
        **level_options,
    ) -> None:
        attn = HiAttention(dim, num_heads, segments, **level_options)
        super().__init__(dim, attn, mlp_ratio=mlp_ratio, norm=norm, drop_path=drop_path)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu" or x.shape[1] * x.shape[2] <= TILE_TOKENS:
            return super().forward(x)
        return self._forward_by_tiles(x)

    def _forward_by_tiles(self, x: Tensor) -> Tensor:
        """Inference on CPU in pieces of about `TILE_TOKENS` tokens, so that their tensors stay in cache.

        L1 and L2 groups never leave a region, and projections, norms and the MLP act per token, so
        tiles of whole regions give the same result; L3 (across regions) runs in bands of rows of every
        region. Without this, time per pixel grows once a layer's tensors outgrow the cache.
        """
        runs: list[list[nn.Module]] = [[]]
        for step in self.attn.steps():
            if getattr(step, "level", 0) == 3:
                runs += [[step], []]
            else:
                runs[-1].append(step)
        y = x
        for i, run in enumerate(runs):
            if i % 2:  # an L3 level: in bands of rows of every region
                y = by_region_rows(run[0], y)
                continue
            first, last = i == 0, i == len(runs) - 1

            def local(t: Tensor, x_tile: Tensor, run=run, first=first, last=last) -> Tensor:
                if first and self.pre_norm:
                    t = self.norm1(t)
                for step in run:
                    t = step(t)
                return self.residual(x_tile, t) if last else t

            y = by_tiles(local, y, x, self.attn.region)
        return y


class HiIRStage(PaddedStage):
    """`x + stage_conv(layers(x))`; pads to the region size when the caller's size is not a multiple."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        window: int,
        region: int,
        stage_conv: str = "conv3",
        version: int = 3,
        use_l3: bool = True,
        drop_path: Sequence[float] | float = 0.0,
        **layer_options,
    ) -> None:
        rates = [drop_path] * depth if isinstance(drop_path, int | float) else list(drop_path)
        layers = [
            HiIRLayer(
                dim,
                num_heads,
                attention_segments(version, i, use_l3),
                drop_path=rates[i],
                window=window,
                region=region,
                **layer_options,
            )
            for i in range(depth)
        ]
        super().__init__(layers, make_stage_conv(stage_conv, dim), region)


# ----------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------

_COMMON = {
    "arch": "hiir",
    "version": 3,  # 1, 2: the paper's earlier attention designs (ablation)
    "use_l3": True,  # False: tree depth 2 (L1, L2 only)
    "permute": True,  # False: the no-permutation ablation (L2 groups of consecutive pixels)
    "l3_max_regions": 16,  # L3 runs inside blocks of at most this many regions per side
    "attn_type": "dot",  # or "cosine" (ablation; learnable logit scale)
    "norm": "post",
    "mlp_ratio": 2.0,
    "stage_conv": "conv3",  # also the conv after the body
    "drop_path": 0.0,
}
COLUMNAR_DEFAULTS = {
    **frames.COLUMNAR_DEFAULTS,
    **_COMMON,
    "window_size": 16,  # p
    "region_size": 64,  # P
}
UNET_DEFAULTS = {
    **frames.UNET_DEFAULTS,
    **_COMMON,
    "task": "deblur",
    "dims": [48, 96, 192, 384],
    "depths": [2, 4, 4, 8],
    "decoder_depths": [2, 4, 4],
    "num_heads": [1, 2, 4, 8],
    "refinement_depth": 2,
    "window_size": [16, 8, 8, 4],  # per level; every level's region spans 64 input pixels
    "region_size": [64, 32, 16, 8],
}


def _per_level(value: int | Sequence[int], name: str) -> list[int]:
    values = [value] * 4 if isinstance(value, int) else list(value)
    if len(values) != 4:
        raise ValueError(f"hiir config: {name} needs one value or 4 (one per U-Net level), got {value}")
    return values


class HiIR(FramedModel):
    """A frame (columnar for SR, U-shaped for the other tasks) built from Hi-IR stages; `model(x)`."""

    arch = "hiir"
    columnar_defaults = COLUMNAR_DEFAULTS
    unet_defaults = UNET_DEFAULTS

    def _levels(self, cfg: dict, key: str) -> list[int]:
        return _per_level(cfg[key], key) if cfg["layout"] == "unet" else [cfg[key]]

    def make_stage(self, spec: StageSpec, drop_path: list[float]) -> nn.Module:
        cfg = self.config
        return HiIRStage(
            spec.dim,
            spec.depth,
            spec.num_heads,
            window=self._levels(cfg, "window_size")[spec.level],
            region=self._levels(cfg, "region_size")[spec.level],
            stage_conv=cfg["stage_conv"],
            version=cfg["version"],
            use_l3=cfg["use_l3"],
            drop_path=drop_path,
            mlp_ratio=cfg["mlp_ratio"],
            norm=cfg["norm"],
            l3_max_regions=cfg["l3_max_regions"],
            permute=cfg["permute"],
            attn_type=cfg["attn_type"],
        )

    def training_advice(self, patch: int) -> list[str]:
        cfg = self.config
        if not cfg["use_l3"]:
            return []
        seen = max(1, min(patch // (r * 2**i) for i, r in enumerate(self._levels(cfg, "region_size"))))
        if seen >= cfg["l3_max_regions"]:
            return []
        return [
            f"model.l3_max_regions is {cfg['l3_max_regions']}, but a {patch}-pixel training patch holds "
            f"{seen} x {seen} regions: L3 never learns larger blocks, and larger blocks at test restore "
            f"worse (0.4-0.7 dB in the zoo's denoisers); set model.l3_max_regions={seen}, or train on "
            f"larger patches"
        ]

    def size_multiple(self, cfg: dict) -> int:
        # every level's feature map must be a multiple of its region: level i is 1/2**i of the input
        regions = self._levels(cfg, "region_size")
        return math.lcm(8, *(r * 2**i for i, r in enumerate(regions))) if len(regions) > 1 else regions[0]


def build(config: dict) -> HiIR:
    return HiIR(config)


# ----------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------


def _sr(name: str, scale: int, reported: float | None, note: str = "", **extra) -> Preset:
    return frames.sr_preset("hiir", name, scale, reported, note, **extra)


def _unet(name: str, task: str, channels: int, reported: float | None, note: str = "", **extra) -> Preset:
    return frames.unet_preset("hiir", name, task, channels, reported, note, **extra)


_B = {"dim": 180, "num_heads": 6, "depths": [6] * 6}
_L = {"dim": 180, "num_heads": 6, "depths": [12] * 12}
_XL = {"dim": 256, "num_heads": 8, "depths": [12] * 12}
_ABLATION = "paper ablation (B-size, conv1)"
# The tiny presets' L3 blocks hold as many regions as their recipes' training patches (SR: 32 LR pixels,
# one region; U-Net: 64 pixels, 2 x 2 regions): blocks larger at test than in training cost the Hi-IR
# denoisers 0.4-0.7 dB (docs/hiir.md).
_TINY_SR = {
    "dim": 48,
    "num_heads": 3,
    "depths": [2, 2, 2],
    "window_size": 8,
    "region_size": 32,
    "l3_max_regions": 1,
}
_TINY_UNET = {
    # 32 at full resolution: with 16, the JPEG model stalled at 28.4 dB (docs/zoo.md)
    "dims": [32, 48, 64, 96],
    "depths": [1, 1, 2, 2],
    "decoder_depths": [1, 1, 2],
    "num_heads": [1, 2, 2, 4],
    "refinement_depth": 1,
    "window_size": [8, 4, 4, 2],
    "region_size": [32, 16, 8, 4],
    "l3_max_regions": 2,
}
_PROJECT = frames.PROJECT_NOTE
_UNET_NOTE = "layout chosen to match the reported motion-deblurring size (docs/hiir.md)"

PRESETS: list[Preset] = [
    _sr("hiir-b-sr-x2", 2, 14.68, **_B, stage_conv="conv3"),
    *(_sr(f"hiir-b-sr-x{s}", s, r, **_B, stage_conv="conv1") for s, r in ((3, 15.87), (4, 15.84))),
    *(_sr(f"hiir-l-sr-x{s}", s, r, **_L, stage_conv="conv3") for s, r in ((3, 55.91), (4, 55.88))),
    *(_sr(f"hiir-l-linear-sr-x{s}", s, r, **_L, stage_conv="linear") for s, r in ((3, 54.41), (4, 54.37))),
    *(
        _sr(f"hiir-l-conv1-sr-x{s}", s, r, "naive scaling (paper Table 3)", **_L, stage_conv="conv1")
        for s, r in ((3, 57.78), (4, 57.74))
    ),
    _sr("hiir-xl-sr-x2", 2, 110.90, **_XL, stage_conv="conv3"),
    *(
        _sr(f"hiir-b-v1-nol3-sr-x{s}", s, r, _ABLATION, **_B, stage_conv="conv1", version=1, use_l3=False)
        for s, r in ((2, 11.87), (4, 12.02))
    ),
    *(
        _sr(f"hiir-b-v1-sr-x{s}", s, r, _ABLATION, **_B, stage_conv="conv1", version=1)
        for s, r in ((2, 14.35), (4, 14.50))
    ),
    _sr("hiir-b-v2-sr-x4", 4, 19.37, _ABLATION, **_B, stage_conv="conv1", version=2),
    _sr(
        "hiir-b-noperm-sr-x2",
        2,
        14.68,
        "paper ablation: no permutation",
        **_B,
        stage_conv="conv3",
        permute=False,
    ),
    *(
        _sr(
            f"hiir-b-cosine-sr-x{s}",
            s,
            None,
            "paper ablation: cosine attention",
            **_B,
            stage_conv="conv1",
            attn_type="cosine",
        )
        for s in (3, 4)
    ),
    *(
        _unet(f"hiir-unet-{task}-{kind}", task, ch, None, _UNET_NOTE)
        for task in ("denoise", "jpeg")
        for kind, ch in (("gray", 1), ("color", 3))
    ),
    _unet("hiir-unet-demosaic", "demosaic", 1, None, "RGGB mosaic in; residual on bilinear interpolation"),
    _unet("hiir-unet-deblur", "deblur", 3, 22.33, _UNET_NOTE),
    *(_sr(f"hiir-t-sr-x{s}", s, None, _PROJECT, **_TINY_SR) for s in (2, 3, 4)),
    *(
        _unet(f"hiir-t-{task}-{kind}", task, ch, None, _PROJECT, **_TINY_UNET)
        for task in ("denoise", "jpeg")
        for kind, ch in (("gray", 1), ("color", 3))
    ),
]
