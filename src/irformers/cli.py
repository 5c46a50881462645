"""The ``irformers`` command line. Exit status: 0 success, 2 bad usage, 1 when any input failed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from irformers.data.datasets import DatasetError, find_dataset, list_images

BAD_USAGE, INPUT_FAILED = 2, 1


class UsageError(Exception):
    """Bad arguments: reported on one line, exit status 2."""


def _numbers(text: str | None, kind: Callable[[str], float | int]) -> list:
    """Comma-separated levels (``--scale 2,3,4``); a missing option means one unset level."""
    if text is None:
        return [None]
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise UsageError(f"cannot read '{text}' as a comma-separated list of numbers") from err


def _progress(enabled: bool, desc: str) -> Callable:
    if not enabled:
        return iter
    from tqdm import tqdm

    return lambda items: tqdm(items, desc=desc, leave=False, file=sys.stderr)


def _infer_gray(dataset_name: str, data_root: str | None, task: str) -> bool:
    """Gray when the set's images are single-channel (Set12, BSD68, Classic5), for denoise/JPEG."""
    if task not in ("denoise", "jpeg"):
        return False
    from irformers.data.io import read_array

    first = find_dataset(dataset_name, data_root).samples[0].target
    return read_array(first, "unchanged").ndim == 2


def cmd_test(args: argparse.Namespace) -> int:
    from irformers.evaluate import Degradation, evaluate, format_table, pseudo_model

    results, failed = [], 0
    for name in [d for d in args.dataset.split(",") if d]:
        gray = args.gray or _infer_gray(name, args.data_root, args.task)
        for scale in _numbers(args.scale, int):
            for sigma in _numbers(args.sigma, float):
                for quality in _numbers(args.quality, int):
                    try:
                        deg = Degradation(
                            args.task, scale=scale or 1, sigma=sigma, quality=quality, gray=gray, y=args.y
                        )
                        restorer = pseudo_model(args.model, deg)
                    except ValueError as err:
                        raise UsageError(str(err)) from err
                    dataset = find_dataset(
                        name, args.data_root, scale=deg.scale if deg.task == "sr" else None
                    )
                    result = evaluate(
                        restorer,
                        dataset,
                        deg,
                        model_name=args.model,
                        save_dir=Path(args.save_dir) if args.save_dir else None,
                        progress=_progress(not args.json and sys.stderr.isatty(), f"{name} {deg.label}"),
                    )
                    failed += len(result["failed"])
                    results.append(result)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=1))
    else:
        print(format_table(results))
    for result in results:
        for message in result["failed"]:
            print(f"failed: {message}", file=sys.stderr)
    return INPUT_FAILED if failed else 0


def _degrade_one(img_path: Path, args: argparse.Namespace) -> np.ndarray:
    from irformers.data import degrade
    from irformers.data.io import read_array

    gray = args.gray
    img = read_array(img_path, "unchanged" if gray else "rgb")
    if gray and img.ndim == 3:
        img = degrade.rgb_to_gray_y(img)
    if img.dtype != np.uint8:
        raise ValueError(f"{img_path}: only 8-bit images can be degraded by the conventions")
    if args.task == "sr":
        return degrade.bicubic_lr(img, args.scale)
    if args.task == "denoise":
        noisy = degrade.add_gaussian_noise(img.astype(np.float32) / 255.0, args.sigma, seed=0)
        return np.rint(np.clip(noisy, 0, 1) * 255).astype(np.uint8)
    if args.task == "jpeg":
        return degrade.jpeg_compress(img, args.quality)
    return degrade.bayer_mosaic(img)


def cmd_degrade(args: argparse.Namespace) -> int:
    from irformers.data.io import ImageError, write_image

    needs = {"sr": "scale", "denoise": "sigma", "jpeg": "quality"}.get(args.task)
    if needs and getattr(args, needs) is None:
        raise UsageError(f"--task {args.task} needs --{needs}")
    indir, outdir = Path(args.indir), Path(args.outdir)
    if not indir.is_dir():
        raise UsageError(f"{indir}: input folder does not exist")
    images = list_images(indir)
    if not images:
        raise UsageError(f"{indir}: no images in the input folder")
    failures = []
    for path in images:
        try:
            write_image(outdir / f"{path.stem}.png", _degrade_one(path, args))
        except (ImageError, ValueError) as err:
            failures.append(str(err))
    print(f"wrote {len(images) - len(failures)} of {len(images)} images to {outdir}")
    for message in failures:
        print(f"failed: {message}", file=sys.stderr)
    return INPUT_FAILED if failures else 0


def _metric_pairs(pred: Path, gt: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    if pred.is_file() and gt.is_file():
        return [(pred, gt)], []
    if not (pred.is_dir() and gt.is_dir()):
        missing = (
            next(p for p in (pred, gt) if not p.exists()) if not (pred.exists() and gt.exists()) else None
        )
        raise UsageError(
            f"{missing}: no such file or folder"
            if missing
            else "PRED and GT must both be files or both be folders"
        )
    preds, gts = {p.stem: p for p in list_images(pred)}, {p.stem: p for p in list_images(gt)}
    if not gts:
        raise UsageError(f"{gt}: no images")
    missing = [f"{gts[s]}: no prediction named {s}.* in {pred}" for s in sorted(set(gts) - set(preds))]
    return [(preds[s], gts[s]) for s in sorted(set(gts) & set(preds))], missing


def cmd_metrics(args: argparse.Namespace) -> int:
    from irformers import metrics
    from irformers.data.io import ImageError, read_array

    pairs, failures = _metric_pairs(Path(args.pred), Path(args.gt))
    rows = []
    for pred_path, gt_path in pairs:
        try:
            pred, gt = read_array(pred_path, "unchanged"), read_array(gt_path, "unchanged")
            if pred.shape != gt.shape:
                raise ImageError(
                    f"{pred_path}: size/channels {pred.shape} differ from {gt_path.name} {gt.shape}"
                )
            kw = {"crop": args.crop, "y": args.y}
            rows.append(
                {
                    "name": gt_path.stem,
                    "psnr": metrics.psnr(pred, gt, **kw),
                    "ssim": metrics.ssim(pred, gt, **kw),
                    "psnr_b": metrics.psnr_b(pred, gt, **kw),
                }
            )
        except (ImageError, ValueError) as err:
            failures.append(str(err))
    summary = {
        key: float(np.mean([r[key] for r in rows])) if rows else float("nan")
        for key in ("psnr", "ssim", "psnr_b")
    }
    if args.json:
        print(json.dumps({**summary, "crop": args.crop, "y": args.y, "per_image": rows, "failed": failures}))
    else:
        for r in rows:
            print(f"{r['name']}: PSNR {r['psnr']:.4f} dB  SSIM {r['ssim']:.4f}  PSNR-B {r['psnr_b']:.4f} dB")
        if len(rows) > 1:
            print(
                f"mean ({len(rows)}): PSNR {summary['psnr']:.4f} dB  SSIM {summary['ssim']:.4f}  "
                f"PSNR-B {summary['psnr_b']:.4f} dB"
            )
    for message in failures:
        print(f"failed: {message}", file=sys.stderr)
    return INPUT_FAILED if failures else 0


def cmd_models(args: argparse.Namespace) -> int:
    from irformers.models import list_presets

    presets = list_presets()
    if args.json:
        print(json.dumps(presets, indent=1))
        return 0
    print(
        f"{'name':34s} {'arch':8s} {'task':9s} {'scale':>5s} {'in':>3s} "
        f"{'params (M)':>11s} {'paper (M)':>10s}"
    )
    for p in presets:
        reported = f"{p['reported_params']:.2f}" if p["reported_params"] is not None else "-"
        print(
            f"{p['name']:34s} {p['arch']:8s} {p['task']:9s} {p['scale']:>5d} {p['in_channels']:>3d} "
            f"{p['params'] / 1e6:>11.3f} {reported:>10s}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="irformers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the named presets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("test", help="evaluate a model on benchmark sets under the papers' conventions")
    p.add_argument("--model", required=True, help="bicubic | identity | malvar (pseudo-models)")
    p.add_argument("--task", required=True, choices=("sr", "denoise", "jpeg", "demosaic", "paired"))
    p.add_argument("--dataset", required=True, help="set name(s) under the data root, comma-separated")
    p.add_argument("--scale", help="SR scale(s), e.g. 4 or 2,3,4")
    p.add_argument("--sigma", help="noise level(s) on the 0-255 scale, e.g. 25 or 15,25,50")
    p.add_argument("--quality", help="JPEG quality(ies), e.g. 10 or 10,20,30,40")
    p.add_argument("--gray", action="store_true", help="gray images (default: gray when the set's files are)")
    p.add_argument("--y", action="store_true", help="paired tasks: score on the Y channel")
    p.add_argument("--data-root", help="folder holding the sets (default: $IRFORMERS_DATA)")
    p.add_argument("--save-dir", help="write the restored images here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("degrade", help="write degraded copies of a folder of images (PNG)")
    p.add_argument("--task", required=True, choices=("sr", "denoise", "jpeg", "demosaic"))
    p.add_argument("--scale", type=int)
    p.add_argument("--sigma", type=float)
    p.add_argument("--quality", type=int)
    p.add_argument("--gray", action="store_true", help="convert color images to BT.601 Y first")
    p.add_argument("indir")
    p.add_argument("outdir")
    p.set_defaults(func=cmd_degrade)

    p = sub.add_parser("metrics", help="PSNR / SSIM / PSNR-B of predictions against ground truth")
    p.add_argument("pred", help="an image or a folder (matched to GT by file name)")
    p.add_argument("gt", help="an image or a folder")
    p.add_argument("--crop", type=int, default=0, help="pixels shaved from every border")
    p.add_argument("--y", action="store_true", help="score on BT.601 Y (RGB inputs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_metrics)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, DatasetError) as err:
        print(f"irformers {args.command}: {err}", file=sys.stderr)
        return BAD_USAGE


if __name__ == "__main__":
    sys.exit(main())
