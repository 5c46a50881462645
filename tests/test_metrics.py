"""Metrics against hand-computed values and an independent SSIM (scikit-image)."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from irformers.metrics import crop_border, psnr, psnr_b, rgb_to_y, ssim


def _textured(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth gradient plus noise: structure for SSIM to see, not just white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = 120 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    if len(shape) == 3:
        base = base[..., None] + 20 * np.arange(shape[2])
    return np.clip(base + rng.normal(0, 12, shape), 0, 255).round().astype(np.uint8)


def test_psnr_by_hand():
    gt = np.zeros((2, 2), np.uint8)
    pred = np.array([[0, 0], [0, 10]], np.uint8)  # MSE = 100 / 4 = 25
    assert psnr(pred, gt) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-12)
    # Color: the MSE runs over all pixels and channels (one error of 10 among 12 values).
    gt3, pred3 = np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)
    pred3[1, 0, 2] = 10
    assert psnr(pred3, gt3) == pytest.approx(10 * math.log10(255**2 / (100 / 12)), abs=1e-12)
    # uint16: the peak is 65535.
    assert psnr(pred.astype(np.uint16), gt.astype(np.uint16)) == pytest.approx(
        10 * math.log10(65535**2 / 25), abs=1e-12
    )


def test_psnr_identical_is_inf_and_errors_are_clear():
    img = _textured((16, 16))
    assert psnr(img, img) == math.inf
    with pytest.raises(ValueError, match=r"\(16, 16\).*\(16, 15\)"):
        psnr(img, img[:, :15])
    with pytest.raises(TypeError, match="uint8 or uint16"):
        psnr(img.astype(np.float32), img.astype(np.float32))
    with pytest.raises(TypeError, match=r"got float32 \(irformers.data.io.to_uint rounds"):
        psnr(img.astype(np.float32), img)
    with pytest.raises(TypeError, match="metrics take numpy arrays, not Tensor"):  # was "got torch.uint8"
        psnr(torch.from_numpy(img), img)
    noisy = np.clip(img.astype(int) + 3, 0, 255).astype(np.uint8)
    assert psnr(noisy[..., None], img) == psnr(noisy, img)  # restore's H x W x 1 against a gray file
    rgba = np.dstack([img] * 4)  # y=True scored its four channels as they were, as if y=False
    with pytest.raises(ValueError, match="luma of RGB or gray images, not of 4 channels"):
        psnr(rgba, rgba, y=True)


def test_crop_border():
    img = np.arange(36).reshape(6, 6)
    np.testing.assert_array_equal(crop_border(img, 0), img)
    np.testing.assert_array_equal(crop_border(img, 2), [[14, 15], [20, 21]])
    with pytest.raises(ValueError):
        crop_border(img, 3)
    # Only the pixels inside the crop count: an error on the border disappears.
    gt = np.zeros((6, 6), np.uint8)
    pred = gt.copy()
    pred[0, 0] = 50
    assert psnr(pred, gt, crop=1) == math.inf


def test_rgb_to_y_hand_values():
    colors = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y = rgb_to_y(colors)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[0], [235.0, 16.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-9)
    # uint16 stays on its own scale: MATLAB gives 16 * 257 for black and 235 * 257 for white.
    np.testing.assert_allclose(rgb_to_y(colors[:, :2].astype(np.uint16) * 257)[0], [235 * 257, 16 * 257])


def test_psnr_on_y_by_hand():
    gt = np.full((4, 4, 3), 100, np.uint8)
    pred = gt.copy()
    pred[..., 0] += 10  # only red differs: the Y error is 65.481 * 10 / 255 everywhere
    assert psnr(pred, gt, y=True) == pytest.approx(20 * math.log10(255 / (65.481 * 10 / 255)), abs=1e-9)
    # a gray image is its own luma, as BasicSR scores it: y=True changes nothing
    assert (
        psnr(pred[..., 0], gt[..., 0], y=True)
        == psnr(pred[..., 0], gt[..., 0])
        == pytest.approx(28.13, abs=0.01)
    )


def _skimage_valid_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255) -> float:
    """scikit-image pads ('reflect'); its map cropped by the 5-pixel window radius is the 'valid' map."""
    _, ssim_map = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range, full=True
    )
    return float(ssim_map[5:-5, 5:-5].mean())


def test_ssim_matches_scikit_image_valid_map():
    gt = _textured((40, 52, 3), seed=1)
    pred = np.clip(gt + np.random.default_rng(2).normal(0, 15, gt.shape), 0, 255).astype(np.uint8)
    per_channel = [_skimage_valid_ssim(pred[..., c], gt[..., c]) for c in range(3)]
    assert ssim(pred, gt) == pytest.approx(np.mean(per_channel), abs=1e-10)
    assert ssim(pred[..., 1], gt[..., 1]) == pytest.approx(per_channel[1], abs=1e-10)
    expected_y = _skimage_valid_ssim(rgb_to_y(pred)[3:-3, 3:-3], rgb_to_y(gt)[3:-3, 3:-3])
    assert ssim(pred, gt, crop=3, y=True) == pytest.approx(expected_y, abs=1e-10)
    assert 0.3 < ssim(pred, gt) < 0.95  # a real comparison, not a degenerate one
    # uint16: the constants follow the peak 65535.
    pred16, gt16 = pred[..., 0].astype(np.uint16) * 257, gt[..., 0].astype(np.uint16) * 257
    assert ssim(pred16, gt16) == pytest.approx(_skimage_valid_ssim(pred16, gt16, 65535), abs=1e-10)


def test_ssim_identical_is_one():
    img = _textured((20, 20, 3))
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)


def _bef_by_hand(img: np.ndarray) -> float:
    """Blocking effect factor with explicit loops over every pair of horizontal / vertical neighbours."""
    h, w = img.shape
    sums = {True: 0.0, False: 0.0}
    counts = {True: 0, False: 0}
    for i in range(h):
        for j in range(w):
            for i2, j2, pos in ((i, j + 1, j + 1), (i + 1, j, i + 1)):
                if i2 < h and j2 < w:
                    across = pos % 8 == 0  # the second pixel starts a new 8x8 block
                    sums[across] += (float(img[i, j]) - float(img[i2, j2])) ** 2
                    counts[across] += 1
    excess = sums[True] / counts[True] - sums[False] / counts[False]
    return max(0.0, math.log2(8) / math.log2(min(h, w)) * excess)


def test_psnr_b_by_hand():
    gt = _textured((16, 20), seed=3)
    # A blocky prediction: each 8x8 block shifted by its own offset, so block edges stand out.
    offsets = np.kron(np.array([[-12, 9, -5], [7, -9, 12]]), np.ones((8, 8)))[:, :20]
    pred = np.clip(gt + offsets, 0, 255).astype(np.uint8)
    bef = _bef_by_hand(pred.astype(np.float64))
    assert bef > 0
    mse = np.mean((pred.astype(np.float64) - gt) ** 2)
    assert psnr_b(pred, gt) == pytest.approx(10 * math.log10(255**2 / (mse + bef)), abs=1e-9)
    assert psnr_b(pred, gt) < psnr(pred, gt)
    # Color: the mean of the per-channel PSNR-B values.
    pred3, gt3 = np.stack([pred, gt, pred], axis=-1), np.stack([gt, gt, pred], axis=-1)
    per_channel = [psnr_b(pred3[..., c], gt3[..., c]) for c in range(3)]
    assert psnr_b(pred3, gt3) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_psnr_b_keeps_the_jpeg_grid_under_a_border_crop():
    gt = _textured((32, 40), seed=4)
    offsets = np.kron(np.random.default_rng(5).integers(-12, 13, (4, 5)), np.ones((8, 8)))
    pred = np.clip(gt + offsets, 0, 255).astype(np.uint8)
    for crop in (3, 4, 8):
        mse = np.mean((pred[crop:-crop, crop:-crop].astype(np.float64) - gt[crop:-crop, crop:-crop]) ** 2)
        grid = -crop % 8
        bef = _bef_by_hand(pred[crop + grid : -crop, crop + grid : -crop].astype(np.float64))
        assert bef > 0
        expected = 10 * math.log10(255**2 / (mse + bef))
        assert psnr_b(pred, gt, crop=crop) == pytest.approx(expected, abs=1e-9)


def test_psnr_b_equals_psnr_without_blocking():
    # Smooth prediction: neighbour differences are no larger across block edges, so BEF = 0.
    yy, xx = np.mgrid[:24, :24]
    pred = (100 + 3 * xx + 2 * yy).astype(np.uint8)
    gt = pred.copy()
    gt[5, 5] += 4
    assert _bef_by_hand(pred.astype(np.float64)) == 0.0
    assert psnr_b(pred, gt) == pytest.approx(psnr(pred, gt), abs=1e-12)
    line = np.array([[0, 9] * 10], np.uint8)  # one pixel high: no 2-D blocks, and eta had log2(1) below
    assert psnr_b(line, line[:, ::-1]) == pytest.approx(psnr(line, line[:, ::-1]), abs=1e-12)
