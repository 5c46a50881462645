"""Training data pipelines: patches degraded as the test conventions say, a reproducible draw stream."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from irformers.data.datasets import DatasetError
from irformers.data.io import ImageError, write_image
from irformers.data.pipelines import (
    DrawSampler,
    PatchDataset,
    epoch_order,
    find_items,
    make_pair,
)
from irformers.data.resize import imresize
from irformers.engine.config import DataConfig, DegradeConfig, SourceConfig, StageConfig


def _image(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    """Random texture on a gradient: every patch is unique, so a patch's position can be found."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 120, w)[None, :, None] + np.linspace(0, 100, h)[:, None, None]
    return np.clip(ramp + rng.integers(0, 35, (h, w, c)), 0, 255).astype(np.uint8)


def _locate(patch: np.ndarray, image: np.ndarray) -> tuple[int, int]:
    ph, pw = patch.shape[:2]
    hits = [
        (y, x)
        for y in range(image.shape[0] - ph + 1)
        for x in range(image.shape[1] - pw + 1)
        if np.array_equal(image[y : y + ph, x : x + pw], patch)
    ]
    assert len(hits) == 1, hits
    return hits[0]


@pytest.mark.parametrize("scale", [2, 3])
def test_sr_patch_is_the_crop_of_the_whole_image_lr(scale):
    hr = _image(14 * scale + 1, 17 * scale + 2)  # not a multiple of the scale: mod-cropped first
    hr_mod = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
    whole_lr = imresize(hr_mod, scale=1 / scale)  # MATLAB bicubic of the whole (mod-cropped) image
    deg = DegradeConfig(task="sr", scale=scale)
    corners = set()
    for draw in range(25):
        lr, target = make_pair(hr_mod, None, deg, 6, np.random.default_rng(draw), augment=False)
        y, x = _locate((target * 255).round().astype(np.uint8), hr_mod)
        assert y % scale == 0 and x % scale == 0
        expected = whole_lr[y // scale : y // scale + 6, x // scale : x // scale + 6]
        np.testing.assert_array_equal((lr * 255).round().astype(np.uint8), expected)
        corners.add((y == 0, x == 0, y + 6 * scale == hr_mod.shape[0]))
    assert len(corners) > 2  # border and interior patches were both checked


def test_sr_given_lr_pairs_and_augmentation_keeps_them_aligned():
    lr_full = _image(12, 15)
    hr = np.repeat(np.repeat(lr_full, 2, axis=0), 2, axis=1)  # HR = nearest x2 of LR: an exact relation
    deg = DegradeConfig(task="sr", scale=2)
    orientations = set()
    for draw in range(40):
        lr, target = make_pair(hr, lr_full, deg, 5, np.random.default_rng(draw), augment=True)
        np.testing.assert_array_equal(target[::2, ::2], lr)
        orientations.add(lr.tobytes())
    assert len(orientations) > 30  # crops and the 8 flips/rotations vary


def test_paired_patches_stay_aligned_under_flips_and_rotations():
    target = _image(20, 24)
    source = target // 2 + 7  # any per-pixel relation survives only if both get the same crop and flip
    deg = DegradeConfig(task="paired")
    seen = set()
    for draw in range(40):
        inp, tgt = make_pair(target, source, deg, 8, np.random.default_rng(draw), augment=True)
        np.testing.assert_array_equal(
            (inp * 255).round().astype(np.uint8), (tgt * 255).round().astype(np.uint8) // 2 + 7
        )
        # which of the 8 orientations: the position of the patch's corner value in a rotated copy
        seen.add(_orientation(tgt, target))
    assert seen == set(range(8))


def _orientation(patch: np.ndarray, image: np.ndarray) -> int:
    p = (patch * 255).round().astype(np.uint8)
    for k in range(8):
        undone = np.rot90(p[:, ::-1] if k >= 4 else p, -(k % 4))  # inverse of rot90(k) then flip
        h, w = undone.shape[:2]
        for y in range(image.shape[0] - h + 1):
            for x in range(image.shape[1] - w + 1):
                if np.array_equal(image[y : y + h, x : x + w], undone):
                    return k
    raise AssertionError("patch not found in any orientation")


def test_denoise_noise_level_float_unclipped_and_blind_levels_vary():
    dark = np.full((64, 64, 1), 3, np.uint8)  # near 0: unclipped noise must go negative
    fixed = DegradeConfig(task="denoise", sigma=25, gray=True)
    noisy, clean = make_pair(dark, None, fixed, 64, np.random.default_rng(0), augment=True)
    noise = noisy - clean
    assert noisy.dtype == np.float32 and noisy.min() < 0
    assert abs(noise.std() * 255 - 25) < 1.0  # 4096 samples: the std is within ~1 of sigma
    blind = DegradeConfig(task="denoise", sigma_range=[0, 50], gray=True)
    levels = [
        (lambda p: (p[0] - p[1]).std() * 255)(
            make_pair(dark, None, blind, 64, np.random.default_rng(d), False)
        )
        for d in range(12)
    ]
    assert min(levels) < 20 and max(levels) > 30 and max(levels) < 51


def test_jpeg_input_is_opencv_jpeg_of_the_target_patch():
    img = _image(40, 40, c=3)
    deg = DegradeConfig(task="jpeg", quality=10, gray=False)
    inp, tgt = make_pair(img, None, deg, 16, np.random.default_rng(3), augment=True)
    clean = (tgt * 255).round().astype(np.uint8)
    _, buf = cv2.imencode(".jpg", clean[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 10])
    expected = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal((inp * 255).round().astype(np.uint8), expected)
    gray = DegradeConfig(task="jpeg", quality_range=[10, 40], gray=True)
    inp, tgt = make_pair(img[..., :1], None, gray, 16, np.random.default_rng(4), augment=False)
    assert inp.shape == tgt.shape == (16, 16, 1)


def test_demosaic_input_is_the_rggb_mosaic_of_the_target():
    img = _image(20, 20)
    inp, tgt = make_pair(img, None, DegradeConfig(task="demosaic"), 10, np.random.default_rng(1), True)
    assert inp.shape == (10, 10, 1) and tgt.shape == (10, 10, 3)
    for y in range(10):
        for x in range(10):
            channel = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}[(y % 2, x % 2)]
            assert inp[y, x, 0] == tgt[y, x, channel]


# --------------------------------------------------------------------------- the draw stream


def test_epoch_order_is_a_permutation_and_a_mix_follows_the_weights():
    order = epoch_order([7], [1.0], seed=3, epoch=0)
    assert sorted(order) == list(range(7))
    assert not np.array_equal(order, epoch_order([7], [1.0], seed=3, epoch=1))
    mix = epoch_order([10, 30], [3.0, 1.0], seed=0, epoch=0)  # 40 draws, 3:1 -> 30 from a, 10 from b
    assert (mix < 10).sum() == 30 and (mix >= 10).sum() == 10
    assert set(mix[mix < 10]) == set(range(10))  # the small source is repeated, every image used


def _sampler(**kw) -> DrawSampler:
    args = {"sizes": [5, 4], "weights": [1.0, 1.0], "plan": [StageConfig(0, 8, 4)], "seed": 1}
    args.update(kw)
    return DrawSampler(args.pop("sizes"), args.pop("weights"), args.pop("plan"), **args)


def test_ranks_split_the_single_process_stream_and_a_resume_continues_it():
    single = list(_sampler(plan=[StageConfig(0, 8, 4)], start=0, end=6))
    ranks = [
        list(_sampler(plan=[StageConfig(0, 8, 2)], start=0, end=6, rank=r, world_size=2)) for r in (0, 1)
    ]
    for step in range(6):
        assert ranks[0][step] + ranks[1][step] == single[step]
    assert list(_sampler(start=4, end=6)) == single[4:]
    draws = [key[1] for batch in single for key in batch]
    assert draws == list(range(24))


def test_a_resume_on_another_number_of_processes_neither_repeats_nor_skips_draws():
    plan = [StageConfig(0, 8, 2), StageConfig(4, 8, 1)]
    two = [_sampler(plan=plan, start=0, end=3, rank=r, world_size=2) for r in (0, 1)]
    stood = two[0].draws_before(3)
    assert sorted(key[1] for s in two for batch in s for key in batch) == list(range(stood))
    one = _sampler(plan=plan, start=3, end=6, origin=(3, stood))
    after = [key[1] for batch in one for key in batch]
    assert after == list(range(stood, stood + 4)) and one.draws_before(6) == stood + 4  # 2 + 1 + 1


def test_progressive_schedule_changes_patch_and_batch_and_counts_draws():
    plan = [StageConfig(0, 8, 4), StageConfig(3, 12, 2), StageConfig(5, 16, 1)]
    sampler = _sampler(plan=plan, start=0, end=7, world_size=2)
    assert [sampler.draws_before(s) for s in (0, 3, 5, 7)] == [0, 24, 32, 36]
    batches = list(sampler)
    assert [len(b) for b in batches] == [4, 4, 4, 2, 2, 1, 1]
    assert [b[0][2] for b in batches] == [8, 8, 8, 12, 12, 16, 16]


# --------------------------------------------------------------------------- datasets on disk


def _folder(path: Path, n: int, size=(24, 20), c: int = 3) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_image(path / f"im{i}.png", _image(*size, c=c, seed=i))
    return path


def test_images_smaller_than_the_patch_are_refused_or_mirrored_to_fill_it(tmp_path):
    """Restormer's recipes train 384-pixel patches on sets with 180 x 180 images (BSD400): pad_to_patch
    mirrors such an image at its bottom and right; without it, --check names the image and the fixes."""
    _folder(tmp_path / "small", 1, size=(20, 12))
    data = DataConfig(task="denoise", sigma=25, train=[SourceConfig("small")], root=str(tmp_path))
    data.progressive = [StageConfig(0, 8, 2), StageConfig(5, 16, 1)]
    message = _error(data)
    assert "12x20 is smaller than the training patch (16x16" in message and "data.progressive" in message
    assert "data.pad_to_patch" in message
    data.pad_to_patch = True
    items, _, _ = find_items(data)
    inp, tgt = PatchDataset(items, seed=0, augment=False, pad=True)[(0, 0, 16)]
    assert inp.shape == tgt.shape == (3, 16, 16)
    image = _image(20, 12, seed=0)
    mirrored = np.pad(image, ((0, 0), (0, 4), (0, 0)), mode="symmetric")  # 12 wide: 4 columns mirrored
    top = [t for t in range(5) if np.allclose(tgt.numpy().transpose(1, 2, 0), mirrored[t : t + 16] / 255)]
    assert top, "the target patch is a crop of the mirrored image"


def test_patches_are_the_same_with_and_without_workers_and_cache(tmp_path):
    _folder(tmp_path / "clean", 4)
    data = DataConfig(
        task="denoise", sigma_range=[0, 50], train=[SourceConfig("clean")], root=str(tmp_path), patch_size=8
    )
    items, sizes, _ = find_items(data)
    plan = [StageConfig(0, 8, 3)]
    plain = PatchDataset(items, seed=5)
    cached = PatchDataset(items, seed=5, cache=True)
    loader = torch.utils.data.DataLoader(
        plain, batch_sampler=DrawSampler(sizes, [1.0], plan, seed=5, start=0, end=3), num_workers=2
    )
    sampler = DrawSampler(sizes, [1.0], plan, seed=5, start=0, end=3)
    for (inp, tgt), keys in zip(loader, sampler, strict=True):
        for j, key in enumerate(keys):
            again_inp, again_tgt = cached[key]
            assert torch.equal(inp[j], again_inp) and torch.equal(tgt[j], again_tgt)


def test_sr_benchmark_layout_uses_given_lr_and_names_with_scale_suffix(tmp_path):
    _folder(tmp_path / "Set" / "HR", 2, size=(24, 20))
    lr_dir = tmp_path / "Set" / "LR_bicubic" / "X2"
    lr_dir.mkdir(parents=True)
    for i in range(2):
        write_image(lr_dir / f"im{i}x2.png", _image(12, 10, seed=i))
    (lr_dir / "readme").write_text("")  # skipped, in every layout with a note
    data = DataConfig(task="sr", scale=2, train=[SourceConfig("Set")], root=str(tmp_path), patch_size=8)
    items, sizes, notes = find_items(data)
    assert sizes == [2] and all(item.source.parent == lr_dir for item in items)
    assert notes == [
        f"data.train.0: {lr_dir}: skipping 1 file that is not an image ((no extension) x1); "
        "images: .png, .tif, .tiff, .bmp, .jpg, .jpeg, .webp"
    ]
    data.train = [SourceConfig(str(tmp_path / "Set" / "HR"), input=str(lr_dir))]  # explicit folders
    assert [i.source for i in find_items(data)[0]] == [i.source for i in items]


def _error(data: DataConfig) -> str:
    with pytest.raises((DatasetError, ImageError)) as info:
        find_items(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_training_data_gives_one_clear_error(tmp_path, monkeypatch):
    root = str(tmp_path)
    base = {"task": "denoise", "sigma": 25, "root": root, "patch_size": 8}
    assert "no such folder" in _error(DataConfig(**base, train=[SourceConfig("missing")]))
    (tmp_path / "empty").mkdir()
    assert "no images" in _error(DataConfig(**base, train=[SourceConfig("empty")]))
    (tmp_path / "empty" / "a.heic").write_bytes(b"")  # a set of photos in a format not read: named
    assert "no images (" in _error(DataConfig(**base, train=[SourceConfig("empty")]))
    assert "skipping 1 file that is not an image (.heic x1)" in _error(
        DataConfig(**base, train=[SourceConfig("empty")])
    )
    bad = _folder(tmp_path / "bad", 2)
    (bad / "im1.png").write_bytes((bad / "im1.png").read_bytes()[:200])  # truncated
    message = _error(DataConfig(**base, train=[SourceConfig("bad")]))
    assert "im1.png" in message and "not a readable image" in message
    _folder(tmp_path / "small", 1, size=(6, 30))
    message = _error(DataConfig(**base, train=[SourceConfig("small")]))
    assert "im0.png: 30x6 is smaller than the training patch" in message
    _folder(tmp_path / "targets", 2)
    _folder(tmp_path / "inputs", 1)
    paired = DataConfig(task="paired", root=root, patch_size=8)
    paired.train = [SourceConfig("targets", input="inputs")]
    assert "1 target(s) have no input" in _error(paired)
    paired.train = [SourceConfig("inputs", input="targets")]  # a spare input was dropped without a word
    notes = find_items(paired)[2]
    assert any(f"{tmp_path / 'targets'}: 1 input(s) with no target, not used: im1" in n for n in notes)
    paired.train = [SourceConfig("targets")]
    assert "needs inputs" in _error(paired)
    # two inputs of one stem: training took one of them silently
    _folder(tmp_path / "inputs", 2)
    write_image(tmp_path / "inputs" / "im0.jpg", _image(24, 20))
    paired.train = [SourceConfig("targets", input="inputs")]
    assert "im0.jpg, im0.png share a stem; which to use is ambiguous" in _error(paired)
    # 16-bit files failed the run when first read, after --check had passed them (colour: Pillow reads 8)
    for c, suffix in ((3, ".png"), (1, ".png"), (3, ".tif")):
        deep = tmp_path / f"deep{c}{suffix[1:]}"
        deep.mkdir()
        cv2.imwrite(str(deep / f"a{suffix}"), np.full((24, 20, c), 40000, np.uint16))
        message = _error(DataConfig(**base, train=[SourceConfig(deep.name)]))
        assert f"a{suffix}: 16-bit images are not supported (8-bit only)" in message, message
    monkeypatch.delenv("IRFORMERS_DATA", raising=False)
    assert "needs data.root" in _error(DataConfig(task="denoise", sigma=25, train=[SourceConfig("x")]))


@pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="workers tell senders apart on Linux only")
@pytest.mark.parametrize("start", ["fork", "spawn", "forkserver"])
def test_data_workers_ignore_others_sigterm_but_end_on_the_trainers(tmp_path, start):
    """Ignoring every SIGTERM hung the exit of a process whose loader was still running: multiprocessing
    ends such workers with SIGTERM and waits for them (under forkserver the worker's parent is not the
    trainer). A forked worker ignores another process's SIGTERM; a spawned one has library threads that
    a mask cannot cover, and keeps torch's handling."""
    script = tmp_path / "exits.py"
    script.write_text(
        "import functools, os, signal, sys, time, torch\n"
        "from irformers.data.pipelines import _leave_signals_to_the_trainer\n"
        "if __name__ == '__main__':\n"
        "    init = functools.partial(_leave_signals_to_the_trainer, trainer=os.getpid())\n"
        "    loader = torch.utils.data.DataLoader(list(range(1000)), num_workers=1, worker_init_fn=init,\n"
        "                                         multiprocessing_context=sys.argv[1])\n"
        "    it = iter(loader)\n"
        "    next(it)\n"
        "    if sys.argv[1] == 'fork':  # another process's SIGTERM, as a scheduler's: ignored\n"
        "        os.system(f'kill -TERM {it._workers[0].pid}')\n"
        "        time.sleep(0.5)\n"
        "        assert it._workers[0].is_alive() and next(it) is not None\n"
        "    # exits with the worker running: multiprocessing's SIGTERM comes from here, and ends it\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([sys.executable, str(script), start], env=env, timeout=90, check=True)
