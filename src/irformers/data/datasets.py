"""Benchmark sets found by name under a data root, in the three layouts of the README's Data section.

- ``NAME/HR/*``: super-resolution sets; ``NAME/LR_bicubic/X{s}/<stem>x{s}.<ext>`` is used when present,
  otherwise the LR image is synthesised with MATLAB-exact bicubic.
- ``NAME/*``: clean images; the degraded input is synthesised per the conventions.
- ``NAME/input/*`` + ``NAME/target/*``: pairs matched by file name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from irformers.data.io import ImageError, read_array

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".webp")
DATA_ENV = "IRFORMERS_DATA"


class DatasetError(ValueError):
    """A data root or benchmark set that cannot be used; the message is one line naming the path."""


@dataclass(frozen=True)
class Sample:
    name: str  # file stem, used in per-image reports and saved outputs
    target: Path  # the clean / HR image
    source: Path | None = None  # the given degraded input (LR or paired input), when the set has one


@dataclass(frozen=True)
class Dataset:
    name: str
    root: Path
    layout: str  # "sr", "clean" or "paired"
    samples: tuple[Sample, ...]


def resolve_data_root(data_root: str | Path | None) -> Path:
    """The ``--data-root`` argument, else ``$IRFORMERS_DATA``; it must be an existing folder."""
    value = data_root if data_root is not None else os.environ.get(DATA_ENV)
    if not value:
        raise DatasetError(f"no data root: pass --data-root DIR or set {DATA_ENV}")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: data root is not a folder")
    return root


def split_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) directly in ``folder``, each sorted by name. Hidden files are neither:
    macOS's ``._name.png`` companions are not images."""
    images, others = [], []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
    return images, others


def skipped_note(folder: Path, others: list[Path]) -> str | None:
    """A note naming the kinds of a folder's files that are not images, which are skipped: a set of .heic
    photos or a typo'd extension must not shrink a test or a training set unsaid."""
    if not others:
        return None
    kinds = sorted(p.suffix.lower() or "(no extension)" for p in others)
    counts = ", ".join(f"{kind} x{kinds.count(kind)}" for kind in dict.fromkeys(kinds))
    files = "1 file that is not an image" if len(others) == 1 else f"{len(others)} files that are not images"
    return f"{folder}: skipping {files} ({counts}); images: {', '.join(IMAGE_EXTENSIONS)}"


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (other files, e.g. CSV lists, are ignored)."""
    return split_files(folder)[0]


def group_by_stem(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """Files by stem, the name that pairs an image with its counterpart and names its outputs; a stem
    held by more than one file (a.png, a.jpg) makes that pairing ambiguous."""
    found: dict[str, list[Path]] = {}
    for path in paths:
        found.setdefault(path.stem, []).append(path)
    return found


def images_by_stem(folder: Path) -> dict[str, Path]:
    """Images of ``folder`` by stem; an ambiguous stem refuses the set rather than drop one of its files."""
    found = group_by_stem(list_images(folder))
    for paths in found.values():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            raise DatasetError(f"{folder}: {names} share a stem; which to use is ambiguous")
    return {stem: paths[0] for stem, paths in found.items()}


def files_are_gray(paths: Iterable[Path]) -> bool:
    """Whether a set's images are single-channel (Set12, BSD68, Classic5): its first readable one says."""
    for path in paths:
        try:
            return read_array(path, "unchanged").ndim == 2
        except ImageError:
            continue  # reported with the set's failures
    return False


def find_dataset(name: str, data_root: str | Path | None = None, scale: int | None = None) -> Dataset:
    """Locate benchmark set ``name`` under the data root (an absolute path needs none) and pair its files
    for the task at hand."""
    given = Path(name).expanduser()
    if given.is_absolute():  # the table names it by its folder
        folder, name = given, given.name
        if not folder.is_dir():
            raise DatasetError(f"{folder}: no such dataset folder")
    else:
        root = resolve_data_root(data_root)
        folder = root / name
        if not folder.is_dir():
            known = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise DatasetError(f"{folder}: unknown dataset '{name}' (found: {', '.join(known) or 'nothing'})")
    if (folder / "HR").is_dir():
        return _sr_dataset(name, folder, scale)
    if (folder / "input").is_dir() and (folder / "target").is_dir():
        return _paired_dataset(name, folder)
    images = images_by_stem(folder)
    if not images:
        raise DatasetError(f"{folder}: no images (expected NAME/HR/, NAME/input+target/ or images in NAME/)")
    return Dataset(name, folder, "clean", tuple(Sample(stem, p) for stem, p in images.items()))


def _sr_dataset(name: str, folder: Path, scale: int | None) -> Dataset:
    hr = images_by_stem(folder / "HR")
    if not hr:
        raise DatasetError(f"{folder / 'HR'}: no images")
    lr_dir = folder / "LR_bicubic" / f"X{scale}" if scale else None
    samples = []
    for path in hr.values():
        source = None
        if lr_dir is not None and lr_dir.is_dir():
            source = lr_dir / f"{path.stem}x{scale}{path.suffix}"
            if not source.is_file():
                raise DatasetError(f"{source}: LR image missing for {path.name}")
        samples.append(Sample(path.stem, path, source))
    return Dataset(name, folder, "sr", tuple(samples))


def _paired_dataset(name: str, folder: Path) -> Dataset:
    inputs = images_by_stem(folder / "input")
    targets = images_by_stem(folder / "target")
    if not targets:
        raise DatasetError(f"{folder / 'target'}: no images")
    unmatched = sorted(set(inputs) ^ set(targets))
    if unmatched:
        raise DatasetError(
            f"{folder}: input and target do not pair up (unmatched: {', '.join(unmatched[:5])})"
        )
    return Dataset(name, folder, "paired", tuple(Sample(s, targets[s], inputs[s]) for s in sorted(targets)))
