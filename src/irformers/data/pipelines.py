"""Training data: random patches of image folders, degraded on the fly as the test conventions degrade.

Reproducible by construction. The run's stream of patches is numbered by draw (0, 1, 2, ... over the
whole run and all ranks); draw `n` takes image `epoch_order(n // L)[n % L]` and cuts, augments and
degrades it with a generator seeded by `(seed, n)`. So a patch depends on nothing but the seed, the
draw number and the patch size: a resumed run continues the same stream, DataLoader workers can run
in any order, and N ranks with batch B see exactly the patches of one process with batch N*B.

Degradations follow the README's Conventions section: MATLAB-exact bicubic LR (computed on a margin around the
patch, identical to cropping the LR of the whole image), unclipped float Gaussian noise, OpenCV JPEG
(gray = BT.601 Y rounded to uint8), RGGB mosaics (1-channel model input).
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from irformers.data import degrade
from irformers.data.datasets import (
    DATA_ENV,
    DatasetError,
    find_dataset,
    images_by_stem,
    skipped_note,
    split_files,
)
from irformers.data.io import ImageError, decoded_size, error_line
from irformers.data.resize import imresize
from irformers.engine.config import DataConfig, DegradeConfig, StageConfig, source_degrade, stages

# LR pixels of context around an SR patch before downscaling: the antialiased cubic kernel reaches
# 2 LR pixels, so 4 makes the patch's LR exactly the crop of the whole image's LR.
LR_MARGIN = 4
_SAMPLER_STREAM, _PATCH_STREAM = 0, 1  # distinct generator streams for epoch orders and patches


@dataclass(frozen=True)
class TrainItem:
    target: Path  # clean / HR image
    source: Path | None  # given degraded input (LR or paired input); None: synthesised
    degrade: DegradeConfig


# --------------------------------------------------------------------------- finding and checking


def _folder(path: str, root: Path | None, where: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute():
        if root is None:
            raise DatasetError(f"{where}: relative path '{path}' needs data.root or ${DATA_ENV}")
        p = root / p
    if not p.is_dir():
        raise DatasetError(f"{where}: {p}: no such folder")
    return p


def _pair_by_name(
    targets: Path, inputs: Path, scale: int | None, where: str, notes: list[str]
) -> list[tuple[Path, Path]]:
    """Match inputs to targets by file stem; SR inputs may carry an `x{scale}` suffix (DIV2K style). An
    input without a target gets a note, not an error: an input folder may hold more than one set's."""
    by_stem = images_by_stem(inputs)
    pairs, missing = [], []
    for target in images_by_stem(targets).values():
        names = [target.stem] + ([f"{target.stem}x{scale}"] if scale else [])
        match = next((by_stem[n] for n in names if n in by_stem), None)
        if match is None:
            missing.append(target.name)
        else:
            pairs.append((target, match))
    if missing:
        raise DatasetError(
            f"{where}: {len(missing)} target(s) have no input in {inputs} (e.g. {', '.join(missing[:3])})"
        )
    spare = sorted(set(by_stem) - {match.stem for _, match in pairs})
    if spare:
        notes.append(
            f"{where}: {inputs}: {len(spare)} input(s) with no target, not used: {', '.join(spare[:3])}"
        )
    if not pairs:
        raise DatasetError(f"{where}: {targets}: no images")
    return pairs


def _source_files(
    source, deg: DegradeConfig, root: Path | None, where: str, notes: list[str]
) -> list[tuple[Path, Path | None]]:
    scale = deg.scale if deg.task == "sr" else None
    target = _folder(source.target, root, f"{where}.target")
    if source.input is not None:
        files = _pair_by_name(target, _folder(source.input, root, f"{where}.input"), scale, where, notes)
    elif (target / "HR").is_dir() or ((target / "input").is_dir() and (target / "target").is_dir()):
        files = [(s.target, s.source) for s in find_dataset(target.name, target.parent, scale).samples]
    else:
        images, others = split_files(target)
        files = [(p, None) for p in images]
        if not files:
            skipped = f" ({skipped_note(target, others)})" if others else ""
            raise DatasetError(f"{where}: {target}: no images{skipped}")
    for folder in dict.fromkeys(p.parent for pair in files for p in pair if p is not None):
        note = skipped_note(folder, split_files(folder)[1])
        if note:
            notes.append(f"{where}: {note}")
    given = any(src is not None for _, src in files)
    if deg.task == "paired" and not given:
        raise DatasetError(
            f"{where}: task 'paired' needs inputs (input: FOLDER, or NAME/input + NAME/target)"
        )
    if deg.task in ("denoise", "jpeg", "demosaic") and given:
        raise DatasetError(
            f"{where}: task '{deg.task}' synthesises its inputs; for given pairs use task: paired"
        )
    return files


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, after checking the file is an intact 8-bit image (cheap
    checks: training reads 8-bit files only, and must say so at `--check`, not when it meets one)."""
    try:
        with Image.open(path) as im:
            h, w = decoded_size(im)  # as read_image returns it
            if im.format == "PNG":
                im.verify()  # walks the chunks' CRCs without decoding: finds truncated or damaged files
                with open(path, "rb") as f:
                    bits = f.read(25)[24]  # IHDR's bit depth: Pillow opens 16-bit colour as 8-bit RGB
            else:
                bits = int(max(np.atleast_1d(im.tag_v2.get(258, 8)))) if im.format == "TIFF" else 8
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except Exception as err:  # Pillow reports bad files as OSError, SyntaxError, ValueError, ...
        raise ImageError(f"{path}: not a readable image ({error_line(err)})") from None
    if bits > 8:
        raise ImageError(f"{path}: {bits}-bit images are not supported (8-bit only)")
    return h, w


def _check_sizes(item: TrainItem, patch: int, where: str, pad: bool = False) -> None:
    h, w = image_size(item.target)
    s = item.degrade.scale if item.degrade.task == "sr" else 1
    if item.source is not None:
        sh, sw = image_size(item.source)
        if (sh, sw) != (h // s, w // s):
            raise DatasetError(
                f"{where}: {item.source}: input {sw}x{sh} does not match its target "
                f"{item.target.name} {w}x{h}" + (f" / {s}" if s > 1 else "")
            )
    if min(h, w) // s < patch and not pad:
        raise DatasetError(
            f"{where}: {item.target}: {w}x{h} is smaller than the training patch "
            f"({patch * s}x{patch * s}: patch size {patch}"
            + (f" at x{s})" if s > 1 else ")")
            + "; lower the largest patch_size (data or data.progressive), remove the image"
            + (", or set data.pad_to_patch" if s == 1 else "")
        )


def find_items(data: DataConfig) -> tuple[list[TrainItem], list[int], list[str]]:
    """Every training image of every source, checked (folders, pairing, integrity, sizes).

    Returns the items, the number of items per source and notes (a source folder's files that are not
    images). Raises one DatasetError or ImageError.
    """
    env = os.environ.get(DATA_ENV)
    root = Path(data.root).expanduser() if data.root else (Path(env).expanduser() if env else None)
    if data.root and not root.is_dir():
        raise DatasetError(f"data.root: {root}: no such folder")
    largest = max(stage.patch_size for stage in stages(data))
    items, sizes, notes = [], [], []
    for i, source in enumerate(data.train):
        where = f"data.train.{i}"
        deg = source_degrade(data, source, where)
        found = [TrainItem(t, s, deg) for t, s in _source_files(source, deg, root, where, notes)]
        for item in found:
            _check_sizes(item, largest, where, data.pad_to_patch)
        items += found
        sizes.append(len(found))
    return items, sizes, notes


# --------------------------------------------------------------------------- one patch


def _dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations (k in 0..7); k = 0 is the identity."""
    img = np.rot90(img, k % 4)
    return img[:, ::-1] if k >= 4 else img


def _sr_pair(
    hr: np.ndarray, lr: np.ndarray | None, s: int, p: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    hl, wl = hr.shape[0] // s, hr.shape[1] // s  # HR mod-cropped to the scale, as at test time
    top, left = int(rng.integers(0, hl - p + 1)), int(rng.integers(0, wl - p + 1))
    hr_patch = hr[top * s : (top + p) * s, left * s : (left + p) * s]
    if lr is not None:
        return lr[top : top + p, left : left + p], hr_patch
    t0, l0 = max(top - LR_MARGIN, 0), max(left - LR_MARGIN, 0)
    t1, l1 = min(top + p + LR_MARGIN, hl), min(left + p + LR_MARGIN, wl)
    region = imresize(hr[t0 * s : t1 * s, l0 * s : l1 * s], scale=1 / s)
    return region[top - t0 : top - t0 + p, left - l0 : left - l0 + p], hr_patch


def make_pair(
    target: np.ndarray,
    source: np.ndarray | None,
    deg: DegradeConfig,
    patch: int,
    rng: np.random.Generator,
    augment: bool,
    pad: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) float32 H x W x C patches from uint8 images, `patch` = the input side. `pad`:
    an image smaller than the patch is mirrored at its bottom and right edges to fill it (Restormer)."""
    flip = int(rng.integers(8)) if augment else 0
    if deg.task == "sr":
        # LR is a function of the whole image: cut the pair first, then flip/rotate both alike.
        lr, hr = _sr_pair(target, source, deg.scale, patch, rng)
        return (_dihedral(lr, flip).astype(np.float32) / 255, _dihedral(hr, flip).astype(np.float32) / 255)
    h, w = target.shape[:2]
    if pad and min(h, w) < patch:
        grow = ((0, max(patch - h, 0)), (0, max(patch - w, 0)), (0, 0))
        target = np.pad(target, grow, mode="symmetric")
        source = None if source is None else np.pad(source, grow, mode="symmetric")
        h, w = target.shape[:2]
    top, left = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
    clean = _dihedral(target[top : top + patch, left : left + patch], flip)
    clean_f = clean.astype(np.float32) / 255
    if deg.task == "paired":
        given = _dihedral(source[top : top + patch, left : left + patch], flip)
        return given.astype(np.float32) / 255, clean_f
    # Synthetic degradations act on the augmented clean patch: mosaics keep their RGGB phase and
    # JPEG blocks their grid, as in the test images.
    if deg.task == "denoise":
        sigma = deg.sigma if deg.sigma is not None else degrade.sample_sigma(rng, *deg.sigma_range)
        noisy = clean_f.astype(np.float64) + rng.normal(0.0, sigma / 255.0, clean_f.shape)
        return noisy.astype(np.float32), clean_f
    if deg.task == "jpeg":
        lo, hi = deg.quality_range or (deg.quality, deg.quality)
        quality = int(rng.integers(lo, hi + 1))
        coded = degrade.jpeg_compress(np.ascontiguousarray(clean[..., 0] if deg.gray else clean), quality)
        return (coded[..., None] if coded.ndim == 2 else coded).astype(np.float32) / 255, clean_f
    if deg.task == "demosaic":
        return degrade.bayer_mosaic(clean_f)[..., None], clean_f
    raise ValueError(f"unknown task {deg.task!r}")


class PatchDataset(torch.utils.data.Dataset):
    """Map-style dataset over keys `(image index, draw number, patch size)` made by `DrawSampler`."""

    def __init__(
        self, items: list[TrainItem], seed: int, augment: bool = True, cache: bool = False, pad: bool = False
    ) -> None:
        self.items = items
        self.seed = seed
        self.augment, self.pad = augment, pad
        # Decoded in the main process, before any worker starts: workers share it (fork), and a broken
        # file stops the run before training.
        self._cache = [self._load(item) for item in items] if cache else None

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def _load(item: TrainItem) -> tuple[np.ndarray, np.ndarray | None]:
        deg = item.degrade
        target = degrade.read_clean(item.target, deg.gray, deg.task)
        source = None if item.source is None else degrade.read_clean(item.source, deg.gray, deg.task)
        if deg.task == "sr":
            s = deg.scale
            target = target[: target.shape[0] - target.shape[0] % s, : target.shape[1] - target.shape[1] % s]
        return target, source

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, draw, patch = key
        item = self.items[index]
        target, source = self._cache[index] if self._cache is not None else self._load(item)
        rng = np.random.default_rng([self.seed, _PATCH_STREAM, draw])
        inp, tgt = make_pair(target, source, item.degrade, patch, rng, self.augment, self.pad)
        return (
            torch.from_numpy(np.ascontiguousarray(inp.transpose(2, 0, 1))),
            torch.from_numpy(np.ascontiguousarray(tgt.transpose(2, 0, 1))),
        )


# --------------------------------------------------------------------------- the draw stream


def epoch_order(sizes: list[int], weights: list[float], seed: int, epoch: int) -> np.ndarray:
    """Item indices of one epoch: each source gets its weight's share of the draws, all shuffled.

    With one source this is a permutation of its images. A source drawn more (less) often than its
    size repeats (skips) images, each pass in its own random order.
    """
    total, weight_sum = sum(sizes), sum(weights)
    rng = np.random.default_rng([seed, _SAMPLER_STREAM, epoch])
    parts, offset = [], 0
    for size, weight in zip(sizes, weights, strict=True):
        count = max(1, round(total * weight / weight_sum))
        passes = [rng.permutation(size) for _ in range(-(-count // size))]
        parts.append(offset + np.concatenate(passes)[:count])
        offset += size
    order = np.concatenate(parts)
    return order[rng.permutation(len(order))]


def draws_before(
    step: int, plan: list[StageConfig], world_size: int, origin: tuple[int, int] = (0, 0)
) -> int:
    """Draws of the data stream before `step`, each step drawing its batch on `world_size` ranks from
    `origin = (step, draws made before it)` on."""
    first, total = origin
    for i, s in enumerate(plan):
        stop = min(step, plan[i + 1].start if i + 1 < len(plan) else step)
        total += max(stop - max(s.start, first), 0) * s.batch_size * world_size
    return total


class DrawSampler(torch.utils.data.Sampler):
    """The batches (lists of dataset keys) of one rank for steps `start` to `end - 1`.

    Step t uses the global draws [D(t), D(t) + B_t * world), D(t) = draws of all earlier steps;
    rank r takes its B_t-long slice. B_t and the patch size follow the progressive schedule.
    `origin = (step, draws)` is where a resumed run's stream stood (`draws` made before `step`): a run
    resumed on another number of processes goes on from there, neither repeating nor skipping draws.
    """

    def __init__(
        self,
        sizes: list[int],
        weights: list[float],
        plan: list[StageConfig],
        *,
        seed: int,
        start: int,
        end: int,
        rank: int = 0,
        world_size: int = 1,
        origin: tuple[int, int] = (0, 0),
    ) -> None:
        self.sizes, self.weights, self.plan, self.seed = sizes, weights, plan, seed
        self.start, self.end, self.rank, self.world = start, end, rank, world_size
        self.origin = origin
        self.epoch_len = len(epoch_order(sizes, weights, seed, 0))
        self._epoch: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return max(self.end - self.start, 0)

    def stage(self, step: int) -> StageConfig:
        return [s for s in self.plan if s.start <= step][-1]

    def draws_before(self, step: int) -> int:
        return draws_before(step, self.plan, self.world, self.origin)

    def _item(self, draw: int) -> int:
        epoch, pos = divmod(draw, self.epoch_len)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_order(self.sizes, self.weights, self.seed, epoch))
        return int(self._epoch[1][pos])

    def batch(self, step: int) -> list[tuple[int, int, int]]:
        stage = self.stage(step)
        first = self.draws_before(step) + self.rank * stage.batch_size
        return [(self._item(n), n, stage.patch_size) for n in range(first, first + stage.batch_size)]

    def __iter__(self):
        for step in range(self.start, self.end):
            yield self.batch(step)


def make_loader(
    data: DataConfig,
    dataset: PatchDataset,
    sizes: list[int],
    *,
    seed: int,
    start: int,
    end: int,
    rank: int = 0,
    world_size: int = 1,
    origin: tuple[int, int] = (0, 0),
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """The DataLoader of one rank for steps [start, end): batches of (input, target) float tensors."""
    sampler = DrawSampler(
        sizes,
        [s.weight for s in data.train],
        stages(data),
        seed=seed,
        start=start,
        end=end,
        rank=rank,
        world_size=world_size,
        origin=origin,
    )
    # Patches use no torch randomness, but a DataLoader draws a worker base seed when it starts; its
    # own generator keeps that draw out of the global RNG stream that a resumed run restores.
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=data.num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=functools.partial(_leave_signals_to_the_trainer, trainer=os.getpid()),
    )


def _leave_signals_to_the_trainer(worker_id: int, trainer: int) -> None:
    """Workers ignore Ctrl-C, and SIGTERM but from the trainer, which a terminal or a scheduler sends the
    whole process group: a worker that died of one failed the trainer mid-step instead of letting it end
    the step with a checkpoint. The trainer's own SIGTERM (its exit stopping workers it did not shut
    down) still ends them: ignored, it hung that exit. Telling senders apart needs Linux's sigwaitinfo
    and a worker of one thread (a forked one), where blocking SIGTERM covers every thread; elsewhere (a
    spawned worker has started library threads) SIGTERM keeps torch's handling."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threads = Path("/proc/self/task")  # Linux lists a process's threads there
    if hasattr(signal, "sigwaitinfo") and threads.is_dir() and len(os.listdir(threads)) == 1:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit it
        threading.Thread(target=_end_on_the_trainers_sigterm, args=(trainer,), daemon=True).start()


def _end_on_the_trainers_sigterm(trainer: int) -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != trainer:
        pass
    os._exit(0)
