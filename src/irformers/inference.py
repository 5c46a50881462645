"""Inference on images of any size: tiles blended without seams, self-ensemble, precision, model loading.

Tiling keeps memory bounded by the tile whatever the image size. Tiles are square, a multiple of the
model's grid (the descriptor's ``tile_multiple``: its size multiple, for U-Nets the coarsest level's
window), and start on multiples of it, so every tile sees the same windows as a whole-image pass, but
for Hi-IR's L3 blocks (planned from the size of what runs) and a short last tile whose coarse U-Net levels
are smaller than a window (which shrinks to them); tiled and untiled outputs differ mostly where context
was cut at a tile edge (README, Tiling, has measured scores). Neighbouring tiles overlap,
and each is weighted by a raised-cosine ramp across the overlap (weight near 0 at a tile's own edge,
where it lacks context); the weights of a grid of tiles are separable and are normalised per axis, so
they sum to exactly one everywhere and the output needs no weight buffer.
"""

from __future__ import annotations

import difflib
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from irformers.data.io import InputError
from irformers.devices import fp32_context, native_bf16, resolve_device
from irformers.engine.checkpoint import (
    WEIGHTS_FILE,
    WEIGHTS_SUFFIXES,
    CheckpointError,
    build_from_metadata,
    check_weights_suffix,
    convert_state_dict,
    load_weights,
    model_from_file,
    read_metadata,
    read_state_dict,
)
from irformers.models import PRESETS, build_model
from irformers.models.frames import first_level
from irformers.models.presets import bundled_weights

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# the explicit precisions (`descriptor.DTYPES` names what a model supports)
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_MEMORY_MB = 1024  # activation budget for --tile auto on CPU; on CUDA half the free memory
FLOAT_MAX = 16.0  # unclipped noise of the largest sigma (255) stays below 7: 0-255 floats do not

TileFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- models


def load_model(
    spec: str | Path,
    *,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    allow_random_init: bool = False,
) -> nn.Module:
    """A model in eval mode from a preset name (its bundled weights), an irformers ``.safetensors``
    file (self-describing), or a foreign weights file loaded into preset ``arch`` through the converter.

    ``allow_random_init`` builds a preset that ships no weights untrained (smoke tests, benchmarks), from
    seed 0, so runs repeat; such a model has ``model.random_init = True``. Errors are ``CheckpointError``
    with one line.
    """
    path = Path(spec)
    try:
        device = resolve_device(device)  # before loading: "auto" and a missing GPU fail in one line too
    except ValueError as err:
        raise CheckpointError(f"device: {err}") from None
    if arch is not None and arch not in PRESETS:
        raise CheckpointError(f"--arch {arch}: unknown preset (see `irformers models`)")
    if path.is_file():
        check_weights_suffix(path)
        if arch is None:
            if path.suffix.lower() != ".safetensors":
                read_state_dict(path)  # a training state or a damaged file says so, not "foreign"
            if path.suffix.lower() != ".safetensors" or "config" not in read_metadata(path):
                raise CheckpointError(
                    f"{path}: foreign weights (no irformers config inside); pass --arch PRESET to say "
                    f"which network they belong to"
                )
            model = model_from_file(path)
        else:
            if "config" in read_metadata(path):
                raise CheckpointError(
                    f"{path}: an irformers weights file, which names its own network; --arch {arch} is "
                    f"for foreign weights (leave it out)"
                )
            model = load_weights(build_model(arch), path)
            model.metadata = {"preset": arch, "source": str(path)}
    elif str(spec) in PRESETS:
        if arch is not None:
            raise CheckpointError(f"--arch {arch}: names the network of a weights file; {spec} is a preset")
        weights = bundled_weights(str(spec))
        if weights is not None:
            model = model_from_file(weights)
        elif allow_random_init:
            with torch.random.fork_rng(devices=[]):  # the same weights every run, the caller's RNG untouched
                torch.manual_seed(0)
                model = build_model(str(spec))
            model.random_init = True
        else:
            raise CheckpointError(
                f"{spec}: no trained weights ship for this preset yet; pass --model FILE.safetensors "
                f"(weights you trained), or --allow-random-init for smoke tests only"
            )
    elif path.is_dir():
        raise _folder_error(path)
    elif path.suffix.lower() in WEIGHTS_SUFFIXES or len(path.parts) > 1:
        raise CheckpointError(f"{path}: no such file")
    else:
        close = difflib.get_close_matches(str(spec), PRESETS, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else " (see `irformers models`)"
        raise CheckpointError(f"{spec}: neither a weights file nor a preset name{hint}")
    model.random_init = getattr(model, "random_init", False)
    return model.to(device).eval()


def _folder_error(path: Path) -> CheckpointError:
    run_weights = path / "model.safetensors"  # what `irformers train` writes into its run folder
    hint = f" (this run folder's: {run_weights})" if run_weights.is_file() else ""
    return CheckpointError(f"{path}: a folder, not a weights file; pass the file{hint}")


def describe_checkpoint(path: str | Path) -> dict:
    """What ``irformers info`` prints, for a weights file or a preset that ships weights. An irformers
    file is checked to load into the model its metadata describes; a foreign file needs
    ``--arch PRESET`` to say which network it belongs to."""
    if not Path(path).is_file() and str(path) in PRESETS:
        bundled = bundled_weights(str(path))
        if bundled is None:
            raise CheckpointError(
                f"{path}: no trained weights ship for this preset yet (its config: irformers models --json)"
            )
        path = bundled
    path = Path(path)
    if path.is_dir():
        raise _folder_error(path)
    state = read_state_dict(path)  # refuses pickles that would run code
    meta = read_metadata(path)
    info: dict = {
        "file": str(path),
        "tensors": len(state),
        "dtypes": sorted({str(v.dtype).removeprefix("torch.") for v in state.values()}),
    }
    if "config" not in meta:
        info["format"] = "foreign (load it with --arch PRESET)"
        info["elements"] = sum(v.numel() for v in state.values())
        return info
    with torch.device("meta"):
        model = build_from_metadata(meta, path)
    convert_state_dict(state, model, source=path)  # raises when the file does not fit its own config
    desc = model.descriptor
    info.update(
        format="irformers",
        preset=meta.get("preset", meta["config"].get("name")),
        arch=desc.arch,
        task=desc.task,
        scale=desc.scale,
        channels=f"{desc.in_channels} -> {desc.out_channels}",
        params=sum(p.numel() for p in model.parameters()),
    )
    info.update({k: v for k, v in meta.items() if k not in ("config", "preset")})
    info["config"] = meta["config"]
    return info


def model_label(model: nn.Module, spec: str | Path) -> str:
    """How reports name a model: the preset or file, flagged when its weights are random."""
    path = Path(spec)
    name = str(spec)
    if path.is_file():  # every run folder's weights have one name: the folder tells runs apart
        name = f"{path.parent.name}/{path.name}" if path.name == WEIGHTS_FILE else path.name
    return f"{name} (random init)" if getattr(model, "random_init", False) else name


# --------------------------------------------------------------------------- device and precision


def _warn_caller(message: str, category: type[Warning]) -> None:
    """A warning attributed to the first line outside this module and torch's wrappers (inference_mode):
    the user's, whether it called ``Restorer``, ``restore`` or the CLI."""
    level, frame = 2, sys._getframe(1)

    def inside(name: str) -> bool:
        return name == __name__ or name == "torch" or name.startswith("torch.")

    while frame.f_back is not None and inside(frame.f_globals.get("__name__", "")):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def resolve_precision(precision: str, device: torch.device, model: nn.Module) -> torch.dtype:
    """``auto``: bf16 autocast on CUDA devices that support it, else fp32 (on CPU bf16 is slower and
    lossy). fp16 runs only on CUDA and warns for models the descriptor does not mark fp16-safe."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    desc = model.descriptor
    if precision == "auto":
        bf16 = device.type == "cuda" and native_bf16(device) and "bfloat16" in desc.dtypes
        return torch.bfloat16 if bf16 else torch.float32
    dtype = PRECISION_DTYPES[precision]
    if str(dtype).removeprefix("torch.") not in desc.dtypes:
        raise ValueError(
            f"{desc.arch} models do not run in {precision} (they support {', '.join(desc.dtypes)})"
        )
    if dtype == torch.float16:
        if device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        if not desc.fp16_safe:
            _warn_caller(
                f"{desc.arch}: fp16 inference is not checked for this model and may overflow; "
                f"bf16 is the safe reduced precision",
                UserWarning,
            )
    elif dtype == torch.bfloat16 and device.type == "cuda" and not native_bf16(device):
        raise ValueError("--precision bf16: this CUDA device has no native bfloat16 (before Ampere)")
    return dtype


# --------------------------------------------------------------------------- tile planning


def bytes_per_pixel(model: nn.Module) -> float:
    """Rough peak activation bytes per input pixel, from the config; measured to over-estimate the
    tiny and small presets by about 1.5x on CPU (dense attention path), so auto tiles stay in budget.

    Tokens (~16 floats per channel at full resolution; a U-Net level i holds 1/4**i of the pixels,
    encoder and decoder), dense window scores (2 per head per key), the upsampler's s**2 features.
    """
    cfg, desc = model.config, model.descriptor
    unet = "dims" in cfg
    width = 2 * sum(d / 4**i for i, d in enumerate(cfg["dims"])) if unet else cfg["dim"]
    window = first_level(cfg.get("window_size", 8))
    scores = 2 * first_level(cfg.get("num_heads", 1)) * window**2
    upsampler = 0 if unet else 2 * cfg.get("upsampler_features", 0) * desc.scale**2
    return 4.0 * (16 * width + scores + upsampler)


def memory_budget_mb(device: torch.device) -> float:
    """What `tile="auto"` lets one forward pass use: half the free GPU memory, or `CPU_MEMORY_MB`."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]  # what PyTorch holds cached but unused is free to it
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return 0.5 * free / 2**20
    return CPU_MEMORY_MB


def default_overlap(model: nn.Module) -> int:
    """The size multiple (a window, or Hi-IR's region), at least 32 px: the context a tile's edge needs."""
    return max(model.descriptor.size_multiple, 32)


def plan_tiles(
    model: nn.Module,
    height: int,
    width: int,
    tile: int | str | None = "auto",
    overlap: int | None = None,
    memory_mb: float | None = None,
    device: torch.device | None = None,
) -> tuple[int, int] | None:
    """(tile, overlap) in input pixels, aligned to ``descriptor.tile_multiple``; None = one whole-image pass.

    ``tile="auto"`` picks the largest square tile whose estimated activations fit ``memory_mb`` and tiles
    only when the image does not fit; an explicit tile is rounded down to the grid, and the overlap
    rounded up so that tile starts stay on the grid (the overlap is at least the one asked). Without an
    overlap asked, the default shrinks to leave a tile of one grid step a stride.
    """
    m = model.descriptor.tile_multiple
    asked, overlap = overlap, default_overlap(model) if overlap is None else overlap
    if overlap < 0:
        raise ValueError(f"--tile-overlap must be >= 0, got {overlap}")
    if tile in (None, 0, "none"):
        return None
    if tile == "auto":
        budget = (memory_mb or memory_budget_mb(device or torch.device("cpu"))) * 2**20
        pixels = budget / bytes_per_pixel(model)
        if height * width <= pixels:
            return None
        tile = max(int(math.sqrt(pixels)) // m * m, math.ceil((overlap + m) / m) * m)
    elif not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
        raise ValueError(f"--tile must be a positive number of pixels or 'auto', got {tile!r}")
    tile = max(tile // m * m, m)
    if tile >= height and tile >= width:
        return None
    if asked is None:
        overlap = min(overlap, tile - m)
    stride = (tile - overlap) // m * m
    if stride <= 0:
        raise ValueError(
            f"--tile-overlap {overlap} leaves no stride in a {tile}-pixel tile (tiles and their starts are "
            f"multiples of {m} for this model); use a larger tile or a smaller overlap"
        )
    return tile, tile - stride


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) of the tiles along one axis: starts every ``tile - overlap``; the last tile ends at
    the image border and may be shorter (the model pads it as it would pad the whole image)."""
    if length <= tile:
        return [(0, length)]
    stride, starts = tile - overlap, [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + stride)
    return [(s, min(s + tile, length)) for s in starts]


def axis_weights(spans: list[tuple[int, int]], length: int, scale: int = 1) -> list[torch.Tensor]:
    """Per tile, its 1-D blending weights in output pixels: raised-cosine ramps across the overlaps
    with its neighbours, 1 elsewhere, normalised so that the tiles' weights sum to one at every pixel."""
    raw = []
    for i, (a, b) in enumerate(spans):
        w = torch.ones((b - a) * scale, dtype=torch.float64)
        if i > 0 and spans[i - 1][1] > a:
            n = (spans[i - 1][1] - a) * scale
            w[:n] = torch.sin(math.pi / 2 * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2
        if i + 1 < len(spans) and spans[i + 1][0] < b:
            n = (b - spans[i + 1][0]) * scale
            w[-n:] *= torch.cos(math.pi / 2 * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2
        raw.append(w)
    total = torch.zeros(length * scale, dtype=torch.float64)
    for (a, _), w in zip(spans, raw, strict=True):
        total[a * scale : a * scale + len(w)] += w
    return [(w / total[a * scale : a * scale + len(w)]).float() for (a, _), w in zip(spans, raw, strict=True)]


def tiled_forward(
    fn: TileFn,
    x: torch.Tensor,
    *,
    scale: int,
    out_channels: int,
    tile: int,
    overlap: int,
    progress: bool = False,
) -> torch.Tensor:
    """``fn`` over overlapping tiles of ``x`` (1, C, H, W), blended into one (1, C', sH, sW) output."""
    _, _, h, w = x.shape
    rows, cols = tile_spans(h, tile, overlap), tile_spans(w, tile, overlap)
    wy, wx = axis_weights(rows, h, scale), axis_weights(cols, w, scale)
    out = torch.zeros(1, out_channels, h * scale, w * scale, dtype=torch.float32)
    with _bar(len(rows) * len(cols), "tiles", progress) as bar:  # closed on an error too
        for (y0, y1), ry in zip(rows, wy, strict=True):
            for (x0, x1), rx in zip(cols, wx, strict=True):
                y = fn(x[..., y0:y1, x0:x1])
                out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] += y * (ry[:, None] * rx[None, :])
                bar.update()
    return out


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, disable=not enabled or total < 2)


# --------------------------------------------------------------------------- self-ensemble


def _dihedral(x: torch.Tensor, i: int, inverse: bool = False) -> torch.Tensor:
    """The i-th of the 8 flips/transpositions of the square's symmetry group (or its inverse)."""
    ops = [
        (lambda t: t.transpose(-1, -2)) if i & 4 else None,
        (lambda t: t.flip(-2)) if i & 1 else None,
        (lambda t: t.flip(-1)) if i & 2 else None,
    ]
    for op in reversed(ops) if inverse else ops:
        if op is not None:
            x = op(x)
    return x


def self_ensemble(fn: TileFn, bayer_input: bool = False) -> TileFn:
    """x8 self-ensemble: the mean of the outputs for the 8 flipped/transposed inputs, mapped back.
    An RGGB mosaic stays RGGB only transposed (a flip makes it GRBG, GBRG or BGGR): x2 for those."""
    symmetries = (0, 4) if bayer_input else range(8)

    def run(x: torch.Tensor) -> torch.Tensor:
        return sum(_dihedral(fn(_dihedral(x, i)), i, inverse=True) for i in symmetries) / len(symmetries)

    return run


# --------------------------------------------------------------------------- the restorer


class TileWarning(UserWarning):
    """An asked tile that runs otherwise: rounded to the model's grid, or unable to overlap (seams)."""


def _out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, numpy's MemoryError, or the plain RuntimeError of the CPU's and MPS's
    allocators."""
    text = str(err)
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or (
        "can't allocate memory" in text or "out of memory" in text
    )


class OutOfMemory(InputError):
    """An image the device cannot hold at this tile size; a batch goes on with its next image."""


class Restorer:
    """A model as an ``evaluate.RestoreFn``: float32 H x W x C numpy in [0, 1] in, float32 H' x W' x C' out.

    A gray image given to a color model goes through as three equal channels and comes back as one
    (their mean); a color image given to a gray model is an error, and so is an integer image (scale it,
    or use ``restore``, which does). The model is moved to ``device`` and put in eval mode.

    ``tile``: ``"auto"`` (tiles only when the image would not fit ``memory_mb`` of activations: 1 GiB on
    CPU, half the free memory on CUDA), a side in input pixels, or None / 0 / ``"none"`` for one pass;
    ``overlap``: input pixels shared by neighbouring tiles (None: the model's default); ``k``: SemanIR's
    keys per query at inference; ``device="auto"``: the GPU the model is on, else the first GPU, else the
    CPU; ``progress``: a tqdm bar over tiles; ``compile``: ``torch.compile`` the model (worth it for many
    images of one size). The output is not clipped: a restoration may overshoot [0, 1] a little.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        tile: int | str | None = "auto",
        overlap: int | None = None,
        ensemble: bool = False,
        precision: str = "auto",
        device: str | torch.device | None = "auto",
        k: int | None = None,
        memory_mb: float | None = None,
        progress: bool = False,
        compile: bool = False,
    ) -> None:
        if not hasattr(model, "descriptor"):  # a preset name, or a plain torch module
            raise TypeError(
                f"Restorer takes an irformers model (irformers.load_model or build_model), not "
                f"{type(model).__name__}"
            )
        self.desc = model.descriptor
        tile, overlap, k = (
            int(v) if isinstance(v, np.integer) else v for v in (tile, overlap, k)
        )  # numpy's whole numbers too
        param = next(model.parameters(), None)
        if device in ("auto", None) and param is not None and param.device.type == "cuda":
            device = param.device  # the GPU it is on, not the first one
        try:
            self.device = resolve_device(device)
        except ValueError as err:
            raise ValueError(f"--device: {err}") from None
        self.dtype = resolve_precision(precision, self.device, model)
        if k is not None and not self.desc.supports_k:
            raise ValueError(f"--k applies to SemanIR models only; this is a {self.desc.arch} model")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ValueError(f"--k must be a whole number >= 1, got {k!r}")
        if memory_mb is not None and not memory_mb > 0:  # 0 was the default budget, -5 a math error
            raise ValueError(f"memory_mb must be > 0 (None: the default budget), got {memory_mb!r}")
        self.model = model.to(self.device).eval()
        # compiled once per input shape; tiles share a shape, so a tiled image compiles at most a few times
        self.net = torch.compile(self.model) if compile else self.model
        self.kwargs = {} if k is None else {"k": k}
        self.tile, self.overlap, self.memory_mb = tile, overlap, memory_mb
        self.ensemble, self.progress = ensemble, progress
        plan_tiles(model, 1 << 30, 1 << 30, tile, overlap, memory_mb, self.device)  # options fail early
        self.seam_note: str | None = None  # warned when an image first runs in tiles that cannot overlap
        if isinstance(tile, int) and tile > 0:
            self.tile = self._settle_tile(tile, overlap)
        self.last_plan: tuple[int, int] | None = None

    def _settle_tile(self, tile: int, overlap: int | None) -> int:
        """The tile that runs, rounded to the model's grid (so reports can name it); a `TileWarning` says
        when it is not the one asked, and another, once an image is tiled, when it is too small to overlap
        its neighbours (seams)."""
        grid = self.model.descriptor.tile_multiple
        side = max(tile, grid) + 1  # an image larger than the rounded tile is tiled
        ran, ran_overlap = plan_tiles(self.model, side, side, tile, overlap)
        if ran != tile:
            _warn_caller(f"tile {tile} runs as {ran} (tiles are multiples of {grid} px here)", TileWarning)
        if ran_overlap == 0 and overlap is None:  # not when no overlap was asked for
            self.seam_note = (
                f"{ran}-pixel tiles cannot overlap (their starts are multiples of {grid} px), so seams may "
                f"show; a tile of {2 * grid} or more overlaps them"
            )
        return ran

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device).contiguous()
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            y = self.net(x, **self.kwargs)
        return y.float().cpu()

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        if not np.issubdtype(image.dtype, np.floating):  # uint8 pixels would go in as 0-255
            raise InputError(f"{image.dtype} pixels: Restorer takes float images in [0, 1]")
        if image.ndim not in (2, 3) or 0 in image.shape:  # a batch read as 24 channels; an empty crop
            raise InputError(f"an image of shape {image.shape}: Restorer takes one H x W or H x W x C image")
        if not np.isfinite(image).all():
            raise InputError("an image with NaN or infinite pixels: Restorer takes float images in [0, 1]")
        if image.max() > FLOAT_MAX:  # an image read as 0-255 floats, which came back as garbage
            raise InputError(
                f"pixels up to {float(image.max()):g}: Restorer takes float images in [0, 1] "
                f"(divide 0-255 values by 255)"
            )
        img = image[..., None] if image.ndim == 2 else image
        channels, expected = img.shape[2], self.desc.in_channels
        to_gray = channels == 1 and expected == 3 and self.desc.out_channels == 3
        if to_gray:
            img = np.repeat(img, 3, axis=2)
        elif channels != expected:
            advice = ""
            if channels > 4 and img.shape[0] in (1, 3, 4):  # torch's layout
                advice = " (channels go last, H x W x C; a C x H x W array: a.transpose(1, 2, 0))"
            elif self.desc.bayer_input:  # a gray conversion would be no mosaic
                advice = " (it takes a 1-channel RGGB mosaic: irformers degrade --task demosaic makes one)"
            elif expected == 1:
                advice = " (convert it to gray first, or use a color model)"
            raise InputError(
                f"a {channels}-channel image cannot go through a model that takes {expected} channel(s)"
                + advice
            )
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
        fn = self_ensemble(self._forward, self.desc.bayer_input) if self.ensemble else self._forward
        plan = plan_tiles(self.model, *x.shape[-2:], self.tile, self.overlap, self.memory_mb, self.device)
        self.last_plan = plan  # (tile, overlap) or None: what reports say ran
        if plan is not None and self.seam_note:
            _warn_caller(self.seam_note, TileWarning)
            self.seam_note = None
        try:
            with fp32_context(self.device, self.dtype):  # once per image: the flags are global
                if plan is None:
                    y = fn(x)
                else:
                    y = tiled_forward(
                        fn,
                        x,
                        scale=self.desc.scale,
                        out_channels=self.desc.out_channels,
                        tile=plan[0],
                        overlap=plan[1],
                        progress=self.progress,
                    )
        except (RuntimeError, MemoryError) as err:
            if not _out_of_memory(err):
                raise
            y = None  # what the failed image held is freed once this block ends
        if y is None:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # for the next image
            ran = f"in {plan[0]}-px tiles" if plan else "whole"
            raise OutOfMemory(
                f"out of memory on {self.device} restoring it {ran} ({x.shape[-1]}x{x.shape[-2]}); "
                f"try a smaller --tile"
            )
        out = y[0].permute(1, 2, 0).numpy()
        return out.mean(axis=2, keepdims=True) if to_gray else out


def restore(image: np.ndarray, model: nn.Module | str | Path, **options) -> np.ndarray:
    """Restore one float32 H x W (x C) image in [0, 1] (uint8/uint16 are scaled to it) with a model, or a
    preset name or weights file (``load_model``'s); options as ``Restorer`` (tile, overlap, ensemble,
    precision, device, k, memory_mb, progress, compile). The model is moved to the device, as by
    ``Restorer``, and left in the mode it was in. For many images, one ``Restorer`` skips the set-up."""
    if not isinstance(image, np.ndarray):  # a tensor failed inside numpy ("Cannot interpret 'torch.float32'")
        raise TypeError(
            f"restore takes a numpy array (H x W x C), not {type(image).__name__}; a tensor: "
            f"t.permute(1, 2, 0).cpu().numpy(), or call the model itself"
        )
    if image.dtype in (np.uint8, np.uint16):
        image = image.astype(np.float32) / np.iinfo(image.dtype).max
    elif not np.issubdtype(image.dtype, np.floating):
        raise InputError(f"{image.dtype} pixels: restore takes float in [0, 1], uint8 or uint16")
    if isinstance(model, (str, Path)):
        model = load_model(model)
    training = getattr(model, "training", None)
    try:
        out = Restorer(model, **options)(image)
    finally:
        if training is not None:
            model.train(training)
    return out[..., 0] if image.ndim == 2 else out
