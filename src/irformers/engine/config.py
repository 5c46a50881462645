"""Training configuration: dataclasses loaded from YAML, dotted command-line overrides, clear errors.

`load_config("cfg.yaml", ["train.lr=2e-4", "model.k=128"])` reads the file, applies the overrides
(values are parsed as YAML, so `[1, 2]`, `true` and `null` work), checks every key and type against
the dataclasses below, and checks the values that can be checked without touching data or models.
The `model` section is the exception: it is a preset name plus any keys of that model's config, and
is checked by building the model (`trainer.build_model_from_config`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

TASKS = ("sr", "denoise", "jpeg", "demosaic", "paired")
LOSSES = ("l1", "charbonnier", "mse")


class ConfigError(ValueError):
    """A configuration that cannot be trained; the message is one line naming the key."""


@dataclass
class RunConfig:
    name: str = "run"
    out_dir: str = "runs"  # the run folder is out_dir/name
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun auto/cuda: each rank's local GPU)
    threads: int = 0  # torch CPU threads per process; 0 keeps torch's default
    resume: str = "auto"  # auto: continue the run folder's state if any | never | a run folder or state file
    stop_at: int | None = None  # end this session after this step (a later run resumes), e.g. time slots


@dataclass
class SourceConfig:
    """One training set. `target` alone: clean/HR images, the input is synthesised per the task."""

    target: str  # a folder of images, or a set in the benchmark layouts (NAME/HR, NAME/input+target)
    input: str | None = None  # given degraded inputs, paired by file name (SR: `stem` or `stem` + `x{s}`)
    weight: float = 1.0  # share of the draws in a mix of sources
    degrade: dict = field(default_factory=dict)  # this source's task/sigma/quality... (all-in-one mixes)


@dataclass
class StageConfig:
    """One stage of a progressive patch-size schedule (from step `start` on)."""

    start: int
    patch_size: int
    batch_size: int


@dataclass
class DegradeConfig:
    """How training inputs are made from targets; one model trains on one of these (or a mix)."""

    task: str = "sr"  # sr | denoise | jpeg | demosaic | paired (deblurring, deraining, weather, ...)
    scale: int = 1  # SR factor
    sigma: float | None = None  # denoising: fixed noise level (0-255 scale) ...
    sigma_range: list[float] | None = None  # ... or blind: uniform in [low, high] per patch
    quality: int | None = None  # JPEG: fixed quality ...
    quality_range: list[int] | None = None  # ... or blind: uniform integer in [low, high] per patch
    gray: bool = False  # single-channel images (color files are converted as the test conventions say)


DEGRADE_KEYS = tuple(f.name for f in dataclasses.fields(DegradeConfig))


@dataclass
class DataConfig(DegradeConfig):
    root: str | None = None  # base of relative paths; default $IRFORMERS_DATA
    train: list[SourceConfig] = field(default_factory=list)
    patch_size: int = 64  # input (LR) patch side; the target patch is scale times larger
    batch_size: int = 16  # per process
    progressive: list[StageConfig] = field(default_factory=list)  # optional patch/batch schedule
    augment: bool = True  # random flips and 90-degree rotations
    pad_to_patch: bool = False  # mirror (edge repeated) images smaller than a patch, as Restormer (not SR)
    num_workers: int = 4
    cache: bool = False  # decode every image once, before training (memory: the decoded set, per rank)


@dataclass
class TrainConfig:
    steps: int = 500_000
    optimizer: str = "adam"  # adam | adamw
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0  # applied to weight matrices and conv kernels only
    schedule: str = "multistep"  # multistep | cosine | constant
    warmup_steps: int = 0  # linear warm-up from 0
    milestones: list[int] = field(default_factory=list)  # multistep: lr *= gamma at each
    gamma: float = 0.5
    min_lr: float = 1e-7  # cosine: the rate at train.steps (the last step, steps - 1, is just above it)
    cosine_start: int = 0  # cosine: the step it starts from, lr held until then (after any warm-up)
    loss: str = "l1"  # l1 | charbonnier | mse
    charbonnier_eps: float = 1e-3
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + gradient scaler)
    ema_decay: float = 0.999  # 0 = no EMA; weights files then hold the raw weights
    grad_checkpointing: bool = False  # recompute each stage in the backward pass (less memory)
    init: str | None = None  # start from these weights, or a shipped model's (x3/x4 from x2); misfits skipped


@dataclass
class ValConfig:
    sets: list[str] = field(default_factory=list)  # benchmark set names under `root`
    root: str | None = None  # default: data.root, then $IRFORMERS_DATA
    every: int = 5000  # steps; 0 = only at the end
    sigma: float | None = None  # level to validate a blind model at (default data.sigma)
    quality: int | None = None  # (default data.quality)
    k: int | None = None  # SemanIR: k for validation (default the model's k)


@dataclass
class LogConfig:
    every: int = 100  # steps between log lines
    progress: bool = True  # progress bar on rank 0 when stderr is a terminal (else plain lines)
    tensorboard: bool = False  # also write TensorBoard events (needs the tensorboard package)


@dataclass
class CheckpointConfig:
    every: int = 5000  # steps; the last checkpoint is also written when the run ends
    snapshots: bool = False  # also keep the weights of every checkpoint as snapshots/step_XXXXXXX.safetensors


@dataclass
class Config:
    model: dict = field(default_factory=dict)  # {"preset": NAME, <model config keys to override>}
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val: ValConfig = field(default_factory=ValConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name


# --------------------------------------------------------------------------- loading


class _RecipeLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (two `train:` sections: the last won)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:  # an unhashable key: the base class says so
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML recipe (or start from the defaults when `path` is None) and apply `key.sub=value`."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            raw = yaml.load(path.read_text(), Loader=_RecipeLoader) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, found {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw)


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` in a nested dict; list entries are addressed by index (`data.train.0.target=X`)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    node: dict | list = raw
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"override {item!r}: {'.'.join(parts[: i + 1])} is not an entry of the list"
                )
            node = node[int(part)]
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            continue
        if not isinstance(node.get(part, {}), (dict, list)):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = node.setdefault(part, [] if nxt.isdigit() else {})
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {item!r}: {key} is not an entry of the list")
        node[int(last)] = value
    else:
        node[last] = value


def config_from_dict(raw: dict) -> Config:
    cfg = _build(Config, raw, "")
    check(cfg)
    return cfg


def _build(cls: type, raw: object, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, found {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{_join(where, close[0])}'?" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"unknown key '{_join(where, key)}'{hint}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            values[f.name] = _convert(raw[f.name], hints[f.name], _join(where, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key '{_join(where, f.name)}'")
    return cls(**values)


def _convert(value: object, hint: object, where: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, where)
    if dataclasses.is_dataclass(hint):
        if hint is SourceConfig and isinstance(value, str):
            value = {"target": value}  # `train: [T91]`: a folder of clean images
        return _build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, found {_kind(value)}")
        return [_convert(v, args[0], f"{where}.{i}") for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {_kind(value)}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, found {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, found {_kind(value)}")
        return value
    if hint is float:
        # YAML 1.1 reads `2e-4` (no dot) as a string; accept what Python reads as a number.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, found {_kind(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, found {_kind(value)}")
        return value
    raise TypeError(f"config: unsupported annotation {hint!r} at {where}")  # a bug in this module


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _kind(value: object) -> str:
    return "nothing (null)" if value is None else f"{type(value).__name__} {value!r}"


# --------------------------------------------------------------------------- checks


def _one_of(value: str, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where}: '{value}' is not one of {', '.join(choices)}")


def _positive(value: float, where: str, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{where}: must be {'>= 0' if zero_ok else '> 0'}, got {value}")


# The level settings and the one task each applies to: set where no source has that task, they are a
# mistake (a leftover sigma in a JPEG recipe), not a setting.
USED_BY = {"sigma": "denoise", "sigma_range": "denoise", "quality": "jpeg", "quality_range": "jpeg"}
LEVEL_LIMITS = {"sigma": (0, 255), "quality": (1, 100)}


def check_degrade(d: DegradeConfig, where: str) -> None:
    """The settings each task needs, and nothing contradictory."""
    _one_of(d.task, TASKS, f"{where}.task")
    if d.task == "sr" and d.scale < 2:
        raise ConfigError(f"{where}.scale: SR needs a scale of 2 or more, got {d.scale}")
    if d.task != "sr" and d.scale != 1:
        raise ConfigError(f"{where}.scale: only SR uses a scale, got {d.scale} for task '{d.task}'")
    for name, rng in (("sigma", "sigma_range"), ("quality", "quality_range")):
        (lo, hi), fixed, span = LEVEL_LIMITS[name], getattr(d, name), getattr(d, rng)
        needed = USED_BY[name] == d.task
        if needed and (fixed is None) == (span is None):
            raise ConfigError(f"{where}: task '{d.task}' needs exactly one of {name} and {rng}")
        if span is not None and (len(span) != 2 or not lo <= span[0] <= span[1] <= hi):
            raise ConfigError(f"{where}.{rng}: expected [low, high] within [{lo}, {hi}], got {span}")
        if fixed is not None and not lo <= fixed <= hi:
            raise ConfigError(f"{where}.{name}: must be within [{lo}, {hi}], got {fixed}")
    if d.task == "demosaic" and d.gray:
        raise ConfigError(f"{where}.gray: demosaicking restores color images")


def _check_used(settings: dict, tasks: list[str], where: str) -> None:
    trained = ", ".join(sorted(set(tasks)))
    for key, task in USED_BY.items():
        if settings.get(key) is not None and task not in tasks:
            raise ConfigError(f"{where}.{key}: only task '{task}' uses it; {where} is for {trained}")


def source_degrade(data: DataConfig, source: SourceConfig, where: str) -> DegradeConfig:
    """The data section's degradation with this source's `degrade` entries applied."""
    unknown = sorted(set(source.degrade) - set(DEGRADE_KEYS))
    if unknown:
        raise ConfigError(f"{where}.degrade: unknown keys {unknown} (known: {', '.join(DEGRADE_KEYS)})")
    base = {k: getattr(data, k) for k in DEGRADE_KEYS}
    merged = _build(DegradeConfig, {**base, **source.degrade}, f"{where}.degrade")
    check_degrade(merged, f"{where}.degrade" if source.degrade else "data")
    return merged


def stages(data: DataConfig) -> list[StageConfig]:
    """The patch/batch schedule, always starting at step 0."""
    plan = list(data.progressive)
    if not plan or plan[0].start > 0:
        plan.insert(0, StageConfig(0, data.patch_size, data.batch_size))
    return plan


def _check_data(cfg: Config) -> None:
    d = cfg.data
    check_degrade(d, "data")
    if not d.train:
        raise ConfigError("data.train: no training sets (a list of folders, or {target:, input:} entries)")
    tasks = []
    for i, source in enumerate(d.train):
        _positive(source.weight, f"data.train.{i}.weight")
        tasks.append(source_degrade(d, source, f"data.train.{i}").task)
        _check_used(source.degrade, [tasks[-1]], f"data.train.{i}.degrade")
    _check_used({k: getattr(d, k) for k in USED_BY}, [*tasks, d.task], "data")  # validation uses data's
    _check_used({"sigma": cfg.val.sigma, "quality": cfg.val.quality}, [d.task], "val")
    for name, level in (("sigma", cfg.val.sigma), ("quality", cfg.val.quality)):
        lo, hi = LEVEL_LIMITS[name]
        if level is not None and not lo <= level <= hi:
            raise ConfigError(f"val.{name}: must be within [{lo}, {hi}], got {level}")
    implicit = not d.progressive or d.progressive[0].start > 0  # stages() put data's own first
    for i, stage in enumerate(stages(d)):
        where = "data" if implicit and i == 0 else f"data.progressive.{i - implicit}"
        _positive(stage.patch_size, f"{where}.patch_size")
        _positive(stage.batch_size, f"{where}.batch_size")
    starts = [s.start for s in d.progressive]
    if starts != sorted(set(starts)) or any(s < 0 for s in starts):
        raise ConfigError(f"data.progressive: stage starts must be increasing steps >= 0, got {starts}")
    if d.pad_to_patch and "sr" in tasks:  # an SR pair is cut at the scale from an HR mod-cropped to it
        raise ConfigError("data.pad_to_patch: pads the images of same-size tasks only, not SR")
    _positive(d.num_workers, "data.num_workers", zero_ok=True)


def _check_train(t: TrainConfig) -> None:
    _positive(t.steps, "train.steps")
    _one_of(t.optimizer, ("adam", "adamw"), "train.optimizer")
    _one_of(t.schedule, ("multistep", "cosine", "constant"), "train.schedule")
    _one_of(t.loss, LOSSES, "train.loss")
    _one_of(t.precision, ("fp32", "bf16", "fp16"), "train.precision")
    _positive(t.lr, "train.lr")
    _positive(t.warmup_steps, "train.warmup_steps", zero_ok=True)
    _positive(t.cosine_start, "train.cosine_start", zero_ok=True)
    if t.cosine_start and t.schedule != "cosine":
        raise ConfigError(f"train.cosine_start: only the cosine schedule uses it, not {t.schedule}")
    if t.cosine_start >= t.steps:
        raise ConfigError(f"train.cosine_start ({t.cosine_start}) must be below train.steps ({t.steps})")
    if t.warmup_steps >= t.steps:
        raise ConfigError(f"train.warmup_steps ({t.warmup_steps}) must be below train.steps ({t.steps})")
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        raise ConfigError(f"train.betas: expected [beta1, beta2] in [0, 1), got {t.betas}")
    if t.milestones and t.schedule != "multistep":
        raise ConfigError(f"train.milestones: only the multistep schedule uses them, not {t.schedule}")
    if t.milestones != sorted(t.milestones) or any(not 0 < m < t.steps for m in t.milestones):
        raise ConfigError(
            f"train.milestones: expected increasing steps within (0, {t.steps}), got {t.milestones}"
        )
    if t.schedule == "multistep" and not 0 < t.gamma <= 1:
        raise ConfigError(f"train.gamma: must be in (0, 1], got {t.gamma}")
    if t.schedule == "cosine" and not 0 <= t.min_lr <= t.lr:
        raise ConfigError(f"train.min_lr: must be in [0, train.lr], got {t.min_lr}")
    if not 0 <= t.ema_decay < 1:
        raise ConfigError(f"train.ema_decay: must be in [0, 1), got {t.ema_decay}")
    _positive(t.weight_decay, "train.weight_decay", zero_ok=True)
    _positive(t.grad_clip, "train.grad_clip", zero_ok=True)
    _positive(t.charbonnier_eps, "train.charbonnier_eps")


def check(cfg: Config) -> None:
    """Every check that needs neither the data nor the model."""
    _check_data(cfg)
    _check_train(cfg.train)
    d = cfg.data
    _positive(cfg.val.every, "val.every", zero_ok=True)
    if cfg.val.k is not None:
        _positive(cfg.val.k, "val.k")
    _positive(cfg.log.every, "log.every")
    _positive(cfg.checkpoint.every, "checkpoint.every")
    if cfg.run.stop_at is not None and not cfg.run.stop_at > 0:
        raise ConfigError(f"run.stop_at: must be a step > 0, got {cfg.run.stop_at}")
    if d.task in ("denoise", "jpeg") and cfg.val.sets:
        level = {
            "denoise": ("sigma", cfg.val.sigma, d.sigma),
            "jpeg": ("quality", cfg.val.quality, d.quality),
        }
        name, val_level, fixed = level[d.task]
        if val_level is None and fixed is None:
            raise ConfigError(f"val.{name}: a blind model needs the level to validate at")
    if not cfg.model.get("preset") and not cfg.model.get("arch"):
        raise ConfigError(
            "model: give model.preset (see `irformers models`) or a full config with model.arch"
        )
    if cfg.run.name in ("", ".", "..") or "/" in cfg.run.name:  # ".." made out_dir's parent the run folder
        raise ConfigError(f"run.name: must be a folder name, got {cfg.run.name!r}")
    _positive(cfg.run.seed, "run.seed", zero_ok=True)
    _positive(cfg.run.threads, "run.threads", zero_ok=True)


# Where and how a session runs, not what it trains: these may differ between the sessions of one run.
SESSION_KEYS = {"run.name", "run.out_dir", "run.resume", "run.stop_at", "run.device", "run.threads"}
SESSION_KEYS |= {"data.root", "val.root", "data.num_workers", "data.cache"}


def recipe_changes(saved: Path, cfg: Config) -> list[str]:
    """`key: old -> new` for each recipe setting of `cfg` that differs from the config saved at `saved`
    (a run resumed with another recipe); none when `saved` cannot be read."""

    def flat(tree: object, key: str = "") -> dict:
        if not isinstance(tree, dict):
            return {key: tree}
        pairs = (flat(sub, f"{key}.{name}" if key else name) for name, sub in tree.items())
        return {k: v for pair in pairs for k, v in pair.items()}

    try:
        raw = yaml.safe_load(saved.read_text())
    except (OSError, yaml.YAMLError):
        return []
    try:  # a key the saved file predates had its default then: the same setting, not a change
        old = flat(_build(Config, raw, "").to_dict())
    except ConfigError:  # one this version no longer knows: compare what the file says
        old = flat(raw)
    new = flat(cfg.to_dict())
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted((old.keys() | new.keys()) - SESSION_KEYS)
        if old.get(key) != new.get(key)
    ]


def save_config(cfg: Config, path: Path) -> None:
    """The resolved config, next to the run, so the run can be repeated exactly."""
    from irformers.data.io import write_text

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    write_text(path, text)
