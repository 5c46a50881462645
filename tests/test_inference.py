"""Inference: tiles cover the image on the model's grid, blend without seams, ensemble, precision, loading."""

import dataclasses
import itertools
import math
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import irformers
from irformers.devices import full_fp32
from irformers.engine.checkpoint import CheckpointError, save_weights
from irformers.inference import (
    Restorer,
    TileWarning,
    axis_weights,
    describe_checkpoint,
    load_model,
    plan_tiles,
    resolve_precision,
    tile_spans,
)
from irformers.models import build_model
from irformers.models.descriptor import ModelDescriptor
from irformers.models.layers import BayerBilinear
from irformers.models.presets import bundled_weights

# Tiny SemanIR networks (dense attention path, so nothing is compiled): a x2 columnar one and a U-Net.
TINY_SR = {
    "arch": "semanir",
    "layout": "columnar",
    "task": "sr",
    "scale": 2,
    "dim": 12,
    "depths": [1, 1],
    "num_heads": 2,
    "window_size": 8,
    "k": 16,
    "backend": "mask",
    "upsampler_features": 8,
    "cpb_hidden": 16,
}
TINY_UNET = {
    "arch": "semanir",
    "layout": "unet",
    "task": "denoise",
    "dims": [8, 8, 8, 8],
    "depths": [1, 1, 1, 1],
    "decoder_depths": [1, 1, 1],
    "num_heads": [1, 1, 1, 1],
    "refinement_depth": 1,
    "window_size": 8,
    "k": 16,
    "backend": "mask",
    "cpb_hidden": 16,
}


class Toy(nn.Module):
    """A stand-in network: any tensor function, with the descriptor inference reads."""

    def __init__(self, fn, scale=1, channels=(3, 3), multiple=8):
        super().__init__()
        self.fn = fn
        self.descriptor = ModelDescriptor("toy", "sr" if scale > 1 else "denoise", scale, *channels, multiple)
        self.config = {"dim": 8}

    def forward(self, x):
        return self.fn(x)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1.0 / float(np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(100, 48, 16), (97, 32, 8), (33, 32, 16), (64, 64, 16)]
)
def test_tiles_cover_the_image_and_start_on_the_grid(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(b - a <= tile for a, b in spans)
    assert all(a % (tile - overlap) == 0 for a, _ in spans)
    assert all(prev[1] - nxt[0] == overlap for prev, nxt in itertools.pairwise(spans))


def test_plan_aligns_tile_and_overlap_to_the_size_multiple():
    toy = Toy(lambda x: x, multiple=16)
    assert plan_tiles(toy, 200, 300, tile=70, overlap=20) == (64, 32)  # tile down, stride 32: overlap >= 20
    assert plan_tiles(toy, 60, 60, tile=64, overlap=16) is None  # the image fits one tile
    assert plan_tiles(toy, 200, 300, tile="none") is None
    with pytest.raises(ValueError, match="no stride"):
        plan_tiles(toy, 200, 300, tile=32, overlap=32)
    # the default overlap (32 here) gives way in the smallest tiles rather than refusing them
    assert plan_tiles(toy, 200, 300, tile=16) == (16, 0)
    assert plan_tiles(toy, 200, 300, tile=48) == (48, 32)


def test_blend_weights_sum_to_one_and_fade_out_at_tile_edges():
    spans = tile_spans(100, 48, 16)  # (0, 48), (32, 80), (64, 100)
    weights = axis_weights(spans, 100, scale=2)
    total = torch.zeros(200)
    for (a, _), w in zip(spans, weights, strict=True):
        total[2 * a : 2 * a + len(w)] += w
    torch.testing.assert_close(total, torch.ones(200))
    first, middle = weights[0], weights[1]
    assert torch.all(first[:64] == 1)  # no neighbour on the image side: full weight
    assert first[-1] < 0.01 and middle[0] < 0.01  # a tile's own edge, where it lacks context
    # inside the overlap the raised cosine: the first tile's weight is cos^2 of (i + 0.5) / 32 * pi / 2
    i = torch.arange(32, dtype=torch.float64)
    torch.testing.assert_close(first[64:], (torch.cos(math.pi / 2 * (i + 0.5) / 32) ** 2).float())


@pytest.mark.parametrize("scale", [1, 3])
def test_tiling_leaves_a_pixelwise_model_unchanged(scale):
    fn = (
        (lambda x: torch.nn.functional.interpolate(x**2, scale_factor=scale))
        if scale > 1
        else (lambda x: x**2)
    )
    toy = Toy(fn, scale=scale)
    img = np.random.default_rng(0).random((45, 70, 3), dtype=np.float32)
    out = Restorer(toy, tile=16, overlap=8, device="cpu")(img)
    expected = np.repeat(np.repeat(img**2, scale, axis=0), scale, axis=1)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_blending_has_no_seam_even_when_tiles_disagree():
    """Each tile outputs its own mean: pasted tiles would jump by the full difference at each border;
    the raised-cosine blend changes by at most pi / (2 * overlap) of it per pixel."""
    means = []
    toy = Toy(lambda x: means.append(float(x.mean())) or torch.full_like(x, means[-1]))
    img = np.zeros((64, 96, 1), np.float32)
    img[:, 48:] = 1.0
    img[32:] += 0.5
    overlap = 16
    out = Restorer(toy, tile=32, overlap=overlap, device="cpu")(np.repeat(img, 3, axis=2))[..., 0]
    spread = max(means) - min(means)
    step = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert spread > 1  # the tiles do disagree
    assert step <= 1.01 * math.pi / (2 * overlap) * spread


def test_memory_is_bounded_by_the_tile():
    shapes = []
    toy = Toy(lambda x: shapes.append(tuple(x.shape[-2:])) or x)
    Restorer(toy, tile=32, overlap=8, device="cpu")(np.zeros((200, 130, 3), np.float32))
    assert max(max(s) for s in shapes) <= 32 and len(shapes) == 8 * 6  # starts every 24 px
    # auto: the tile follows the memory budget, not the image size
    model = build_model(TINY_SR)
    small = plan_tiles(model, 4000, 3000, memory_mb=64)
    assert small is not None and small == plan_tiles(model, 400, 300, memory_mb=64)
    assert plan_tiles(model, 40, 30, memory_mb=64) is None  # fits: one whole-image pass


@pytest.mark.parametrize(
    ("config", "h", "w", "tile", "overlap"),
    [(TINY_SR, 56, 72, 32, 16), (TINY_UNET, 120, 184, 128, 64)],
    ids=["columnar-x2", "unet"],
)
def test_tiled_transformer_matches_untiled(config, h, w, tile, overlap):
    torch.manual_seed(0)
    model = build_model(config).eval()
    # tiles start on the coarsest window grid: 8 px for the columnar model, 8 * 2**3 for the U-Net
    assert model.descriptor.tile_multiple == (8 if config is TINY_SR else 64)
    img = np.random.default_rng(1).random((h, w, 3), dtype=np.float32)
    img = np.clip(img * 0.3 + np.linspace(0, 0.7, w, dtype=np.float32)[None, :, None], 0, 1)
    whole = np.clip(Restorer(model, tile="none", device="cpu")(img), 0, 1)
    tiled = np.clip(Restorer(model, tile=tile, overlap=overlap, device="cpu")(img), 0, 1)
    assert psnr(tiled, whole) >= 40
    s = model.descriptor.scale
    border = np.zeros(whole.shape[:2], bool)  # the overlap bands, where tiles are blended
    for (_, end), (start, _) in itertools.pairwise(tile_spans(h, tile, overlap)):
        border[start * s : end * s] = True
    for (_, end), (start, _) in itertools.pairwise(tile_spans(w, tile, overlap)):
        border[:, start * s : end * s] = True
    assert psnr(tiled[border], whole[border]) >= 40


def test_self_ensemble_averages_the_eight_symmetries():
    """f(x) = x + a horizontal ramp: the 8 flips/transpositions, mapped back, average the ramp to 0.5."""
    ramp = torch.linspace(0, 1, 24).view(1, 1, 1, 24)
    toy = Toy(lambda x: x + ramp.to(x))
    img = np.random.default_rng(0).random((24, 24, 3), dtype=np.float32)
    out = Restorer(toy, tile="none", ensemble=True, device="cpu")(img)
    np.testing.assert_allclose(out, img + 0.5, atol=1e-6)


def test_self_ensemble_keeps_a_mosaic_rggb():
    """Bilinear demosaicking commutes with the transposition, not with flips (they shift the phase)."""
    toy = Toy(BayerBilinear(), channels=(1, 3))
    toy.descriptor = dataclasses.replace(toy.descriptor, task="demosaic", bayer_input=True)
    mosaic = np.random.default_rng(0).random((24, 32), dtype=np.float32)
    plain = Restorer(toy, tile="none", device="cpu")(mosaic)
    np.testing.assert_allclose(
        Restorer(toy, tile="none", ensemble=True, device="cpu")(mosaic), plain, atol=1e-6
    )
    with pytest.raises(ValueError, match="1-channel RGGB mosaic: irformers degrade --task demosaic"):
        Restorer(toy, tile="none", device="cpu")(np.zeros((8, 8, 3), np.float32))  # was: "convert to gray"


def test_the_python_api_says_when_a_tile_runs_otherwise_than_asked():
    """Only the CLI said so: restore(..., tile=64) ran 128-pixel tiles without overlap, seams and all."""
    model = build_model(TINY_SR)
    grid = model.descriptor.tile_multiple
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restorer = Restorer(model, tile=grid + 1, device="cpu")
    said = [str(w.message) for w in caught if w.category is TileWarning]
    assert restorer.tile == grid and said == [
        f"tile {grid + 1} runs as {grid} (tiles are multiples of {grid} px here)"
    ]
    assert caught[0].filename == __file__  # points at the caller
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restorer(np.zeros((grid, grid, 3), np.float32))  # one tile: nothing to say about seams
        restorer(np.zeros((3 * grid, grid, 3), np.float32))  # tiled, without overlap: said, once
        restorer(np.zeros((3 * grid, grid, 3), np.float32))
    said = [str(w.message) for w in caught if w.category is TileWarning]
    assert len(said) == 1 and "seams may show" in said[0] and caught[0].filename == __file__
    with warnings.catch_warnings(record=True) as caught:  # through restore: they pointed at inference.py
        warnings.simplefilter("always")
        irformers.restore(np.zeros((3 * grid, grid, 3), np.float32), model, tile=grid + 1, device="cpu")
    assert len(caught) == 2 and {w.filename for w in caught} == {__file__}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TileWarning)
        assert Restorer(model, tile=2 * grid, device="cpu").tile == 2 * grid  # as asked, overlapping
    with pytest.raises(ValueError, match="positive number of pixels"):
        Restorer(model, tile=True, device="cpu")  # a bool is no size


def test_integer_pixels_are_scaled_by_restore_and_refused_by_restorer():
    """Restorer took uint8 pixels as they were (0-255 into a [0, 1] model: outputs up to 279)."""
    toy = Toy(lambda x: x)
    img = np.full((8, 8, 3), 255, np.uint8)
    assert np.allclose(irformers.restore(img, toy, tile="none", device="cpu"), 1.0)
    with pytest.raises(TypeError, match=r"restore takes a numpy array \(H x W x C\), not Tensor"):
        irformers.restore(torch.zeros(3, 8, 8), toy, device="cpu")  # numpy's own error named a dtype
    for bad, call in ((img, Restorer(toy, tile="none", device="cpu")), (img.astype(np.int32), None)):
        with pytest.raises(ValueError, match=f"^{bad.dtype} pixels: "):
            call(bad) if call else irformers.restore(bad, toy, tile="none", device="cpu")
    for shape in ((2, 8, 8, 3), (0, 8, 3)):  # a batch was called a 24-channel image; an empty one crashed
        with pytest.raises(ValueError, match=r"^an image of shape .*: Restorer takes one H x W"):
            irformers.restore(np.zeros(shape, np.float32), toy, device="cpu")
    # 0-255 floats (cv2.imread(...).astype(np.float32)) came back as garbage, NaN as NaN; noise may overshoot
    assert irformers.restore(np.full((8, 8, 3), 1.9, np.float32), toy, tile="none", device="cpu").max() > 1
    for bad, problem in ((np.full((8, 8), 200.0), "pixels up to 200: "), (np.full((8, 8), np.nan), "NaN")):
        with pytest.raises(ValueError, match=problem):
            irformers.restore(bad.astype(np.float32), toy, device="cpu")


def test_restore_takes_a_name_and_leaves_the_model_as_it_was():
    """restore(x, "preset") was an AttributeError ('str' object has no attribute 'descriptor'), and a
    model in training mode came back in eval mode."""
    img = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    assert irformers.restore(img, "semanir-t-sr-x2", device="cpu").shape == (32, 32, 3)
    model = build_model(TINY_SR).train()
    irformers.restore(img, model, device="cpu")
    assert model.training
    for bad in (None, nn.Conv2d(3, 3, 3)):
        with pytest.raises(TypeError, match="Restorer takes an irformers model"):
            irformers.restore(img, bad, device="cpu")
    with pytest.raises(CheckpointError, match="did you mean semanir-t-sr-x2"):
        irformers.load_model("semanir-t-srx2")
    # numpy's whole numbers are sizes; 0 MB was the default budget, -5 a math error, a float k torch's error
    assert Restorer(model, tile=np.int64(32), k=np.int64(8), device="cpu").tile == 32
    for options, problem in (({"memory_mb": 0}, "memory_mb must be > 0"), ({"k": 8.5}, "whole number")):
        with pytest.raises(ValueError, match=problem):
            Restorer(model, device="cpu", **options)


def test_precision_choices():
    toy = Toy(lambda x: x)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, toy) == torch.float32
    assert resolve_precision("bf16", cpu, toy) == torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", cpu, toy)
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", cpu, toy)
    torch.manual_seed(0)
    model = build_model(TINY_SR).eval()
    img = np.random.default_rng(0).random((24, 32, 3), dtype=np.float32)
    fp32 = Restorer(model, precision="fp32", device="cpu")(img)
    bf16 = Restorer(model, precision="bf16", device="cpu")(img)
    assert 0 < np.abs(bf16 - fp32).max() < 0.1  # it did run in reduced precision, and stayed close


def test_fp32_runs_without_tf32_and_leaves_the_flags_as_they_were():
    """cuDNN ran an fp32 test's convolutions as TF32 on Ampere+ GPUs (PyTorch's default); an outer
    autocast must not turn an fp32 Restorer into bf16 either."""
    before = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # a user's own setting comes back as it was
    try:
        with full_fp32():  # torch's own getter still reads (2.9's per-backend flags made it raise)
            assert (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()) == (
                False,
                "highest",
            )
        assert (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()) == (
            before[0],
            "medium",
        )
    finally:
        torch.set_float32_matmul_precision(before[1])
    seen = []
    toy = Toy(lambda x: seen.append(torch.is_autocast_enabled("cpu")) or x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        Restorer(toy, precision="fp32", device="cpu")(np.zeros((8, 8, 3), np.float32))
    assert seen == [False]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_warns_for_models_not_marked_safe():
    model = build_model(TINY_SR)
    with pytest.warns(UserWarning, match="fp16"):
        resolve_precision("fp16", torch.device("cuda"), model)


def test_gray_through_color_model_and_color_into_gray_model():
    scales = torch.tensor([0.5, 1.0, 1.5]).view(1, 3, 1, 1)
    toy = Toy(lambda x: x * scales)
    gray = np.random.default_rng(0).random((16, 20), dtype=np.float32)
    out = irformers.restore(gray, toy, device="cpu")
    assert out.shape == gray.shape
    np.testing.assert_allclose(out, gray, atol=1e-6)  # the mean of the three channels
    with pytest.raises(ValueError, match="3-channel image"):
        Restorer(Toy(lambda x: x, channels=(1, 1)), device="cpu")(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"a 20-channel image .* \(channels go last, H x W x C"):
        Restorer(toy, device="cpu")(np.zeros((3, 20, 20), np.float32))  # torch's layout


def test_k_is_passed_to_semanir_and_refused_elsewhere():
    torch.manual_seed(0)
    model = build_model(TINY_SR).eval()
    img = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(img).permute(2, 0, 1)[None], k=4)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(Restorer(model, k=4, device="cpu")(img), expected, atol=1e-6)
    with pytest.raises(ValueError, match="SemanIR"):
        Restorer(build_model("baseline-t-sr-x2"), k=4, device="cpu")


def test_model_loading_resolves_presets_files_and_foreign_weights(tmp_path):
    with pytest.raises(CheckpointError, match="--model FILE"):
        load_model("semanir-t-sr-x3")  # a preset that ships no weights
    first, again = (load_model("semanir-t-sr-x3", allow_random_init=True).state_dict() for _ in range(2))
    assert all(torch.equal(first[key], again[key]) for key in first)  # smoke-test figures repeat
    assert irformers.load_model("semanir-t-sr-x3", allow_random_init=True).random_init
    with pytest.raises(CheckpointError, match="--arch hiir-t-sr-x2: names the network of a weights file"):
        load_model("semanir-t-sr-x2", arch="hiir-t-sr-x2")  # was ignored
    own = bundled_weights("semanir-t-sr-x2")  # an irformers file names its network: --arch contradicted it
    with pytest.raises(CheckpointError, match="names its own network; --arch semanir-t-sr-x4 is for foreign"):
        load_model(own, arch="semanir-t-sr-x4")  # was "does not fit ...: 2 missing keys"
    shipped = load_model("semanir-t-sr-x2")  # the package's weights, by name
    assert not shipped.random_init and shipped.metadata["preset"] == "semanir-t-sr-x2"
    with pytest.raises(CheckpointError, match="neither a weights file nor a preset"):
        load_model("no-such-model")
    assert load_model("semanir-t-sr-x2", device="auto").descriptor.scale == 2  # torch: "auto" is no device
    with pytest.raises(CheckpointError, match=r"^device: 'cuda:7' needs cuda:7, but this machine has"):
        load_model("semanir-t-sr-x2", device="cuda:7")
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "missing.safetensors")
    run = tmp_path / "run"  # a training run's folder: the message names the file inside
    run.mkdir()
    with pytest.raises(CheckpointError, match=r"run: a folder, not a weights file; pass the file$"):
        load_model(run)
    (run / "model.safetensors").touch()
    with pytest.raises(CheckpointError, match=r"this run folder's: .*run/model\.safetensors\)$"):
        load_model(run)
    with pytest.raises(CheckpointError, match=r"this run folder's: .*run/model\.safetensors\)$"):
        describe_checkpoint(run)  # `irformers info RUN_FOLDER` said "no such file"

    torch.manual_seed(0)
    model = build_model("baseline-t-sr-x2")
    own = tmp_path / "own.safetensors"
    save_weights(own, model)
    loaded = load_model(own)
    assert not loaded.random_init and not loaded.training
    foreign = tmp_path / "foreign.pth"
    torch.save({"params_ema": {f"module.{k}": v for k, v in model.state_dict().items()}}, foreign)
    with pytest.raises(CheckpointError, match="--arch"):
        load_model(foreign)
    loaded = load_model(foreign, arch="baseline-t-sr-x2")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(foreign, arch="semanir-t-sr-x2")


class _Exploit:
    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    exploit = _Exploit()
    exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"params": exploit}, protocol=2))
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path, arch="baseline-t-sr-x2")
    assert not exploit.marker.exists()


def test_compiled_restorer_matches_eager():
    """`--compile`: torch.compile runs the same network (tiles of one shape compile once)."""
    torch.manual_seed(0)
    model = build_model(TINY_SR).eval()
    img = np.random.default_rng(2).random((40, 48, 3), dtype=np.float32)
    eager = Restorer(model, tile="none", device="cpu")(img)
    compiled = Restorer(model, tile=32, overlap=16, device="cpu", compile=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = compiled(img)
    # the cached index tables are traced, not looked up: dynamo warned at each call site of a cache
    assert not [w for w in caught if "lru_cache" in str(w.message)]
    np.testing.assert_allclose(out, Restorer(model, tile=32, overlap=16, device="cpu")(img), atol=1e-4)
    assert psnr(np.clip(compiled(img), 0, 1), np.clip(eager, 0, 1)) >= 40


def test_reports_tell_run_folders_apart(tmp_path):
    from irformers.engine.checkpoint import save_weights
    from irformers.inference import model_label

    model = build_model("semanir-t-sr-x2")
    for run in ("a", "b"):
        save_weights(tmp_path / run / "model.safetensors", model)
    save_weights(tmp_path / "mine.safetensors", model)
    labels = [
        model_label(model, tmp_path / p)
        for p in ("a/model.safetensors", "b/model.safetensors", "mine.safetensors")
    ]
    assert labels == ["a/model.safetensors", "b/model.safetensors", "mine.safetensors"]
    assert model_label(model, "semanir-t-sr-x2") == "semanir-t-sr-x2"
