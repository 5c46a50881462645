"""The benchmark runner: degrade a test set per the conventions, restore it, score it like the papers.

Every model, the pseudo-models included, is a ``RestoreFn`` (an ``inference.Restorer`` is one):
float32 H x W x C in [0, 1] in, float32 H x W x C out. The runner owns the conventions (mod-crop,
seeded noise, OpenCV JPEG, Y channel, border shave, rounding to uint8 before any metric), so a model
cannot get them wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from irformers import metrics
from irformers.data import degrade
from irformers.data.datasets import Dataset, DatasetError, Sample, resolve_data_root
from irformers.data.io import ImageError, InputError, to_uint, write_image
from irformers.data.resize import imresize, modcrop
from irformers.engine.config import LEVEL_LIMITS, TASKS

RestoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Degradation:
    """One evaluation setting: the task and its level, and whether the images are gray."""

    task: str
    scale: int = 1
    sigma: float | None = None
    quality: int | None = None
    gray: bool = False
    y: bool = False  # paired tasks: score on Y (e.g. deraining); SR always scores on Y

    def __post_init__(self) -> None:
        needs = {
            "denoise": ("sigma", self.sigma is not None),
            "jpeg": ("quality", self.quality is not None),
        }
        if self.task not in TASKS:
            raise ValueError(f"unknown task '{self.task}' (choose from {', '.join(TASKS)})")
        if self.task in needs and not needs[self.task][1]:
            raise ValueError(f"task '{self.task}' needs --{needs[self.task][0]}")
        if self.task == "sr" and self.scale < 2:
            raise ValueError("task 'sr' needs --scale 2 or more")
        (s_lo, s_hi), (q_lo, q_hi) = LEVEL_LIMITS["sigma"], LEVEL_LIMITS["quality"]  # a recipe's limits
        if self.sigma is not None and not s_lo <= self.sigma <= s_hi:
            raise ValueError(f"--sigma {self.sigma:g}: noise levels are {s_lo}-{s_hi} (on the 8-bit scale)")
        if self.quality is not None and not q_lo <= self.quality <= q_hi:
            raise ValueError(f"--quality {self.quality}: JPEG qualities are {q_lo}-{q_hi}")
        if self.task == "demosaic" and self.gray:
            raise ValueError("--gray: demosaicking needs color images")
        if self.y and self.gray:  # a gray pair's Y would be 16 + 219/255 v: not what --y asks for
            raise ValueError("--y: scores the Y channel of color images; gray images are scored as they are")

    @property
    def label(self) -> str:
        level = level_text(self.task, self.scale, self.sigma, self.quality, sigma_mark="sigma")
        return " ".join(s for s in (self.task, level, "gray" if self.gray else "") if s)

    @property
    def crop(self) -> int:
        """Border shave before scoring: the SR convention shaves ``scale`` pixels; other tasks none."""
        return self.scale if self.task == "sr" else 0

    @property
    def score_on_y(self) -> bool:
        return self.task == "sr" or (self.task == "paired" and self.y)


def _as_hwc(img: np.ndarray) -> np.ndarray:
    return img[..., None] if img.ndim == 2 else img


def _shape(img: np.ndarray) -> str:
    return f"{img.shape[1]}x{img.shape[0]}, {img.shape[2]} channel(s)"


def _to_float(img: np.ndarray) -> np.ndarray:
    return _as_hwc(img).astype(np.float32) / 255.0


def prepare(sample: Sample, deg: Degradation) -> tuple[np.ndarray, np.ndarray]:
    """The model input (float32 H x W x C) and the uint8 ground truth for one test image."""
    target = degrade.read_clean(sample.target, deg.gray, deg.task)
    if deg.task == "sr":
        target = modcrop(target, deg.scale)
        if sample.source is not None:
            lr = degrade.read_clean(sample.source, deg.gray, deg.task)
            expected = (target.shape[0] // deg.scale, target.shape[1] // deg.scale)
            if lr.shape[:2] != expected:
                raise ImageError(
                    f"{sample.source}: LR size {lr.shape[1]}x{lr.shape[0]} does not match "
                    f"HR/{deg.scale} = {expected[1]}x{expected[0]}"
                )
        else:
            lr = _as_hwc(degrade.bicubic_lr(target, deg.scale))
        return _to_float(lr), target
    if deg.task == "denoise":
        return _as_hwc(degrade.add_gaussian_noise(_to_float(target), deg.sigma, seed=0)), target
    if deg.task == "jpeg":
        return _to_float(
            degrade.jpeg_compress(target.squeeze(-1) if deg.gray else target, deg.quality)
        ), target
    if deg.task == "demosaic":
        # The model input is the 1-channel RGGB mosaic; models interpolate it themselves.
        return _as_hwc(degrade.bayer_mosaic(_to_float(target))), target
    if sample.source is None:
        raise DatasetError(f"{sample.target}: paired task needs a NAME/input + NAME/target dataset")
    source = _to_float(degrade.read_clean(sample.source, deg.gray, deg.task))
    if source.shape != target.shape:
        raise ImageError(f"{sample.source}: {_shape(source)} does not match its target {_shape(target)}")
    return source, target


def score(output: np.ndarray, target: np.ndarray, deg: Degradation) -> dict[str, float]:
    """PSNR / SSIM (and PSNR-B for JPEG) of uint8 images under the task's conventions."""
    pred, gt = output.squeeze(-1) if output.shape[-1] == 1 else output, target
    gt = gt.squeeze(-1) if gt.shape[-1] == 1 else gt
    kw = {"crop": deg.crop, "y": deg.score_on_y}
    result = {"psnr": metrics.psnr(pred, gt, **kw), "ssim": metrics.ssim(pred, gt, **kw)}
    if deg.task == "jpeg":
        result["psnr_b"] = metrics.psnr_b(pred, gt, **kw)
    return result


def pseudo_model(name: str, deg: Degradation) -> RestoreFn:
    """The papers' reference rows as models: ``bicubic`` (SR), ``identity`` (the degraded input),
    ``malvar`` (the classical demosaicking baseline)."""
    if name == "bicubic":
        if deg.task != "sr":
            raise ValueError("the 'bicubic' pseudo-model is for --task sr")
        return lambda x: imresize(to_uint(x), deg.scale).astype(np.float32) / 255.0
    if name == "identity":
        if deg.task == "sr":
            raise ValueError("the 'identity' pseudo-model is for same-size tasks (use 'bicubic' for sr)")
        return lambda x: x
    if name == "malvar":
        if deg.task != "demosaic":
            raise ValueError("the 'malvar' pseudo-model is for --task demosaic")
        return lambda x: _to_float(degrade.demosaic_malvar(to_uint(x)[..., 0]))
    raise ValueError(f"unknown model '{name}'")


PSEUDO_MODELS = ("bicubic", "identity", "malvar")

# The sets of the papers' tables (README, Restoring images and evaluating models), per (task, gray), in
# their column order.
BENCHMARK_SETS = {
    ("sr", False): ("Set5", "Set14", "BSD100", "Urban100", "Manga109"),
    ("denoise", True): ("Set12", "BSD68", "Urban100"),
    ("denoise", False): ("CBSD68", "Kodak24", "McMaster", "Urban100"),
    ("jpeg", True): ("Classic5", "LIVE1"),
    ("jpeg", False): ("LIVE1", "BSDS500"),
    ("demosaic", False): ("Kodak24", "McMaster"),
}


def benchmark_sets(task: str, gray: bool | None, data_root: str | Path | None = None) -> list[str]:
    """The task's standard sets present under the data root (``gray=None``: gray and color ones);
    for paired tasks every ``NAME/input`` + ``NAME/target`` folder."""
    root = resolve_data_root(data_root)
    if task == "paired":
        names = sorted(p.name for p in root.iterdir() if (p / "input").is_dir() and (p / "target").is_dir())
    else:
        kinds = (True, False) if gray is None else (gray,)
        wanted = dict.fromkeys(n for g in kinds for n in BENCHMARK_SETS.get((task, g), ()))
        names = [n for n in wanted if (root / n).is_dir()]
    if not names:
        raise DatasetError(f"{root}: no {task} benchmark set found; name one with --dataset")
    return names


def evaluate(
    restorer: RestoreFn,
    dataset: Dataset,
    deg: Degradation,
    *,
    model_name: str,
    params_m: float | None = None,
    save_dir: Path | None = None,
    progress: Callable[[Iterable], Iterable] = iter,
) -> dict:
    """Score ``restorer`` on every image of ``dataset``; a broken image is reported, not fatal."""
    if (dataset.layout == "paired") != (deg.task == "paired"):
        raise DatasetError(
            f"{dataset.root}: a paired set (input/ + target/) is evaluated with --task paired, and only it"
            if dataset.layout == "paired"
            else f"{dataset.root}: --task paired needs NAME/input/ + NAME/target/ images"
        )
    start = time.perf_counter()
    per_image, failed = [], []
    for sample in progress(dataset.samples):
        try:
            inp, target = prepare(sample, deg)
            restored = restorer(inp)
            if np.isnan(restored).any():
                raise ImageError(f"{sample.target}: the model's output has NaN pixels")
            output = to_uint(restored)
            if output.shape != target.shape:
                raise ImageError(
                    f"{sample.target}: model output {output.shape} does not match the target {target.shape}"
                )
            try:
                scores = score(output, target, deg)
            except ValueError as err:  # an image too small for the conventions' border crop or SSIM
                raise ImageError(f"{sample.target}: {err}") from None
            per_image.append({"name": sample.name, **scores})
            if save_dir is not None:
                level = deg.label.replace(" ", "-")  # one folder per level: --sigma 15,25,50 keeps all three
                write_image(save_dir / dataset.name / level / f"{sample.name}.png", output)
        except (ImageError, DatasetError) as err:
            failed.append(str(err))
        except InputError as err:
            failed.append(f"{sample.source or sample.target}: {err}")
    means = {
        key: float(np.mean([r[key] for r in per_image])) if per_image else float("nan")
        for key in ("psnr", "ssim", *(("psnr_b",) if deg.task == "jpeg" else ()))
    }
    return {
        "model": model_name,
        "task": deg.task,
        "dataset": dataset.name,
        "params_m": params_m,
        "scale": deg.scale if deg.task == "sr" else None,
        "sigma": deg.sigma,
        "quality": deg.quality,
        "gray": deg.gray,
        "metric_on": "y" if deg.score_on_y else ("gray" if deg.gray else "rgb"),
        "crop": deg.crop,
        **means,
        "images": len(dataset.samples),
        "per_image": per_image,
        "failed": failed,
        "seconds": round(time.perf_counter() - start, 3),
    }


def scores_text(scores: dict) -> str:
    """A validation's scores on one line: `Set12 psnr 30.1668 ssim 0.8548; BSD68 ...` (non-set keys,
    such as its step, left out)."""
    return "; ".join(
        f"{name} " + " ".join(f"{key} {value}" for key, value in metrics.items())
        for name, metrics in scores.items()
        if isinstance(metrics, dict)
    )


def level_text(task: str, scale: int, sigma: float | None, quality: int | None, sigma_mark: str = "σ") -> str:
    """'x2', 'σ25', 'q10': a setting's degradation level ('sigma25' in file names); '' where it has none."""
    if task == "sr":
        return f"x{scale}"
    if task == "denoise":
        return "" if sigma is None else f"{sigma_mark}{sigma:g}"
    return f"q{quality}" if task == "jpeg" else ""


def format_table(results: list[dict]) -> str:
    """Results in the papers' layout: one row per (model, setting), one 'PSNR/SSIM' column per set."""
    columns = list(dict.fromkeys(r["dataset"] for r in results))
    rows: dict[tuple, dict[str, str]] = {}
    for r in results:
        level = level_text(r["task"], r["scale"], r["sigma"], r["quality"])
        key = (r["model"], r["task"] + (" gray" if r["gray"] else ""), level)
        scored, total = len(r["per_image"]), r["images"]  # an image whose output failed to save is scored
        cell = f"{r['psnr']:.2f}/{r['ssim']:.4f}" if scored else f"none of {total} images scored"
        if "psnr_b" in r and scored:
            cell += f" ({r['psnr_b']:.2f})"
        if 0 < scored < total:  # a mean over the images that ran, not the set's
            cell += f" [{scored} of {total} images]"
        rows.setdefault(key, {})[r["dataset"]] = cell
    header = ["model", "task", "level", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, cells in rows.items():
        lines.append("| " + " | ".join([*key, *(cells.get(c, "-") for c in columns)]) + " |")
    return "\n".join(lines)
