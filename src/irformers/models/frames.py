"""The two network frames every architecture plugs its stage into.

`ColumnarFrame` is the SwinIR-style single-resolution body used for super-resolution (and x1 tasks);
`UNetFrame` is the Restormer-like 4-level encoder-decoder. Both pad the input once to the model's size
multiple (reflect) and crop the output back, so callers never pad. A stage is any module mapping
channels-last tokens `(B, H, W, C) -> (B, H, W, C)`, called as `stage(x, **runtime)`.

`FramedModel` is what SemanIR, Hi-IR and the window baseline share: config checking, the choice of
frame, the drop-path schedule and the descriptor. An architecture only supplies its defaults, its
stage and its size multiple.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .descriptor import ModelDescriptor, Preset
from .layers import BayerBilinear, make_stage_conv, pad_to_multiple


@dataclass(frozen=True)
class StageSpec:
    """What a frame tells a stage factory about the stage it needs."""

    dim: int  # channels at this stage
    depth: int  # number of layers
    num_heads: int
    level: int  # 0 = full resolution; U-Net level i works at 1/2**i of the input
    index: int  # running index of the stage in the network (per-stage options, DropPath)


StageFactory = Callable[[StageSpec], nn.Module]

DEFAULT_RGB_MEAN = (0.4488, 0.4371, 0.4040)

# The frames' own settings; an architecture's defaults start from these and add its stage's.
COLUMNAR_DEFAULTS = {
    "layout": "columnar",
    "task": "sr",
    "scale": 2,
    "in_channels": 3,
    "out_channels": 3,
    "dim": 180,
    "depths": [6] * 6,
    "num_heads": 6,
    "upsampler_features": 64,
    "rgb_mean": list(DEFAULT_RGB_MEAN),
}
UNET_DEFAULTS = {
    "layout": "unet",
    "scale": 1,
    "in_channels": 3,
    "out_channels": 3,
    "global_residual": True,
    "bayer_input": False,
}


PROJECT_NOTE = "the project's own small preset (not from the paper)"


def sr_preset(arch: str, name: str, scale: int, reported: float | None, note: str = "", **extra) -> Preset:
    """A columnar super-resolution preset of `arch` (RGB in and out); `extra` are config keys."""
    config = {"arch": arch, "layout": "columnar", "task": "sr", "scale": scale, **extra}
    return Preset(name, arch, "sr", scale, 3, config, reported, note)


def unet_preset(
    arch: str, name: str, task: str, channels: int, reported: float | None, note: str = "", **extra
) -> Preset:
    """A U-Net preset of `arch` for a same-size task; demosaicking takes a 1-channel mosaic to RGB."""
    config = {
        "arch": arch,
        "layout": "unet",
        "task": task,
        "in_channels": channels,
        "out_channels": 3 if task == "demosaic" else channels,
        "bayer_input": task == "demosaic",
        **extra,
    }
    return Preset(name, arch, task, 1, channels, config, reported, note)


# The least whole number each size-like config key may be (lists entry by entry; None = not used). Checked
# when the model is built, so that a recipe's `--check` catches what would otherwise fail deep in a layer,
# or, for k, only at the validation after training.
LEAST = {
    "in_channels": 1,
    "out_channels": 1,
    "dim": 1,
    "dims": 1,
    "depths": 1,
    "decoder_depths": 1,
    "refinement_depth": 0,
    "num_heads": 1,
    "window_size": 1,
    "region_size": 1,
    "k": 1,
    "upsampler_features": 1,
    "cpb_hidden": 1,
    "l3_max_regions": 1,
}


def check_ranges(arch: str, cfg: dict) -> None:
    """One-line ValueError naming the first config value out of its range."""
    for key, least in LEAST.items():
        value = cfg.get(key)
        if value is None:  # not a key of this architecture, or unset (e.g. no L3 limit)
            continue
        entries = value if isinstance(value, list | tuple) else [value]
        if key == "depths" and not entries:
            raise ValueError(f"{arch} config: depths is empty; give at least one stage")
        for v in entries:
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                what = "whole numbers" if entries is value else "a whole number"
                raise ValueError(f"{arch} config: {key} must be {what} >= {least}, got {value!r}")
    task = cfg.get("task")  # free text past the synthetic tasks (deblur, derain): it names output files
    if task is not None and (not isinstance(task, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", task)):
        raise ValueError(f"{arch} config: task must be a short name (a-z, 0-9, '-', '_'), got {task!r}")
    if task == "sr" and cfg.get("scale", 1) == 1:
        raise ValueError(f"{arch} config: task 'sr' with scale 1: sr is the task of scale 2-4")
    if task == "demosaic" and not cfg.get("bayer_input"):
        raise ValueError(f"{arch} config: task {task!r}: demosaic is the task of bayer_input models")
    for key, ok, what in (
        ("mlp_ratio", lambda v: v > 0, "> 0"),
        ("memory_mb", lambda v: v > 0, "> 0"),
        ("drop_path", lambda v: 0 <= v < 1, "in [0, 1)"),
    ):
        value = cfg.get(key)
        if key in cfg and (isinstance(value, bool) or not isinstance(value, int | float) or not ok(value)):
            raise ValueError(f"{arch} config: {key} must be {what}, got {cfg[key]!r}")


def _per_stage(value: int | Sequence[int], n: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"frames: {name} has {len(value)} entries, expected {n}")
    return list(value)


def first_level(value: int | Sequence[int]) -> int:
    """A per-level setting's first (finest) level's value: `window_size: 16` or `[16, 8, ...]`."""
    return value[0] if isinstance(value, (list, tuple)) else value


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ColumnarFrame(nn.Module):
    """Shallow conv -> stages at full resolution -> body conv + long skip -> pixel-shuffle upsampler."""

    def __init__(
        self,
        stage_factory: StageFactory,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        dim: int,
        depths: Sequence[int],
        num_heads: int | Sequence[int],
        scale: int,
        body_conv: str = "conv1",
        size_multiple: int,
        upsampler_features: int = 64,
        rgb_mean: Sequence[float] | None = DEFAULT_RGB_MEAN,
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 3, 4):
            raise ValueError(f"ColumnarFrame: scale must be 1, 2, 3 or 4, got {scale}")
        if rgb_mean is not None and not (in_channels == out_channels == len(rgb_mean)):
            raise ValueError("ColumnarFrame: rgb_mean needs in_channels == out_channels == len(rgb_mean)")
        self.scale = scale
        self.size_multiple = size_multiple
        mean = torch.tensor(rgb_mean if rgb_mean is not None else [0.0] * in_channels).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)

        heads = _per_stage(num_heads, len(depths), "num_heads")
        self.conv_first = _conv3(in_channels, dim)
        self.norm_in = nn.LayerNorm(dim)
        self.stages = nn.ModuleList(
            stage_factory(StageSpec(dim=dim, depth=d, num_heads=h, level=0, index=i))
            for i, (d, h) in enumerate(zip(depths, heads, strict=True))
        )
        self.norm_out = nn.LayerNorm(dim)
        self.conv_body = make_stage_conv(body_conv, dim)

        f = upsampler_features
        self.conv_before_upsample = nn.Sequential(_conv3(dim, f), nn.LeakyReLU(0.01, inplace=True))
        steps: list[nn.Module] = []
        if scale == 3:
            steps += [_conv3(f, 9 * f), nn.PixelShuffle(3)]
        else:
            for _ in range({1: 0, 2: 1, 4: 2}[scale]):
                steps += [_conv3(f, 4 * f), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*steps)
        self.conv_last = _conv3(f, out_channels)

    def forward(self, x: torch.Tensor, **runtime) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.size_multiple)
        mean = self.mean.to(x.dtype)
        feat = self.conv_first(x - mean)
        t = self.norm_in(feat.permute(0, 2, 3, 1))
        for stage in self.stages:
            t = stage(t, **runtime)
        t = self.conv_body(self.norm_out(t))
        feat = t.permute(0, 3, 1, 2) + feat
        out = self.conv_last(self.upsample(self.conv_before_upsample(feat))) + mean
        return out[..., : h * self.scale, : w * self.scale]


class _StageNCHW(nn.Module):
    """Adapts a channels-last stage to the U-Net's NCHW feature maps."""

    def __init__(self, stage: nn.Module) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, x: torch.Tensor, **runtime) -> torch.Tensor:
        return self.stage(x.permute(0, 2, 3, 1), **runtime).permute(0, 3, 1, 2)


class UNetFrame(nn.Module):
    """Restormer-like 4-level encoder-decoder for same-size restoration.

    Level i works at 1/2**i resolution with `dims[i]` channels. Encoder stages at levels 0-2, the
    bottleneck stage at level 3, decoder stages at levels 2-0 (each after upsampling and a 1x1 conv
    fusing the concatenated skip), a refinement stage at full resolution, an output conv, and
    output = input + prediction when the channels match (`global_residual`). With `bayer_input` the
    network takes a 1-channel RGGB mosaic, interpolates it bilinearly, and refines that image instead.
    """

    def __init__(
        self,
        stage_factory: StageFactory,
        *,
        in_channels: int,
        out_channels: int,
        dims: Sequence[int],
        depths: Sequence[int],
        decoder_depths: Sequence[int],
        num_heads: Sequence[int],
        refinement_depth: int,
        size_multiple: int,
        global_residual: bool = True,
        bayer_input: bool = False,
    ) -> None:
        super().__init__()
        if len(dims) != 4 or len(depths) != 4 or len(num_heads) != 4 or len(decoder_depths) != 3:
            raise ValueError("UNetFrame: dims, depths and num_heads need 4 levels, decoder_depths 3")
        if any(d % 4 for d in dims[1:]):
            raise ValueError(
                f"UNetFrame: dims {list(dims)} beyond level 0 must be multiples of 4 (PixelUnshuffle)"
            )
        if size_multiple % 8:
            raise ValueError(
                f"UNetFrame: size_multiple {size_multiple} must be a multiple of 8 (3 downsamplings)"
            )
        if bayer_input and in_channels != 1:
            raise ValueError("UNetFrame: bayer_input needs in_channels == 1")
        self.size_multiple = size_multiple
        self.bayer = BayerBilinear() if bayer_input else None
        net_in = 3 if bayer_input else in_channels
        self.global_residual = global_residual and net_in == out_channels

        index = iter(range(1_000))

        def stage(level: int, depth: int) -> nn.Module:
            spec = StageSpec(
                dim=dims[level], depth=depth, num_heads=num_heads[level], level=level, index=next(index)
            )
            return _StageNCHW(stage_factory(spec))

        self.embed = _conv3(net_in, dims[0])
        self.encoders = nn.ModuleList(stage(i, depths[i]) for i in range(3))
        self.downs = nn.ModuleList(
            nn.Sequential(_conv3(dims[i], dims[i + 1] // 4), nn.PixelUnshuffle(2)) for i in range(3)
        )
        self.bottleneck = stage(3, depths[3])
        self.ups = nn.ModuleList(
            nn.Sequential(_conv3(dims[i + 1], dims[i] * 4), nn.PixelShuffle(2)) for i in range(3)
        )
        self.fuses = nn.ModuleList(nn.Conv2d(2 * dims[i], dims[i], 1) for i in range(3))
        # decoders[i] works at level i; built from the bottom up so stage indices follow the data flow
        decoders = {i: stage(i, decoder_depths[i]) for i in (2, 1, 0)}
        self.decoders = nn.ModuleList(decoders[i] for i in range(3))
        self.refinement = stage(0, refinement_depth)
        self.output = _conv3(dims[0], out_channels)

    def forward(self, x: torch.Tensor, **runtime) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.size_multiple)
        if self.bayer is not None:
            x = self.bayer(x)
        feat = self.embed(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            feat = encoder(feat, **runtime)
            skips.append(feat)
            feat = down(feat)
        feat = self.bottleneck(feat, **runtime)
        for i in (2, 1, 0):
            feat = self.fuses[i](torch.cat([self.ups[i](feat), skips[i]], dim=1))
            feat = self.decoders[i](feat, **runtime)
        out = self.output(self.refinement(feat, **runtime))
        if self.global_residual:
            out = out + x
        return out[..., :h, :w]


class FramedModel(nn.Module):
    """An architecture's stages in the frame its config's `layout` names; `model(x, **runtime)`.

    Subclasses set `arch`, `columnar_defaults` (and `unet_defaults` if they have a U-shaped layout),
    and implement `make_stage` and `size_multiple`. The config keeps every default, so a saved
    config rebuilds the same network even if a default changes later.
    """

    arch: str
    columnar_defaults: dict
    unet_defaults: dict | None = None
    supports_k: bool = False

    def __init__(self, config: dict) -> None:
        super().__init__()
        layout = config.get("layout", "columnar")
        defaults = {"columnar": self.columnar_defaults, "unet": self.unet_defaults}.get(layout)
        if defaults is None:
            raise ValueError(f"{self.arch} config: unknown layout {layout!r}")
        unknown = set(config) - set(defaults) - {"name"}
        if unknown:
            raise ValueError(f"{self.arch} config: unknown keys {sorted(unknown)}")
        self.config = cfg = {**defaults, **config}
        check_ranges(self.arch, cfg)
        multiple = self.size_multiple(cfg)
        unet = layout == "unet"
        if unet and cfg["scale"] != 1:  # the key is kept for one config shape across layouts
            raise ValueError(
                f"{self.arch} config: the unet layout restores at scale 1, got scale {cfg['scale']}"
            )
        # layer counts in stage-index order (U-Net: encoders, bottleneck, decoders 2..0, refinement)
        depths = list(cfg["depths"])
        if unet:
            depths += [*cfg["decoder_depths"][::-1], cfg["refinement_depth"]]
        total = sum(depths)
        rates = [cfg["drop_path"] * i / max(total - 1, 1) for i in range(total)]  # linear, as in Swin
        starts = [sum(depths[:i]) for i in range(len(depths))]

        built: list[nn.Module] = []

        def stage_factory(spec: StageSpec) -> nn.Module:
            built.append(self.make_stage(spec, rates[starts[spec.index] : starts[spec.index] + spec.depth]))
            return built[-1]

        if unet:
            self.frame: nn.Module = UNetFrame(
                stage_factory,
                in_channels=cfg["in_channels"],
                out_channels=cfg["out_channels"],
                dims=cfg["dims"],
                depths=cfg["depths"],
                decoder_depths=cfg["decoder_depths"],
                num_heads=cfg["num_heads"],
                refinement_depth=cfg["refinement_depth"],
                size_multiple=multiple,
                global_residual=cfg["global_residual"],
                bayer_input=cfg["bayer_input"],
            )
        else:
            self.frame = ColumnarFrame(
                stage_factory,
                in_channels=cfg["in_channels"],
                out_channels=cfg["out_channels"],
                dim=cfg["dim"],
                depths=cfg["depths"],
                num_heads=cfg["num_heads"],
                scale=cfg["scale"],
                body_conv=cfg.get("body_conv", cfg["stage_conv"]),
                size_multiple=multiple,
                upsampler_features=cfg["upsampler_features"],
                rgb_mean=cfg["rgb_mean"] if cfg["in_channels"] == 3 else None,
            )
        # by name, not reference: a deep copy (the EMA's) then finds its own stages
        self._stage_names = [name for name, m in self.named_modules() if any(m is b for b in built)]
        self.descriptor = ModelDescriptor(
            arch=self.arch,
            task=cfg["task"],
            scale=cfg["scale"],
            in_channels=cfg["in_channels"],
            out_channels=cfg["out_channels"],
            size_multiple=multiple,
            tile_multiple=self._tile_multiple(cfg, multiple),
            supports_k=self.supports_k,
            window_tokens=first_level(cfg["window_size"]) ** 2 if self.supports_k else None,
            bayer_input=bool(cfg.get("bayer_input", False)),
        )

    @staticmethod
    def _tile_multiple(cfg: dict, multiple: int) -> int:
        """What tiles align to so that each sees the whole image's window grid: the size multiple, and
        for U-Nets the coarser levels' windows (window * 2**level input pixels)."""
        if cfg["layout"] != "unet":
            return multiple
        windows = cfg["window_size"]
        windows = windows if isinstance(windows, (list, tuple)) else [windows] * len(cfg["dims"])
        return math.lcm(multiple, *(w * 2**i for i, w in enumerate(windows)))

    def make_stage(self, spec: StageSpec, drop_path: list[float]) -> nn.Module:
        """The stage at `spec`, with one drop-path rate per layer."""
        raise NotImplementedError

    def stages(self) -> list[nn.Module]:
        """The transformer stages `make_stage` built (what gradient checkpointing wraps)."""
        return [self.get_submodule(name) for name in self._stage_names]

    def size_multiple(self, cfg: dict) -> int:
        """What the frame pads the input's sides to a multiple of: the downsamplings' 8 for U-Nets, and
        the windows as far as an architecture wants them whole (SemanIR's U-Net pads a coarse level to
        its window itself, rather than every image to 8 windows)."""
        raise NotImplementedError

    def training_advice(self, patch: int) -> list[str]:
        """Settings that training on patches of `patch` input pixels would leave untrained (the trainer
        prints them)."""
        return []

    def forward(self, x: torch.Tensor, **runtime) -> torch.Tensor:
        """Run-time options (SemanIR's `k=`, `backend=`, which its forward names) reach every stage; an
        architecture without them refuses any, as its stages would ignore a `k` silently."""
        if runtime and not self.supports_k:
            raise TypeError(
                f"{self.arch}: takes no run-time options, got {', '.join(sorted(runtime))} "
                f"(k and backend are SemanIR's)"
            )
        if x.dim() != 4 or x.shape[1] != self.descriptor.in_channels:
            raise ValueError(
                f"{self.arch}: expected input (B, {self.descriptor.in_channels}, H, W), got {tuple(x.shape)}"
            )
        return self.frame(x, **runtime)
