"""Synthetic degradations for test and training inputs, following the README's Conventions section.

Every random degradation is reproducible from a seed and never touches numpy's global random state,
so evaluation inputs are identical across methods and runs.
"""

from pathlib import Path

import cv2
import numpy as np

from irformers.data.io import ImageError, read_array
from irformers.data.resize import imresize, modcrop
from irformers.metrics import rgb_to_y


def _round_uint8(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 255] and round halves up, as MATLAB's uint8 conversion does."""
    return np.floor(np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


def add_gaussian_noise(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Add N(0, sigma/255) noise to a float image in [0, 1]; not clipped, not quantised (float32 out).

    The noise is the stream `numpy.random.seed(seed); numpy.random.normal(0, sigma / 255, shape)`
    would give (the papers' test protocol), drawn from a private RandomState.
    """
    if not np.issubdtype(clean.dtype, np.floating):
        raise TypeError(f"add_gaussian_noise takes a float image in [0, 1], got {clean.dtype}")
    if not sigma >= 0:  # numpy's own error said "scale < 0"
        raise ValueError(f"noise levels are 0-255, not {sigma}")
    noise = np.random.RandomState(seed).normal(0.0, sigma / 255.0, clean.shape)
    return (clean.astype(np.float64) + noise).astype(np.float32)


def sample_sigma(rng: np.random.Generator, low: float, high: float) -> float:
    """Noise level for one training patch of a blind model (one model for all levels): uniform."""
    return float(rng.uniform(low, high))


def jpeg_compress(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode with OpenCV's JPEG codec (4:2:0 chroma for color), as the papers' test sets.

    Takes uint8 gray (H x W or H x W x 1, as `read_clean` gives it) or RGB (H x W x 3) and returns the
    same layout.
    """
    if img.dtype != np.uint8:
        raise TypeError(f"jpeg_compress takes uint8 images, got {img.dtype}")
    if not 0 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in [0, 100], got {quality}")
    if img.ndim == 3 and img.shape[2] == 1:
        return jpeg_compress(img[..., 0], quality)[..., None]
    color = img.ndim == 3 and img.shape[2] == 3
    if not color and img.ndim != 2:
        raise ValueError(f"jpeg_compress takes H x W, H x W x 1 or H x W x 3 images, got shape {img.shape}")
    ok, buf = cv2.imencode(".jpg", img[..., ::-1] if color else img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV failed to encode the image as JPEG")
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    return np.ascontiguousarray(out[..., ::-1]) if color else out


def read_clean(path: str | Path, gray: bool, task: str) -> np.ndarray:
    """A uint8 H x W x C image read as the conventions read clean images, for tests and training alike.

    Gray tasks take a colour file's BT.601 Y for JPEG and OpenCV's gray conversion of its RGB otherwise.
    KAIR and SwinIR read such a file with ``cv2.imread(path, 0)``, which converts inside the decoder:
    libpng rounds otherwise (CBSD68: half the pixels 1 apart) and applies a PNG's gamma chunk (Kodak24:
    up to 52 apart); the gray benchmark sets (Set12, BSD68) are gray files, read as they are. 16-bit
    files are refused: the conventions are 8-bit.
    """
    if not gray:
        img = read_array(path, "rgb")
    else:
        img = read_array(path, "unchanged")
        if img.ndim == 3 and img.dtype == np.uint8:
            img = rgb_to_gray_y(img) if task == "jpeg" else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if img.dtype != np.uint8:
        raise ImageError(f"{path}: {img.dtype} images are not supported (8-bit only)")
    return img[..., None] if img.ndim == 2 else img


def rgb_to_gray_y(img: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8 BT.601 Y: the gray image that gray JPEG tests encode (LIVE1 gray)."""
    if img.dtype != np.uint8:
        raise TypeError(f"rgb_to_gray_y takes uint8 images, got {img.dtype}")
    return _round_uint8(rgb_to_y(img))


# Bayer RGGB: which channel each position of a 2x2 tile samples (row parity, column parity).
_RGGB = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}


def bayer_mosaic(rgb: np.ndarray) -> np.ndarray:
    """RGGB sampling of an H x W x 3 image: R at (0, 0), G at (0, 1) and (1, 0), B at (1, 1)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"bayer_mosaic takes an H x W x 3 image, got shape {rgb.shape}")
    mosaic = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for (i, j), c in _RGGB.items():
        mosaic[i::2, j::2] = rgb[i::2, j::2, c]
    return mosaic


# Malvar, He & Cutler (2004) 5x5 filters, in eighths; all symmetric, so correlation = convolution.
_MALVAR = {
    # G at a red or blue site.
    "g_at_rb": [
        [0, 0, -1, 0, 0],
        [0, 0, 2, 0, 0],
        [-1, 2, 4, 2, -1],
        [0, 0, 2, 0, 0],
        [0, 0, -1, 0, 0],
    ],
    # R (or B) at a green site whose left and right neighbours are R (or B).
    "rb_at_g_row": [
        [0, 0, 0.5, 0, 0],
        [0, -1, 0, -1, 0],
        [-1, 4, 5, 4, -1],
        [0, -1, 0, -1, 0],
        [0, 0, 0.5, 0, 0],
    ],
    # R (or B) at a green site whose neighbours above and below are R (or B).
    "rb_at_g_col": [
        [0, 0, -1, 0, 0],
        [0, -1, 4, -1, 0],
        [0.5, 0, 5, 0, 0.5],
        [0, -1, 4, -1, 0],
        [0, 0, -1, 0, 0],
    ],
    # R at a blue site, or B at a red site (diagonal neighbours).
    "rb_at_br": [
        [0, 0, -1.5, 0, 0],
        [0, 2, 0, 2, 0],
        [-1.5, 0, 6, 0, -1.5],
        [0, 2, 0, 2, 0],
        [0, 0, -1.5, 0, 0],
    ],
}
# For each RGGB phase, the filter giving (R, G, B) there; None keeps the sample itself.
_MALVAR_PLAN = {
    (0, 0): (None, "g_at_rb", "rb_at_br"),
    (0, 1): ("rb_at_g_row", None, "rb_at_g_col"),
    (1, 0): ("rb_at_g_col", None, "rb_at_g_row"),
    (1, 1): ("rb_at_br", "g_at_rb", None),
}


def demosaic_malvar(mosaic: np.ndarray) -> np.ndarray:
    """Malvar-He-Cutler gradient-corrected bilinear demosaicking of an RGGB mosaic (MATLAB `demosaic`).

    Borders are mirrored without repeating the edge pixel, which keeps the Bayer phase of the mirrored
    samples. uint8 in -> uint8 out (clipped, rounded); float in -> the same float dtype, unclipped.
    """
    if mosaic.ndim != 2:
        raise ValueError(f"expected an H x W mosaic, got shape {mosaic.shape}")
    m = mosaic.astype(np.float64)
    filtered = {
        name: cv2.filter2D(m, -1, np.array(k) / 8.0, borderType=cv2.BORDER_REFLECT_101)
        for name, k in _MALVAR.items()
    }
    out = np.empty((*m.shape, 3))
    for (i, j), names in _MALVAR_PLAN.items():
        for c, name in enumerate(names):
            out[i::2, j::2, c] = (m if name is None else filtered[name])[i::2, j::2]
    return _round_uint8(out) if mosaic.dtype == np.uint8 else out.astype(mosaic.dtype)


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """SR test input: HR mod-cropped to the scale, then MATLAB bicubic downscaling by 1/scale."""
    return imresize(modcrop(hr, scale), scale=1 / scale)
