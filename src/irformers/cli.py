"""The ``irformers`` command line. Exit status: 0 success, 2 bad usage, 1 when any input failed, 130 when
interrupted (Ctrl-C), 143 when a training is stopped by SIGTERM, 141 when stdout's reader went away."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from irformers.data.datasets import (
    IMAGE_EXTENSIONS,
    DatasetError,
    files_are_gray,
    find_dataset,
    group_by_stem,
    skipped_note,
    split_files,
)
from irformers.engine.config import TASKS

BAD_USAGE, INPUT_FAILED, INTERRUPTED = 2, 1, 130  # 130: the shell's status for Ctrl-C


class UsageError(Exception):
    """Bad arguments: reported on one line, exit status 2."""


def _numbers(text: str | None, kind: Callable[[str], float | int]) -> list:
    """Comma-separated levels (``--scale 2,3,4``); a missing option means one unset level."""
    if text is None:
        return [None]
    parts = [part.strip() for part in text.split(",")]
    try:
        if not all(parts):
            raise ValueError("an empty item")  # '--k ,64' is a typo, not a list of one
        return [kind(part) for part in parts]
    except ValueError as err:
        raise UsageError(f"cannot read '{text}' as a comma-separated list of numbers") from err


def _print_json(data: object, indent: int | None = 1) -> None:
    """Standard JSON, which jq, JavaScript and Go all parse: a non-finite score (the PSNR of identical
    images, the mean over no scored image) is null, not Python's Infinity / NaN."""

    def finite(x: object) -> object:
        if isinstance(x, float):
            return x if np.isfinite(x) else None
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        return [finite(v) for v in x] if isinstance(x, list | tuple) else x

    print(json.dumps(finite(data), indent=indent, allow_nan=False))


def _progress(enabled: bool, desc: str) -> Callable:
    if not enabled:
        return iter
    from tqdm import tqdm

    return lambda items: tqdm(items, desc=desc, leave=False, file=sys.stderr)


def _tile(text: str) -> int | str | None:
    """``--tile``: 'auto', a number of pixels, or one whole-image pass ('none'; 0 as SwinIR spells it)."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        tile = int(text)
    except ValueError:
        tile = -1
    if tile < 0:
        raise UsageError(f"--tile {text}: expected a number of pixels, 'auto' or 'none' (or 0)")
    return tile or None


def _k_that_runs(model, k: int | None, label: str) -> int | None:
    """A k above a window's tokens attends to the whole window; say so, and give the k that runs so a
    report never shows one that did not."""
    tokens = model.descriptor.window_tokens
    if k and tokens and k > tokens:
        print(
            f"note: {label}: windows hold at most {tokens} tokens, so k {k} attends to whole windows "
            f"(k {tokens}, or fewer where a window is smaller)",
            file=sys.stderr,
        )
        return tokens
    return k


def _metadata(path: str) -> dict:
    """An irformers file's metadata; {} for foreign files and for unreadable ones (loading says why)."""
    from irformers.engine.checkpoint import CheckpointError, read_metadata

    try:
        return read_metadata(path)
    except CheckpointError:
        return {}


def _load_model(args: argparse.Namespace):
    """The model of ``--model`` (preset, weights file, or foreign file with ``--arch``) and its restorer."""
    from irformers.engine.checkpoint import CheckpointError
    from irformers.inference import Restorer, TileWarning, load_model

    warnings.simplefilter("always", TileWarning)  # every run's notes (main's catch_warnings scopes this)
    try:
        model = load_model(args.model, arch=args.arch, allow_random_init=args.allow_random_init)
        restorer = Restorer(
            model,
            tile=_tile(args.tile),
            overlap=args.tile_overlap,
            ensemble=args.ensemble,
            precision=args.precision,
            device=args.device,
            k=args.k,
            progress=sys.stderr.isatty(),
            compile=args.compile,
        )
    except (CheckpointError, ValueError) as err:
        raise UsageError(str(err)) from err
    args.k = _k_that_runs(model, args.k, args.model)  # what reports name: the k that ran
    if args.allow_random_init and not model.random_init:
        print(f"note: --allow-random-init: {args.model} has trained weights; they are used", file=sys.stderr)
    if model.random_init:
        print(
            f"WARNING: {args.model} has random weights (--allow-random-init): smoke tests only, "
            f"its outputs are not restorations",
            file=sys.stderr,
        )
    return model, restorer


def _check_no_model_options(args: argparse.Namespace) -> None:
    """A pseudo-model (bicubic, identity, malvar) runs no network: a network's option is a mistake."""
    given = {
        "--arch": args.arch,
        "--allow-random-init": args.allow_random_init,
        "--tile": args.tile != "auto",
        "--tile-overlap": args.tile_overlap is not None,
        "--ensemble": args.ensemble,
        "--k": args.k is not None,
        "--compile": args.compile,
        "--precision": args.precision != "fp32",
    }
    for option, set_ in given.items():
        if set_:
            raise UsageError(f"{option}: {args.model} is a pseudo-model, no network to run it on")


def _options_text(args: argparse.Namespace, restorer) -> str:
    """The test-time options that change a model's scores, for its row and JSON name: ' (ensemble, k 64)'."""
    said = [
        "ensemble" if args.ensemble else "",
        f"k {args.k}" if args.k is not None else "",
        f"tile {restorer.tile}" if isinstance(restorer.tile, int) else "",
        str(restorer.dtype).removeprefix("torch.") if str(restorer.dtype) != "torch.float32" else "",
    ]
    said = [s for s in said if s]
    return f" ({', '.join(said)})" if said else ""


def _check_levels(args: argparse.Namespace) -> None:
    """A level the task does not use is a mistake (--sigma with --task jpeg), not something to ignore."""
    used_by = {"scale": ("sr",), "sigma": ("denoise",), "quality": ("jpeg",), "y": ("paired", "sr")}  # SR: Y
    for option, tasks in used_by.items():
        value = getattr(args, option, None)
        if value not in (None, False) and args.task not in tasks:
            shown = "" if value is True else f" {value}"
            raise UsageError(
                f"--{option}{shown}: only --task {' or '.join(tasks)} uses it, not --task {args.task}"
            )
    if args.task == "sr" and getattr(args, "gray", False):  # the pseudo-models scored OpenCV's gray
        raise UsageError("--gray: SR reads every image as RGB and scores its Y channel")


def _test_task(desc) -> str:
    """The benchmark task a model is scored on by default: its own, or paired sets (deblurring, deraining)."""
    return desc.task if desc.task in TASKS else "paired"


def _check_model_task(model, args: argparse.Namespace, scales: list) -> list:
    """Refuse settings the model was not built for; an SR model's scale is the default ``--scale``."""
    desc = model.descriptor
    if (desc.task == "sr") != (args.task == "sr") or desc.bayer_input != (args.task == "demosaic"):
        raise UsageError(f"{args.model} is a {desc.task} model; it cannot be evaluated on --task {args.task}")
    if args.task != "sr":
        return scales
    if scales == [None]:
        return [desc.scale]
    wrong = [s for s in scales if s != desc.scale]
    if wrong:
        raise UsageError(f"{args.model} is a x{desc.scale} model; it cannot be evaluated at x{wrong[0]}")
    return scales


def _degraded_gray(
    where: str, files: Callable[[], Iterable[Path]], args: argparse.Namespace, model=None, model_gray=False
) -> bool:
    """Whether images are degraded gray, for `test` and `degrade` alike: a model's channels decide, else
    --gray or the files (`files()`, read only where it matters). Refuses gray images that make no test:
    demosaicking them, or a color model on them."""
    gray_task = args.task in ("denoise", "jpeg", "demosaic") and not model_gray  # a gray model's set: any
    files_gray = gray_task and files_are_gray(files())
    if files_gray and args.task == "demosaic":  # a mosaic of gray is no test
        raise UsageError(f"{where}: its images are gray; demosaicking restores color images")
    if files_gray and model is not None:  # three equal channels, each its own noise
        raise UsageError(
            f"{where}: its images are gray, and {args.model} is a color model (three copies of a gray "
            f"image would score it higher than a color test); use a color set"
        )
    return model_gray if model is not None else args.gray or files_gray


def cmd_test(args: argparse.Namespace) -> int:
    from irformers.evaluate import (
        PSEUDO_MODELS,
        Degradation,
        benchmark_sets,
        evaluate,
        format_table,
        pseudo_model,
    )
    from irformers.inference import model_label

    if args.save_dir:
        _check_output_folder(Path(args.save_dir), "--save-dir")
    model = restorer = model_gray = None
    scales = _numbers(args.scale, int)
    label, params_m = args.model, None
    if args.model in PSEUDO_MODELS:
        if args.task is None:
            raise UsageError(f"--task: {args.model} is a pseudo-model; say which task to score it on")
        _check_levels(args)
        _check_no_model_options(args)
    else:
        model, restorer = _load_model(args)
        if args.task is None:  # said: a model trained on pairs without model.task keeps its preset's
            args.task = _test_task(model.descriptor)
            print(f"note: --task {args.task} (the model's task)", file=sys.stderr)
        _check_levels(args)
        scales = _check_model_task(model, args, scales)
        label, params_m = model_label(model, args.model), sum(p.numel() for p in model.parameters()) / 1e6
        label += _options_text(args, restorer)
        model_gray = args.task in ("denoise", "jpeg", "paired") and model.descriptor.in_channels == 1
        if args.gray and not model_gray:
            raise UsageError(f"--gray: {args.model} is not a gray {args.task} model")
    names = args.dataset.split(",") if args.dataset else benchmark_sets(args.task, model_gray, args.data_root)
    grays = {  # every set's refusals before any runs
        name: _degraded_gray(
            f"--dataset {name}",
            lambda name=name: (s.target for s in find_dataset(name, args.data_root).samples),
            args,
            model,
            model_gray,
        )
        for name in names
        if name
    }
    levels = itertools.product(scales, _numbers(args.sigma, float), _numbers(args.quality, int))
    results, failed = [], 0
    for name, (scale, sigma, quality) in itertools.product(grays, list(levels)):
        try:
            deg = Degradation(
                args.task, scale=scale or 1, sigma=sigma, quality=quality, gray=grays[name], y=args.y
            )
            run = restorer or pseudo_model(args.model, deg)
        except ValueError as err:
            raise UsageError(str(err)) from err
        result = evaluate(
            run,
            find_dataset(name, args.data_root, scale=deg.scale if deg.task == "sr" else None),
            deg,
            model_name=label,
            params_m=params_m,
            save_dir=Path(args.save_dir) if args.save_dir else None,
            progress=_progress(not args.json and sys.stderr.isatty(), f"{name} {deg.label}"),
        )
        failed += len(result["failed"])
        results.append(result)
    if args.json:
        _print_json(results[0] if len(results) == 1 else results)
    else:
        print(format_table(results))
    for result in results:
        for message in result["failed"]:
            print(f"failed: {message}", file=sys.stderr)
    return INPUT_FAILED if failed else 0


def _expand_inputs(specs: Sequence[str]) -> list[Path]:
    """Files, folders and glob patterns (their image files), in order, each file once."""
    import glob

    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = _images_in(path)
            if not found:
                raise UsageError(f"{path}: no images in the folder")
        elif path.is_file():
            found = [path]
        elif any(c in spec for c in "*?["):
            matches = sorted(p for p in map(Path, glob.glob(spec)) if p.is_file())
            found = [p for p in matches if p.suffix.lower() in IMAGE_EXTENSIONS]
            if not found:
                raise UsageError(f"{spec}: no {'image ' if matches else ''}file matches the pattern")
        else:
            raise UsageError(f"{spec}: no such file or folder")
        paths += found
    return list(dict.fromkeys(paths))


def _images_in(folder: Path) -> list[Path]:
    """The folder's image files; the other files (not hidden ones) are named in a note, not skipped unsaid."""
    images, other_files = split_files(folder)
    note = skipped_note(folder, other_files)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return images


def _check_output_folder(folder: Path, what: str) -> None:
    """Refuse, before any image runs, a folder that cannot take outputs."""
    from irformers.data.io import folder_problem

    problem = folder_problem(folder)
    if problem:
        raise UsageError(f"{folder}: {what} {problem}")


def _output_path(path: Path, args: argparse.Namespace, suffix: str) -> Path:
    ext = path.suffix.lower() if args.ext is None else args.ext
    return Path(args.output) / f"{path.stem}{suffix}{ext}"


def _claim_output(path: Path, out: Path, claimed: dict[Path, str], fix: str) -> None:
    """Refuse an output that would replace an input or an output written earlier in the same batch.

    `claimed` starts as every input's resolved path -> "an input" and records each output it allows.
    """
    from irformers.data.io import ImageError

    key = out.resolve()
    if claimed.get(key) == "an input":
        raise ImageError(f"{path}: output {out.name} would overwrite an input ({fix})")
    if key in claimed:
        raise ImageError(f"{path}: output {out.name} would overwrite {claimed[key]}")
    claimed[key] = f"the output of {path.name}"


def _inputs_claimed(paths: Sequence[Path]) -> dict[Path, str]:
    return {p.resolve(): "an input" for p in paths}


def _quantised(pixels: np.ndarray | None, bit_depth: int) -> np.ndarray | None:
    """``to_uint`` in row blocks: writing a large image then needs no full-size float temporaries."""
    from irformers.data.io import to_uint

    if pixels is None:
        return None
    out = np.empty(pixels.shape, np.uint8 if bit_depth == 8 else np.uint16)
    for row in range(0, len(pixels), 256):
        out[row : row + 256] = to_uint(pixels[row : row + 256], bit_depth)
    return out


def _restore_one(path: Path, out: Path, restorer, scale: int) -> None:
    """Restore one file: pixels through the model, alpha aside (bicubic for SR), bit depth kept."""
    from irformers.data.io import ALPHA_FORMATS, MAX_BIT_DEPTH, read_image, write_image
    from irformers.data.resize import imresize

    img = read_image(path)
    depth = min(img.bit_depth, MAX_BIT_DEPTH.get(out.suffix, 8))
    alpha = img.alpha
    if alpha is not None and out.suffix not in ALPHA_FORMATS:
        print(f"note: {path}: {out.suffix} has no alpha channel; written without it", file=sys.stderr)
        alpha = None
    if alpha is not None and scale > 1:
        alpha = imresize(alpha, scale)
    try:
        pixels = restorer(img.pixels)
        del img  # the float input is no longer needed while the output is written
        pixels, alpha = _quantised(pixels, depth), _quantised(alpha, depth)
    except ValueError as err:  # the model's own errors, and NaN outputs (fp16 overflow)
        raise ValueError(f"{path}: {err}") from None
    write_image(out, pixels, bit_depth=depth, alpha=alpha)


def cmd_restore(args: argparse.Namespace) -> int:
    from irformers.data.io import MAX_BIT_DEPTH, ImageError
    from irformers.inference import model_label

    if args.ext is not None:  # normalised once: "JPG", "jpg" and ".jpg" all name .jpg
        ext = "." + args.ext.lower().lstrip(".")
        if ext not in MAX_BIT_DEPTH:
            raise UsageError(f"--ext {args.ext}: choose from {', '.join(e[1:] for e in MAX_BIT_DEPTH)}")
        args.ext = ext
    if args.suffix is not None and ("/" in args.suffix or "\\" in args.suffix):
        raise UsageError(
            f"--suffix {args.suffix}: a suffix goes into file names; use -o to choose the folder"
        )
    paths = _expand_inputs(args.inputs)
    _check_output_folder(Path(args.output), "-o")
    model, restorer = _load_model(args)
    desc = model.descriptor
    if args.scale is not None and args.scale != desc.scale:
        raise UsageError(f"--scale {args.scale}: {args.model} is a x{desc.scale} model")
    if args.task is not None and args.task != desc.task:
        raise UsageError(f"--task {args.task}: {args.model} is a {desc.task} model")
    suffix = f"_x{desc.scale}" if desc.scale > 1 else f"_{desc.task}"
    suffix = suffix if args.suffix is None else args.suffix
    failures, written, claimed, tiles = [], 0, _inputs_claimed(paths), []
    for path in _progress(len(paths) > 1 and sys.stderr.isatty(), "images")(paths):
        out = _output_path(path, args, suffix)
        try:
            _claim_output(path, out, claimed, "use -o elsewhere or --suffix")
            _restore_one(path, out, restorer, desc.scale)
            written += 1
            tiles += [restorer.last_plan[0]] if restorer.last_plan else []
        except (ImageError, ValueError) as err:  # ValueError: the model's, with its file named
            failures.append(str(err))
    print(
        f"restored {written} of {len(paths)} images into {args.output} with {model_label(model, args.model)} "
        f"({restorer.device.type}, {str(restorer.dtype).removeprefix('torch.')}, "
        + ("ensemble, " if args.ensemble else "")
        + (f"k {args.k}, " if args.k is not None else "")
        + (
            f"{'/'.join(map(str, sorted(set(tiles))))}-px tiles on {len(tiles)} of {written}"
            if tiles
            else "whole images"
        )
        + ")"
    )
    for message in failures:
        print(f"failed: {message}", file=sys.stderr)
    return INPUT_FAILED if failures else 0


def cmd_info(args: argparse.Namespace) -> int:
    from irformers.engine.checkpoint import CheckpointError
    from irformers.inference import describe_checkpoint

    try:
        info = describe_checkpoint(args.checkpoint)
    except CheckpointError as err:
        raise UsageError(str(err)) from err
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for key, value in info.items():
        if key == "training" and isinstance(value, dict):
            print("\n".join(_training_lines(value)))
        else:
            print(f"{key:12s} {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return 0


def _levels(degrade: dict) -> str:
    """' x2', ' sigma 0-50', ' q 10-40': a stage's degradation level, as a recipe sets it (only the
    level its task uses: a mix's sources inherit the others)."""
    from irformers.engine.config import USED_BY

    text = f" x{degrade['scale']}" if degrade.get("scale", 1) > 1 else ""
    for label, fixed, span in (("sigma", "sigma", "sigma_range"), ("q", "quality", "quality_range")):
        if USED_BY[fixed] != degrade.get("task", USED_BY[fixed]):
            continue
        if degrade.get(span):
            text += f" {label} {degrade[span][0]:g}-{degrade[span][1]:g}"
        elif degrade.get(fixed) is not None:
            text += f" {label} {degrade[fixed]:g}"
    return text


def _source_text(source: dict, degrade: dict) -> str:
    """A training source, with the task and level it sets itself in a mix (all-in-one)."""
    own = {k: v for k, v in source.items() if k not in ("target", "input", "weight")}
    if not own:
        return str(source.get("target"))
    merged = {**degrade, **own}
    return f"{source.get('target')} ({merged.get('task', '?')}{_levels(merged)})"


def _duration(stages: list[dict]) -> str:
    """Training time in the unit that shows it: a quick run is '40 s', not '0.0 h'."""
    seconds = sum(s.get("seconds", 0) for s in stages)
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def _training_lines(summary: dict) -> list[str]:
    """The training summary, one line per stage, oldest first (``--json`` shows it as stored)."""
    from irformers.engine.checkpoint import training_stages
    from irformers.evaluate import scores_text

    stages = training_stages(summary)
    steps = sum(s.get("steps", 0) for s in stages)
    lines = [f"{'training':12s} {len(stages)} stage(s), {steps} steps, {_duration(stages)}"]
    for number, stage in enumerate(stages, 1):
        recipe = stage.get("recipe")
        degrade = recipe.get("degrade", {}) if recipe else {}
        data = ", ".join(_source_text(d, degrade) for d in stage.get("data", []))
        done, total = stage.get("steps", 0), stage.get("total_steps")
        line = f"  {number}. {done}{f'/{total}' if total not in (None, done) else ''} steps"
        line += f", {_duration([stage])}"
        line += f", {stage.get('task', '?')}{_levels(degrade) if recipe else ''} on {data or '?'}"
        if recipe:
            patches = " then ".join(f"{p}px x {b}" for _, p, b in recipe["patches"])
            worlds = stage.get("world_sizes") or [stage.get("world_size", 1)]  # a run resumed on others
            if max(worlds) > 1:  # the batch is processes x b
                patches += f" per process, {' then '.join(map(str, worlds))} processes"
            seed = f"seed {recipe['seed']}, " if "seed" in recipe else ""
            line += f" ({seed}{patches}, {recipe['loss']} loss"
            held = f" from step {recipe['cosine_start']}" if recipe.get("cosine_start") else ""
            line += f", lr {recipe['lr']} {recipe['schedule']}{held}, {recipe['precision']})"
        val = stage.get("validation") or {}
        if val:
            at = val.get("step")
            line += f"; validation{f' at step {at}' if at is not None else ''}: {scores_text(val)}"
        lines.append(line)
    return lines


def _degrade_one(img_path: Path, deg) -> tuple[np.ndarray, np.ndarray]:
    """The input `test` gives a model for this image and the ground truth it scores the output against,
    as uint8 (one-channel images as H x W)."""
    from irformers.data.datasets import Sample
    from irformers.data.io import to_uint
    from irformers.evaluate import prepare

    pixels, target = prepare(Sample(img_path.stem, img_path), deg)
    as_stored = [(a[..., 0] if a.shape[-1] == 1 else a) for a in (pixels, target)]
    return to_uint(as_stored[0]), as_stored[1]


def _has_alpha(path: Path) -> bool:
    """From the file's header (Pillow reads no pixels for it); False where Pillow cannot tell."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return "A" in im.getbands() or "transparency" in im.info
    except Exception:  # a file OpenCV read and Pillow cannot open (e.g. a float TIFF)
        return False


def cmd_degrade(args: argparse.Namespace) -> int:
    from irformers.data.io import ImageError, write_image
    from irformers.evaluate import Degradation

    _check_levels(args)
    try:  # the checks `test` applies to the same options
        Degradation(args.task, args.scale or 1, args.sigma, args.quality, gray=args.gray)
    except ValueError as err:
        raise UsageError(str(err)) from err
    indir, outdir = Path(args.indir), Path(args.outdir)
    if not indir.is_dir():
        problem = "not a folder (degrade reads a folder of images)" if indir.exists() else "no such folder"
        raise UsageError(f"{indir}: {problem}")
    if outdir.resolve() == indir.resolve():
        raise UsageError(f"{outdir}: the input folder; the degraded images need their own folder")
    _check_output_folder(outdir, "the output folder")
    gt_dir = None if args.gt is None else Path(args.gt)
    if gt_dir is not None:
        taken = {indir.resolve(): "the input folder", outdir.resolve(): "OUTDIR"}.get(gt_dir.resolve())
        if not args.gt or taken:
            raise UsageError(
                f"--gt {args.gt!r}: {taken if args.gt else 'no folder'}; ground truth needs its own folder"
            )
        _check_output_folder(gt_dir, "the --gt folder")
    images = _images_in(indir)
    if not images:
        layout = " (an SR set: its images are in HR/)" if (indir / "HR").is_dir() else ""
        raise UsageError(f"{indir}: no images in the input folder{layout}")
    gray = _degraded_gray(str(indir), lambda: images, args)  # as `test` degrades a set for a pseudo-model
    deg = Degradation(args.task, args.scale or 1, args.sigma, args.quality, gray=gray)
    failures, claimed = [], _inputs_claimed(images)
    for path in images:
        try:
            out = outdir / f"{path.stem}.png"
            _claim_output(path, out, claimed, "choose another output folder")
            gt = None if gt_dir is None else gt_dir / f"{path.stem}.png"
            if gt is not None:
                _claim_output(path, gt, claimed, "choose another --gt folder")
            degraded, target = _degrade_one(path, deg)
            write_image(out, degraded)
            if gt is not None:
                write_image(gt, target)
            if _has_alpha(path):
                print(
                    f"note: {path}: its alpha channel is dropped (test scores the other channels)",
                    file=sys.stderr,
                )
        except ImageError as err:  # names its file
            failures.append(str(err))
        except ValueError as err:
            failures.append(f"{path}: {err}")
    also = "" if gt_dir is None else f" (ground truth to {gt_dir})"
    print(f"wrote {len(images) - len(failures)} of {len(images)} images to {outdir}{also}")
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
    failures: list[str] = []
    ambiguous: set[str] = set()

    def by_stem(folder: Path) -> dict[str, Path]:
        """Images by stem; a stem two images share (a.png, a.tif) is ambiguous, so neither is scored."""
        found = group_by_stem(_images_in(folder))
        for stem, paths in found.items():
            if len(paths) > 1:
                ambiguous.add(stem)
                names = ", ".join(p.name for p in paths)
                failures.append(f"{paths[0]}: {names} share a stem in {folder}; which to score is ambiguous")
        return {stem: paths[0] for stem, paths in found.items() if len(paths) == 1}

    preds, gts = by_stem(pred), by_stem(gt)
    if not gts and not failures:
        raise UsageError(f"{gt}: no images")
    unmatched = sorted(set(gts) - set(preds) - ambiguous)
    failures += [f"{gts[s]}: no prediction named {s}.* in {pred}" for s in unmatched]
    extra = sorted(set(preds) - set(gts) - ambiguous)
    if extra:
        print(
            f"note: {pred}: not scored, no ground truth of the same stem: {', '.join(extra)}", file=sys.stderr
        )
    return [(preds[s], gts[s]) for s in sorted(set(gts) & set(preds))], failures


def cmd_metrics(args: argparse.Namespace) -> int:
    from irformers import metrics
    from irformers.data.io import ImageError, read_array
    from irformers.data.resize import modcrop

    if args.crop < 0:
        raise UsageError(f"--crop {args.crop}: must be at least 0")
    if args.modcrop is not None and args.modcrop < 1:
        raise UsageError(f"--modcrop {args.modcrop}: must be at least 1")
    pairs, failures = _metric_pairs(Path(args.pred), Path(args.gt))
    rows = []
    for pred_path, gt_path in pairs:
        try:
            pred, gt = read_array(pred_path, "unchanged"), read_array(gt_path, "unchanged")
            # gray files as three equal channels: for Y, as SR tests read a gray HR; against a colour file
            # (a gray palette GT, a colour model's RGB), as its channels
            if args.y or pred.ndim != gt.ndim:
                pred, gt = (np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in (pred, gt))
            cut = ""
            if args.modcrop:  # the HR an SR test scores against: bottom/right cut to the scale's multiple
                try:
                    gt = modcrop(gt, args.modcrop)
                except ValueError as err:
                    raise ImageError(f"{gt_path}: {err}") from None
                cut = f" after --modcrop {args.modcrop}"
            if pred.shape != gt.shape:
                raise ImageError(
                    f"{pred_path}: size/channels {pred.shape} differ from {gt_path.name} {gt.shape}{cut}"
                )
            if pred.dtype != gt.dtype:
                raise ImageError(
                    f"{pred_path}: {pred.dtype} pixels, {gt_path.name} has {gt.dtype} (bit depths differ)"
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
        except ImageError as err:
            failures.append(str(err))
        except ValueError as err:  # e.g. a border crop larger than the image
            failures.append(f"{pred_path}: {err}")
    summary = {
        key: float(np.mean([r[key] for r in rows])) if rows else float("nan")
        for key in ("psnr", "ssim", "psnr_b")
    }
    if args.json:
        settings = {"crop": args.crop, "modcrop": args.modcrop, "y": args.y}
        _print_json({**summary, **settings, "per_image": rows, "failed": failures}, None)
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
        f"{'params (M)':>11s} {'paper (M)':>10s}  weights"
    )
    for p in presets:
        reported = f"{p['reported_params']:.2f}" if p["reported_params"] is not None else "-"
        print(
            f"{p['name']:34s} {p['arch']:8s} {p['task']:9s} {p['scale']:>5d} {p['in_channels']:>3d} "
            f"{p['params'] / 1e6:>11.3f} {reported:>10s}  {'shipped' if p['weights'] else '-'}"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from irformers.demo import DEMOS, run_demo
    from irformers.engine.checkpoint import CheckpointError

    known = [name for name, _, _ in DEMOS]
    unknown = [n for n in args.only or () if n not in known]
    if unknown:
        raise UsageError(f"--only {unknown[0]}: unknown demo (choose from {', '.join(known)})")
    _check_output_folder(Path(args.out), "--out")
    try:
        rows = run_demo(args.out, device=args.device, names=tuple(args.only or ()))
    except (CheckpointError, ValueError) as err:
        raise UsageError(str(err)) from err
    print(f"{'demo':24s} {'model':24s} {'PSNR before':>11s} {'PSNR after':>10s}  side by side")
    for r in rows:
        print(
            f"{r['demo']:24s} {r['model']:24s} {r['psnr_before']:>11.2f} {r['psnr_after']:>10.2f}  "
            f"{r['files']['side-by-side']}"
        )
    print("side-by-side images: degraded | restored | original (dB; SR: Y channel, 4-pixel border shaved)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from irformers.data.io import ImageError, error_line
    from irformers.engine.checkpoint import WEIGHTS_FILE, CheckpointError
    from irformers.engine.config import ConfigError, load_config, recipe_changes
    from irformers.engine.distributed import env_info
    from irformers.engine.trainer import CONFIG_FILE, Trainer, TrainingError, TrainingInterrupted

    overrides = [*args.overrides, *([f"run.resume={args.resume}"] if args.resume else [])]
    main_rank = env_info().rank == 0
    try:
        cfg = load_config(args.config, overrides)
        trainer = Trainer(cfg)
    except (ConfigError, DatasetError, ImageError, CheckpointError) as err:
        if not main_rank:  # under torchrun every rank finds the same problem; rank 0 reports it
            return BAD_USAGE
        raise UsageError(str(err)) from err
    if args.check:
        if not main_rank:
            return 0
        params = sum(p.numel() for p in trainer.model.parameters())
        resume = f", resumes {trainer.resume_from}" if trainer.resume_from else ""
        if trainer.resume_from:  # what the run itself would say: each setting that differs
            changed = recipe_changes(trainer.resume_from.parent / CONFIG_FILE, cfg)
            resume += f" with a changed recipe: {'; '.join(changed)}" if changed else ""
        print(
            f"config OK: {len(trainer.items)} training images in {len(trainer.sizes)} source(s), "
            f"{params / 1e6:.3f} M parameters, run folder {cfg.run_dir}{resume}"
        )
        return 0
    try:
        summary = trainer.fit()
    # found while training (a broken image), or once the run folder is this run's: a state another
    # training wrote there after start-up, which does not fit
    except (TrainingError, ImageError, DatasetError, ConfigError, CheckpointError) as err:
        print(f"irformers train: {error_line(err)}", file=sys.stderr)
        return INPUT_FAILED
    except TrainingInterrupted as stopped:
        if main_rank:
            print(
                f"irformers train: {stopped}: checkpoint written; rerun the command to resume",
                file=sys.stderr,
            )
        return 128 + stopped.signum
    if main_rank:
        val = summary["validation"]
        scores = {k: v for k, v in val.items() if k != "step"}
        when = "" if val.get("step") == summary["steps"] else f" (at step {val.get('step')})"
        done = f"trained {summary['steps']}/{summary['total_steps']} steps in {summary['seconds']:.0f} s"
        print(
            f"{done if trainer.trained_now else 'nothing trained'}: {cfg.run_dir / WEIGHTS_FILE}"
            + (f"; validation{when} {json.dumps(scores)}" if scores else "")
        )
    return 0


def _check_bench_options(
    args: argparse.Namespace, precisions: Iterable[str], backends: Iterable[str]
) -> None:
    if args.precision not in precisions:
        raise UsageError(f"--precision {args.precision}: choose from {', '.join(precisions)}")
    if args.backend is not None and args.backend not in backends:
        raise UsageError(f"--backend {args.backend}: choose from {', '.join(backends)}")
    for option, least in (("size", 1), ("batch", 1), ("repeat", 1), ("warmup", 0), ("threads", 1)):
        value = getattr(args, option)
        if value is not None and value < least:
            raise UsageError(f"--{option} {value}: must be at least {least}")


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from irformers import profiling
    from irformers.devices import resolve_device
    from irformers.engine.checkpoint import CheckpointError
    from irformers.inference import PRECISION_DTYPES, load_model
    from irformers.models.semanir import BACKENDS

    _check_bench_options(args, PRECISION_DTYPES, BACKENDS)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise UsageError(f"--device: {err}") from err
    dtype = PRECISION_DTYPES[args.precision]
    if dtype == torch.float16 and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    ks = _numbers(args.k, int)
    if any(k is not None and k < 1 for k in ks):
        raise UsageError(f"--k {args.k}: every k must be at least 1")
    foreign = {spec for spec in args.models if Path(spec).is_file() and "config" not in _metadata(spec)}
    if args.arch and not foreign:
        raise UsageError(f"--arch {args.arch}: applies to foreign weights files, and no model listed is one")
    rows = []
    for spec in args.models:
        try:
            arch = args.arch if spec in foreign else None  # a list may mix presets and files
            model = load_model(spec, arch=arch, device=device, allow_random_init=True)
        except CheckpointError as err:
            raise UsageError(str(err)) from err
        desc = model.descriptor
        shape = (args.batch, desc.in_channels, args.size, args.size)
        for k in ks if desc.supports_k else [None]:  # --k applies to the SemanIR models of the list
            runtime = {"k": k} if k else {}
            ran_k = _k_that_runs(model, k, spec) or getattr(model, "k", None)
            if args.backend and desc.supports_k:
                runtime["backend"] = args.backend
            result = profiling.profile_model(
                model,
                shape,
                device=device,
                dtype=dtype,
                repeat=args.repeat,
                warmup=args.warmup,
                memory=not args.no_memory,
                compile=args.compile,
                **runtime,
            )
            rows.append({"model": spec, "k": ran_k, **result})
    peak = profiling.matmul_peak_gflops(device, dtype) if args.matmul_peak else None
    for row in rows:
        row["matmul_peak_fraction"] = row["gflops"] / peak if peak else None
    if args.json:
        print(
            json.dumps(
                {
                    "machine": profiling.machine_info(device, dtype),
                    "matmul_peak_gflops": peak,
                    "compile": args.compile,
                    "rows": rows,
                },
                indent=1,
            )
        )
        return 0
    _print_bench_table(rows, peak, profiling.machine_info(device, dtype), args)
    return 0


def _print_bench_table(rows: list[dict], peak: float | None, m: dict, args: argparse.Namespace) -> None:
    """The rows, then the machine `m` they ran on: what a quoted figure must state beside it."""
    print(
        f"{'model':32s} {'input':>16s} {'k':>4s} {'params (M)':>10s} {'GMACs':>8s} {'median ms':>10s} "
        f"{'peak MiB':>9s} {'GFLOP/s':>8s}" + (f" {'of peak':>7s}" if peak else "")
    )
    for r in rows:
        peak_mb = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-"
        print(
            f"{r['model']:32s} {'x'.join(map(str, r['input'])):>16s} {r['k'] or '-'!s:>4s} "
            f"{r['params'] / 1e6:>10.3f} {r['macs'] / 1e9:>8.2f} {r['median_ms']:>10.1f} {peak_mb:>9s} "
            f"{r['gflops']:>8.1f}" + (f" {r['matmul_peak_fraction']:>7.0%}" if peak else "")
        )
    print(
        f"{m.get('gpu', m['cpu'])} ({m['device']}), {m['threads']} CPU threads, {m['dtype']}, "
        f"median of {args.repeat}{', torch.compile' if args.compile else ''}; MACs = FLOPs / 2"
        + (f"; matmul peak ({args.precision}): {peak:.1f} GFLOP/s" if peak else "")
    )


def _add_inference_options(p: argparse.ArgumentParser, precision: str) -> None:
    """Model loading and inference options shared by ``test`` and ``restore``."""
    p.add_argument("--arch", help="preset whose network a foreign weights file (.pth) belongs to")
    p.add_argument(
        "--allow-random-init",
        action="store_true",
        help="build a preset that ships no weights with random ones (smoke tests and benchmarks only)",
    )
    p.add_argument(
        "--tile",
        default="auto",
        help="tile size in input pixels; 'auto' (default) tiles only images over the memory budget; "
        "'none' or 0: one pass",
    )
    p.add_argument(
        "--tile-overlap", type=int, help="overlap of neighbouring tiles (default: max(size multiple, 32))"
    )
    p.add_argument("--ensemble", action="store_true", help="x8 self-ensemble (flips and transpositions)")
    p.add_argument("--precision", default=precision, help=f"auto | fp32 | bf16 | fp16 (default {precision})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--k", type=int, help="SemanIR: keys per query at inference (default: the model's)")
    p.add_argument(
        "--compile", action="store_true", help="run the model through torch.compile (faster on long runs)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="irformers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the named presets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("test", help="evaluate a model on benchmark sets under the papers' conventions")
    p.add_argument(
        "--model",
        required=True,
        help="preset name, weights file, or a pseudo-model: bicubic | identity | malvar",
    )
    p.add_argument(
        "--task",
        choices=TASKS,
        help="the degradation to score (default: the model's task; paired for deblurring)",
    )
    p.add_argument(
        "--dataset",
        help="set name(s) under the data root, comma-separated (default: the task's standard sets)",
    )
    p.add_argument("--scale", help="SR scale(s), e.g. 4 or 2,3,4")
    p.add_argument("--sigma", help="noise level(s) on the 0-255 scale, e.g. 25 or 15,25,50")
    p.add_argument("--quality", help="JPEG quality(ies), e.g. 10 or 10,20,30,40")
    p.add_argument("--gray", action="store_true", help="gray images (default: gray when the set's files are)")
    p.add_argument("--y", action="store_true", help="paired tasks: score on the Y channel")
    p.add_argument("--data-root", help="folder holding the sets (default: $IRFORMERS_DATA)")
    p.add_argument("--save-dir", help="write the restored images here")
    p.add_argument("--json", action="store_true")
    _add_inference_options(p, precision="fp32")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("restore", help="restore image files with a model (any size, tiled)")
    p.add_argument("inputs", nargs="+", help="image files, folders (their images) or glob patterns")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", required=True, help="preset name (bundled weights) or weights file")
    p.add_argument("--task", help="check: the model's task must be this")
    p.add_argument("--scale", type=int, help="check: the model's scale must be this")
    p.add_argument("--suffix", help="added to each output's stem (default: _x<scale> for SR, else _<task>)")
    p.add_argument(
        "--ext", help="output format, e.g. png or jpg (default: the input's; 16-bit kept where it fits)"
    )
    _add_inference_options(p, precision="auto")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("info", help="what a weights file holds: model, task, scale, training summary")
    p.add_argument("checkpoint", help="a weights file, or the name of a preset that ships weights")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("degrade", help="write degraded copies of a folder of images (PNG)")
    p.add_argument("--task", required=True, choices=[t for t in TASKS if t != "paired"])
    p.add_argument("--scale", type=int)
    p.add_argument("--sigma", type=float)
    p.add_argument("--quality", type=int)
    p.add_argument(
        "--gray",
        action="store_true",
        help="gray images; color files read as gray as `test` reads them (default for denoise/jpeg: gray "
        "when the files are)",
    )
    p.add_argument(
        "--gt",
        metavar="DIR",
        help="also write the ground truth `test` scores against (SR: the HR mod-cropped; gray: as read)",
    )
    p.add_argument("indir")
    p.add_argument("outdir")
    p.set_defaults(func=cmd_degrade)

    p = sub.add_parser("metrics", help="PSNR / SSIM / PSNR-B of predictions against ground truth")
    p.add_argument("pred", help="an image or a folder (matched to GT by file name)")
    p.add_argument("gt", help="an image or a folder")
    p.add_argument("--crop", type=int, default=0, help="pixels shaved from every border")
    p.add_argument(
        "--y",
        action="store_true",
        help="score on BT.601 Y; a gray file as three equal channels, as SR tests read a gray HR image",
    )
    p.add_argument(
        "--modcrop", type=int, metavar="S", help="cut GT's bottom/right to multiples of S (SR x S tests' HR)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("demo", help="degrade the bundled sample image and restore it with the shipped models")
    p.add_argument("--out", default="demo", help="folder for the images (default ./demo)")
    p.add_argument("--only", nargs="+", metavar="DEMO", help="run only these demos")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "bench", help="params, MACs, latency and peak memory of models at an input size (irformers.profiling)"
    )
    p.add_argument(
        "models", nargs="+", help="presets (their shipped weights, else random ones) or weights files"
    )
    p.add_argument("--arch", help="preset whose network foreign weights files (.pth) belong to")
    p.add_argument(
        "--size", type=int, default=128, help="input side in pixels (SR: the LR side; default 128)"
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--k", help="SemanIR: keys per query, comma-separated for several (default: the model's)")
    p.add_argument("--backend", help="SemanIR attention backend: auto | mask | gather | fused")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 | fp16 (autocast); default fp32")
    p.add_argument("--repeat", type=int, default=5, help="timed calls; the median is reported (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--compile", action="store_true", help="time torch.compile(model)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory call")
    p.add_argument("--matmul-peak", action="store_true", help="also measure the matmul peak and the fraction")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "train",
        help="train a model from a YAML recipe (also under torchrun --nproc-per-node N)",
        description="Train from CONFIG.yaml with dotted overrides, e.g. train.lr=2e-4 model.k=128. "
        "A run folder that holds a training state is resumed (run.resume=never starts afresh).",
    )
    p.add_argument("config", help="YAML recipe, e.g. configs/quick-semanir-sr-x2.yaml")
    p.add_argument("overrides", nargs="*", help="key.sub=value settings that replace the recipe's")
    p.add_argument("--resume", metavar="PATH", help="resume from this run folder or train_state.pt")
    p.add_argument("--check", action="store_true", help="check the config and the data, then exit")
    p.set_defaults(func=cmd_train)
    return parser


def _notes_for_tile_warnings(show: Callable) -> Callable:
    """A `warnings.showwarning` that prints tile warnings (the tile that runs) as notes and passes the
    others to `show`, the hook in place when the command started."""

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        inference = sys.modules.get("irformers.inference")  # loaded by whatever raised one: no torch import
        if inference is not None and issubclass(category, inference.TileWarning):
            print(f"note: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse ends train's overrides at its first option: `train R.yaml --check a.b=1` left a.b=1 over
    if extra and args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        show = warnings.showwarning
        with warnings.catch_warnings():
            warnings.showwarning = _notes_for_tile_warnings(show)
            return args.func(args)
    except (UsageError, DatasetError) as err:
        print(f"irformers {args.command}: {err}", file=sys.stderr)
        return BAD_USAGE
    except BrokenPipeError:  # the reader stopped early (`irformers models | head`): no traceback, as cat
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush goes nowhere
        return 128 + 13  # the shell's status for SIGPIPE
    except KeyboardInterrupt:
        hint = "; rerun the command to resume from the last checkpoint" if args.command == "train" else ""
        if os.environ.get("RANK", "0") == "0":  # under torchrun, once, not once per process
            print(
                f"irformers {args.command}: interrupted; every file written so far is complete{hint}",
                file=sys.stderr,
            )
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
