"""MATLAB-exact bicubic imresize: golden files, hand-computed values, shape rules, an oracle."""

import math
import os
import zlib

import cv2
import numpy as np
import pytest

from irformers.data import resize as resize_module
from irformers.data.resize import _weight_plan, imresize, modcrop

SET5 = ("baby", "bird", "butterfly", "head", "woman")


def _read_rgb(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"cannot read {path}"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------
# An independent, slow oracle: MATLAB's algorithm written out per output pixel from its formulas
# (no weight matrix), summing taps one by one in float64, rounding between passes for integers.
# ---------------------------------------------------------------------------------------------


def _keys(t: float) -> float:
    # MATLAB's expression, with absx.^2 and absx.^3 as products (t * t, t * t * t) as the
    # implementation computes them: pow() can differ in the last bit, which decides exact ties at
    # some scales (MATLAB's own last bit there cannot be checked without MATLAB).
    t = abs(t)
    t2 = t * t
    t3 = t2 * t
    if t <= 1:
        return 1.5 * t3 - 2.5 * t2 + 1
    if t <= 2:
        return -0.5 * t3 + 2.5 * t2 - 4 * t + 2
    return 0.0


def _mirror(i: int, n: int) -> int:
    """1-based index i folded into 1..n with the edge repeated (MATLAB's 'symmetric')."""
    period = 2 * n
    i = (i - 1) % period
    return i + 1 if i < n else period - i


def _oracle_1d(x: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    """Resize axis 0 of float64 x by MATLAB's rule, output pixel by output pixel."""
    n = x.shape[0]
    width = 4.0 / scale if scale < 1 else 4.0
    out = np.zeros((out_len, *x.shape[1:]))
    for o in range(1, out_len + 1):
        u = o / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [left + j for j in range(math.ceil(width) + 2)]
        k = scale if scale < 1 else 1.0  # antialiasing: h(t) = scale * k(scale * t)
        w = [k * _keys(k * (u - t)) for t in taps]
        total = sum(w)
        acc = np.zeros(x.shape[1:])
        for t, wt in zip(taps, w, strict=True):
            acc = acc + (wt / total) * x[_mirror(t, n) - 1]
        out[o - 1] = acc
    return out


def _oracle(img: np.ndarray, out_hw: tuple[int, int], scales: tuple[float, float], order=None) -> np.ndarray:
    is_int = np.issubdtype(img.dtype, np.integer)
    x = img.astype(np.float64)
    if order is None:  # MATLAB: the smaller factor first; rows first when equal
        order = (1, 0) if scales[1] < scales[0] else (0, 1)
    for axis in order:
        x = np.moveaxis(_oracle_1d(np.moveaxis(x, axis, 0), out_hw[axis], scales[axis]), 0, axis)
        if is_int:  # round half away from zero, saturate
            info = np.iinfo(img.dtype)
            x = np.clip(np.copysign(np.floor(np.abs(x) + 0.5), x), info.min, info.max)
    return x.astype(img.dtype) if is_int else x


# ---------------------------------------------------------------------------------------------
# Golden files and the published bicubic baseline
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [2, 3, 4])
def test_reproduces_set5_lr_bicubic_exactly(data_root, s):
    for name in SET5:
        hr = _read_rgb(data_root / "Set5" / "HR" / f"{name}.png")
        golden = _read_rgb(data_root / "Set5" / "LR_bicubic" / f"X{s}" / f"{name}x{s}.png")
        lr = imresize(modcrop(hr, s), 1 / s)
        assert lr.dtype == np.uint8
        assert lr.shape == golden.shape, name
        assert int((lr != golden).sum()) == 0, f"{name} x{s}: {(lr != golden).sum()} pixels differ"


def _y(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def test_bicubic_upsampling_baseline_set5_x2(data_root):
    s = 2
    psnrs = []
    for name in SET5:
        hr = modcrop(_read_rgb(data_root / "Set5" / "HR" / f"{name}.png"), s)
        lr = _read_rgb(data_root / "Set5" / "LR_bicubic" / f"X{s}" / f"{name}x{s}.png")
        sr = imresize(lr, s)
        assert sr.shape == hr.shape and sr.dtype == np.uint8
        a, b = _y(sr)[s:-s, s:-s], _y(hr)[s:-s, s:-s]
        psnrs.append(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)))
    mean = float(np.mean(psnrs))
    assert abs(mean - 33.66) <= 0.02, mean  # published 33.66 (MATLAB evaluation)
    assert round(mean, 2) == 33.67, mean  # the float-Y value in the README's Conventions table


# ---------------------------------------------------------------------------------------------
# Hand-checkable cases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.7, 1.5, 2, 3, 4])
def test_constant_image_stays_constant(scale):
    img = np.full((23, 17, 3), 173, dtype=np.uint8)
    out = imresize(img, scale)
    assert out.dtype == np.uint8
    assert np.all(out == 173)
    f = imresize(np.full((23, 17), 0.4375, dtype=np.float64), scale)
    np.testing.assert_allclose(f, 0.4375, rtol=0, atol=1e-12)


# Keys' kernel (a = -0.5) at the offsets x2 upscaling samples, worked out by hand:
# k(t) = 1.5|t|^3 - 2.5|t|^2 + 1 (|t| <= 1), -0.5|t|^3 + 2.5|t|^2 - 4|t| + 2 (1 < |t| <= 2).
K_025 = 1.5 / 64 - 2.5 / 16 + 1  # 0.8671875
K_075 = 1.5 * 27 / 64 - 2.5 * 9 / 16 + 1  # 0.2265625
K_125 = -0.5 * 125 / 64 + 2.5 * 25 / 16 - 4 * 1.25 + 2  # -0.0703125
K_175 = -0.5 * 343 / 64 + 2.5 * 49 / 16 - 4 * 1.75 + 2  # -0.0234375


def test_kernel_constants_by_hand():
    assert (K_025, K_075, K_125, K_175) == (0.8671875, 0.2265625, -0.0703125, -0.0234375)
    assert K_025 + K_075 + K_125 + K_175 == 1.0


@pytest.mark.parametrize("signal", ["ramp", "random"])
def test_upscale_x2_interior_matches_hand_cubic(signal):
    n = 12
    f = np.arange(n, dtype=np.float64) * 3.0 + 5.0 if signal == "ramp" else np.random.default_rng(0).random(n)
    img = np.tile(f, (4, 1))  # rows identical: the vertical pass is the identity on them
    out = imresize(img, 2)
    assert out.shape == (8, 2 * n)
    row = out[3]
    # Output x (1-based) sits at u = x/2 + 1/4 in the input. Even x = 2k: u = k + 1/4, taps k-1..k+2
    # at distances 1.25, 0.25, 0.75, 1.75; odd x = 2k + 1: u = k + 3/4, the mirror image.
    for k in range(2, n - 1):  # 1-based k with taps k-1..k+2 inside 1..n
        even = K_125 * f[k - 2] + K_025 * f[k - 1] + K_075 * f[k] + K_175 * f[k + 1]
        odd = K_175 * f[k - 2] + K_075 * f[k - 1] + K_025 * f[k] + K_125 * f[k + 1]
        assert row[2 * k - 1] == pytest.approx(even, abs=1e-12)
        assert row[2 * k] == pytest.approx(odd, abs=1e-12)
    if signal == "ramp":  # cubic convolution reproduces a linear ramp: value at u is 5 + 3(u - 1)
        u = np.arange(1, 2 * n + 1) / 2 + 0.25
        np.testing.assert_allclose(row[4:-4], (5 + 3 * (u - 1))[4:-4], atol=1e-12)


def test_downscale_x2_interior_and_round_half_away_by_hand():
    # Scale 1/2: the kernel is widened to 8 and halved; output x uses input taps 2x-4..2x+3 with
    # weights 0.5 k(t/2) at t = ±3.5, ±2.5, ±1.5, ±0.5, i.e. (-3, -9, 29, 111, 111, 29, -9, -3) / 256.
    w = np.array([-3, -9, 29, 111, 111, 29, -9, -3])
    assert 0.5 * K_075 == 29 / 256 and 0.5 * K_025 == 111 / 256
    assert 0.5 * K_125 == -9 / 256 and 0.5 * K_175 == -3 / 256
    # The taps of output 4 hold values whose weighted sum is exactly 94.5: MATLAB rounds half away
    # from zero (95), numpy's round-half-even would give 94.
    sig = np.array([100, 100, 100, 46, 194, 213, 40, 140, 51, 149, 73, 100, 100, 100, 100, 100])
    assert int((w * sig[3:11]).sum()) == 94 * 256 + 128
    img = np.tile(sig.astype(np.uint8), (6, 1))
    out = imresize(img, 0.5)
    assert out.shape == (3, 8)
    for x in range(3, 7):  # 1-based outputs whose 8 taps lie inside the signal
        num = int((w * sig[2 * x - 5 : 2 * x + 3]).sum())
        expected = min(255, max(0, (num + 128) // 256))  # num >= 0 here: half up == half away
        assert np.all(out[:, x - 1] == expected), (x, num / 256)
    assert out[0, 3] == 95
    f = imresize(img.astype(np.float64), 0.5)
    assert f[0, 3] == 94.5


@pytest.mark.parametrize(
    ("shape", "scale", "expected"),
    [
        ((7, 5), 0.5, (4, 3)),
        ((10, 11), 1 / 3, (4, 4)),
        ((9, 12), 1 / 3, (3, 4)),
        ((255, 255), 1 / 3, (85, 85)),
        ((5, 7), 1.5, (8, 11)),
        ((3, 4), 2, (6, 8)),
        ((343, 49), 1 / 7, (49, 7)),
        ((17, 13), 0.3, (6, 4)),
    ],
)
def test_output_shape_is_ceil(shape, scale, expected):
    out = imresize(np.zeros(shape, dtype=np.uint8), scale)
    assert out.shape == expected
    assert out.shape == tuple(math.ceil(round(n * scale, 9)) for n in shape)


def test_output_shape_argument():
    img = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert imresize(img, output_shape=(7, 11)).shape == (7, 11, 3)
    assert np.array_equal(imresize(img, output_shape=(10, 15)), imresize(img, 0.5))
    assert np.array_equal(imresize(img, output_shape=(20, 30)), img)  # scale 1 is the identity


def test_float_input_gives_float_output_unrounded():
    rng = np.random.default_rng(2)
    img64 = rng.random((16, 20, 3)) * 255
    for scale in (0.5, 1 / 3, 2):
        out64 = imresize(img64, scale)
        assert out64.dtype == np.float64
        assert not np.allclose(out64, np.round(out64))  # not rounded to integers
        ref = _oracle(img64, out64.shape[:2], (scale, scale))
        np.testing.assert_allclose(out64, ref, rtol=0, atol=1e-10)
        out32 = imresize(img64.astype(np.float32), scale)
        assert out32.dtype == np.float32
        ref32 = _oracle(img64.astype(np.float32), out32.shape[:2], (scale, scale)).astype(np.float32)
        np.testing.assert_allclose(out32, ref32, rtol=1e-6, atol=1e-4)
    assert imresize(np.zeros((4, 4), np.float32), 0.5).dtype == np.float32


def test_gray_and_channel_layouts_agree():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (33, 27, 3), dtype=np.uint8)
    for scale in (1 / 3, 2.5):
        out = imresize(rgb, scale)
        for c in range(3):
            gray = imresize(np.ascontiguousarray(rgb[..., c]), scale)
            assert gray.ndim == 2
            assert np.array_equal(out[..., c], gray)
            one = imresize(rgb[..., c : c + 1], scale)
            assert one.shape == (*gray.shape, 1)
            assert np.array_equal(one[..., 0], gray)
    many = rng.integers(0, 256, (21, 19, 6), dtype=np.uint8)  # more channels than OpenCV transposes
    out6 = imresize(many, 0.5)
    assert np.array_equal(out6[..., :3], imresize(np.ascontiguousarray(many[..., :3]), 0.5))
    assert np.array_equal(out6[..., 3:], imresize(np.ascontiguousarray(many[..., 3:]), 0.5))


@pytest.mark.parametrize(
    ("shape", "scale", "output_shape"),
    [
        ((40, 36, 3), 1 / 2, None),
        ((45, 39, 3), 1 / 3, None),
        ((48, 52, 3), 1 / 4, None),
        ((37, 41, 3), 0.6, None),
        ((31, 29, 1), 1.7, None),
        ((20, 24, 3), 2, None),
        ((15, 14, 3), 3, None),
        ((40, 50, 3), None, (30, 20)),  # width factor smaller: columns first
        ((40, 50, 3), None, (15, 45)),  # height factor smaller: rows first
        ((30, 30, 2), None, (45, 20)),
    ],
)
def test_uint8_matches_slow_oracle_exactly(shape, scale, output_shape):
    rng = np.random.default_rng(zlib.crc32(repr((shape, scale, output_shape)).encode()))
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    out = imresize(img, scale=scale, output_shape=output_shape)
    if output_shape is None:
        out_hw = (math.ceil(round(shape[0] * scale, 9)), math.ceil(round(shape[1] * scale, 9)))
        scales = (scale, scale)
    else:
        out_hw = output_shape
        scales = (output_shape[0] / shape[0], output_shape[1] / shape[1])
    ref = _oracle(img, out_hw, scales)
    assert out.shape == ref.shape
    assert int((out != ref).sum()) == 0


def test_dimension_order_matters_and_follows_matlab():
    # With uint8 rounding between passes the order is visible. Width factor smaller -> columns first.
    img = np.random.default_rng(4).integers(0, 256, (60, 60, 3), dtype=np.uint8)
    out = imresize(img, output_shape=(40, 25))
    cols_first = _oracle(img, (40, 25), (40 / 60, 25 / 60), order=(1, 0))
    rows_first = _oracle(img, (40, 25), (40 / 60, 25 / 60), order=(0, 1))
    assert np.array_equal(out, cols_first)
    assert not np.array_equal(out, rows_first)
    # Equal factors: rows first.
    out = imresize(img, 0.5)
    assert np.array_equal(out, _oracle(img, (30, 30), (0.5, 0.5), order=(0, 1)))
    assert not np.array_equal(out, _oracle(img, (30, 30), (0.5, 0.5), order=(1, 0)))


def test_rounding_paths_agree_with_float64(monkeypatch):
    # Two ways to round uint8 products exactly like float64 sums: at dyadic scales (1/4, 2) the
    # float32 products are exact and ties (k + 0.5, common there) round half away directly; at other
    # scales the outputs within the float32 error bound of a k + 0.5 boundary are recomputed in
    # float64 tap by tap. Both must agree with the slow float64 oracle.
    calls = []
    original = resize_module._sequential

    def counting(plan, x, rows, cols):
        calls.append(rows.size)
        return original(plan, x, rows, cols)

    monkeypatch.setattr(resize_module, "_sequential", counting)
    img = np.random.default_rng(5).integers(0, 256, (60, 72, 3), dtype=np.uint8)
    for scale, exact in ((1 / 4, True), (2, True), (2 / 3, False), (1.5, False), (1 / 3, False)):
        assert _weight_plan(72, math.ceil(72 * scale), scale).is_exact(np.float32, 255.0) == exact
        calls.clear()
        out = imresize(img, scale)
        ref = _oracle(img, out.shape[:2], (scale, scale))
        assert np.array_equal(out, ref), scale
        if exact:
            assert not calls
    calls.clear()
    imresize(img, 1.5)
    assert sum(calls) > 0  # the float64 re-computation was exercised


def test_exact_ties_round_half_away_at_dyadic_scales():
    # x2 upscaling: weights (-9, 111, 29, -3)/128 and mirror; many outputs are exactly k + 0.5.
    img = np.random.default_rng(7).integers(0, 256, (40, 50), dtype=np.uint8)
    f = imresize(img.astype(np.float64), output_shape=(40, 100))  # one pass: along the width
    ties = np.abs(f - np.floor(f) - 0.5) == 0
    assert np.any(ties & (np.floor(f) % 2 == 0))  # ties where round-half-even would go down
    out = imresize(img, output_shape=(40, 100))
    assert np.array_equal(out[ties], np.clip(np.floor(f[ties] + 0.5), 0, 255).astype(np.uint8))
    assert np.array_equal(out, np.clip(np.floor(f + 0.5), 0, 255).astype(np.uint8))


def test_weight_plan_is_cached_and_rows_sum_to_one():
    _weight_plan.cache_clear()
    img = np.zeros((30, 30), np.uint8)
    imresize(img, 0.5)
    imresize(img, 0.5)
    info = _weight_plan.cache_info()
    assert info.hits >= 1 and info.misses == 1  # same (in, out, scale) for both dimensions
    plan = _weight_plan(30, 15, 0.5)
    np.testing.assert_allclose(plan.weights.sum(axis=1), 1.0, atol=1e-12)
    assert not plan.weights.flags.writeable
    i0, i1, dense = plan.dense(0, 15)  # mirrored taps summed: still rows of sum 1
    assert (i0, i1) == (0, 30)
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.int8, np.uint32])
@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1.5])
def test_other_integer_types(dtype, scale):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(6)
    img = rng.integers(int(info.min), int(info.max), (20, 24), dtype=dtype, endpoint=True)
    img[:4, :4] = info.max  # saturated corners: overshoot must clip
    img[-4:, -4:] = info.min
    out = imresize(img, scale)
    assert out.dtype == dtype
    ref = _oracle(img, out.shape, (scale, scale))
    assert np.array_equal(out, ref)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.uint16])
def test_threaded_passes_match_single_thread(monkeypatch, dtype):
    rng = np.random.default_rng(8)
    img = (rng.random((150, 130, 3)) * 255).astype(dtype)
    scales = (1 / 4, 1 / 3, 0.7, 2.5)
    monkeypatch.setenv("IRFORMERS_RESIZE_THREADS", "1")
    single = [imresize(img, s) for s in scales]
    monkeypatch.setattr(resize_module, "_PARALLEL_WORK", 0)  # split even small passes
    monkeypatch.setenv("IRFORMERS_RESIZE_THREADS", "3")
    for s, ref in zip(scales, single, strict=True):
        out = imresize(img, s)
        assert out.dtype == ref.dtype
        assert np.array_equal(out, ref), s


def test_concurrent_calls_and_no_aliasing():
    # Work buffers are per thread and reused across calls: results must not share them.
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(9)
    imgs = [rng.integers(0, 256, (90 + 7 * i, 80 + 5 * i, 3), dtype=np.uint8) for i in range(6)]
    expected = [imresize(im, 1 / 3) for im in imgs]
    first = expected[0].copy()
    with ThreadPoolExecutor(4) as ex:
        for _ in range(3):
            got = list(ex.map(lambda im: imresize(im, 1 / 3), imgs))
            assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    assert np.array_equal(expected[0], first)  # later calls did not overwrite an earlier result
    src = imgs[0].copy()
    same = imresize(src, 1.0)
    assert np.array_equal(same, src) and not np.shares_memory(same, src)


def _resize_in_child(queue) -> None:
    img = np.random.default_rng(10).integers(0, 256, (200, 180, 3), dtype=np.uint8)
    queue.put(imresize(img, 1 / 3).sum(dtype=np.int64))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_working_threads(monkeypatch):
    # The parent starts the worker threads; a forked child (a data-loader worker) has none of them
    # and must start its own rather than wait forever on the parent's.
    import multiprocessing

    monkeypatch.setattr(resize_module, "_PARALLEL_WORK", 0)
    monkeypatch.setenv("IRFORMERS_RESIZE_THREADS", "2")
    img = np.random.default_rng(10).integers(0, 256, (200, 180, 3), dtype=np.uint8)
    expected = imresize(img, 1 / 3).sum(dtype=np.int64)
    assert resize_module._POOL is not None
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_resize_in_child, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("imresize hung in a forked child")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == expected


def test_one_thread_inside_a_torch_data_loader_worker(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("IRFORMERS_RESIZE_THREADS", raising=False)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    assert resize_module._threads() == 1
    monkeypatch.setenv("IRFORMERS_RESIZE_THREADS", "3")
    assert resize_module._threads() == 3


# ---------------------------------------------------------------------------------------------
# modcrop and argument errors
# ---------------------------------------------------------------------------------------------


def test_modcrop():
    img = np.arange(13 * 10 * 3).reshape(13, 10, 3)
    out = modcrop(img, 4)
    assert out.shape == (12, 8, 3)
    assert np.array_equal(out, img[:12, :8])
    assert modcrop(img[..., 0], 3).shape == (12, 9)
    assert modcrop(img, 1).shape == img.shape


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"scale": 0.5, "output_shape": (4, 4)},
        {"scale": 0},
        {"scale": -2},
        {"scale": float("nan")},
        {"scale": float("inf")},
        {"scale": True},
        {"scale": "2"},
        {"output_shape": (4,)},
        {"output_shape": (0, 4)},
        {"output_shape": (4, 2.5)},
        {"output_shape": (None, 4)},
        {"output_shape": (4, 4, 3)},
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        imresize(np.zeros((8, 8), np.uint8), **kwargs)


@pytest.mark.parametrize(
    "img",
    [
        np.zeros(8, np.uint8),
        np.zeros((0, 8), np.uint8),
        np.zeros((8, 8), bool),
        np.zeros((8, 8), np.int64),
        np.zeros((8, 8), complex),
        [[1, 2], [3, 4]],
    ],
)
def test_bad_images_raise(img):
    with pytest.raises(ValueError):
        imresize(img, 0.5)


@pytest.mark.parametrize("scale", [0, -1, 2.0, True])
def test_modcrop_bad_scale(scale):
    with pytest.raises(ValueError):
        modcrop(np.zeros((8, 8)), scale)


def test_modcrop_too_small():
    with pytest.raises(ValueError):
        modcrop(np.zeros((3, 8)), 4)
