"""The models shipped in the package: resolvable by name, self-describing, small, and they restore."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from irformers.cli import main
from irformers.data.io import read_array
from irformers.demo import DEMOS
from irformers.engine.checkpoint import read_metadata, training_stages
from irformers.inference import load_model
from irformers.models import build_model
from irformers.models.presets import WEIGHTS_DIR, bundled_weights

SHIPPED = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def test_the_zoo_ships_every_task_and_stays_small():
    tasks = {(load_model(name).descriptor.task, load_model(name).descriptor.scale) for name in SHIPPED}
    assert {("sr", 2), ("sr", 4), ("denoise", 1), ("jpeg", 1)} <= tasks
    assert {name.split("-")[0] for name in SHIPPED} == {"semanir", "hiir"}
    # fp32 weights of seven models under 2 M parameters each (the README states the total)
    assert sum((WEIGHTS_DIR / f"{n}.safetensors").stat().st_size for n in SHIPPED) < 24 * 2**20


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_describe_their_training(name):
    meta = read_metadata(bundled_weights(name))
    assert meta["preset"] == name and meta["weights"] == "ema"
    assert sum(p.numel() for p in load_model(name).parameters()) < 2_000_000
    stages = training_stages(meta["training"])  # weights trained from earlier weights: every stage
    assert stages
    for stage in stages:
        assert stage["steps"] == stage["total_steps"] > 0 and stage["seconds"] > 0
        assert {d["target"] for d in stage["data"]} <= {"T91", "Train400"}  # never a test set


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_restore_the_same_on_the_gpu(name, monkeypatch):
    """The GPU runs other paths (whole maps, no CPU tiles; SemanIR's dense kernels): same image in fp32."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # convolutions in true fp32
    model = load_model(name)
    channels = model.descriptor.in_channels
    x = torch.rand(1, channels, 160, 136, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = model(x)
        gpu = model.to("cuda")(x.to("cuda")).cpu()
    # SemanIR's top-k may swap a near-tied key between devices: a few pixels move, the image does not
    assert (gpu - cpu).abs().max() < 1e-2
    assert (gpu - cpu).square().mean().sqrt() < 1e-4


def test_info_by_preset_name_shows_the_shipped_training(capsys):
    name = SHIPPED[0]
    assert main(["info", name, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["file"] == str(bundled_weights(name)) and info["training"]["steps"] > 0
    assert main(["info", "semanir-s-sr-x2"]) == 2  # a paper preset: no weights ship
    assert "no trained weights ship" in capsys.readouterr().err


@pytest.mark.parametrize("name", SHIPPED)
def test_info_lists_the_training_stages_oldest_first(name, capsys):
    chain, summary = [], read_metadata(bundled_weights(name))["training"]
    while summary:  # each stage's summary nests the one it started from
        chain.append(summary)
        summary = summary.get("init", {}).get("training")
    assert main(["info", name]) == 0
    out = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(out) if line.startswith("training "))
    assert f" {len(chain)} stage(s), {sum(s['steps'] for s in chain)} steps" in out[head]
    lines = out[head + 1 : head + 1 + len(chain)]
    for number, (line, stage) in enumerate(zip(lines, reversed(chain), strict=True), 1):
        assert line.startswith(f"  {number}. {stage['steps']} steps, "), line
        if "recipe" in stage:  # weights trained since the summary records how
            assert f"{stage['recipe']['loss']} loss, lr {stage['recipe']['lr']}" in line, line
            span = stage["recipe"]["degrade"].get("sigma_range") or stage["recipe"]["degrade"].get(
                "quality_range"
            )
            if span:  # the level, as the recipe drew it
                assert f" {span[0]:g}-{span[1]:g} on " in line, line


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_are_the_network_their_preset_builds(name):
    # whoever trains the preset with its recipe gets the network that shipped
    with torch.device("meta"):
        preset = build_model(name).config
    assert load_model(name).config == preset


@pytest.mark.parametrize("demo", [d[0] for d in DEMOS])
def test_demo_restores_the_bundled_sample(demo, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--only", demo, "--device", "cpu"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(demo))
    before, after = (float(v) for v in line.split()[2:4])
    assert after > before + 0.3  # a real restoration, not a copy of the input (JPEG gains least)
    side = read_array(tmp_path / f"{demo}-side-by-side.png", "unchanged")
    out = read_array(tmp_path / f"{demo}-output.png", "unchanged")
    assert side.shape[1] == 3 * out.shape[1] + 8 and side.shape[0] == out.shape[0] == 256
    assert np.isfinite(out).all()


def test_demo_into_a_file_is_one_usage_error(tmp_path, capsys):
    (tmp_path / "file").write_bytes(b"")
    assert main(["demo", "--out", str(tmp_path / "file"), "--only", DEMOS[0][0]]) == 2
    assert "--out must be a folder" in capsys.readouterr().err
