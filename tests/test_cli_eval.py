"""The benchmark runner through the command line, against the published reference rows."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from irformers.cli import main
from irformers.data.datasets import DatasetError, find_dataset
from irformers.evaluate import Degradation, prepare

# Published bicubic rows (README, Conventions) (PSNR / SSIM on Y, border shave = scale).
BICUBIC = {
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("BSD100", 2): (29.56, 0.8431),
    ("BSD100", 3): (27.21, 0.7385),
    ("BSD100", 4): (25.96, 0.6675),
}
# Published "JPEG" (no restoration) rows (README, Conventions), PSNR / SSIM.
JPEG = {
    ("Classic5", True, 10): (27.82, 0.7600),
    ("Classic5", True, 40): (32.43, 0.8850),
    ("LIVE1", True, 10): (27.77, 0.7730),
    ("LIVE1", True, 40): (32.35, 0.9040),
    ("LIVE1", False, 10): (25.69, 0.7430),
    ("LIVE1", False, 40): (30.28, 0.8820),
}


def run_json(capsys, *argv: str) -> list[dict]:
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize("dataset", ["Set5", "BSD100"])
def test_bicubic_rows_match_the_published_figures(capsys, data_root, dataset):
    results = run_json(
        capsys,
        "test",
        "--model",
        "bicubic",
        "--task",
        "sr",
        "--scale",
        "2,3,4",
        "--dataset",
        dataset,
        "--data-root",
        str(data_root),
    )
    assert [r["scale"] for r in results] == [2, 3, 4]
    for r in results:
        psnr, ssim = BICUBIC[dataset, r["scale"]]
        assert r["metric_on"] == "y" and r["crop"] == r["scale"]
        assert abs(r["psnr"] - psnr) <= 0.02, (dataset, r["scale"], r["psnr"])
        assert abs(r["ssim"] - ssim) <= 0.001, (dataset, r["scale"], r["ssim"])
        assert len(r["per_image"]) == (5 if dataset == "Set5" else 100) and not r["failed"]


@pytest.mark.parametrize(("dataset", "gray"), [("Classic5", True), ("LIVE1", True), ("LIVE1", False)])
def test_jpeg_rows_match_the_published_figures(capsys, data_root, dataset, gray):
    argv = [
        "test",
        "--model",
        "identity",
        "--task",
        "jpeg",
        "--quality",
        "10,40",
        "--dataset",
        dataset,
        "--data-root",
        str(data_root),
        *(["--gray"] if gray else []),
    ]
    for r in run_json(capsys, *argv):
        psnr, ssim = JPEG[dataset, gray, r["quality"]]
        assert r["gray"] is gray and r["metric_on"] == ("gray" if gray else "rgb")
        assert abs(r["psnr"] - psnr) <= 0.02, (dataset, gray, r["quality"], r["psnr"])
        assert abs(r["ssim"] - ssim) <= 0.001, (dataset, gray, r["quality"], r["ssim"])
        assert r["psnr_b"] <= r["psnr"] + 1e-9  # the blocking factor only ever lowers PSNR


def test_malvar_rows(capsys, data_root):
    # McMaster: the published 34.43 within 0.05 dB. Kodak24: this copy's black last lines keep it at
    # 34.68 against the published 35.78 (README); a regression check on our own figure.
    argv = ["test", "--model", "malvar", "--task", "demosaic", "--dataset", "McMaster,Kodak24"]
    mcmaster, kodak = run_json(capsys, *argv, "--data-root", str(data_root))
    assert abs(mcmaster["psnr"] - 34.43) <= 0.05 and mcmaster["metric_on"] == "rgb"
    assert abs(kodak["psnr"] - 34.68) <= 0.02


def test_bicubic_lr_is_synthesised_when_the_set_has_no_lr_folder(data_root, tmp_path):
    # The same Set5 without LR_bicubic/: the synthesised LR must equal the MATLAB files.
    (tmp_path / "Set5").mkdir()
    (tmp_path / "Set5" / "HR").symlink_to(data_root / "Set5" / "HR")
    deg = Degradation("sr", scale=3)
    with_files, synthesised = find_dataset("Set5", data_root, 3), find_dataset("Set5", tmp_path, 3)
    assert synthesised.samples[0].source is None
    for a, b in zip(with_files.samples, synthesised.samples, strict=True):
        np.testing.assert_array_equal(prepare(a, deg)[0], prepare(b, deg)[0])


def test_a_gray_hr_image_scores_as_three_equal_channels(capsys, tmp_path):
    """The SR convention (Set14's bridge): a gray HR file is read as RGB, so its Y is 16 + 219/255 v, and
    it scores exactly as the same pixels stored as an RGB file do."""
    hr = np.random.default_rng(4).integers(0, 256, (26, 22), dtype=np.uint8)
    for name, pixels in (("Gray", hr), ("Rgb", np.repeat(hr[..., None], 3, axis=2))):
        (tmp_path / name / "HR").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / name / "HR" / "a.png"), pixels)
    argv = ["test", "--model", "bicubic", "--task", "sr", "--scale", "2", "--data-root", str(tmp_path)]
    assert main([*argv, "--dataset", "Gray,Rgb", "--json"]) == 0
    gray, rgb = json.loads(capsys.readouterr().out)
    assert gray["psnr"] == rgb["psnr"] and gray["ssim"] == rgb["ssim"] and gray["metric_on"] == "y"


def test_denoising_input_is_bit_identical_across_runs_and_processes(data_root):
    deg = Degradation("denoise", sigma=25, gray=True)
    sample = find_dataset("Set12", data_root).samples[0]
    noisy, clean = prepare(sample, deg)
    np.testing.assert_array_equal(noisy, prepare(sample, deg)[0])
    # A fresh interpreter (other hash seeds, other import order) draws the very same noise.
    code = (
        "import sys, hashlib; from irformers.evaluate import Degradation, prepare; "
        "from irformers.data.datasets import find_dataset; "
        "s = find_dataset('Set12', sys.argv[1]).samples[0]; "
        "x = prepare(s, Degradation('denoise', sigma=25, gray=True))[0]; "
        "print(hashlib.sha256(x.tobytes()).hexdigest())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(data_root)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    ).stdout.strip()
    import hashlib

    assert other == hashlib.sha256(noisy.tobytes()).hexdigest()
    # And it is the convention's noise: numpy.random.seed(0) then numpy.random.normal, added (as KAIR does)
    # to the float32 image, not clipped.
    clean32 = clean.astype(np.float32) / 255
    expected = clean32 + np.random.RandomState(0).normal(0, 25 / 255, clean.shape)
    np.testing.assert_array_equal(noisy, expected.astype(np.float32))
    assert noisy.min() < 0 < 1 < noisy.max()


def test_noisy_row_is_close_to_the_noise_level(capsys, data_root):
    # PSNR of clipped-and-rounded N(0, 25) noise on 8-bit images is about 20.2 dB.
    (r,) = run_json(
        capsys,
        "test",
        "--model",
        "identity",
        "--task",
        "denoise",
        "--sigma",
        "25",
        "--dataset",
        "Set12",
        "--data-root",
        str(data_root),
    )
    assert r["gray"] and 20.0 < r["psnr"] < 20.9


def test_a_set_given_by_its_absolute_path_needs_no_data_root(capsys, data_root, monkeypatch):
    """It worked only beside a data root it then ignored ('no data root: pass --data-root')."""
    monkeypatch.delenv("IRFORMERS_DATA", raising=False)
    argv = ["test", "--model", "bicubic", "--task", "sr", "--scale", "2", "--json"]
    assert main([*argv, "--dataset", str(data_root / "Set5")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["dataset"] == "Set5" and 33.6 < r["psnr"] < 33.7


def test_bad_usage_gives_one_line_and_status_2(capsys, data_root, tmp_path):
    cases = [
        (["--dataset", "NoSuchSet", "--data-root", str(data_root)], "unknown dataset 'NoSuchSet'"),
        (["--dataset", "Set5", "--data-root", str(tmp_path / "nowhere")], "data root is not a folder"),
        (["--dataset", "Empty", "--data-root", str(tmp_path)], "no images"),
        (["--dataset", str(tmp_path / "Gone")], "Gone: no such dataset folder"),
    ]
    (tmp_path / "Empty").mkdir()
    for extra, message in cases:
        assert main(["test", "--model", "bicubic", "--task", "sr", "--scale", "2", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert (
        main(
            [
                "test",
                "--model",
                "bicubic",
                "--task",
                "denoise",
                "--sigma",
                "25",
                "--dataset",
                "Set12",
                "--data-root",
                str(data_root),
            ]
        )
        == 2
    )
    assert "for --task sr" in capsys.readouterr().err
    assert (
        main(
            ["test", "--model", "bicubic", "--task", "sr", "--dataset", "Set5", "--data-root", str(data_root)]
        )
        == 2
    )
    assert "needs --scale" in capsys.readouterr().err


def test_mismatched_pair_and_broken_image_are_reported_and_the_rest_scored(capsys, tmp_path):
    root = tmp_path / "root"
    for sub in ("input", "target"):
        (root / "Pairs" / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in (("a", 16), ("b", 16), ("c", 16)):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "Pairs" / "target" / f"{name}.png"), img)
        cv2.imwrite(str(root / "Pairs" / "input" / f"{name}.png"), img if name != "b" else img[:8])
    (root / "Pairs" / "input" / "c.png").write_bytes(b"not an image")
    assert (
        main(
            [
                "test",
                "--model",
                "identity",
                "--task",
                "paired",
                "--dataset",
                "Pairs",
                "--data-root",
                str(root),
                "--json",
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert [r["name"] for r in result["per_image"]] == ["a"] and result["psnr"] is None  # inf: identical
    assert len(result["failed"]) == 2
    assert "b.png" in captured.err and "does not match" in captured.err and "c.png" in captured.err


def test_an_image_too_small_to_score_fails_alone(capsys, tmp_path):
    """SSIM needs 11 x 11 pixels and SR shaves a border: a smaller image in a set is reported by name,
    the others are scored (it used to stop the whole run with a traceback)."""
    rng = np.random.default_rng(0)
    (tmp_path / "Mixed").mkdir()
    for name, size in (("big", (24, 32)), ("tiny", (5, 7))):
        cv2.imwrite(str(tmp_path / "Mixed" / f"{name}.png"), rng.integers(0, 256, size, dtype=np.uint8))
    args = ["test", "--model", "identity", "--task", "denoise", "--sigma", "25", "--dataset", "Mixed"]
    assert main([*args, "--data-root", str(tmp_path), "--json"]) == 1
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert [r["name"] for r in result["per_image"]] == ["big"] and 5 < result["psnr"] < 30
    assert result["failed"] == [
        f"{tmp_path / 'Mixed' / 'tiny.png'}: SSIM needs at least 11 x 11 pixels after cropping, got (5, 7)"
    ]
    assert "Traceback" not in captured.err and "tiny.png" in captured.err
    assert main([*args, "--data-root", str(tmp_path)]) == 1  # the table says its mean is over 1 of 2
    assert f"| {result['psnr']:.2f}/{result['ssim']:.4f} [1 of 2 images] |" in capsys.readouterr().out
    cv2.imwrite(str(tmp_path / "Mixed" / "big.png"), rng.integers(0, 256, (5, 7), dtype=np.uint8))
    assert main([*args, "--data-root", str(tmp_path)]) == 1
    assert (
        "| identity | denoise gray | σ25 | none of 2 images scored |" in capsys.readouterr().out
    )  # "nan/nan"


def test_unpaired_folders_are_refused(tmp_path):
    for sub in ("input", "target"):
        (tmp_path / "P" / sub).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "P" / "input" / "x.png"), np.zeros((4, 4), np.uint8))
    cv2.imwrite(str(tmp_path / "P" / "target" / "y.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match="unmatched: x, y"):
        find_dataset("P", tmp_path)
    # two inputs of one stem: test scored one of them silently
    for name in ("y.png", "y.jpg"):
        cv2.imwrite(str(tmp_path / "P" / "input" / name), np.zeros((4, 4), np.uint8))
    (tmp_path / "P" / "input" / "x.png").unlink()
    with pytest.raises(DatasetError, match=r"y\.jpg, y\.png share a stem; which to use is ambiguous"):
        find_dataset("P", tmp_path)


def test_degrade_then_metrics_round_trip(capsys, data_root, tmp_path):
    out = tmp_path / "lr"
    assert main(["degrade", "--task", "sr", "--scale", "4", str(data_root / "Set5" / "HR"), str(out)]) == 0
    capsys.readouterr()
    # The written LR files are the MATLAB ones, so their metrics against the golden LR are perfect.
    golden = tmp_path / "golden"
    golden.mkdir()
    for f in (data_root / "Set5" / "LR_bicubic" / "X4").iterdir():
        (golden / f.name.replace("x4", "")).symlink_to(f)
    assert main(["metrics", str(out), str(golden), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["per_image"]) == 5 and report["ssim"] == 1.0
    assert report["psnr"] is None and {r["psnr"] for r in report["per_image"]} == {None}  # inf: not JSON
    # a gray folder is degraded as gray, as `test` degrades Set12 (it got color noise: metrics then
    # refused every pair); demosaicking it is refused, as `test` refuses it
    noisy = tmp_path / "noisy"
    assert main(["degrade", "--task", "denoise", "--sigma", "25", str(data_root / "Set12"), str(noisy)]) == 0
    capsys.readouterr()
    assert main(["metrics", str(noisy), str(data_root / "Set12"), "--json"]) == 0
    assert 20.0 < json.loads(capsys.readouterr().out)["psnr"] < 20.4  # σ 25 noise, one channel
    argv = ["degrade", "--task", "demosaic", str(data_root / "Set12"), str(tmp_path / "mosaic")]
    assert main(argv) == 2
    assert "Set12: its images are gray; demosaicking restores color images" in capsys.readouterr().err


def test_metrics_folders_name_ambiguous_stems_and_unmatched_predictions(capsys, tmp_path):
    """Two images of one stem collapsed into one row, predictions without ground truth and other files
    went unsaid, and a negative crop failed each image instead of the command."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    img = np.full((16, 16), 100, np.uint8)
    for folder, names in ((gt, ("a.png", "b.png", "c.png")), (pred, ("a.png", "b.png", "b.tif", "x.png"))):
        for name in names:
            cv2.imwrite(str(folder / name), img)
    (pred / "readme.txt").write_text("notes")
    assert main(["metrics", str(pred), str(gt), "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [r["name"] for r in report["per_image"]] == ["a"]
    assert report["failed"] == [
        f"{pred / 'b.png'}: b.png, b.tif share a stem in {pred}; which to score is ambiguous",
        f"{gt / 'c.png'}: no prediction named c.* in {pred}",  # not b: that failure names both
    ]
    assert f"note: {pred}: skipping 1 file that is not an image (.txt x1)" in captured.err
    assert f"note: {pred}: not scored, no ground truth of the same stem: x" in captured.err
    assert main(["metrics", str(pred), str(gt), "--crop", "-1"]) == 2
    assert "--crop -1: must be at least 0" in capsys.readouterr().err


def test_metrics_command_on_single_files_with_y_and_crop(capsys, tmp_path):
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-3, 4, gt.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "gt.png"), gt[..., ::-1])
    cv2.imwrite(str(tmp_path / "pred.png"), pred[..., ::-1])
    assert (
        main(["metrics", str(tmp_path / "pred.png"), str(tmp_path / "gt.png"), "--crop", "4", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    mse = np.mean((pred[4:-4, 4:-4].astype(float) - gt[4:-4, 4:-4]) ** 2)
    assert abs(report["psnr"] - 10 * np.log10(255**2 / mse)) < 1e-9
    assert main(["metrics", str(tmp_path / "missing.png"), str(tmp_path / "gt.png")]) == 2
    assert "missing.png: no such file or folder" in capsys.readouterr().err


def test_metrics_rescore_what_sr_tests_score_gray_and_odd_sized_images_included(capsys, tmp_path):
    """`test` reads a gray HR as three equal channels, mod-crops it to the scale and scores Y; `metrics`
    scored a gray output on its own values (1.3 dB off on Set14's bridge) and refused an odd-sized HR."""
    from irformers import metrics

    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, (33, 31), dtype=np.uint8)
    out = np.clip(hr[:32, :30].astype(int) + rng.integers(-9, 10, (32, 30)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "hr.png"), hr)
    cv2.imwrite(str(tmp_path / "gray.png"), out)  # as restore writes a gray input's output
    cv2.imwrite(str(tmp_path / "rgb.png"), np.repeat(out[..., None], 3, axis=2))  # as test --save-dir does
    three = np.repeat(hr[:32, :30, None], 3, axis=2)
    expected = metrics.psnr(np.repeat(out[..., None], 3, axis=2), three, crop=2, y=True)
    for pred in ("gray.png", "rgb.png"):
        argv = ["metrics", str(tmp_path / pred), str(tmp_path / "hr.png"), "--y", "--crop", "2"]
        assert main([*argv, "--modcrop", "2", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["psnr"] == pytest.approx(expected, abs=1e-12) and report["modcrop"] == 2
        assert main(argv) == 1  # without it the sizes differ, and it says so
        assert "differ from hr.png (33, 31, 3)" in capsys.readouterr().err
    assert main(["metrics", str(tmp_path / "gray.png"), str(tmp_path / "hr.png"), "--modcrop", "0"]) == 2
    assert main(["metrics", str(tmp_path / "gray.png"), str(tmp_path / "hr.png"), "--modcrop", "3"]) == 1
    assert "differ from hr.png (33, 30) after --modcrop 3" in capsys.readouterr().err
    assert main(["metrics", str(tmp_path / "gray.png"), str(tmp_path / "hr.png"), "--modcrop", "40"]) == 1
    assert f"failed: {tmp_path / 'hr.png'}: " in capsys.readouterr().err  # too small for it: the GT's fault
    # without --y, a gray file against a colour one of equal channels (a gray GT saved as a palette image
    # reads as gray; a colour model writes RGB) is scored as three equal channels, as before
    cv2.imwrite(str(tmp_path / "cut.png"), hr[:32, :30])
    assert main(["metrics", str(tmp_path / "rgb.png"), str(tmp_path / "cut.png"), "--json"]) == 0
    rescored = json.loads(capsys.readouterr().out)["psnr"]
    assert rescored == pytest.approx(metrics.psnr(out, hr[:32, :30]), abs=1e-12)


def test_metrics_reports_pairs_it_cannot_compare_by_file(capsys, tmp_path):
    gt = np.zeros((16, 16, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "gt.png"), gt)
    cv2.imwrite(str(tmp_path / "deep.png"), gt.astype(np.uint16))  # same size, 16-bit
    assert main(["metrics", str(tmp_path / "deep.png"), str(tmp_path / "gt.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert "deep.png" in err and "bit depths differ" in err and "\n" not in err
    cv2.imwrite(str(tmp_path / "same.png"), gt)
    assert main(["metrics", str(tmp_path / "same.png"), str(tmp_path / "gt.png"), "--crop", "8"]) == 1
    err = capsys.readouterr().err.strip()
    assert "same.png" in err and "cannot crop 8 pixels" in err and "\n" not in err


def test_degrade_keeps_going_past_a_16_bit_image(capsys, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.full((16, 16, 3), 128, np.uint8))
    cv2.imwrite(str(src / "b.png"), np.full((16, 16, 3), 40000, np.uint16))
    assert main(["degrade", "--task", "jpeg", "--quality", "10", "--gray", str(src), str(out)]) == 1
    captured = capsys.readouterr()
    assert "wrote 1 of 2" in captured.out and [p.name for p in out.iterdir()] == ["a.png"]
    assert "b.png: uint16 images are not supported (8-bit only)" in captured.err
    cv2.imwrite(str(src / "b.png"), np.full((16, 16, 4), 128, np.uint8))  # alpha: dropped, and said so
    assert main(["degrade", "--task", "jpeg", "--quality", "10", str(src), str(tmp_path / "rgba")]) == 0
    assert (
        capsys.readouterr().err
        == f"note: {src / 'b.png'}: its alpha channel is dropped (test scores the other channels)\n"
    )


def test_degrade_makes_the_gray_image_test_scores(capsys, tmp_path):
    """Gray denoising reads a color file with OpenCV's conversion, gray JPEG with BT.601 Y; degrade took
    Y for every task, so its noisy files were not the ones `test` scores (7 gray levels apart)."""
    from irformers.data.degrade import read_clean

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    for task, level in (("denoise", ["--sigma", "0"]), ("jpeg", ["--quality", "100"])):
        out = tmp_path / task
        assert main(["degrade", "--task", task, *level, "--gray", str(src), str(out)]) == 0
        clean = read_clean(src / "a.png", gray=True, task=task)[..., 0].astype(int)
        written = cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED).astype(int)
        assert np.abs(written - clean).max() <= (0 if task == "denoise" else 2), task
    assert not np.array_equal(
        read_clean(src / "a.png", True, "denoise"), read_clean(src / "a.png", True, "jpeg")
    )


def test_degrade_writes_the_ground_truth_test_scores_against(capsys, tmp_path):
    """Gray JPEG on a color set (LIVE1) scores against the set's rounded Y, which no file held: `metrics`
    could not reproduce `test` for a method run outside irformers."""
    src = tmp_path / "Color"
    src.mkdir()
    for i in range(2):
        colors = np.random.default_rng(i).integers(0, 256, (33, 30, 3), dtype=np.uint8)
        cv2.imwrite(str(src / f"{i}.png"), cv2.GaussianBlur(colors, (5, 5), 2))
    jpeg, gt = tmp_path / "jpeg", tmp_path / "gt"
    argv = ["degrade", "--task", "jpeg", "--quality", "10", "--gray", str(src), str(jpeg), "--gt", str(gt)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["metrics", str(jpeg), str(gt), "--json"]) == 0
    rescored = json.loads(capsys.readouterr().out)
    argv = ["test", "--model", "identity", "--task", "jpeg", "--quality", "10", "--gray", "--json"]
    assert main([*argv, "--dataset", str(src)]) == 0
    tested = json.loads(capsys.readouterr().out)
    for key in ("psnr", "ssim", "psnr_b"):
        assert rescored[key] == pytest.approx(tested[key], abs=1e-12), key
    sr = ["degrade", "--task", "sr", "--scale", "2", str(src), str(tmp_path / "lr"), "--gt"]
    for gt_arg, taken in (
        (str(src), "the input folder"),
        (str(tmp_path / "lr"), "OUTDIR"),
        ("", "no folder"),
    ):
        assert main([*sr, gt_arg]) == 2  # before any image runs
        assert f"--gt '{gt_arg}': {taken}; ground truth needs its own folder" in capsys.readouterr().err
    hr = tmp_path / "hr"
    assert main([*sr, str(hr)]) == 0
    assert f"wrote 2 of 2 images to {tmp_path / 'lr'} (ground truth to {hr})" in capsys.readouterr().out
    assert cv2.imread(str(hr / "0.png")).shape == (32, 30, 3)  # mod-cropped, as SR tests score


def test_degrade_names_what_is_wrong_with_its_input_folder(capsys, tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8), np.uint8))
    for src, problem in (
        (image, "not a folder (degrade reads a folder of images)"),
        (tmp_path / "x", "no such"),
    ):
        assert main(["degrade", "--task", "denoise", "--sigma", "25", str(src), str(tmp_path / "out")]) == 2
        assert f"{src}: {problem}" in capsys.readouterr().err


def test_degrade_never_writes_over_its_inputs(capsys, tmp_path):
    """Into its own folder (refused before any image) and a.jpg beside a.png (refused by name): the
    originals untouched."""
    cv2.imwrite(str(tmp_path / "a.png"), np.full((16, 16, 3), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((16, 16, 3), 128, np.uint8))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(["degrade", "--task", "denoise", "--sigma", "50", str(tmp_path), str(tmp_path)]) == 2
    assert (
        f"{tmp_path}: the input folder; the degraded images need their own folder" in capsys.readouterr().err
    )
    (tmp_path / "Set" / "HR").mkdir(parents=True)  # a benchmark set's layout: said where the images are
    assert main(["degrade", "--task", "sr", "--scale", "2", str(tmp_path / "Set"), str(tmp_path / "lr")]) == 2
    assert "no images in the input folder (an SR set: its images are in HR/)" in capsys.readouterr().err
    (tmp_path / "Set" / "HR").rmdir()
    (tmp_path / "Set").rmdir()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    out = tmp_path / "out"
    assert main(["degrade", "--task", "denoise", "--sigma", "50", str(tmp_path), str(out)]) == 1
    captured = capsys.readouterr()
    assert (
        "wrote 1 of 2" in captured.out
        and "a.png: output a.png would overwrite the output of a.jpg" in captured.err
    )


def test_a_set_whose_first_image_is_broken_is_reported_not_a_traceback(capsys, tmp_path):
    """(A gray model on color pairs, which failed each image by name, now reads them as gray: below.)"""
    (tmp_path / "Gray").mkdir()
    (tmp_path / "Gray" / "0.png").write_bytes(b"not an image")
    cv2.imwrite(str(tmp_path / "Gray" / "1.png"), np.zeros((16, 16), np.uint8))
    argv = ["test", "--model", "identity", "--task", "denoise", "--sigma", "25", "--dataset", "Gray"]
    assert main([*argv, "--data-root", str(tmp_path), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["gray"] and "0.png" in captured.err


def test_demosaicking_needs_a_demosaicking_model(capsys):
    assert (
        main(["test", "--model", "hiir-t-denoise-color", "--task", "demosaic", "--dataset", "Kodak24"]) == 2
    )
    assert "cannot be evaluated on --task demosaic" in capsys.readouterr().err


def test_a_16_bit_source_is_refused_by_name_not_misread(capsys, tmp_path):
    for sub in ("input", "target"):
        (tmp_path / "Pairs" / sub).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "Pairs" / "target" / "a.png"), np.full((16, 16, 3), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "Pairs" / "input" / "a.png"), np.full((16, 16, 3), 25700, np.uint16))
    argv = ["test", "--model", "identity", "--task", "paired", "--dataset", "Pairs"]
    assert main([*argv, "--data-root", str(tmp_path), "--json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input/a.png: uint16 images are not supported" in err[0]


def test_gray_pairs_from_color_files_are_read_as_training_reads_them(capsys, tmp_path):
    """--gray converts both images of a colour pair, as training does, and a mismatch names both shapes."""
    rng = np.random.default_rng(0)
    for sub in ("input", "target"):
        (tmp_path / "Pairs" / sub).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "Pairs" / sub / "a.png"), rng.integers(0, 256, (16, 16, 3), np.uint8))
    argv = ["test", "--model", "identity", "--task", "paired", "--dataset", "Pairs", "--gray", "--json"]
    assert main([*argv, "--data-root", str(tmp_path)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["gray"] and 0 < r["psnr"] < 20
    cv2.imwrite(str(tmp_path / "Pairs" / "input" / "a.png"), np.zeros((16, 12, 3), np.uint8))
    assert main([*argv, "--data-root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "input/a.png: 12x16, 1 channel(s) does not match its target 16x16, 1 channel(s)" in err


def test_a_gray_model_is_tested_on_color_pairs_as_it_validated_on_them(capsys, tmp_path):
    """Training a gray paired model validates on color pairs read as gray; `test` fed them as color,
    which the model refused image by image ('none of N images scored'), and refused --gray."""
    rng = np.random.default_rng(0)
    for sub in ("input", "target"):
        (tmp_path / "Pairs" / sub).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "Pairs" / sub / "a.png"), rng.integers(0, 256, (16, 16, 3), np.uint8))
    argv = ["test", "--model", "semanir-t-denoise-gray", "--task", "paired", "--dataset", "Pairs", "--json"]
    for gray in ([], ["--gray"]):
        assert main([*argv, *gray, "--data-root", str(tmp_path)]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["gray"] and r["images"] == 1 and r["psnr"] > 0


def test_out_of_range_levels_and_mismatched_sets_are_usage_errors(capsys, data_root, tmp_path):
    for argv, problem in [
        (["--task", "jpeg", "--quality", "200", "--dataset", "Classic5"], "JPEG qualities are 1-100"),
        (["--task", "denoise", "--sigma", "-5", "--dataset", "Set12"], "noise levels are 0-255"),
        (["--task", "demosaic", "--gray", "--dataset", "McMaster"], "demosaicking needs color images"),
        (["--task", "demosaic", "--dataset", "Set12"], "Set12: its images are gray; demosaicking restores"),
        (["--task", "sr", "--scale", "1", "--dataset", "Set5"], "needs --scale 2 or more"),
        (["--task", "paired", "--dataset", "Set5"], "--task paired needs NAME/input/ + NAME/target/"),
        (
            ["--task", "denoise", "--sigma", "25", "--dataset", "Rain100L_samples"],
            "evaluated with --task paired",
        ),
        # a level the task does not use was ignored, the table silently not what was asked
        (["--task", "denoise", "--sigma", "25", "--quality", "10"], "--quality 10: only --task jpeg uses it"),
        (["--task", "jpeg", "--quality", "10", "--scale", "2"], "--scale 2: only --task sr uses it"),
        (["--task", "sr", "--scale", "2", "--sigma", "5"], "--sigma 5: only --task denoise uses it"),
        (["--task", "denoise", "--sigma", "25", "--y"], "--y: only --task paired or sr uses it"),
        # a gray pair's Y would be 16 + 219/255 v, which metrics --y computes for SR's gray HR
        (
            ["--task", "paired", "--y", "--gray", "--dataset", "Rain100L_samples"],
            "--y: scores the Y channel of",
        ),
        # the pseudo-models scored OpenCV's gray, which no SR model could be tested on
        (["--task", "sr", "--scale", "2", "--gray"], "--gray: SR reads every image as RGB and scores its Y"),
    ]:
        model = "bicubic" if "sr" in argv else "identity"
        assert main(["test", "--model", model, *argv, "--data-root", str(data_root)]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert problem in err and "\n" not in err and "Traceback" not in err, (argv, err)
    # a color denoiser on Set12 scored 27.66 at σ 50, above the gray model's 26.92: three channels, own noise
    argv = [
        "test",
        "--model",
        "hiir-t-denoise-color",
        "--task",
        "denoise",
        "--sigma",
        "50",
        "--dataset",
        "Set12",
    ]
    assert main([*argv, "--data-root", str(data_root)]) == 2
    assert "Set12: its images are gray, and hiir-t-denoise-color is a color model" in capsys.readouterr().err

    # an unwritable --save-dir is refused before any image runs (each image was scored, then failed)
    (tmp_path / "file").write_bytes(b"")
    argv = ["test", "--model", "identity", "--task", "denoise", "--sigma", "5", "--dataset", "Set12"]
    assert main([*argv, "--data-root", str(data_root), "--save-dir", str(tmp_path / "file" / "out")]) == 2
    assert f"--save-dir cannot be created ({tmp_path / 'file'} is a file)" in capsys.readouterr().err
    assert (
        main(["degrade", "--task", "jpeg", "--quality", "500", str(data_root / "Set5" / "HR"), "/nowhere"])
        == 2
    )
    assert "JPEG qualities are 1-100" in capsys.readouterr().err
    assert (
        main(["degrade", "--task", "demosaic", "--scale", "2", str(data_root / "Set5" / "HR"), "/nowhere"])
        == 2
    )
    assert "--scale 2: only --task sr uses it, not --task demosaic" in capsys.readouterr().err
    assert (
        main(["degrade", "--task", "sr", "--scale", "2", "--gray", str(data_root / "Set5" / "HR"), "/x"]) == 2
    )
    assert "--gray: SR reads every image as RGB" in capsys.readouterr().err


def test_a_model_is_scored_on_its_own_task_unless_told(capsys, tmp_path):
    """--task was required even for a model that says its task; a pseudo-model still needs it."""
    rng = np.random.default_rng(0)
    for sub in ("input", "target"):
        (tmp_path / "Pairs" / sub).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "Pairs" / sub / "a.png"), rng.integers(0, 256, (32, 32, 3), np.uint8))
    (tmp_path / "Gray").mkdir()
    cv2.imwrite(str(tmp_path / "Gray" / "a.png"), rng.integers(0, 256, (32, 32), np.uint8))
    root = ["--data-root", str(tmp_path), "--json"]
    denoiser = ["test", "--model", "semanir-t-denoise-gray", "--dataset", "Gray"]
    assert main([*denoiser, "--sigma", "25", *root]) == 0
    captured = capsys.readouterr()
    assert (
        json.loads(captured.out)["task"] == "denoise" and "note: --task denoise (the model's" in captured.err
    )
    assert main([*denoiser, "--task", "jpeg", "--quality", "10", *root]) == 0  # told: the task asked
    assert json.loads(capsys.readouterr().out)["task"] == "jpeg"
    # a deblurring model's benchmarks are paired sets
    deblur = ["test", "--model", "hiir-unet-deblur", "--allow-random-init", "--dataset", "Pairs"]
    assert main([*deblur, *root]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == "paired"
    assert main(["test", "--model", "semanir-t-denoise-gray", "--quality", "10", *root]) == 2
    assert "--quality 10: only --task jpeg uses it, not --task denoise" in capsys.readouterr().err
    assert main(["test", "--model", "identity", "--dataset", "Gray", *root]) == 2
    assert "--task: identity is a pseudo-model; say which task" in capsys.readouterr().err
