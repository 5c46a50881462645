"""MATLAB-exact bicubic ``imresize`` and ``modcrop``.

The super-resolution benchmarks define the low-resolution input as MATLAB's
``imresize(HR, 1/s, 'bicubic')`` on uint8 images, and the "Bicubic" baseline as
``imresize(LR, s, 'bicubic')``. OpenCV, PIL and ``torch.nn.functional.interpolate`` all give
different pixels, so this module re-implements MATLAB's algorithm:

* cubic kernel with a = -0.5 (Keys), support 4;
* when downscaling (scale < 1) the kernel is widened by 1/scale and its height scaled by scale
  (antialiasing);
* output length ``ceil(in * scale)``; output pixel ``x`` (1-based) maps to the input coordinate
  ``u = x / scale + 0.5 * (1 - 1 / scale)``; ``ceil(width) + 2`` taps from ``floor(u - width / 2)``;
  weights normalised to sum 1 per output pixel; out-of-range taps mirrored symmetrically
  (``[1..n, n..1]``, the edge pixel repeated); all-zero tap columns dropped;
* separable: one 1-D pass per dimension, the dimension with the smaller scale factor first and, for
  equal factors, rows (height) first;
* integer input: every pass's result is rounded half away from zero and saturated to the input type,
  including the intermediate image between the two passes (MATLAB does this; it changes the result);
  float input: computed in float64, no rounding, returned in the input's float dtype.

Exactness and speed. Each pass is a product with the (out x in) weight matrix, cached per
``(in_len, out_len, scale)``. The matrix is banded; it is applied in blocks of a few output
positions, each a matrix product with the contiguous input range it touches (evenly spaced blocks
go to the BLAS in one batched numpy call), grouped in tiles whose input is converted to float once
and whose output is rounded while in cache. For 8-bit images the products run in float32, which is
not what MATLAB computes (float64), yet the rounded result is provably the same:

* at scales whose weights are multiples of 2**-K (1/2, 1/4, 2, 4, ...) and small K, every product
  and partial sum is exact in float32, so the value is the exact one; ties (k + 0.5, frequent there)
  are rounded half away from zero;
* otherwise the float32 value is within a rigorous dot-product error bound of the float64 sum; the
  few outputs whose bound interval contains a boundary k + 0.5 are recomputed in float64, tap by tap
  in MATLAB's order.

Other integer types use float64 products with the same two rules; float images use float64 products.
Matrix products are cut into pieces small enough for the BLAS to run each on one thread (OpenBLAS's
own threads spin, and collapse when CPUs are shared, e.g. by data-loader workers); large passes are
spread over a few threads of this module instead (``IRFORMERS_RESIZE_THREADS`` sets how many).
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from numbers import Real

import cv2
import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["imresize", "modcrop"]

_KERNEL_WIDTH = 4.0  # support of the cubic kernel, before widening
_CALL_COST = 1e5  # overhead of one product call, in multiply-adds (a few us), see _layout
_TILE_BYTES = 1 << 22  # converted (float) input per tile: stays in cache
_BLAS_CALL_MNK = 1 << 18  # m*n*k of one BLAS call; OpenBLAS runs calls up to 65536 * 4 on one thread
_MIN_CHUNK_COLS = 128
_MAX_THREADS = 8
_PARALLEL_WORK = 1 << 22  # multiply-adds of a pass below which it runs in the calling thread


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, written as in MATLAB's ``imresize``."""
    absx = np.abs(x)
    # MATLAB writes absx.^2 and absx.^3. Products, not pow(): numpy's pow is a SIMD routine whose
    # last bit can depend on the CPU, and the last bit of a weight decides exact ties (k + 0.5) at
    # some scales. (Dyadic scales such as 1/2, 1/4, 2, 4 are exact either way; the Set5 golden
    # files, 1/2, 1/3 and 1/4, are reproduced either way.)
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return inner + outer


def _output_length(in_len: int, scale: float) -> int:
    """``ceil(in_len * scale)``, robust to the float error of scales like 1/3 or 1/7.

    A product within a few units in the last place of an integer is taken as that integer, so
    ``imresize(x, 1 / s)`` of an image whose sides are multiples of ``s`` gives ``side / s`` for
    every ``s`` (``1 / s`` rounded up could otherwise push ``side * (1 / s)`` just above it).
    """
    v = in_len * scale
    r = round(v)
    if abs(v - r) <= 1e-12 * max(1.0, abs(v)):
        return max(1, int(r))
    return max(1, math.ceil(v))


@lru_cache(maxsize=256)
def _contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: per output position, the taps' weights and 0-based input indices.

    Returns ``(weights, indices)``, both (out_len, P), read-only; the weights of a row sum to 1.
    """
    kernel_width = _KERNEL_WIDTH
    antialias = scale < 1
    if antialias:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, may be out of range
    dist = u[:, None] - indices
    weights = scale * _cubic(scale * dist) if antialias else _cubic(dist)
    # MATLAB's sum(weights, 2) adds the columns one after the other; numpy's pairwise sum can differ
    # in the last bit, which decides exact ties (k + 0.5) at scales such as 2/3.
    total = weights[:, 0].copy()
    for j in range(1, taps):
        total += weights[:, j]
    weights = weights / total[:, None]
    # Symmetric padding: index i (1-based) maps through [1, ..., n, n, ..., 1], periodically.
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = aux[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    weights = np.ascontiguousarray(weights[:, keep])
    idx = np.ascontiguousarray(idx[:, keep])
    weights.flags.writeable = False
    idx.flags.writeable = False
    return weights, idx


@dataclass(frozen=True)
class _Batch:
    """``count`` blocks of ``rows`` consecutive outputs; block k reads ``span`` inputs from
    ``i0 + k * step``. One (batched) matrix product. Positions are relative to the tile."""

    o0: int
    rows: int
    count: int
    i0: int
    step: int
    span: int
    w64: np.ndarray  # (count, rows, span) float64: the band of the weight matrix, zero-padded
    w32: np.ndarray  # the same, float32


@dataclass(frozen=True)
class _Tile:
    o0: int  # output positions [o0, o1)
    o1: int
    i0: int  # input positions [i0, i1): converted to the compute type once per tile
    i1: int
    batches: tuple[_Batch, ...]


@dataclass(frozen=True)
class _Plan:
    in_len: int
    weights: np.ndarray  # (out, P) float64, MATLAB's tap order
    indices: np.ndarray  # (out, P) int64, 0-based
    band_lo: np.ndarray  # (out,) first input position with a nonzero weight
    band_hi: np.ndarray  # (out,) last one + 1
    abs_row_sum: float  # max over outputs of sum_j |w_j|
    nonzeros: int  # max over outputs of the number of nonzero taps
    dyadic_bits: int | None  # smallest K with every weight * 2**K an integer (None: K > 40)

    def error_bound(self, dtype: type, xmax: float) -> float:
        """Bound on |product in ``dtype`` - exact sum| for one output, for inputs in [-xmax, xmax].

        The standard dot-product bound: weights rounded once to ``dtype``, each product and each
        addition rounded once; terms with a zero weight add exactly, so only the nonzero terms count,
        in whatever order the BLAS sums them (fused multiply-adds only round less). The float64
        tap-by-tap sum obeys the same bound with the float64 unit roundoff.
        """
        u = float(np.finfo(dtype).eps) / 2
        n = self.nonzeros + 1
        return (n * u / (1 - n * u) + u) * xmax * self.abs_row_sum

    def is_exact(self, dtype: type, xmax: float) -> bool:
        """Whether products in ``dtype`` of integer inputs in [-xmax, xmax] are exact, in any order.

        True when the weights are multiples of 2**-K (scales 1/2, 1/4, 2, 4, ...) and every partial
        sum, a multiple of 2**-K below xmax * sum|w|, fits the significand: no rounding happens at
        all, so the result is the exact value, which MATLAB's float64 sum also gives. One bit is
        kept spare for adding ``2**-(K+1)`` before rounding (see ``_round_block``).
        """
        if self.dyadic_bits is None:
            return False
        digits = np.finfo(dtype).nmant + 1
        return (xmax + 1) * self.abs_row_sum * 2.0 ** (self.dyadic_bits + 1) < 2.0**digits

    def band(self, o0: int, o1: int) -> tuple[int, int]:
        """The input range [i0, i1) that outputs [o0, o1) read."""
        return int(self.band_lo[o0:o1].min()), int(self.band_hi[o0:o1].max())

    def dense(self, o0: int, o1: int) -> tuple[int, int, np.ndarray]:
        """Rows [o0, o1) of the weight matrix over their band: (i0, i1, (o1 - o0, i1 - i0) float64).

        Taps mirrored onto the same input position are summed (exact for dyadic weights; otherwise
        one rounding, covered by the error bound through ``abs_row_sum``).
        """
        i0, i1 = self.band(o0, o1)
        taps, cols = self.weights[o0:o1], self.indices[o0:o1] - i0
        live = taps != 0  # zero taps may lie outside the band
        rows = np.broadcast_to(np.arange(o1 - o0)[:, None], taps.shape)
        w = np.zeros((o1 - o0, i1 - i0), dtype=np.float64)
        np.add.at(w, (rows[live], cols[live]), taps[live])
        return i0, i1, w


@lru_cache(maxsize=128)
def _weight_plan(in_len: int, out_len: int, scale: float) -> _Plan:
    """The weights of one 1-D resize, with what the products need (cached: sizes repeat)."""
    weights, indices = _contributions(in_len, out_len, scale)
    live = weights != 0
    band_lo = np.where(live, indices, in_len).min(axis=1)
    band_hi = np.where(live, indices, -1).max(axis=1) + 1
    for a in (band_lo, band_hi):
        a.flags.writeable = False
    return _Plan(
        in_len=in_len,
        weights=weights,
        indices=indices,
        band_lo=band_lo,
        band_hi=band_hi,
        abs_row_sum=float(np.abs(weights).sum(axis=1).max()),
        nonzeros=int(live.sum(axis=1).max()),
        dyadic_bits=next((k for k in range(41) if np.all(np.ldexp(weights, k) % 1 == 0)), None),
    )


@lru_cache(maxsize=256)
def _tiling(in_len: int, out_len: int, scale: float, block_rows: int, tile_inputs: int) -> tuple[_Tile, ...]:
    """The banded weight matrix cut into blocks of ``block_rows`` outputs (one product each), grouped
    into tiles that read at most about ``tile_inputs`` input positions (converted once per tile)."""
    plan = _weight_plan(in_len, out_len, scale)
    tiles = []
    o0 = 0
    while o0 < out_len:
        # Grow the tile block by block while its input range stays within tile_inputs.
        o1 = min(out_len, o0 + block_rows)
        while o1 < out_len:
            nxt = min(out_len, o1 + block_rows)
            i0, i1 = plan.band(o0, nxt)
            if i1 - i0 > tile_inputs:
                break
            o1 = nxt
        ti0, ti1 = plan.band(o0, o1)
        blocks = []
        for b0 in range(o0, o1, block_rows):
            b1 = min(o1, b0 + block_rows)
            i0, i1, w = plan.dense(b0, b1)
            blocks.append((b0 - o0, b1 - b0, i0 - ti0, w))
        tiles.append(_Tile(o0, o1, ti0, ti1, _batches(blocks, ti1 - ti0)))
        o0 = o1
    return tuple(tiles)


def _batches(blocks: list[tuple[int, int, int, np.ndarray]], tile_len: int) -> tuple[_Batch, ...]:
    """Runs of blocks (o0, rows, i0, dense weights) with equal rows and evenly spaced inputs, as
    batches: one numpy call each instead of one per block (integer factors and their multiples
    space the blocks evenly; the mirrored borders do not)."""
    runs: list[list[tuple[int, int, int, np.ndarray]]] = []
    for blk in blocks:
        run = runs[-1] if runs else None
        if run and blk[1] == run[0][1]:
            step = run[1][2] - run[0][2] if len(run) > 1 else blk[2] - run[-1][2]
            span = max(max(b[3].shape[1] for b in run), blk[3].shape[1])
            if step > 0 and blk[2] - run[-1][2] == step and blk[2] + span <= tile_len:
                run.append(blk)
                continue
        runs.append([blk])
    out = []
    for run in runs:
        rows, span = run[0][1], max(b[3].shape[1] for b in run)
        step = run[1][2] - run[0][2] if len(run) > 1 else 0
        w64 = np.zeros((len(run), rows, span), dtype=np.float64)
        for k, (_, _, _, w) in enumerate(run):
            w64[k, :, : w.shape[1]] = w
        w32 = w64.astype(np.float32)
        w64.flags.writeable = False
        w32.flags.writeable = False
        out.append(_Batch(run[0][0], rows, len(run), run[0][2], step, span, w64, w32))
    return tuple(out)


def _layout(plan: _Plan, scale: float, m: int, itemsize: int, threads: int) -> tuple[int, int]:
    """Block rows and tile inputs for a pass over (L, m) inputs.

    Block rows: a block of b outputs reads (b - 1) / scale + taps inputs, so bigger blocks multiply
    more zeros, smaller ones cost more calls; b = sqrt(_CALL_COST * scale / m) balances the two.
    Tiles: about _TILE_BYTES of converted input (cache-sized), at least a few kernel widths, and
    enough tiles to keep the threads busy.
    """
    taps = plan.weights.shape[1]
    block_rows = 2 * int(min(32, max(1, round(math.sqrt(_CALL_COST * scale / m) / 2))))  # even: BLAS likes it
    in_len = plan.in_len
    tile_inputs = min(_TILE_BYTES // max(1, m * itemsize), -(-in_len // (2 * threads)))
    tile_inputs = max(tile_inputs, 4 * taps, int((block_rows - 1) / scale) + taps)
    return block_rows, tile_inputs


def _round_half_away(y: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, halves away from zero (MATLAB's ``round`` and integer casts)."""
    a = np.abs(y)
    r = np.floor(a)
    r += (a - r) >= 0.5
    return np.copysign(r, y)


def _sequential(plan: _Plan, x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Outputs ``(rows, cols)`` of one pass over the 2-D ``x``, in float64, tap by tap in MATLAB's order."""
    w = plan.weights[rows]
    ix = plan.indices[rows]
    acc = np.zeros(rows.shape, dtype=np.float64)
    for j in range(w.shape[1]):
        acc += w[:, j] * x[ix[:, j], cols]
    return acc


def _product(bt: _Batch, src: np.ndarray, y: np.ndarray, f32: bool) -> None:
    """``y[block k] = w[k] @ src[inputs of block k]`` for the blocks of ``bt`` (tile-relative).

    One numpy call, whose loop calls the BLAS per block and per column chunk. The chunks are small
    enough for a single-threaded BLAS call: OpenBLAS's own threads spin, and collapse when CPUs are
    shared (data-loader workers, other jobs); the parallelism is ours instead (see ``_pass``), with
    threads that sleep when idle.
    """
    w = bt.w32 if f32 else bt.w64
    m = src.shape[1]
    es = src.itemsize
    chunk = max(_MIN_CHUNK_COLS, _BLAS_CALL_MNK // max(1, bt.rows * bt.span))
    n = m // chunk if m > chunk else 0
    # Views built explicitly (as_strided): a reshape that silently copied would lose the output.
    base_in = src[bt.i0 :]
    base_out = y[bt.o0 : bt.o0 + bt.count * bt.rows]
    if n:
        full = n * chunk
        a = as_strided(base_in, (bt.count, n, bt.span, chunk), (bt.step * m * es, chunk * es, m * es, es))
        c = as_strided(base_out, (bt.count, n, bt.rows, chunk), (bt.rows * m * es, chunk * es, m * es, es))
        np.matmul(w[:, None], a, out=c)
    else:
        full = 0
    if full < m:
        a = as_strided(base_in[:, full:], (bt.count, bt.span, m - full), (bt.step * m * es, m * es, es))
        c = as_strided(base_out[:, full:], (bt.count, bt.rows, m - full), (bt.rows * m * es, m * es, es))
        np.matmul(w, a, out=c)


def _round_block(y: np.ndarray, dst: np.ndarray, margin: float | None, tie_up: float) -> np.ndarray | None:
    """Round the products ``y`` of one block into the integer block ``dst``; ``y`` is scratch.

    ``margin`` None: ``y`` is exact, a multiple of 2**-K; adding ``tie_up`` = 2**-(K+1) (exact)
    moves every tie k + 0.5 above the boundary and nothing else across one, so round-to-nearest-even
    then gives MATLAB's round half up (= half away from zero for non-negative values; negative ones
    saturate to 0 for unsigned types). Otherwise ``y`` is within ``margin`` of the float64 sum:
    outputs whose interval [y - margin, y + margin] holds a rounding boundary are returned (flat
    indices in the block) for re-computation, the others round to nearest.
    """
    if dst.dtype == np.uint8:  # OpenCV rounds to nearest even and saturates in one pass
        if margin is None:
            _checked(cv2.add(y, tie_up, dst=dst, dtype=cv2.CV_8U), dst)
            return None
        lo = _scratch("lo", *y.shape, np.uint8)
        _checked(cv2.add(y, -margin, dst=lo, dtype=cv2.CV_8U), lo)
        _checked(cv2.add(y, margin, dst=dst, dtype=cv2.CV_8U), dst)
        return np.flatnonzero(lo != dst)  # saturated values agree: their result is settled
    info = np.iinfo(dst.dtype)
    if margin is None:
        if info.min < 0:
            r = _round_half_away(y)
        else:
            r = np.add(y, tie_up, out=y)
            np.rint(r, out=r)
        np.clip(r, info.min, info.max, out=r)
        dst[...] = r
        return None
    r = np.rint(y)
    np.subtract(y, r, out=y)  # exact: y and rint(y) are within a factor 2 (or rint(y) = 0)
    np.abs(y, out=y)
    idx = np.flatnonzero(y > 0.5 - margin)
    np.clip(r, info.min, info.max, out=r)
    dst[...] = r
    return idx


def _checked(result: np.ndarray, dst: np.ndarray) -> None:
    if result is not dst:  # OpenCV allocated a new array instead of writing into dst
        dst[...] = result


def _pass_tiles(
    x: np.ndarray, tiles: tuple[_Tile, ...], ct: type, out: np.ndarray, margin: float | None, tie_up: float
) -> np.ndarray | None:
    """Products, and for integer output the rounding, of a run of consecutive tiles.

    Float output: the products go straight into ``out``. Integer output: each tile is rounded while
    it is in cache (``_round_block``); returns the flat indices of the outputs whose rounding the
    products do not settle, or None.
    """
    m = x.shape[1]
    f32 = ct is np.float32
    is_int = np.issubdtype(out.dtype, np.integer)
    convert = x.dtype != ct
    src_buf = _scratch("src", max(t.i1 - t.i0 for t in tiles), m, ct) if convert else None
    y_buf = _scratch("y", max(t.o1 - t.o0 for t in tiles), m, ct) if is_int else None
    near = []
    for t in tiles:
        if convert:
            src = src_buf[: t.i1 - t.i0]
            np.copyto(src, x[t.i0 : t.i1])
        else:
            src = x[t.i0 : t.i1]
        y = y_buf[: t.o1 - t.o0] if is_int else out[t.o0 : t.o1]
        for bt in t.batches:
            _product(bt, src, y, f32)
        if is_int:
            idx = _round_block(y, out[t.o0 : t.o1], margin, tie_up)
            if idx is not None and idx.size:
                near.append(idx + t.o0 * m)
    return np.concatenate(near) if near else None


_LOCAL = threading.local()
_SCRATCH_KEEP = 1 << 24  # scratch buffers up to this size (bytes) are kept for the next call


def _scratch(slot: str, rows: int, cols: int, dtype: type) -> np.ndarray:
    """A (rows, cols) work array of this thread, reused across calls (no fresh pages to fault in)."""
    need = rows * cols * np.dtype(dtype).itemsize
    store = getattr(_LOCAL, "buffers", None)
    if store is None:
        store = _LOCAL.buffers = {}
    buf = store.get(slot)
    if buf is None or buf.nbytes < need:
        buf = np.empty(need, dtype=np.uint8)
        if need <= _SCRATCH_KEEP:
            store[slot] = buf
    return buf[:need].view(dtype).reshape(rows, cols)


def _pass(x: np.ndarray, plan: _Plan, scale: float, slot: str | None = None) -> np.ndarray:
    """One 1-D pass along axis 0 of the C-contiguous 2-D ``x`` (L, M): returns (out_len, M).

    Integer input gives the same integer type, rounded half away from zero and saturated, exactly
    as the float64 tap-by-tap sum rounds; float input must be float64 and gives float64.
    ``slot``: write into that scratch buffer of this thread (an intermediate result).
    """
    in_len, m = x.shape
    out_len = plan.weights.shape[0]
    is_int = np.issubdtype(x.dtype, np.integer)
    # float32 products are exact enough for 8-bit inputs (see below); wider types use float64.
    ct = np.float32 if x.dtype.itemsize == 1 else np.float64
    odt = x.dtype if is_int else ct
    out = _scratch(slot, out_len, m, odt) if slot else np.empty((out_len, m), dtype=odt)
    margin, tie_up = None, 0.0
    if is_int:
        info = np.iinfo(x.dtype)
        xmax = float(max(-int(info.min), int(info.max)))
        if plan.is_exact(ct, xmax):
            tie_up = 2.0 ** -(plan.dyadic_bits + 1)
        else:
            # A computed value farther than the error bound from every k + 0.5 rounds like the
            # float64 sum; the few others are recomputed in float64, tap by tap. The factor 2 covers
            # the float64 sum's own error (same bound, far smaller u) and the summed mirrored taps;
            # the last term the rounding of y +- margin in ``_round_block``.
            margin = 2 * plan.error_bound(ct, xmax) + 4 * float(np.finfo(ct).eps) * (xmax + 1)

    work = out_len * plan.weights.shape[1] * m
    threads = _threads() if work >= _PARALLEL_WORK else 1
    layout = _layout(plan, scale, m, np.dtype(ct).itemsize, threads)
    tiles = _tiling(in_len, out_len, scale, *layout)
    groups = _split(tiles, threads)
    if len(groups) == 1:
        near = [_pass_tiles(x, groups[0], ct, out, margin, tie_up)]
    else:
        near = list(_pool().map(lambda g: _pass_tiles(x, g, ct, out, margin, tie_up), groups))
    near = [n for n in near if n is not None]
    if near:
        info = np.iinfo(x.dtype)
        rows, cols = np.divmod(np.concatenate(near), m)
        exact = _round_half_away(_sequential(plan, x, rows, cols))
        out[rows, cols] = np.clip(exact, info.min, info.max)
    return out


def _split(tiles: tuple[_Tile, ...], n: int) -> list[tuple[_Tile, ...]]:
    """``tiles`` cut into at most ``n`` runs of consecutive tiles of about equal count."""
    n = max(1, min(n, len(tiles)))
    bounds = np.linspace(0, len(tiles), n + 1).round().astype(int)
    return [tiles[a:b] for a, b in itertools.pairwise(bounds) if b > a]


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _threads() -> int:
    """Threads for one pass: IRFORMERS_RESIZE_THREADS, else 1 in a torch data-loader worker (its
    siblings use the other CPUs), else the CPUs this process may use (at most 8)."""
    env = os.environ.get("IRFORMERS_RESIZE_THREADS", "").strip()
    if env.isdigit():
        return max(1, min(_MAX_THREADS, int(env)))
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.utils.data.get_worker_info() is not None:
                return 1
        except AttributeError:
            pass
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(_MAX_THREADS, n))


def _pool() -> ThreadPoolExecutor:
    """The module's worker threads (they sleep when idle), created on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_MAX_THREADS, thread_name_prefix="imresize")
        return _POOL


def _forget_pool_after_fork() -> None:
    # A forked child (e.g. a data-loader worker) has none of the parent's threads: start afresh.
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _swap01(a: np.ndarray, slot: str | None = None) -> np.ndarray:
    """C-contiguous transpose of the first two axes of a 3-D array (OpenCV's transpose when it can).

    ``slot``: write into that scratch buffer of this thread (an intermediate result) instead of a
    new array.
    """
    h, w, c = a.shape
    a = np.ascontiguousarray(a)
    dst = _scratch(slot, w, h * c, a.dtype).reshape(w, h, c) if slot else np.empty((w, h, c), a.dtype)
    if c <= 4:
        src2, dst2 = (a.reshape(h, w), dst.reshape(w, h)) if c == 1 else (a, dst)
        try:
            _checked(cv2.transpose(src2, dst=dst2), dst2)
            return dst
        except cv2.error:  # a dtype this OpenCV does not handle
            pass
    np.copyto(dst, a.transpose(1, 0, 2))
    return dst


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, Real):
        raise ValueError(f"scale must be a positive real number, got {scale!r}")
    s = float(scale)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return s


def _check_length(n: object, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resize like MATLAB's ``imresize(img, scale, 'bicubic')`` (antialiased when downscaling).

    Args:
        img: (H, W) or (H, W, C) array (more trailing dimensions are resized alike). uint8 and other
            integer types (not 64-bit) give the same type, rounded half away from zero and saturated
            after each 1-D pass as MATLAB does; float types are computed in float64 and returned in
            the input dtype, unrounded.
        scale: one factor for both dimensions; the output is ``ceil(scale * (H, W))``.
        output_shape: ``(out_h, out_w)`` instead of ``scale``; the factors are ``out / in`` per
            dimension (MATLAB's ``imresize(img, [out_h out_w], 'bicubic')``).

    Exactly one of ``scale`` and ``output_shape`` must be given.
    """
    if not isinstance(img, np.ndarray):
        raise ValueError(f"img must be a numpy array, got {type(img).__name__}")
    if img.ndim < 2:
        raise ValueError(f"img must be (H, W) or (H, W, C), got shape {img.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1 or img.size == 0:
        raise ValueError(f"img must not be empty, got shape {img.shape}")
    dtype = img.dtype
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"img must have an integer or float dtype, got {dtype}")
    if np.issubdtype(dtype, np.integer) and dtype.itemsize > 4:
        raise ValueError(f"64-bit integer images are not supported (got {dtype})")
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")

    in_h, in_w = img.shape[:2]
    if scale is not None:
        s = _check_scale(scale)
        scales = (s, s)
        out = (_output_length(in_h, s), _output_length(in_w, s))
    else:
        if not isinstance(output_shape, (tuple, list)) or len(output_shape) != 2:
            raise ValueError(f"output_shape must be a pair (out_h, out_w), got {output_shape!r}")
        oh, ow = _check_length(output_shape[0], "out_h"), _check_length(output_shape[1], "out_w")
        scales, out = (oh / in_h, ow / in_w), (oh, ow)

    x = img.reshape(in_h, in_w, -1)
    if np.issubdtype(dtype, np.floating):
        x = x.astype(np.float64, copy=False)
    # MATLAB: sort the factors (stable), resize the dimension with the smaller factor first.
    order = (1, 0) if scales[1] < scales[0] else (0, 1)
    steps: list[int | None] = []  # a pass along axis 0 (after transposing for axis 1), or None: transpose
    for axis in order:
        if out[axis] == x.shape[axis] and scales[axis] == 1.0:
            continue  # identity: the cubic weights are exactly (0, 1, 0, ...)
        steps += [None, axis, None] if axis == 1 else [axis]
    if not steps:
        return img.copy()
    for k, step in enumerate(steps):
        # Intermediate results go to two alternating scratch buffers of this thread; the last is new.
        slot = None if k == len(steps) - 1 else f"step{k % 2}"
        if step is None:
            x = _swap01(x, slot)
        else:
            plan = _weight_plan(x.shape[0], out[step], scales[step])
            x2 = np.ascontiguousarray(x).reshape(x.shape[0], -1)
            x = _pass(x2, plan, scales[step], slot).reshape(out[step], *x.shape[1:])
    x = x.reshape(out[0], out[1], *img.shape[2:])
    return x.astype(dtype, copy=False)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom and right of ``img`` so that its height and width are multiples of ``scale``."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if not isinstance(img, np.ndarray) or img.ndim < 2:
        raise ValueError("img must be a numpy array of shape (H, W) or (H, W, C)")
    h, w = img.shape[:2]
    h, w = h - h % scale, w - w % scale
    if h == 0 or w == 0:
        raise ValueError(f"image of shape {img.shape} is smaller than scale {scale}")
    return img[:h, :w].copy()
