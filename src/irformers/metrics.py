"""Image-quality metrics with the conventions of the SwinIR / GRL / SemanIR / Hi-IR papers.

Published numbers depend on details that libraries disagree on, so they are fixed here (see the
README's Conventions section): inputs are integer images (uint8, peak 255; uint16, peak 65535),
arithmetic is float64, the Y channel is MATLAB's `rgb2ycbcr` luma kept unrounded, and SSIM filters
without padding.
All functions take H x W or H x W x C arrays of equal shape (or H x W x 1 against H x W); 3-channel
images are RGB.
"""

import math

import numpy as np

_PEAKS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _peak(img: np.ndarray) -> float:
    # Float images are refused: papers round the output to uint8 before measuring, and a float image
    # would silently be measured against the wrong peak.
    if not isinstance(img, np.ndarray):  # a tensor's dtype read like the problem ("got torch.uint8")
        raise TypeError(f"metrics take numpy arrays, not {type(img).__name__}")
    try:
        return _PEAKS[img.dtype]
    except KeyError:
        hint = " (irformers.data.io.to_uint rounds a [0, 1] float image)" if img.dtype.kind == "f" else ""
        raise TypeError(f"metrics take uint8 or uint16 images, got {img.dtype}{hint}") from None


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 studio-range luma of an RGB image, as MATLAB `rgb2ycbcr`, float64 and not rounded.

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 for uint8; for uint16 the offset scales with the
    peak (16 * 257), as MATLAB does, so Y stays on the input's scale.
    """
    peak = _peak(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y needs an H x W x 3 RGB image, got shape {img.shape}")
    weights = np.array([65.481, 128.553, 24.966]) / 255.0
    return 16.0 * peak / 255.0 + img.astype(np.float64) @ weights


def crop_border(img: np.ndarray, n: int) -> np.ndarray:
    """Drop `n` pixels on every side (SR papers shave `scale` pixels before measuring)."""
    if n < 0 or 2 * n >= min(img.shape[:2]):
        raise ValueError(f"cannot crop {n} pixels from each border of an image of shape {img.shape}")
    return img[n : img.shape[0] - n, n : img.shape[1] - n]


def _prepare(pred: np.ndarray, gt: np.ndarray, crop: int, y: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """Check, crop and (optionally) take Y; returns float64 H x W x C arrays and the peak."""
    peak, _ = _peak(pred), _peak(gt)  # numpy arrays of integer pixels, before their shapes are compared
    if pred.shape[:2] == gt.shape[:2] and {pred.shape[2:], gt.shape[2:]} == {(), (1,)}:
        pred, gt = pred.reshape(gt.shape), gt  # H x W x 1 (restore's gray) against H x W (a gray file)
    if pred.shape != gt.shape:
        raise ValueError(f"images differ in shape: pred {pred.shape} vs gt {gt.shape}")
    if pred.dtype != gt.dtype:
        raise TypeError(f"images differ in dtype: pred {pred.dtype} vs gt {gt.dtype}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected an H x W or H x W x C image, got shape {pred.shape}")
    if y and pred.ndim == 3 and pred.shape[2] not in (1, 3):  # RGBA's four channels were scored as they are
        raise ValueError(f"y=True scores the luma of RGB or gray images, not of {pred.shape[2]} channels")
    pred, gt = crop_border(pred, crop), crop_border(gt, crop)
    if y and pred.ndim == 3 and pred.shape[2] == 3:  # a gray image is its own luma (as BasicSR scores it)
        pred, gt = rgb_to_y(pred), rgb_to_y(gt)
    pred, gt = pred.astype(np.float64), gt.astype(np.float64)
    if pred.ndim == 2:
        pred, gt = pred[..., None], gt[..., None]
    return pred, gt, peak


def _psnr_from_mse(mse: float, peak: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def psnr(pred: np.ndarray, gt: np.ndarray, crop: int = 0, y: bool = False) -> float:
    """PSNR in dB over all pixels and channels; identical images give `math.inf`.

    `y=True` measures the luma of RGB inputs (SR and deraining tables); gray inputs are scored as they are.
    """
    pred, gt, peak = _prepare(pred, gt, crop, y)
    return _psnr_from_mse(float(np.mean((pred - gt) ** 2)), peak)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation: no padding, so the output shrinks by len(window) - 1."""
    n = len(window)
    h, w = img.shape
    rows = sum(window[k] * img[k : h - n + 1 + k] for k in range(n))
    return sum(window[k] * rows[:, k : w - n + 1 + k] for k in range(n))


def _ssim_channel(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    window = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a**2
    var_b = _filter_valid(b * b, window) - mu_b**2
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(pred: np.ndarray, gt: np.ndarray, crop: int = 0, y: bool = False) -> float:
    """SSIM of Wang et al. (2004) as MATLAB `ssim_index`: 11x11 Gaussian (sigma 1.5), K1 0.01, K2 0.03.

    Filtering is 'valid' (the map excludes 5 pixels at each border) and the map is averaged; a
    multi-channel image gets the mean of its per-channel SSIMs. Images need at least 11 x 11 pixels.
    """
    pred, gt, peak = _prepare(pred, gt, crop, y)
    if min(pred.shape[:2]) < 11:
        raise ValueError(f"SSIM needs at least 11 x 11 pixels after cropping, got {pred.shape[:2]}")
    return float(np.mean([_ssim_channel(pred[..., c], gt[..., c], peak) for c in range(pred.shape[2])]))


def _pair_sums(img: np.ndarray, block: int, axis: int) -> tuple[float, int, float, int]:
    """Squared differences of neighbours along `axis`, split into block-boundary and inner pairs.

    Pair i compares pixels i and i + 1; it straddles a block boundary when i + 1 is a multiple of
    `block` (the image's outer edge is not a boundary).
    """
    diff2 = np.diff(img, axis=axis) ** 2
    at_boundary = (np.arange(diff2.shape[axis]) + 1) % block == 0
    lines = img.shape[1 - axis]
    boundary = float(np.compress(at_boundary, diff2, axis=axis).sum())
    inner = float(diff2.sum()) - boundary
    n_boundary = int(at_boundary.sum()) * lines
    return boundary, n_boundary, inner, diff2.size - n_boundary


def _blocking_effect_factor(img: np.ndarray, block: int = 8) -> float:
    """BEF of Yim & Bovik (2011): how much stronger neighbour differences are across block edges.

    eta * (D_boundary - D_inner) when positive, else 0, with eta = log2(block) / log2(min(H, W)).
    Computed on the restored image alone: it penalises visible block edges that MSE would average out.
    """
    sums = [_pair_sums(img, block, axis) for axis in (0, 1)]
    n_boundary = sum(s[1] for s in sums)
    if n_boundary == 0 or min(img.shape) < 2:  # a one-pixel line: eta would divide by log2(1)
        return 0.0
    d_boundary = sum(s[0] for s in sums) / n_boundary
    d_inner = sum(s[2] for s in sums) / sum(s[3] for s in sums)
    eta = math.log2(block) / math.log2(min(img.shape))
    return max(eta * (d_boundary - d_inner), 0.0)


def psnr_b(pred: np.ndarray, gt: np.ndarray, crop: int = 0, y: bool = False) -> float:
    """PSNR-B (Yim & Bovik 2011) for JPEG artifact removal: PSNR with MSE + BEF of `pred`, 8x8 blocks.

    Blocks are aligned to the top-left corner of the uncropped image (the JPEG grid, whatever `crop`
    shaves). Multi-channel images: the mean of the per-channel PSNR-B values, as in the KAIR/SwinIR
    evaluation. Boundary pairs are counted as they are; KAIR's count assumes sizes divisible by 8, so
    for other sizes (most of LIVE1) it differs from this one by about 0.01-0.02 dB.
    """
    pred, gt, peak = _prepare(pred, gt, crop, y)
    grid = -crop % 8  # first row / column of the cropped image that starts a JPEG block
    values = []
    for c in range(pred.shape[2]):
        mse = float(np.mean((pred[..., c] - gt[..., c]) ** 2))
        values.append(_psnr_from_mse(mse + _blocking_effect_factor(pred[grid:, grid:, c]), peak))
    return float(np.mean(values))
