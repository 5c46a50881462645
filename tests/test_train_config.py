"""Training config (YAML + dotted overrides, checks), learning-rate schedules and losses."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from irformers.engine.config import ConfigError, TrainConfig, load_config, save_config
from irformers.engine.losses import charbonnier, pixel_loss
from irformers.engine.schedule import lr_at
from irformers.engine.trainer import build_model_from_config, check_model_fits
from irformers.models import build_model

REPO = Path(__file__).resolve().parents[1]

RECIPE = """
model: {preset: semanir-t-sr-x2}
data:
  task: sr
  scale: 2
  train: [T91, {target: DIV2K/HR, input: DIV2K/LR_bicubic/X2, weight: 2}]
train:
  lr: 2e-4          # YAML 1.1 reads this as a string; the config reads it as a number
  milestones: [100, 200]
  steps: 300
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return path


def test_yaml_overrides_and_types(recipe):
    cfg = load_config(recipe, ["train.lr=1e-3", "model.k=128", "data.train.1.weight=0.5", "run.name=x"])
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.model == {"preset": "semanir-t-sr-x2", "k": 128}
    assert [s.target for s in cfg.data.train] == ["T91", "DIV2K/HR"]
    assert cfg.data.train[1].weight == 0.5 and cfg.data.train[0].input is None
    assert cfg.train.betas == [0.9, 0.99]  # a default
    assert str(cfg.run_dir) == "runs/x"
    assert load_config(recipe).train.lr == 2e-4


def test_saved_config_reloads_to_the_same_values(recipe, tmp_path):
    cfg = load_config(recipe, ["train.grad_clip=0.5"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["grad_clip"] == 0.5


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown key 'train.lrr'; did you mean 'train.lr'?"),
        ("trian.lr=1", "unknown key 'trian'; did you mean 'train'?"),
        ("train.steps=many", "train.steps: expected an integer, found str 'many'"),
        ("train.steps=1.5", "train.steps: expected an integer"),
        ("data.augment=2", "data.augment: expected true or false"),
        ("train.betas=0.9", "train.betas: expected a list"),
        ("train.optimizer=sgd", "train.optimizer: 'sgd' is not one of adam, adamw"),
        ("train.warmup_steps=300", "train.warmup_steps (300) must be below train.steps (300)"),
        ("train.milestones=[200, 100]", "train.milestones: expected increasing steps"),
        ("data.scale=1", "data.scale: SR needs a scale of 2 or more"),
        ("data.task=denoise", "data.scale: only SR uses a scale, got 2 for task 'denoise'"),
        ("data.task=jpeg;data.scale=1", "task 'jpeg' needs exactly one of quality and quality_range"),
        ("data.train=[]", "data.train: no training sets"),
        ("data.train.1.degrade={tsk: jpeg}", "data.train.1.degrade: unknown keys ['tsk']"),
        ("data.train.0.input=x", "data.train.0 is not a section"),
        ("train.steps", "expected key.sub=value"),
        ("model={}", "model: give model.preset"),
        ("val.k=0", "val.k: must be > 0, got 0"),
        ("train.schedule=cosine;train.cosine_start=300", "train.cosine_start (300) must be below"),
        ("train.cosine_start=5", "train.cosine_start: only the cosine schedule uses it, not multistep"),
        ("data.pad_to_patch=true", "data.pad_to_patch: pads the images of same-size tasks only, not SR"),
        ("data.patch_size=0", "data.patch_size: must be > 0, got 0"),  # not the implicit progressive.0
        # these passed --check, then failed at their first use or trained wrongly
        ("data.task=denoise;data.scale=1;data.sigma=5;val.sigma=300", "val.sigma: must be within [0, 255]"),
        ("data.task=jpeg;data.scale=1;data.quality=9;val.quality=0", "val.quality: must be within [1, 100]"),
        ("run.seed=-1", "run.seed: must be >= 0, got -1"),
        ("run.threads=-2", "run.threads: must be >= 0, got -2"),
        ("train.weight_decay=-1", "train.weight_decay: must be >= 0"),
        ("run.name=..", "run.name: must be a folder name, got '..'"),
        ("train.schedule=cosine;train.milestones=[100]", "train.milestones: only the multistep schedule"),
        ("data.sigma=25", "data.sigma: only task 'denoise' uses it; data is for sr"),
        ("val.quality=10", "val.quality: only task 'jpeg' uses it; val is for sr"),  # validates data.task
        (
            "data.task=denoise;data.scale=1;data.sigma=5;"
            "data.train.1.degrade={task: jpeg, quality: 9, sigma: 5}",
            "data.train.1.degrade.sigma: only task 'denoise' uses it; data.train.1.degrade is for jpeg",
        ),
        (
            "data.progressive=[{start: 0, patch_size: 8, batch_size: 0}]",
            "data.progressive.0.batch_size: must",
        ),
    ],
)
def test_bad_configs_are_one_line_errors_naming_the_key(recipe, override, message):
    with pytest.raises(ConfigError) as info:
        load_config(recipe, override.split(";"))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_denoise_blind_needs_a_validation_level(recipe):
    base = ["data.task=denoise", "data.scale=1", "data.sigma_range=[0, 50]", "val.sets=[Set12]"]
    with pytest.raises(ConfigError, match=r"val\.sigma: a blind model needs the level"):
        load_config(recipe, base)
    assert load_config(recipe, [*base, "val.sigma=25"]).val.sigma == 25


def test_learning_rate_schedules_by_hand():
    cfg = TrainConfig(steps=110, lr=1.0, warmup_steps=10, schedule="cosine", min_lr=0.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_at(35, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110, cfg) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(steps=100, lr=2.0, schedule="multistep", milestones=[50, 80], gamma=0.5)
    assert [lr_at(s, step) for s in (0, 49, 50, 79, 80, 99)] == [2.0, 2.0, 1.0, 1.0, 0.5, 0.5]
    assert lr_at(5, TrainConfig(schedule="constant", lr=3.0)) == 3.0
    held = TrainConfig(schedule="cosine", lr=1.0, min_lr=0.0, steps=100, cosine_start=60)  # Restormer's
    assert [lr_at(s, held) for s in (0, 59, 60)] == [1.0, 1.0, 1.0]
    assert lr_at(80, held) == pytest.approx(0.5) and lr_at(100, held) == pytest.approx(0.0, abs=1e-12)


def test_losses_by_hand():
    pred, target = torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0.0, 0.0, 1.0])
    assert pixel_loss(pred, target, TrainConfig(loss="l1")).item() == pytest.approx(1.0)
    assert pixel_loss(pred, target, TrainConfig(loss="mse")).item() == pytest.approx(5 / 3)
    expected = (0.1 + math.sqrt(1 + 0.01) + math.sqrt(4 + 0.01)) / 3
    assert charbonnier(pred, target, eps=0.1).item() == pytest.approx(expected)
    cfg = TrainConfig(loss="charbonnier", charbonnier_eps=0.1)
    assert pixel_loss(pred.bfloat16(), target, cfg).dtype == torch.float32


@pytest.mark.parametrize("recipe", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_recipes_load_and_their_models_fit_their_data(recipe):
    cfg = load_config(recipe)
    with torch.device("meta"):  # the papers' models, without the memory or the initialisation time
        model = build_model_from_config(cfg.model)
    check_model_fits(model, cfg)


@pytest.mark.parametrize(
    "preset, key, value, message",
    [
        ("semanir-t-sr-x2", "k", 0, "k must be a whole number >= 1, got 0"),
        ("semanir-t-sr-x2", "window_size", -1, "window_size must be a whole number >= 1"),
        ("semanir-t-sr-x2", "num_heads", 0, "num_heads must be a whole number >= 1"),
        ("semanir-t-sr-x2", "depths", [], "depths is empty"),
        ("semanir-t-sr-x2", "depths", [2, 0], "depths must be whole numbers >= 1, got [2, 0]"),
        ("semanir-t-sr-x2", "drop_path", 2.0, "drop_path must be in [0, 1), got 2.0"),
        ("semanir-t-sr-x2", "mlp_ratio", -1.0, "mlp_ratio must be > 0"),
        ("hiir-t-denoise-color", "region_size", [32, 16, 0, 4], "region_size must be whole numbers >= 1"),
        ("hiir-t-sr-x2", "dim", 0, "dim must be a whole number >= 1, got 0"),
        ("hiir-t-denoise-color", "window_size", [16, None, 8, 4], "window_size must be whole numbers >= 1"),
        # a free-text task named output files ('img_de blur.png') and set test's default task ('sr' at x1)
        ("semanir-t-denoise-gray", "task", "de blur", "task must be a short name (a-z, 0-9, '-', '_')"),
        ("semanir-t-denoise-gray", "task", "sr", "task 'sr' with scale 1: sr is the task of scale 2-4"),
        ("semanir-t-denoise-color", "task", "demosaic", "demosaic is the task of bayer_input models"),
    ],
)
def test_model_values_out_of_range_are_one_line_errors_before_training(preset, key, value, message):
    """They used to pass --check and fail deep in a layer, or (k = 0) only at the validation after training,
    losing the run."""
    with pytest.raises(ConfigError) as info:
        build_model_from_config({"preset": preset, key: value})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_built_from_python_the_same_ranges_hold():
    """Recipes check types first; `build_model` from Python has only the range checks."""
    with pytest.raises(ValueError, match=r"mlp_ratio must be > 0, got True"):
        build_model("hiir-t-sr-x2", mlp_ratio=True)
    with pytest.raises(ValueError, match=r"k must be a whole number >= 1, got 64.0"):
        build_model("semanir-t-sr-x2", k=64.0)


def test_a_level_the_validation_uses_is_not_unused(recipe):
    """data.sigma of a denoising recipe whose sources all train JPEG: validation degrades at it."""
    over = [
        "data.task=denoise",
        "data.scale=1",
        "data.sigma=25",
        "data.train=[{target: T91, degrade: {task: jpeg, quality: 10}}]",
    ]
    assert load_config(recipe, over).data.sigma == 25


def test_a_key_given_twice_is_refused(tmp_path):
    """Two `lr:` lines (or two `train:` sections) passed --check; the last one won without a word."""
    (tmp_path / "twice.yaml").write_text("train:\n  lr: 1.0e-4\n  steps: 10\n  lr: 2.0e-4\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: not valid YAML \(line 4\): duplicate key 'lr'"):
        load_config(tmp_path / "twice.yaml")
