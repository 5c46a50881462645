"""SemanIR: windowed attention restricted to a key-semantic dictionary shared by a whole stage.

Ren et al., "Sharing Key Semantics in Transformer Makes Efficient Image Restoration" (NeurIPS 2024).
At the start of each stage every token picks its top-k most similar tokens in its window (no gradient);
each layer of the stage then attends only to those k keys. Three attention backends give the same
numbers: `mask` (dense scores, -inf outside the dictionary; fast to backpropagate), `gather` (gathers
the k keys/values per query in chunks under a memory budget) and `fused` (the gather path compiled by
`torch.compile` so that the gathered keys are never materialised; falls back to `gather`). `auto`
chooses per call. See docs/semanir.md for the options and the U-Net layout.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import frames
from .descriptor import Preset
from .frames import FramedModel, StageSpec
from .layers import (
    TILE_TOKENS,
    ContinuousPositionBias,
    ResidualLayer,
    Size2,
    cosine_logit_scale,
    cosine_temperature,
    make_stage_conv,
    pad_to_multiple,
    relative_position_index,
    shape_cache,
    take_bias,
    window_partition,
    window_reverse,
)

# random-k training draws one per forward pass (`SemanIR.k_choices`); by default from those that fit a
# window, since a k above the window's tokens only repeats the dense window (`random_k`)
RANDOM_K_CHOICES = (64, 128, 192, 256, 384, 512)
BACKENDS = ("auto", "mask", "gather", "fused")

# `auto` on CPU runs the fused sparse path for windows of at least FUSED_MIN_N tokens whose dictionary
# is at most this dense (k / N, without / with backward); elsewhere the dense `mask` path's matrix
# products win. Fitted to benchmarks/attention.py on a 2-core CPU (docs/semanir.md has the table).
FUSED_MIN_N = 1024
FUSED_MAX_DENSITY = 0.5
FUSED_MAX_DENSITY_BACKWARD = 0.125
FUSED_CHUNK_BYTES = 8 * 2**20
CHUNK_BYTES = 256 * 2**20  # what a backend's chunks may hold when called without a budget
# CPU inference goes through a stage in pieces of windows only for windows this large: in ad-hoc A/Bs
# SemanIR-S (1024 tokens) gained at 256x256 and the tiny U-Net (256 tokens) lost at 481x321
TILE_MIN_WINDOW = 1024


# --------------------------------------------------------------------------- the dictionary


class KeySemanticDictionary:
    """The per-stage top-k index, `(B * nW, N, k)`, with the derived tensors the backends need.

    Derived tensors (the dense boolean mask, the position-bias rows of the selected keys) are computed
    on first use and then shared by every layer of the stage, like the index itself; so is the `mask`
    backend's scratch memory in inference.
    """

    def __init__(self, index: torch.Tensor, window: Size2) -> None:
        self.index = index
        self.window = window
        self._allowed: torch.Tensor | None = None
        self._bias_rows: torch.Tensor | None = None
        self._scratch: torch.Tensor | None = None

    @property
    def k(self) -> int:
        return self.index.shape[-1]

    def allowed(self) -> torch.Tensor:
        """`(B * nW, 1, N, N)` bool: True where key j is in query i's dictionary."""
        if self._allowed is None:
            b, n, _ = self.index.shape
            allowed = torch.zeros((b, n, n), dtype=torch.bool, device=self.index.device)
            self._allowed = allowed.scatter_(2, self.index, True).unsqueeze(1)
        return self._allowed

    def bias_rows(self) -> torch.Tensor:
        """`(B * nW, N, k)`: row of the relative-position table for each (query, selected key)."""
        if self._bias_rows is None:
            rel = relative_position_index(self.window, self.index.device)
            b, n, _ = self.index.shape
            self._bias_rows = rel.expand(b, n, n).gather(2, self.index)
        return self._bias_rows

    def scratch(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Uninitialised memory of `shape` for the layers of the stage to reuse: freshly allocated
        per layer, a 128x128 SR input at k = 512 paged in gigabytes per call."""
        s = self._scratch
        if s is None or s.shape != shape or s.dtype != like.dtype or s.device != like.device:
            self._scratch = s = like.new_empty(shape)
        return s


def _by_windows(fn: Callable[..., torch.Tensor], step: int, *tensors: torch.Tensor) -> torch.Tensor:
    """`fn` over chunks of `step` windows (dim 0) of every tensor, the results concatenated.

    How the dictionary and the dense and fused backends bound their memory at any input size.
    """
    outs = [fn(*chunk) for chunk in zip(*(t.split(step) for t in tensors), strict=True)]
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def build_dictionary(
    tokens: torch.Tensor, k: int, window: Size2, similarity: str = "dot", chunk_bytes: int = 64 * 2**20
) -> KeySemanticDictionary:
    """Top-k most similar tokens of each token in its window; `tokens` is `(B * nW, N, C)`.

    No gradient and no parameters: the dictionary only decides which keys each query may see. Windows
    go in chunks whose `(c, N, N)` similarities stay under `chunk_bytes`: the whole map's would be
    1 GiB at 512x512 (N = 1024), where top-k took 5.4x its time at 256x256 for 4x the windows.
    """
    with torch.no_grad():
        t = tokens.detach()
        if similarity == "cosine":
            t = F.normalize(t, dim=-1)
        elif similarity != "dot":
            raise ValueError(f"semanir: unknown similarity {similarity!r}; expected 'dot' or 'cosine'")
        n = t.shape[1]
        step = max(1, chunk_bytes // (n * n * t.element_size()))
        k = min(k, n)
        index = _by_windows(
            lambda c: torch.topk(c @ c.transpose(1, 2), k, dim=-1, sorted=False).indices, step, t
        )
    return KeySemanticDictionary(index, window)


# --------------------------------------------------------------------------- attention backends
# q, k, v: (B', N, h, d), q already scaled; table: (h, T) position bias; returns (B', N, h, d).


@shape_cache()
def _minus_inf(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The masked-out score, made once per device: a new CUDA scalar per layer is a blocking copy."""
    return torch.tensor(float("-inf"), device=device, dtype=dtype)


def mask_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor,
    dictionary: KeySemanticDictionary,
    chunk_bytes: int = CHUNK_BYTES,
) -> torch.Tensor:
    """Dense N x N scores with -inf outside the dictionary (the paper's training path).

    Windows go through in chunks whose `(c, h, N, N)` masks stay under `chunk_bytes`, instead of
    materialising every window's per-head mask at once (9.5 GB for a 512x512 map at N = 1024). Without
    autograd the chunks, and the layers of the stage, share one mask buffer, so its pages are faulted
    in once per stage, not per chunk and layer.
    """
    b, n, h, _ = q.shape
    rel = relative_position_index(dictionary.window, table.device)
    bias = take_bias(table, rel).to(q.dtype)  # (h, N, N)
    allowed = dictionary.allowed()  # (B', 1, N, N)
    step = max(1, chunk_bytes // (h * n * n * q.element_size()))
    buffer = None if torch.is_grad_enabled() else dictionary.scratch((min(step, b), h, n, n), q)
    excluded = _minus_inf(bias.device, bias.dtype)

    def attend(qc: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        out = None if buffer is None else buffer[: len(chunk)]
        mask = torch.where(chunk, bias, excluded, out=out)  # autograd: a fresh mask per chunk
        return F.scaled_dot_product_attention(qc, kc, vc, attn_mask=mask, scale=1.0)

    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B', h, N, d)
    return _by_windows(attend, step, qh, kh, vh, allowed).transpose(1, 2)


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x (B', N, h, d)`, `index (B', n, k)` -> `(B', n, k, h, d)`: whole token rows, all heads at once."""
    batch = torch.arange(x.shape[0], device=x.device).view(-1, 1, 1)
    return x[batch, index]


def gather_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor,
    dictionary: KeySemanticDictionary,
    chunk_bytes: int = CHUNK_BYTES,
) -> torch.Tensor:
    """Gather the k keys/values of each query and attend over them only: O(N k) scores.

    Queries are processed in chunks so that the gathered keys and values stay under `chunk_bytes`.
    Keys are gathered per head (`(B', h, c, k, d)`) so that the scores are plain batched products.
    """
    b, n, h, d = q.shape
    kk = dictionary.k
    per_query = 2 * b * kk * h * d * q.element_size()
    step = max(1, min(n, chunk_bytes // per_query))
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B', h, N, d)
    batch = torch.arange(b, device=q.device).view(-1, 1, 1, 1)
    head = torch.arange(h, device=q.device).view(1, -1, 1, 1)
    rows = dictionary.bias_rows()
    outs = []
    for s in range(0, n, step):
        index = dictionary.index[:, None, s : s + step]  # (B', 1, c, k)
        keys, values = kh[batch, head, index], vh[batch, head, index]  # (B', h, c, k, d)
        bias = take_bias(table, rows[:, s : s + step]).transpose(0, 1).to(q.dtype)  # (B', h, c, k)
        scores = (qh[:, :, s : s + step, None] @ keys.transpose(-1, -2)).squeeze(-2) + bias
        outs.append((scores.softmax(-1).unsqueeze(-2) @ values).squeeze(-2))
    return torch.cat(outs, dim=2).transpose(1, 2)


def _fused_scores(
    q: torch.Tensor, k: torch.Tensor, table: torch.Tensor, index: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """`(B', N, h, k)` scores of each query with its dictionary's keys, plus position bias."""
    # Broadcast product + sum (not einsum) so that the compiler fuses the gather into the reduction:
    # the (B', N, k, h, d) gathered keys are never written to memory.
    keys = _gather_rows(k, index).transpose(2, 3)  # (B', N, h, k, d), a view
    return (q.unsqueeze(3) * keys).sum(-1) + take_bias(table, rows).permute(1, 2, 0, 3)


def _fused_weighted_sum(probs: torch.Tensor, v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`probs (B', N, k, h)` -> `(B', N, h, d)`: the values of each query's dictionary, weighted."""
    return (probs.unsqueeze(-1) * _gather_rows(v, index)).sum(2)


# Windows go in chunks whose (c, N, h, k) scores fit FUSED_CHUNK_BYTES, so that memory stays bounded
# (unchunked, 1.6 GB at k = 256 on a 512x512 map). Two compiled kernels with the softmax between them,
# in the layouts each is fastest in: compiled as one function, the softmax ran over a strided axis and
# did not scale to two threads (docs/semanir.md).
_FUSED_STATE: dict[str, object] = {"scores": None, "weighted_sum": None, "failed": False, "backward": False}


def fused_available() -> bool:
    """False where torch.compile cannot run (e.g. a Python it does not support yet), and once compiling
    the fused path has failed in this process (no compiler, unsupported op)."""
    return not _FUSED_STATE["failed"] and torch._dynamo.is_dynamo_supported()


def _compile_backward_now(
    attend: Callable[..., torch.Tensor], tensors: tuple, bias_table: torch.Tensor, chunks: set[int]
) -> None:
    """Autograd would compile the fused backward at the first .backward(), out of the fallback's reach:
    run forward and backward now on detached copies of chunks of each size the call will use. Identity
    saved-tensor hooks keep the probe out of an enclosing gradient checkpoint's bookkeeping."""
    table = bias_table.detach().requires_grad_(bias_table.requires_grad)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        for size in sorted(chunks - {0}):
            probe = [t[:size].detach().requires_grad_(t.requires_grad) for t in tensors]
            attend(*probe, table).sum().backward()


def fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor,
    dictionary: KeySemanticDictionary,
    chunk_bytes: int = CHUNK_BYTES,
) -> torch.Tensor:
    """The gather path compiled with `torch.compile`; falls back to `gather_attention` (chunked by
    `chunk_bytes`) if compiling fails.

    Shape-only runs (meta tensors: MAC counting) take the eager path: compiling there would leave
    dynamo running these functions uncompiled from then on, real inputs included.
    """
    if fused_available() and q.device.type != "meta":
        try:
            if _FUSED_STATE["scores"] is None:
                _FUSED_STATE["scores"] = torch.compile(_fused_scores, dynamic=None)
                _FUSED_STATE["weighted_sum"] = torch.compile(_fused_weighted_sum, dynamic=None)
            bias_table = table.to(q.dtype)

            def attend(qc, kc, vc, index, rows, bias_table=bias_table):  # the probe passes a detached table
                scores = _FUSED_STATE["scores"](qc, kc, bias_table, index, rows)
                probs = scores.softmax(-1).transpose(2, 3).contiguous()  # (c, N, k, h)
                return _FUSED_STATE["weighted_sum"](probs, vc, index)

            b, n, h, _ = q.shape
            step = max(1, FUSED_CHUNK_BYTES // (n * h * dictionary.k * q.element_size()))
            tensors = (q, k, v, dictionary.index, dictionary.bias_rows())
            needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, bias_table))
            if needs_grad and not _FUSED_STATE["backward"]:
                _compile_backward_now(attend, tensors, bias_table, chunks={min(step, b), b % step})
                _FUSED_STATE["backward"] = True
            return _by_windows(attend, step, *tensors)
        except Exception as err:  # any compiler failure means: use the eager path
            _FUSED_STATE["failed"] = True
            warnings.warn(
                f"semanir: fused attention unavailable ({type(err).__name__}); using 'gather'", stacklevel=2
            )
    return gather_attention(q, k, v, table, dictionary, chunk_bytes=chunk_bytes)


def choose_backend(
    n: int,
    k: int,
    *,
    batch: int,
    heads: int,
    dim: int,
    device: torch.device,
    backward: bool,
    memory_bytes: int,
) -> str:
    """What `auto` runs for one attention call over `batch` windows of `n` tokens.

    On CPU the fused sparse path wins when windows are large and the dictionary sparse; otherwise the
    dense path (what the paper trains with), which in inference runs windows in chunks under the budget;
    with autograd every chunk's scores are kept, so a sparse path takes over when they would not fit
    `memory_bytes`: fused on CPU (3-4x faster than gather there, with a fifteenth of its memory), else
    gather, but only where it keeps less for the backward pass: its gathered keys and values and k scores
    (k (2C + 3h) per query) outgrow the dense scores (3 h N) once k > 3hN / (2C + 3h), 48 at SemanIR-S's
    N = 1024. On GPU there is no fused kernel (none measured there): mask, or gather where it keeps less.
    """
    if k >= n:
        return "mask"
    fused = device.type == "cpu" and n >= FUSED_MIN_N and fused_available()
    density = FUSED_MAX_DENSITY_BACKWARD if backward else FUSED_MAX_DENSITY
    if fused and k <= density * n:
        return "fused"
    if not backward:
        return "mask"  # inference: windows go in chunks under the budget
    dense = 3 * heads * n  # per query, what autograd keeps: scores, mask and probabilities
    if batch * n * dense * 4 <= memory_bytes:
        return "mask"
    if fused:
        return "fused"
    return "gather" if k * (2 * dim + 3 * heads) < dense else "mask"  # gathered keys and values, k scores


class KSAttention(nn.Module):
    """Multi-head attention of each query over the keys its dictionary lists, with cosine scores."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        attn_type: str = "cosine",
        backend: str = "auto",
        cpb_hidden: int = 512,
        memory_mb: int = 1024,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"semanir: dim {dim} is not divisible by num_heads {num_heads}")
        if attn_type not in ("cosine", "dot"):
            raise ValueError(f"semanir: unknown attn_type {attn_type!r}; expected 'cosine' or 'dot'")
        if backend not in BACKENDS:
            raise ValueError(f"semanir: unknown backend {backend!r}; expected one of {BACKENDS}")
        self.num_heads = num_heads
        self.attn_type = attn_type
        self.backend = backend
        self.memory_bytes = memory_mb * 2**20
        self.qkv = nn.Linear(dim, 3 * dim)
        if attn_type == "cosine":
            self.logit_scale = cosine_logit_scale(num_heads)
        self.cpb = ContinuousPositionBias(num_heads, cpb_hidden)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, dictionary: KeySemanticDictionary, backend: str | None = None
    ) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(b, n, 3, h, c // h).unbind(2)
        if self.attn_type == "cosine":
            scale = cosine_temperature(self.logit_scale).view(1, 1, h, 1)
            q, k = F.normalize(q, dim=-1) * scale, F.normalize(k, dim=-1)
        else:
            q = q * (c // h) ** -0.5
        table = self.cpb(dictionary.window)
        backend = backend or self.backend
        if backend == "auto":
            backend = choose_backend(
                n,
                dictionary.k,
                batch=b,
                heads=h,
                dim=c,
                device=x.device,
                backward=torch.is_grad_enabled() and x.requires_grad,
                memory_bytes=self.memory_bytes,
            )
        if backend == "mask":
            out = mask_attention(q, k, v, table, dictionary, chunk_bytes=self.memory_bytes // 4)
        elif backend == "gather":
            out = gather_attention(q, k, v, table, dictionary, chunk_bytes=self.memory_bytes // 4)
        else:
            out = fused_attention(q, k, v, table, dictionary, chunk_bytes=self.memory_bytes // 4)
        return self.proj(out.reshape(b, n, c))


# --------------------------------------------------------------------------- layer and stage


class SemanIRLayer(ResidualLayer):
    """Residual key-semantic attention + MLP; post-norm as in GRL, pre-norm as an option.

    Called as `layer(tokens, dictionary, backend)`.
    """

    def __init__(
        self, dim: int, num_heads: int, *, mlp_ratio: float, norm: str, drop_path: float, **attn_options
    ) -> None:
        attn = KSAttention(dim, num_heads, **attn_options)
        super().__init__(dim, attn, mlp_ratio=mlp_ratio, norm=norm, drop_path=drop_path)


class SemanIRStage(nn.Module):
    """Dictionary (once) -> `depth` layers sharing it -> stage conv -> + stage input.

    Windows are `window_size` square, shrunk to the feature map when it is smaller (coarse U-Net
    levels); k is clamped to the window's token count. Nothing crosses a window before the stage conv,
    so CPU inference takes windows of at least `TILE_MIN_WINDOW` tokens through dictionary and
    layers about `TILE_TOKENS` tokens at a time (same result).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        window_size: int,
        similarity: str = "dot",
        stage_conv: str = "conv1",
        drop_path: Sequence[float] = (),
        **layer_options,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.similarity = similarity
        rates = list(drop_path) or [0.0] * depth
        self.layers = nn.ModuleList(
            SemanIRLayer(dim, num_heads, drop_path=rates[i], **layer_options) for i in range(depth)
        )
        self.conv = make_stage_conv(stage_conv, dim)

    def forward(self, x: torch.Tensor, k: int, backend: str | None = None, **_) -> torch.Tensor:
        _, h, w, _ = x.shape
        window = (min(self.window_size, h), min(self.window_size, w))
        padded = pad_to_multiple(x, window, channels_last=True)
        hp, wp = padded.shape[1:3]
        tokens = window_partition(padded, window)

        def windows(chunk: torch.Tensor) -> torch.Tensor:
            dictionary = build_dictionary(chunk, k, window, self.similarity)
            for layer in self.layers:
                chunk = layer(chunk, dictionary, backend)
            return chunk

        if torch.is_grad_enabled() or x.device.type != "cpu" or tokens.shape[1] < TILE_MIN_WINDOW:
            step = len(tokens)
        else:  # windows are independent through the whole stage: a few at a time stay in cache
            step = max(1, TILE_TOKENS // tokens.shape[1])
        out = window_reverse(_by_windows(windows, step, tokens), window, hp, wp)[:, :h, :w]
        return x + self.conv(out)


# --------------------------------------------------------------------------- the network

_COMMON = {
    "arch": "semanir",
    "window_size": 32,
    "k": 512,  # inference default; any k works at run time (model(x, k=...))
    "train_k": "random",  # "random": draw from RANDOM_K_CHOICES per training forward; "fixed": use k
    "random_k": "fit",  # "fit": the choices that fit a window; "clamp": all six, clamped to it (the paper)
    "mlp_ratio": 2.0,
    "attn_type": "cosine",
    "norm": "post",
    "similarity": "dot",
    "backend": "auto",
    "memory_mb": 1024,
    "cpb_hidden": 512,
    "stage_conv": "conv1",
    "drop_path": 0.0,
}
COLUMNAR_DEFAULTS = {
    **frames.COLUMNAR_DEFAULTS,
    **_COMMON,
    "body_conv": "conv1",
}
UNET_DEFAULTS = {
    **frames.UNET_DEFAULTS,
    **_COMMON,
    "task": "denoise",
    "dims": [64, 128, 256, 384],
    "depths": [4, 4, 6, 8],
    "decoder_depths": [4, 4, 6],
    "num_heads": [2, 4, 8, 12],
    "refinement_depth": 4,
}


class SemanIR(FramedModel):
    """A frame (columnar or U-shaped) built from SemanIR stages; `model(x, k=None, backend=None)`.

    k=None uses `config["k"]`, or in training mode a k drawn from `k_choices`: with `train_k="random"`
    the `RANDOM_K_CHOICES` that fit a window (`random_k="fit"`) or all of them clamped to the window's
    tokens (`"clamp"`, the paper's rule), else none (one draw per forward pass, shared by all stages).
    """

    arch = "semanir"
    columnar_defaults = COLUMNAR_DEFAULTS
    unet_defaults = UNET_DEFAULTS
    supports_k = True

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        train_k = self.config["train_k"]
        if train_k not in ("random", "fixed"):
            raise ValueError(f"semanir config: train_k must be 'random' or 'fixed', got {train_k!r}")
        self.k = int(self.config["k"])
        draw = self.config["random_k"]
        if draw not in ("fit", "clamp"):
            raise ValueError(f"semanir config: random_k must be 'fit' or 'clamp', got {draw!r}")
        tokens = self.descriptor.window_tokens
        if draw == "fit":
            choices = tuple(c for c in RANDOM_K_CHOICES if c <= tokens) or (tokens,)
        else:  # a dense window as often as the choices above it
            choices = tuple(min(c, tokens) for c in RANDOM_K_CHOICES)
        self.k_choices = choices if train_k == "random" else ()

    def make_stage(self, spec: StageSpec, drop_path: list[float]) -> nn.Module:
        cfg = self.config
        return SemanIRStage(
            spec.dim,
            spec.depth,
            spec.num_heads,
            window_size=cfg["window_size"],
            similarity=cfg["similarity"],
            stage_conv=cfg["stage_conv"],
            drop_path=drop_path,
            mlp_ratio=cfg["mlp_ratio"],
            norm=cfg["norm"],
            attn_type=cfg["attn_type"],
            backend=cfg["backend"],
            cpb_hidden=cfg["cpb_hidden"],
            memory_mb=cfg["memory_mb"],
        )

    def size_multiple(self, cfg: dict) -> int:
        if cfg["layout"] == "columnar":
            return cfg["window_size"]
        # level i is 1/2**i of the input; a stage pads to its window where the level is smaller
        return math.lcm(8, cfg["window_size"])

    def forward(self, x: torch.Tensor, k: int | None = None, backend: str | None = None) -> torch.Tensor:
        if k is None:
            if self.training and self.k_choices:
                k = self.k_choices[int(torch.randint(len(self.k_choices), ()))]
            else:
                k = self.k
        if k < 1:
            raise ValueError(f"semanir: k must be >= 1, got {k}")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"semanir: unknown backend {backend!r}; expected one of {BACKENDS}")
        return super().forward(x, k=k, backend=backend)


def build(config: dict) -> SemanIR:
    return SemanIR(config)


# --------------------------------------------------------------------------- presets


def _sr(name: str, scale: int, reported: float | None, note: str = "", **extra) -> Preset:
    return frames.sr_preset("semanir", name, scale, reported, note, **extra)


def _unet(name: str, task: str, channels: int, reported: float | None, note: str = "", **extra) -> Preset:
    return frames.unet_preset("semanir", name, task, channels, reported, note, **extra)


# The tiny presets' windows hold 256 tokens; k = 128 keeps half of them. Trained with k drawn from 64 to
# 512 (clamped to 256), the shipped models score 0.03-0.22 dB more at k = 128 than at the former 64 and
# at most 0.06 dB more again when dense (k = 256; docs/zoo.md).
_TINY_K = 128
_TINY_SR = {"dim": 48, "num_heads": 3, "window_size": 16, "k": _TINY_K}
_TINY_UNET = {
    "dims": [32, 48, 64, 96],  # 32 at full resolution: +0.2 dB on Set12 sigma 25 over 16 in fewer steps
    "depths": [1, 1, 2, 2],
    "decoder_depths": [1, 1, 2],
    "num_heads": [1, 2, 2, 4],
    "refinement_depth": 1,
    "window_size": 16,
    "k": _TINY_K,
}
_PROJECT = frames.PROJECT_NOTE

PRESETS: list[Preset] = [
    *(_sr(f"semanir-s-sr-x{s}", s, r, depths=[6] * 6) for s, r in ((2, 11.87), (3, 12.05), (4, 12.02))),
    *(_sr(f"semanir-b-sr-x{s}", s, r, depths=[8] * 8) for s, r in ((2, 19.90), (3, 20.08), (4, 20.04))),
    *(
        _unet(f"semanir-unet-{task}-{kind}", task, ch, 25.82, "layout chosen to match the reported size")
        for task in ("denoise", "jpeg")
        for kind, ch in (("gray", 1), ("color", 3))
    ),
    _unet(
        "semanir-unet-demosaic", "demosaic", 1, 25.82, "RGGB mosaic in; residual on bilinear interpolation"
    ),
    _unet("semanir-unet-deblur", "deblur", 3, 25.82, "layout chosen to match the reported size"),
    *(_sr(f"semanir-t-sr-x{s}", s, None, _PROJECT, depths=[2, 2, 2], **_TINY_SR) for s in (2, 3, 4)),
    *(
        _unet(f"semanir-t-{task}-{kind}", task, ch, None, _PROJECT, **_TINY_UNET)
        for task in ("denoise", "jpeg")
        for kind, ch in (("gray", 1), ("color", 3))
    ),
]
