"""`irformers demo` (`make demo`): degrade the bundled sample image, restore it with shipped models.

The sample is a 256x256 crop of Kodak image 23. Each demo degrades it with the same conventions as
the benchmarks (`evaluate.prepare`: seeded noise, OpenCV JPEG, MATLAB bicubic), restores it with a
model shipped in the package, and writes `<name>-input.png`, `<name>-output.png` and
`<name>-side-by-side.png` (degraded | restored | original) with PSNR before and after.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from irformers.data.datasets import Sample
from irformers.data.io import to_uint, write_image
from irformers.evaluate import Degradation, prepare, pseudo_model, score
from irformers.inference import Restorer, load_model

SAMPLE = Path(__file__).parent / "assets" / "kodim23-crop.png"

# (name, shipped model, degradation): the name prefixes the files written
DEMOS = (
    ("denoise-color-sigma25", "hiir-t-denoise-color", Degradation("denoise", sigma=25)),
    ("sr-x4", "semanir-t-sr-x4", Degradation("sr", scale=4)),
    ("jpeg-gray-q10", "semanir-t-jpeg-gray", Degradation("jpeg", quality=10, gray=True)),
)


def _plain(img: np.ndarray) -> np.ndarray:
    """H x W x 1 -> H x W (how gray images are written); color unchanged."""
    return img[..., 0] if img.shape[-1] == 1 else img


def _side_by_side(*images: np.ndarray, gap: int = 4) -> np.ndarray:
    """uint8 H x W x C images of one height in a row, on white, with a gap between them."""
    height, channels = images[0].shape[0], images[0].shape[2]
    row = [np.full((height, gap, channels), 255, np.uint8)] * (2 * len(images) - 1)
    row[::2] = images
    return np.concatenate(row, axis=1)


def run_demo(
    out_dir: str | Path, *, device: str = "auto", names: tuple[str, ...] | None = None
) -> list[dict]:
    """Run the demos (all, or those in `names`) and return one row per demo: files and PSNR."""
    out = Path(out_dir)
    rows = []
    for name, model_name, deg in DEMOS:
        if names and name not in names:
            continue
        degraded, target = prepare(Sample("kodim23-crop", SAMPLE), deg)
        restored = to_uint(Restorer(load_model(model_name), device=device)(degraded))
        # the "before" image is what a viewer would see: the input itself, or its bicubic upscaling
        before = to_uint(pseudo_model("bicubic" if deg.task == "sr" else "identity", deg)(degraded))
        files = {kind: out / f"{name}-{kind}.png" for kind in ("input", "output", "side-by-side")}
        write_image(files["input"], _plain(to_uint(degraded)))
        write_image(files["output"], _plain(restored))
        write_image(files["side-by-side"], _plain(_side_by_side(before, restored, target)))
        rows.append(
            {
                "demo": name,
                "model": model_name,
                "psnr_before": score(before, target, deg)["psnr"],
                "psnr_after": score(restored, target, deg)["psnr"],
                "files": {kind: str(path) for kind, path in files.items()},
            }
        )
    return rows
