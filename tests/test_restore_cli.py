"""`irformers restore`, `test` and `info` with real (tiny) weights files: formats, failures, refusals."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from irformers.cli import main
from irformers.data.resize import imresize
from irformers.engine.checkpoint import save_weights
from irformers.inference import Restorer, load_model
from irformers.models import build_model

TINY_SR = {
    "arch": "semanir",
    "layout": "columnar",
    "task": "sr",
    "scale": 2,
    "dim": 12,
    "depths": [1],
    "num_heads": 2,
    "window_size": 8,
    "k": 16,
    "backend": "mask",
    "upsampler_features": 8,
    "cpb_hidden": 16,
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny_x2.safetensors"
    save_weights(path, build_model(TINY_SR), metadata={"preset": "tiny-test", "training": {"steps": 0}})
    return path


def _write_folder(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "empty.jpg").write_bytes(b"")
    cv2.imwrite(str(folder / "deep.png"), rng.integers(0, 65536, (20, 28, 3), dtype=np.uint16))
    rgba = rng.integers(0, 256, (20, 28, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[:, 14:, 3] = 255
    cv2.imwrite(str(folder / "rgba.png"), rgba)
    cv2.imwrite(str(folder / "gray.jpg"), rng.integers(0, 256, (24, 32), dtype=np.uint8))
    cv2.imwrite(str(folder / "plain.png"), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    stored = np.zeros((20, 30, 3), np.uint8)  # stored landscape; EXIF 6 = rotate 90 degrees clockwise
    stored[:, :10] = 255
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(folder / "rotated.jpg", exif=exif, quality=100)


def test_folder_with_bad_files(tmp_path, weights, capsys):
    _write_folder(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path / "in"), "-o", str(out), "--model", str(weights)]) == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 2 and "corrupt.png" in failed[0] and "empty.jpg" in failed[1]
    assert "restored 5 of 7" in captured.out
    names = sorted(p.name for p in out.iterdir())  # nothing half-written, no temp files
    assert names == ["deep_x2.png", "gray_x2.jpg", "plain_x2.png", "rgba_x2.png", "rotated_x2.jpg"]

    def read(name):
        return cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)

    deep = read("deep_x2.png")
    assert deep.dtype == np.uint16 and deep.shape == (40, 56, 3)
    assert np.any(deep % 257 != 0)  # 16-bit precision, not 8-bit values scaled up

    rgba = read("rgba_x2.png")
    assert rgba.dtype == np.uint8 and rgba.shape == (40, 56, 4)
    expected_alpha = imresize(np.repeat(np.array([[0.0] * 14 + [1.0] * 14]), 20, axis=0), 2)
    np.testing.assert_allclose(rgba[..., 3] / 255, np.clip(expected_alpha, 0, 1), atol=1 / 255)

    gray = read("gray_x2.jpg")
    assert gray.ndim == 2 and gray.shape == (48, 64)

    assert read("rotated_x2.jpg").shape == (60, 40, 3)  # portrait: the orientation was applied


def test_an_output_that_cannot_be_written_fails_that_image_only(tmp_path, weights, capsys):
    _write_folder(tmp_path / "in")
    out = tmp_path / "out"
    (out / "plain_x2.png").mkdir(parents=True)  # a folder where an output should go
    assert main(["restore", str(tmp_path / "in"), "-o", str(out), "--model", str(weights)]) == 1
    captured = capsys.readouterr()
    assert "restored 4 of 7" in captured.out
    assert "plain_x2.png: cannot write" in captured.err and "Traceback" not in captured.err
    (tmp_path / "file").write_bytes(b"")
    argv = ["restore", str(tmp_path / "in"), "-o", str(tmp_path / "file"), "--model", str(weights)]
    assert main(argv) == 2
    assert "must be a folder" in _one_error_line(capsys)
    argv[3] = str(tmp_path / "file" / "sub")  # refused before any image runs, not after the first
    assert main(argv) == 2
    assert f"-o cannot be created ({tmp_path / 'file'} is a file)" in _one_error_line(capsys)


def test_exif_orientation_is_applied_before_the_model(tmp_path, weights):
    _write_folder(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["restore", str(tmp_path / "in" / "rotated.jpg"), "-o", str(out), "--model", str(weights)]
    assert main([*argv, "--ext", "png"]) == 0
    restored = cv2.cvtColor(cv2.imread(str(out / "rotated_x2.png")), cv2.COLOR_BGR2RGB).astype(np.float64)
    with Image.open(tmp_path / "in" / "rotated.jpg") as im:
        stored = np.asarray(im.convert("RGB"), np.float32) / 255  # decoded as stored, not rotated
    restorer = Restorer(load_model(weights), device="cpu")

    def difference(pixels):
        expected = np.rint(np.clip(restorer(np.ascontiguousarray(pixels)), 0, 1) * 255)
        return np.abs(restored - expected)

    assert difference(np.rot90(stored, -1)).max() <= 1  # EXIF 6: rotated 90 degrees clockwise
    assert difference(np.rot90(stored, 1)).mean() > 10


def test_ext_suffix_and_globs(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((24, 24), 65535, np.uint16))
    cv2.imwrite(str(folder / "b.png"), np.zeros((16, 16, 3), np.uint8))
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    argv = ["restore", str(folder / "*"), "-o", str(out), "--model", str(weights), "--ext", "jpg"]
    assert main([*argv, "--suffix", "", "--tile", "16", "--tile-overlap", "4"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg"]  # the glob's images only
    assert cv2.imread(str(out / "a.jpg"), cv2.IMREAD_UNCHANGED).dtype == np.uint8  # JPEG holds 8 bits
    argv = ["restore", str(folder / "b.png"), "-o", str(folder), "--model", str(weights)]
    assert main([*argv, "--suffix", ""]) == 1
    assert "b.png: output b.png would overwrite an input" in capsys.readouterr().err
    escape = [
        "restore",
        str(folder / "b.png"),
        "-o",
        str(out),
        "--model",
        str(weights),
        "--suffix",
        "/../../x",
    ]
    assert main(escape) == 2  # it wrote ../../x.png outside -o
    assert "--suffix /../../x: a suffix goes into file names" in _one_error_line(capsys)
    assert main(["restore", str(folder / "nothing*.png"), "-o", str(out), "--model", str(weights)]) == 2
    assert "nothing*.png: no file matches the pattern" in _one_error_line(capsys)
    assert main(["restore", str(folder / "*.txt"), "-o", str(out), "--model", str(weights)]) == 2
    assert "*.txt: no image file matches the pattern" in _one_error_line(capsys)


def test_folders_name_the_files_they_skip_and_tile_0_is_one_pass(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((16, 16, 3), np.uint8))
    for name in ("anim.gif", "b.gif", "notes.txt", "README", "LICENSE", ".DS_Store", "._a.png"):
        (folder / name).write_bytes(b"GIF89a")
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "sub" / "c.png"), np.zeros((16, 16, 3), np.uint8))
    out = tmp_path / "out"
    assert main(["restore", str(folder), "-o", str(out), "--model", str(weights), "--tile", "0"]) == 0
    captured = capsys.readouterr()
    expected = "skipping 5 files that are not images ((no extension) x2, .gif x2, .txt x1)"
    assert captured.err.startswith(f"note: {folder}: {expected}")
    assert "restored 1 of 1 images" in captured.out and "whole images)" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png"]
    assert main(["restore", str(folder), "-o", str(out), "--model", str(weights), "--tile", "-16"]) == 2
    assert "--tile -16: expected a number of pixels" in capsys.readouterr().err


def test_a_tile_is_rounded_to_the_grid_and_one_too_small_to_overlap_is_named(tmp_path, weights, capsys):
    """A one-step tile cannot overlap its neighbours (seams); the report names the tile that ran, and an
    overlap that leaves no stride is refused before any image (it used to fail each image)."""
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((40, 40, 3), np.uint8))
    argv = ["restore", str(image), "-o", str(tmp_path / "out"), "--model", str(weights)]
    assert main([*argv, "--tile", "5"]) == 0  # this model's grid: 8 px
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "note: tile 5 runs as 8 (tiles are multiples of 8 px here)",
        "note: 8-pixel tiles cannot overlap (their starts are multiples of 8 px), so seams may show; "
        "a tile of 16 or more overlaps them",
    ]
    assert "8-px tiles on 1 of 1)" in captured.out
    small = tmp_path / "small.png"  # one tile: no seams to warn of (it warned for any image)
    cv2.imwrite(str(small), np.zeros((8, 8, 3), np.uint8))
    assert (
        main(["restore", str(small), "-o", str(tmp_path / "out"), "--model", str(weights), "--tile", "5"])
        == 0
    )
    assert capsys.readouterr().err.splitlines() == [
        "note: tile 5 runs as 8 (tiles are multiples of 8 px here)"
    ]
    assert main([*argv, "--tile", "16", "--suffix", "_b"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*argv, "--tile", "8", "--tile-overlap", "0", "--suffix", "_d"]) == 0  # no overlap asked
    assert capsys.readouterr().err == ""
    assert main([*argv, "--tile", "2000000", "--suffix", "_e"]) == 0  # larger than any image: one pass
    assert "whole images)" in capsys.readouterr().out  # it said "tile 2000000" for one pass
    assert main([*argv, "--ensemble", "--k", "16", "--suffix", "_f"]) == 0  # named, as test's rows name them
    assert "(cpu, float32, ensemble, k 16, whole images)" in capsys.readouterr().out
    assert main([*argv, "--k", "1000", "--suffix", "_g"]) == 0  # the k that ran: 8 x 8 windows hold 64
    assert "(cpu, float32, k 64, whole images)" in capsys.readouterr().out
    assert main([*argv, "--tile", "16", "--tile-overlap", "16", "--suffix", "_c"]) == 2
    assert "--tile-overlap 16 leaves no stride in a 16-pixel tile" in _one_error_line(capsys)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_wrong_architecture_or_scale_is_one_clear_error(tmp_path, weights, capsys):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": build_model("semanir-t-sr-x2").state_dict()}, foreign)
    base = ["restore", str(img), "-o", str(tmp_path / "out"), "--model"]
    assert main([*base, str(foreign), "--arch", "semanir-t-sr-x4"]) == 2
    assert "foreign.pth: does not fit" in _one_error_line(capsys)
    assert main([*base, str(foreign), "--arch", "hiir-t-sr-x2"]) == 2
    assert "foreign.pth: does not fit" in _one_error_line(capsys)
    assert main([*base, str(weights), "--scale", "4"]) == 2
    assert "x2 model" in _one_error_line(capsys)
    assert main([*base, "semanir-t-sr-x3"]) == 2
    assert "no trained weights ship" in _one_error_line(capsys)
    assert main([*base, str(weights), "--device", "gpu"]) == 2
    assert "--device: 'gpu' is not a device" in _one_error_line(capsys)
    absent = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"  # past the last GPU
    assert main([*base, str(weights), "--device", absent]) == 2
    assert f"needs {absent}, but this machine has" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"params": _Exploit(marker)}, protocol=2))
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    argv = [
        "restore",
        str(img),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(evil),
        "--arch",
        "semanir-t-sr-x2",
    ]
    assert main(argv) == 2
    assert "evil.pth: refused" in _one_error_line(capsys)
    assert main(["info", str(evil)]) == 2
    assert "refused" in _one_error_line(capsys)
    assert not marker.exists()


def test_info_describes_own_and_foreign_files(tmp_path, weights, capsys):
    assert main(["info", str(weights), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["preset"], info["task"], info["scale"]) == (
        "irformers",
        "tiny-test",
        "sr",
        2,
    )
    assert info["params"] == sum(p.numel() for p in build_model(TINY_SR).parameters())
    assert info["training"] == {"steps": 0}
    foreign = tmp_path / "f.pth"
    state = build_model("baseline-t-sr-x2").state_dict()
    torch.save({"params": {f"module.{k}": v for k, v in state.items()}}, foreign)
    assert main(["info", str(foreign), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"].startswith("foreign")
    assert info["elements"] == sum(v.numel() for v in state.values())


def test_info_gives_each_source_of_a_mix_its_own_task_and_level(tmp_path, capsys):
    """An all-in-one stage listed only the data section's level, as if every source trained on it."""
    recipe = {
        "seed": 0,
        "patches": [[0, 64, 8]],
        "loss": "l1",
        "lr": 2e-4,
        "schedule": "cosine",
        "cosine_start": 3,
        "precision": "bf16",
        "degrade": {"task": "denoise", "sigma_range": [0, 50], "gray": True},
    }
    data = [
        {"target": "Train400", "weight": 1.0},
        {"target": "Classic", "weight": 1.0, "task": "jpeg", "quality_range": [10, 40]},
    ]
    training = {
        "steps": 5,
        "total_steps": 5,
        "seconds": 40,
        "world_size": 1,
        "world_sizes": [2, 1],  # resumed on one process
        "task": "denoise",
        "data": data,
        "recipe": recipe,
    }
    path = tmp_path / "mix.safetensors"
    save_weights(path, build_model(TINY_SR), metadata={"preset": "tiny-test", "training": training})
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    line = next(x for x in out if x.startswith("  1. "))
    assert "denoise sigma 0-50 on Train400, Classic (jpeg q 10-40) (seed 0," in line, line
    assert "64px x 8 per process, 2 then 1 processes, l1 loss" in line, line  # the batch was 16, then 8
    assert "lr 0.0002 cosine from step 3, bf16)" in line, line
    assert line.startswith("  1. 5 steps, 40 s, ")  # not "0 min", nor "0.0 h" in the total:
    assert next(x for x in out if x.startswith("training ")).endswith("1 stage(s), 5 steps, 40 s")


def test_alpha_is_dropped_with_a_note_where_the_format_has_none(tmp_path, weights, capsys):
    rgba = np.full((16, 16, 4), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    out = tmp_path / "out"
    assert (
        main(["restore", str(tmp_path / "rgba.png"), "-o", str(out), "--model", str(weights), "--ext", "jpg"])
        == 0
    )
    assert "rgba.png: .jpg has no alpha channel; written without it" in capsys.readouterr().err
    assert cv2.imread(str(out / "rgba_x2.jpg"), cv2.IMREAD_UNCHANGED).shape == (32, 32, 3)


def test_a_nan_output_is_reported_by_file_name(tmp_path, capsys):
    model = build_model(TINY_SR)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # as an fp16 overflow would leave it
    save_weights(tmp_path / "nan.safetensors", model)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    argv = [
        "restore",
        str(tmp_path / "a.png"),
        "-o",
        str(tmp_path / "o"),
        "--model",
        str(tmp_path / "nan.safetensors"),
    ]
    assert main(argv) == 1
    assert _one_error_line(capsys).endswith("a.png: pixels contain NaN")


@pytest.mark.parametrize("task", ["restore", "test"])
def test_an_image_too_large_for_memory_fails_alone(tmp_path, weights, monkeypatch, capsys, task):
    """The CPU's allocator raises a plain RuntimeError, which only a CUDA OutOfMemoryError handler
    missed: a traceback ended the batch before its other images."""
    model_forward = Restorer._forward

    def forward(self, x):
        if x.shape[-1] > 40:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"
            )
        return model_forward(self, x)

    monkeypatch.setattr(Restorer, "_forward", forward)
    folder = tmp_path / ("Set" if task == "test" else "in") / ("HR" if task == "test" else "")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "big.png"), rng.integers(0, 256, (24, 96, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "small.png"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    common = ["--model", str(weights), "--tile", "none"]
    if task == "restore":
        assert main(["restore", str(folder), "-o", str(tmp_path / "o"), *common]) == 1
        assert (tmp_path / "o" / "small_x2.png").is_file() and not (tmp_path / "o" / "big_x2.png").exists()
    else:
        argv = ["test", "--task", "sr", "--scale", "2", "--dataset", "Set", "--data-root", str(tmp_path)]
        assert main([*argv, *common]) == 1
    out, err = capsys.readouterr()
    assert task == "restore" or "[1 of 2 images]" in out
    assert "big.png: out of memory on cpu restoring it whole (" in err and "try a smaller --tile" in err
    assert "Traceback" not in err


def test_info_on_damaged_metadata_is_one_clear_error(tmp_path, weights, capsys):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    for name, meta, problem in [
        ("json.safetensors", "{not json", "metadata is not valid JSON"),
        ("arch.safetensors", '{"config": {"arch": "nope"}}', "metadata config does not build a model"),
        ("keys.safetensors", '{"config": {"arch": "semanir", "no_such_key": 1}}', "does not build a model"),
    ]:
        save_file(tensors, str(tmp_path / name), metadata={"irformers": meta})
        for command in (["info"], ["restore", str(image), "-o", str(tmp_path / "o"), "--model"]):
            assert main([*command, str(tmp_path / name)]) == 2
            line = _one_error_line(capsys)
            assert f"{name}: its " in line and problem in line


def test_saved_outputs_keep_every_level(tmp_path, capsys):
    mini = tmp_path / "Mini"
    mini.mkdir()
    for i in range(2):
        cv2.imwrite(str(mini / f"{i}.png"), np.random.default_rng(i).integers(0, 256, (24, 32), np.uint8))
    argv = ["test", "--model", "identity", "--task", "denoise", "--sigma", "15,50", "--dataset", "Mini"]
    assert main([*argv, "--data-root", str(tmp_path), "--save-dir", str(tmp_path / "saved"), "--json"]) == 0
    out = tmp_path / "saved"
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.png")} == {
        f"Mini/denoise-sigma{s}-gray/{i}.png" for s in (15, 50) for i in range(2)
    }
    a, b = (cv2.imread(str(out / "Mini" / f"denoise-sigma{s}-gray" / "0.png")) for s in (15, 50))
    assert not np.array_equal(a, b)
    for option in (["--k", "64"], ["--ensemble"], ["--tile", "16"], ["--arch", "semanir-t-sr-x2"]):
        assert main([*argv, "--data-root", str(tmp_path), *option]) == 2  # were ignored
        assert f"{option[0]}: identity is a pseudo-model, no network to run it on" in _one_error_line(capsys)


def test_evaluate_a_weights_file_tiled_and_untiled(tmp_path, weights, capsys, data_root):
    """Set5 crops (small, for CI): tiles smaller than the images change the set's PSNR by < 0.05 dB."""
    mini = tmp_path / "Mini" / "HR"
    mini.mkdir(parents=True)
    for name in ("baby", "bird", "woman"):
        hr = cv2.imread(str(data_root / "Set5" / "HR" / f"{name}.png"))
        cv2.imwrite(str(mini / f"{name}.png"), hr[:144, :112])
    base = ["test", "--model", str(weights), "--task", "sr", "--dataset", "Mini"]
    base += ["--data-root", str(tmp_path)]
    assert main([*base, "--json", "--save-dir", str(tmp_path / "saved")]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert (whole["scale"], whole["model"], len(whole["per_image"])) == (2, "tiny_x2.safetensors", 3)
    assert whole["params_m"] == pytest.approx(sum(p.numel() for p in build_model(TINY_SR).parameters()) / 1e6)
    assert len(list((tmp_path / "saved" / "Mini" / "sr-x2").iterdir())) == 3
    assert main([*base, "--json", "--tile", "32", "--tile-overlap", "16"]) == 0  # LR crops are 72x56
    tiled = json.loads(capsys.readouterr().out)
    assert abs(tiled["psnr"] - whole["psnr"]) < 0.05
    assert tiled["model"] == "tiny_x2.safetensors (tile 32)"  # a score says how it was made
    assert main([*base, "--allow-random-init"]) == 0  # ignored silently before
    assert "note: --allow-random-init: " in capsys.readouterr().err
    assert main([*base, "--scale", "2,4"]) == 2
    assert "x2 model" in _one_error_line(capsys)


def test_a_reader_that_stops_early_gets_no_traceback():
    """`irformers info NAME | head -1` printed a BrokenPipeError traceback."""
    src = Path(__file__).resolve().parents[1] / "src"
    reader = f"{sys.executable} -m irformers info semanir-t-denoise-gray | head -1"
    done = subprocess.run(
        reader, shell=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(src)}
    )
    assert done.stdout.startswith("file ") and done.stderr == ""


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    import irformers.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    for command, argv in (("cmd_info", ["info", "x"]), ("cmd_train", ["train", "x.yaml"])):
        monkeypatch.setattr(cli, command, interrupted)
        assert main(argv) == 130
        line = _one_error_line(capsys)
        assert "interrupted; every file written so far is complete" in line
        assert ("resume" in line) == (command == "cmd_train")
    monkeypatch.setenv("RANK", "1")  # under torchrun, rank 0 says it, not every process
    assert main(["train", "x.yaml"]) == 130
    assert capsys.readouterr().err == ""
