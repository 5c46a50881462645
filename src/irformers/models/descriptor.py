"""What a built model needs from its callers, and presets as plain data.

Inference and training read `model.descriptor` instead of guessing from the architecture: how much
to upscale, which channels go in and out, what the input size must be a multiple of (the frame pads
to it internally; tiling uses it to choose tile sizes), which dtypes it runs in, whether `k=` applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelDescriptor:
    arch: str
    task: str
    scale: int
    in_channels: int
    out_channels: int
    size_multiple: int
    dtypes: tuple[str, ...] = DTYPES
    supports_k: bool = False  # model(x, k=...) trades accuracy for speed at run time
    window_tokens: int | None = None  # with supports_k: the most keys a query can have (a larger k is all)
    tile_multiple: int = 0  # tile sizes and starts: a U-Net's coarsest window grid; 0: the size multiple
    fp16_safe: bool = False  # float16 inference checked to stay close to float32
    bayer_input: bool = False  # an RGGB mosaic in: a flip would shift its colour phase

    def __post_init__(self) -> None:
        if not self.tile_multiple:
            object.__setattr__(self, "tile_multiple", self.size_multiple)


@dataclass(frozen=True)
class Preset:
    """A named configuration; `config` is the plain dict `build_model` turns into a network."""

    name: str
    arch: str
    task: str
    scale: int
    in_channels: int
    config: dict = field(hash=False)
    reported_params_m: float | None  # the paper's figure, millions; None for the project's own presets
    note: str = ""
