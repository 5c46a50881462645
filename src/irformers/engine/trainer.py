"""The training loop: one code path for a single process and for torchrun's data-parallel ranks.

`Trainer(cfg)` checks everything that depends on the user's input (model config, data folders and
files, validation sets, optional packages) before any process group exists or any step runs, so a
bad config fails at once with one line. `Trainer.fit()` trains, validates the EMA weights, logs and
checkpoints. A run folder (`run.out_dir/run.name`) holds:

- `config.yaml`: the resolved config; `log.jsonl`: one JSON object per log line (plus `tensorboard/`);
- `model.safetensors`: the weights users evaluate (EMA weights when EMA is on), self-describing, with
  a training summary in the metadata; `snapshots/` when asked;
- `train_state.pt`: everything a resume needs (raw and EMA weights, optimizer, gradient scaler, step,
  RNG states of every rank); tensors and plain containers, read back with `weights_only=True`.

Both files are replaced atomically, so a killed run always leaves the last complete checkpoint.
A resumed run follows the uninterrupted one's data, augmentations and SemanIR's random k, which are
functions of the seed and the draw (SemanIR's k: of the step), and the RNG states are restored for
everything else: on the CPU with one or two processes it is bit-identical (README, Resume, says where it
is not).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import errno
import functools
import hashlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import numpy as np
import torch
from torch import nn

from irformers.data.datasets import DATA_ENV, DatasetError, files_are_gray, find_dataset
from irformers.data.io import TEMP_GLOB, atomic_write, folder_problem
from irformers.data.pipelines import PatchDataset, draws_before, find_items, make_loader
from irformers.engine import distributed
from irformers.engine.checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    load_training_state,
    read_metadata,
    read_state_dict,
    save_training_state,
    save_weights,
    strip_prefixes,
)
from irformers.engine.config import (
    DEGRADE_KEYS,
    Config,
    ConfigError,
    TrainConfig,
    recipe_changes,
    save_config,
    source_degrade,
    stages,
)
from irformers.engine.losses import pixel_loss
from irformers.engine.schedule import lr_at
from irformers.evaluate import Degradation, evaluate, scores_text
from irformers.inference import Restorer

STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"
CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"  # held by the training running in the folder (pid inside)
STATE_VERSION = 1
_K_STREAM = 2  # generator stream of SemanIR's random k (0, 1: the data pipeline's streams)


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on (divergence, ranks out of sync)."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM ended a session at a step boundary, after a checkpoint: a rerun resumes there."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.signum, self.step = signum, step


class StopRequest:
    """SIGINT and SIGTERM while training (Ctrl-C, a scheduler's preemption) are noted, so the step in hand
    ends and a checkpoint is written before the session stops; a second SIGINT interrupts at once. A
    signal the process was started ignoring (SIGINT for `cmd &` in a script) stays ignored."""

    def __init__(self, say: bool = True) -> None:
        self.signum: int | None = None
        self.say = say  # rank 0 says what happens; the others keep quiet
        # under torchrun the processes have sessions of their own: a terminal's second Ctrl-C reaches
        # torchrun only, which passes a SIGTERM on
        self.again = " (Ctrl-C again: at once)" if "TORCHELASTIC_RUN_ID" not in os.environ else ""
        self.previous: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # where Python allows handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self.previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if self.say:  # os.write: a print could land inside another print to stderr
            name = signal.Signals(signum).name
            with contextlib.suppress(OSError):  # stderr's reader gone (`| tee` killed too): train on
                os.write(2, f"\n{name}: stopping after this step, with a checkpoint{self.again}\n".encode())

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- model


def _same_kind(value: object, default: object) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _with_trained_task(cfg: Config) -> dict:
    """The model section, its `task` set to the one every training source teaches (a denoising preset
    trained for JPEG is a JPEG model: `info` says so, `restore` names its outputs so); paired data, a
    mix of tasks, or a task set in the recipe leave it as it is."""
    tasks = _source_tasks(cfg)
    if len(tasks) != 1 or tasks == {"paired"} or "task" in cfg.model:
        return cfg.model
    return {**cfg.model, "task": tasks.pop()}


def _stamp(path: Path) -> tuple[int, int, int]:
    """Whether a file was rewritten: an atomic replace gives it another inode, a write another time."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _source_tasks(cfg: Config) -> set[str]:
    return {source_degrade(cfg.data, s, f"data.train.{i}").task for i, s in enumerate(cfg.data.train)}


def build_model_from_config(spec: dict) -> nn.Module:
    """The `model` section: `preset` plus overrides of that preset's config, or a full config (`arch`)."""
    from irformers.models import build_model, get_preset

    spec = dict(spec)
    preset = spec.pop("preset", None)
    try:
        if preset is None:
            return build_model(spec)
        get_preset(preset)
        with torch.device("meta"):
            defaults = build_model(preset).config
        for key, value in spec.items():
            if key not in defaults:
                close = difflib.get_close_matches(key, list(defaults), n=1)
                hint = f"; did you mean 'model.{close[0]}'?" if close else ""
                raise ConfigError(f"unknown key 'model.{key}' for preset {preset}{hint}")
            if defaults[key] is not None and not _same_kind(value, defaults[key]):
                raise ConfigError(
                    f"model.{key}: expected a {type(defaults[key]).__name__} like {defaults[key]!r}, "
                    f"got {value!r}"
                )
        return build_model(preset, **spec)
    except ConfigError:
        raise
    except (KeyError, ValueError, TypeError) as err:
        raise ConfigError(f"model: {err.args[0] if err.args else err}") from None


def check_model_fits(model: nn.Module, cfg: Config) -> None:
    """Channels and scale of the model against what the data pipeline will feed it."""
    d = model.descriptor
    for i, source in enumerate(cfg.data.train):
        deg = source_degrade(cfg.data, source, f"data.train.{i}")
        channels = (1 if deg.gray or deg.task == "demosaic" else 3, 1 if deg.gray else 3)
        if (d.in_channels, d.out_channels) != channels:
            if deg.task == "demosaic":
                fix = "choose a demosaicking preset: 1 channel in, 3 out"
            else:
                fix = (
                    "choose a gray preset, or data.gray: false"
                    if deg.gray
                    else "data.gray: true, or a color preset"
                )
            raise ConfigError(
                f"model: takes {d.in_channels} and gives {d.out_channels} channels, but task '{deg.task}'"
                f"{' gray' if deg.gray else ''} data gives {channels[0]} and expects {channels[1]} ({fix})"
            )
        scale = deg.scale if deg.task == "sr" else 1
        if d.scale != scale:
            raise ConfigError(f"model: upscales x{d.scale} but the data asks for x{scale} (data.scale)")
    if cfg.train.precision != "fp32":
        dtype = {"bf16": "bfloat16", "fp16": "float16"}[cfg.train.precision]
        if dtype not in d.dtypes:
            raise ConfigError(
                f"train.precision: this model does not support {dtype} (only {', '.join(d.dtypes)})"
            )


def init_weights_path(spec: str) -> Path:
    """`train.init`: a weights file, or the name of a shipped model (fine-tuning it on one's own data)."""
    from irformers.models.presets import PRESETS, bundled_weights

    if not Path(spec).is_file() and spec in PRESETS and bundled_weights(spec) is not None:
        return bundled_weights(spec)
    if Path(spec).is_dir():  # a run folder: its weights file, as restore and test point out
        hint = f" (its weights: {Path(spec) / WEIGHTS_FILE})" if (Path(spec) / WEIGHTS_FILE).is_file() else ""
        raise CheckpointError(f"train.init: {spec}: a folder, not a weights file{hint}")
    if not Path(spec).is_file():
        raise CheckpointError(f"train.init: {spec}: no such file, nor a model that ships weights")
    return Path(spec)


def load_init_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Start from another run's weights: every tensor whose name and shape fit is loaded.

    The usual case is fine-tuning x3/x4 SR from x2 weights, where only the upsampler differs.
    Returns the names of the model's tensors left at their initial values.
    """
    expected = model.state_dict()
    state = strip_prefixes(read_state_dict(path), expected)  # a DataParallel file's `module.` keys too
    usable = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    if not usable:
        raise CheckpointError(f"train.init: {path}: none of its tensors fit this model")
    model.load_state_dict(usable, strict=False)
    return sorted(set(expected) - set(usable))


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    from torch.utils.checkpoint import checkpoint

    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def enable_grad_checkpointing(model: nn.Module) -> int:
    """Recompute every transformer stage in the backward pass instead of storing its activations.

    Patches the stages' `forward` on the instances, so parameter names (and weights files) are
    unchanged. Returns the number of stages.
    """
    found = model.stages()
    for stage in found:
        stage.forward = functools.partial(_checkpointed, stage.forward)
    return len(found)


class EMA:
    """Exponential moving average of the weights; the weights that are validated and shipped.

    The decay ramps up as min(decay, (1 + t) / (10 + t)) so that short runs are not dominated by the
    random initialisation; from a few thousand steps on it is the configured decay.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema, value in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if ema.dtype.is_floating_point:
                ema.lerp_(value, 1 - decay)
            else:
                ema.copy_(value)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW; weight decay only on weight matrices and kernels (not biases, norms, scales)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas))


# --------------------------------------------------------------------------- RNG states


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) generator states, as tensors and plain containers."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        # this process's GPU only: a run resumed where fewer GPUs are visible restores it all the same
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": state["numpy"]["key"].numpy().astype(np.uint32), "pos": state["numpy"]["pos"]},
            "has_gauss": state["numpy"]["has_gauss"],
            "gauss": state["numpy"]["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():  # states from before kept every GPU's: the first
        torch.cuda.set_rng_state(state["cuda"][0])


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every tensor's bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- logging


def _drop_records_after(path: Path, step: int) -> None:
    """A resumed run's log keeps what led to its state: records past it (a killed session's last steps,
    a line cut off mid-write) would otherwise stand twice, and differently, beside the rerun's."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        at = record.get("step", 0) if isinstance(record, dict) else None
        if isinstance(at, int) and at <= step:  # anything else is no record of ours
            kept.append(line + "\n")
    atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))


class RunLog:
    """JSON lines (and optionally TensorBoard) on rank 0; a progress bar or plain lines on stderr."""

    def __init__(
        self, run_dir: Path, enabled: bool, cfg: Config, start: int, stop: int, append: bool
    ) -> None:
        self.enabled = enabled
        self.file = None
        self.writer = None
        self.bar = None
        if not enabled:
            return
        if append:
            _drop_records_after(run_dir / LOG_FILE, start)
        self.file = (run_dir / LOG_FILE).open("a" if append else "w")  # a fresh run starts a fresh log
        if cfg.log.tensorboard:
            self.writer = _tensorboard_writer()(str(run_dir / "tensorboard"))
        if cfg.log.progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=stop, initial=start, desc=cfg.run.name, file=sys.stderr, dynamic_ncols=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in _scalars(record):
                self.writer.add_scalar(key, value, record["step"])

    def progress(self, steps: int, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(steps)
            self.bar.set_postfix_str(text, refresh=False)
        elif text:
            print(text, file=sys.stderr, flush=True)

    def say(self, text: str) -> None:
        """A line on stderr that stays, above the progress bar if there is one."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        for handle in (self.bar, self.writer, self.file):
            if handle is not None:
                handle.close()


def _tensorboard_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "log.tensorboard: the tensorboard package is not installed (pip install tensorboard), "
            "or set log.tensorboard=false; log.jsonl is always written"
        ) from None
    return SummaryWriter


def _scalars(record: dict, prefix: str = ""):
    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


# --------------------------------------------------------------------------- the trainer


class Trainer:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.trained_now = 0  # steps the last fit() trained (a finished run's rerun: none)
        self.dist = distributed.env_info()
        self.device = distributed.pick_device(cfg.run.device, self.dist)
        self.run_dir = cfg.run_dir
        problem = folder_problem(self.run_dir)  # on every rank, which all stop at a problem
        if problem:  # found by --check, not by the first checkpoint's write
            raise ConfigError(f"run.out_dir/run.name: the run folder {self.run_dir} {problem}")
        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank and in every rerun
        self.model = build_model_from_config(_with_trained_task(cfg))
        check_model_fits(self.model, cfg)
        if cfg.train.grad_checkpointing and not enable_grad_checkpointing(self.model):
            raise ConfigError("train.grad_checkpointing: this model has no transformer stages to checkpoint")
        if self.dist.rank == 0:
            for advice in self.model.training_advice(max(s.patch_size for s in stages(cfg.data))):
                print(f"{cfg.run.name}: note: {advice}", file=sys.stderr, flush=True)
            if _source_tasks(cfg) == {"paired"} and "task" not in cfg.model:  # a deblurrer called "denoise"
                print(
                    f"{cfg.run.name}: note: paired data does not say what it restores, so the weights keep "
                    f"the preset's task, {self.model.descriptor.task} (restore names outputs by it); "
                    f"model.task=deblur (derain, ...) names it",
                    file=sys.stderr,
                    flush=True,
                )
        # A resumed run keeps the start it had (its state says which): train.init is not read again.
        resuming = self._resume_path() is not None
        init = init_weights_path(cfg.train.init) if cfg.train.init and not resuming else None
        self.init_skipped = load_init_weights(self.model, init) if init else []
        # A model fine-tuned from another carries that one's training summary: its total cost stays known.
        self.init_path = cfg.train.init if init else None
        self.init_training = read_metadata(init).get("training") if init else None
        if self.dist.rank == 0 and self._replays_init_data():
            print(
                f"{cfg.run.name}: note: train.init's weights were trained on the same data with run.seed "
                f"{cfg.run.seed}, so this run draws the same patches again (another run.seed draws new ones)",
                file=sys.stderr,
                flush=True,
            )
        self.items, self.sizes, notes = find_items(cfg.data)
        for note in notes if self.dist.rank == 0 else []:
            print(f"{cfg.run.name}: note: {note}", file=sys.stderr, flush=True)
        self.dataset = PatchDataset(
            self.items,
            cfg.run.seed,
            augment=cfg.data.augment,
            cache=cfg.data.cache,
            pad=cfg.data.pad_to_patch,
        )
        self.val_sets = self._find_val_sets()
        if cfg.log.tensorboard:
            _tensorboard_writer()
        self._load_resume_state()
        if self.dist.rank == 0 and self.init_skipped and self.resume_from is None:  # --check shows it too
            shown, more = self.init_skipped[:4], len(self.init_skipped) - 4
            names = ", ".join(shown) + (f" and {more} more" if more > 0 else "")
            print(
                f"{cfg.run.name}: note: train.init: {len(self.init_skipped)} of the model's "
                f"{len(self.model.state_dict())} tensors are not in {cfg.train.init} or differ in shape, "
                f"and start from scratch: {names}",
                file=sys.stderr,
                flush=True,
            )

    def _load_resume_state(self) -> None:
        """The state `run.resume` names, if any, checked, with its raw weights loaded into the model."""
        self.resume_from = self._resume_path()
        self.resume_state = None
        if self.resume_from is None:
            return
        try:
            self._state_stamp = _stamp(self.resume_from)
            self.resume_state = load_training_state(self.resume_from)
        except CheckpointError as err:  # a damaged state need not end the run folder
            raise CheckpointError(f"{err}; run.resume=never starts the run afresh") from None
        version = self.resume_state.get("version", 1)
        if version > STATE_VERSION:  # its keys may mean what this version cannot know
            raise ConfigError(
                f"run.resume: {self.resume_from} was written by a newer irformers (training state "
                f"version {version}, this one reads {STATE_VERSION}); update irformers to resume it"
            )
        try:
            self.model.load_state_dict(self.resume_state["model"])
        except RuntimeError as err:
            lines = str(err).strip().splitlines()  # a header, then one line per kind of mismatch
            first = lines[1].strip() if len(lines) > 1 else lines[0]
            first = first if len(first) <= 160 else first[:157] + "..."  # "Unexpected key(s)" lists all
            listed = recipe_changes(self.resume_from.parent / CONFIG_FILE, self.cfg)
            changed = [c for c in listed if c.startswith("model.")]  # named, not guessed at
            why = f"the recipe changed {'; '.join(changed)}" if changed else "was model.* changed?"
            raise ConfigError(
                f"run.resume: {self.resume_from} does not fit this model ({first}); {why}"
            ) from None

    # ---- checks before training

    def _find_val_sets(self) -> list:
        cfg = self.cfg
        if not cfg.val.sets:
            return []
        root = cfg.val.root or cfg.data.root
        scale = cfg.data.scale if cfg.data.task == "sr" else None
        try:
            sets = [find_dataset(name, root, scale) for name in cfg.val.sets]
        except DatasetError as err:
            raise DatasetError(f"val.sets: {err} (val.root, data.root or ${DATA_ENV})") from None
        color_level_task = cfg.data.task in ("denoise", "jpeg") and not cfg.data.gray
        for dataset in sets:  # found now, not by the validation after the first steps
            if color_level_task and files_are_gray(s.target for s in dataset.samples):  # as `test` refuses
                raise DatasetError(
                    f"val.sets: {dataset.root}: its images are gray, and this is a color model (three "
                    f"copies of a gray image score higher than a color set would); validate on a color set"
                )
            if cfg.data.task == "paired" and dataset.layout != "paired":
                raise DatasetError(
                    f"val.sets: {dataset.root}: data.task paired validates on NAME/input/ + NAME/target/ "
                    f"sets only (validation applies data.task's degradation)"
                )
        return sets

    def _resume_path(self) -> Path | None:
        choice = self.cfg.run.resume
        own = self.run_dir / STATE_FILE
        if choice == "auto":
            return own if own.is_file() else None
        if choice == "never":
            return None
        path = Path(choice)
        path = path / STATE_FILE if path.is_dir() else path
        if not path.is_file():
            typo = not Path(choice).exists()
            expected = " (expected auto, never, a run folder or a state file)" if typo else ""
            raise ConfigError(f"run.resume: {path}: no training state to resume from{expected}")
        return path

    def _val_degradation(self, layout: str) -> Degradation:
        d, v = self.cfg.data, self.cfg.val
        if layout == "paired":
            return Degradation("paired", gray=d.gray)
        sigma = v.sigma if v.sigma is not None else d.sigma
        quality = v.quality if v.quality is not None else d.quality
        return Degradation(d.task, scale=d.scale, sigma=sigma, quality=quality, gray=d.gray)

    # ---- training

    def fit(self) -> dict:
        """Train until `train.steps` (or `run.stop_at`); returns the run's summary."""
        distributed.init(self.dist, self.device)
        try:
            with self._run_folder_lock():
                return self._fit()
        finally:
            distributed.shutdown()

    @contextlib.contextmanager
    def _run_folder_lock(self):
        """One training at a time in a run folder: two (or a killed torchrun's orphaned workers beside its
        rerun) interleaved their checkpoints and logs. Rank 0 holds a POSIX record lock (lockf: the data
        workers it forks do not inherit it, and the OS drops it with the process); every rank learns
        whether it got it. A file system without locks trains unguarded, with a note. (Record locks belong
        to a process: two trainings in one process, threads or a notebook, are not kept apart.)"""
        lock, holder = None, None
        if self.dist.is_main and fcntl is not None:  # POSIX; elsewhere unguarded
            self.run_dir.mkdir(parents=True, exist_ok=True)
            lock = open(self.run_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held until the run ends)
            try:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EACCES, errno.EAGAIN):  # held by another process
                    lock.seek(0)
                    holder = (lock.read().split() or ["?"])[0]
                else:
                    print(
                        f"note: {self.run_dir}: the run folder cannot be locked ({err.strerror}); nothing "
                        f"stops a second training from writing into it",
                        file=sys.stderr,
                    )
                lock.close()
                lock = None
            else:
                with contextlib.suppress(OSError):  # the pid only names the holder in the message
                    lock.truncate(0)
                    lock.write(f"{os.getpid()}\n")
                    lock.flush()
        try:
            holders = distributed.gather(holder)
            if holders[0] is not None:
                raise TrainingError(
                    f"{self.run_dir}: another training (pid {holders[0]}) is running in this run folder; "
                    f"let it end or stop it, or choose another run.name"
                )
            self._reload_a_state_changed_meanwhile()
            yield
        finally:
            if lock is not None:
                lock.close()

    def _reload_a_state_changed_meanwhile(self) -> None:
        """A training that held the folder while this one started may have checkpointed since `__init__`
        looked: resuming the older state (or none) would overwrite its newer checkpoints."""
        now = self._resume_path()
        if now != self.resume_from or (now is not None and _stamp(now) != self._state_stamp):
            self._load_resume_state()

    def _fit(self) -> dict:
        cfg, info, device, t = self.cfg, self.dist, self.device, self.cfg.train
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch sizes: pick the fastest conv kernels once
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in [*self.run_dir.glob(TEMP_GLOB), *self.run_dir.glob(f"snapshots/{TEMP_GLOB}")]:
                stale.unlink(missing_ok=True)  # left by a run killed while writing

        model = self.model.to(device)
        self.ema = EMA(model, t.ema_decay) if t.ema_decay > 0 else None
        net = model
        if info.enabled:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.optimizer = make_optimizer(model, t)
        self.scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)

        self.step, self.elapsed, self.validation = 0, 0.0, {}
        self.data_origin, self.resumed_world, self.world_sizes = (0, 0), info.world_size, [info.world_size]
        seed_everything(cfg.run.seed + info.rank)
        if self.resume_state is not None:
            self._restore(self.resume_state)
            self.resume_state = None  # the optimizer holds its own copies now
        stop = min(t.steps, cfg.run.stop_at or t.steps)
        start = self.step
        self.trained_now = max(0, stop - start)  # what this call trains (its end, unless interrupted)
        if info.is_main:
            self._say_what_is_replaced(start, stop)
        if stop <= start:  # a finished run's rerun: its recipe and log keep the sessions that trained
            if info.is_main:
                print(f"{self.run_dir}: nothing to do, the run is at step {start} of {stop}", file=sys.stderr)
            return self.summary()
        if info.is_main:
            save_config(cfg, self.run_dir / CONFIG_FILE)

        loader = make_loader(
            cfg.data,
            self.dataset,
            self.sizes,
            seed=cfg.run.seed,
            start=start,
            end=stop,
            rank=info.rank,
            world_size=info.world_size,
            origin=self.data_origin,
            pin_memory=device.type == "cuda",
        )
        log = RunLog(self.run_dir, info.is_main, cfg, start, stop, append=self.resume_from is not None)
        try:
            log.write(
                {
                    "kind": "start",
                    "step": start,
                    "resumed_from": str(self.resume_from) if self.resume_from else None,
                    "world_size": info.world_size,
                    "device": str(device),
                    "params": sum(p.numel() for p in model.parameters()),
                    "images": len(self.items),
                    "init": cfg.train.init if self.resume_from is None else None,
                    "init_skipped": self.init_skipped if self.resume_from is None else [],
                }
            )
            session_start = time.perf_counter()
            self.stop_request = StopRequest(info.is_main)
            with self.stop_request:
                self._loop(net, model, loader, log, start, stop, autocast_dtype)
            self.elapsed += time.perf_counter() - session_start
            # DDP keeps the ranks in step; check it, bit for bit, before anyone trusts the weights.
            digests = distributed.gather(weights_digest(model))
            if len(set(digests)) > 1:
                raise TrainingError(f"ranks ended with different weights: {digests}")
            summary = self.summary()
            log.write({"kind": "end", "step": self.step, "weights_sha256": digests, **summary})
        finally:
            log.close()
        return summary

    def _say_what_is_replaced(self, start: int, stop: int) -> None:
        """A resume (with what its recipe changes), or a state that run.resume=never overwrites: said, not
        silent. A finished run, which has nothing to do, names the changes only."""
        cfg = self.cfg
        if self.resume_from is not None:  # its run folder holds the recipe it followed
            listed = recipe_changes(self.resume_from.parent / CONFIG_FILE, cfg)
            if self.resumed_world != self.dist.world_size:  # each step's draws, the global batch, change too
                listed.append(f"processes {self.resumed_world} -> {self.dist.world_size}")
            changes = f" with a changed recipe: {'; '.join(listed)}" if listed else ""
            if stop > start:
                print(
                    f"note: {self.run_dir} resumes at step {start}{changes} (run.resume=never starts afresh)",
                    file=sys.stderr,
                )
            elif listed:
                print(f"note: {self.run_dir} is at step {start}{changes}", file=sys.stderr)
        own_state = self.run_dir / STATE_FILE
        if cfg.run.resume == "never" and own_state.is_file():
            try:
                was = f"at step {load_training_state(own_state)['step']}"
            except CheckpointError:
                was = "unreadable"
            print(
                f"note: {self.run_dir}: run.resume=never starts it afresh; its state ({was}) is replaced",
                file=sys.stderr,
            )

    def _loop(self, net, model, loader, log: RunLog, start: int, stop: int, autocast_dtype) -> None:
        cfg, t, device = self.cfg, self.cfg.train, self.device
        sampler = loader.batch_sampler
        k_choices = getattr(model, "k_choices", ())  # SemanIR random-k training
        loss_sum, loss_count = torch.zeros((), device=device), 0
        tick, tick_step, session_start = time.perf_counter(), start, time.perf_counter()
        for step, (inp, target) in zip(range(start, stop), loader, strict=True):
            inp = inp.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            lr = lr_at(step, t)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            runtime = {"k": self._random_k(step, k_choices)} if k_choices else {}
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                output = net(inp, **runtime)
            loss = pixel_loss(output, target, t)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if t.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(model, step)
            loss_sum += loss.detach()
            loss_count += 1
            self.step = done = step + 1

            if done % cfg.log.every == 0 or done == stop:
                mean_loss = float(distributed.mean(loss_sum)) / loss_count
                now = time.perf_counter()
                rate = (sampler.draws_before(done) - sampler.draws_before(tick_step)) / (now - tick)
                log.write(
                    {
                        "kind": "train",
                        "step": done,
                        "loss": mean_loss,
                        "lr": lr,
                        "samples_per_s": round(rate, 2),
                        "epoch": round(sampler.draws_before(done) / sampler.epoch_len, 3),
                        "elapsed_s": round(self.elapsed + now - session_start, 1),
                    }
                )
                log.progress(
                    done - tick_step,
                    f"step {done}/{t.steps} loss {mean_loss:.4f} lr {lr:.2e} {rate:.1f} samples/s",
                )
                if not math.isfinite(mean_loss):
                    raise TrainingError(
                        f"loss is {mean_loss} at step {done}: training diverged (lower train.lr, "
                        f"set train.grad_clip, or use train.precision=fp32/bf16)"
                    )
                loss_sum.zero_()
                loss_count, tick, tick_step = 0, now, done
            pause = time.perf_counter()
            if self.val_sets and (done == t.steps or (cfg.val.every and done % cfg.val.every == 0)):
                self.validation = {"step": done, **self._validate(model)}
                log.write({"kind": "val", **self.validation})
                log.say(f"step {done} validation: {scores_text(self.validation)}")
            signum = self._stop_signal()
            stopping = signum is not None and done < stop  # a signal ends the session here
            if done % cfg.checkpoint.every == 0 or done == stop or stopping:  # its time counts the validation
                now = time.perf_counter()  # (a resumed run goes on from it: its total must match)
                self._checkpoint(model, self.elapsed + now - session_start, sampler.draws_before(done))
            tick += time.perf_counter() - pause  # throughput counts training time only
            if stopping:
                raise TrainingInterrupted(signum, done)

    def _stop_signal(self) -> int | None:
        """The signal to stop at this step for: every step, the ranks agree (torchrun kills its processes
        30 s after passing a signal on, so a checkpoint cannot wait for the next log step)."""
        return distributed.largest(self.stop_request.signum or 0) or None

    def _random_k(self, step: int, choices: tuple[int, ...]) -> int:
        """SemanIR's random-k training: one k per step, the same on every rank, reproducible."""
        rng = np.random.default_rng([self.cfg.run.seed, _K_STREAM, step])
        return choices[int(rng.integers(len(choices)))]

    def _validate(self, model: nn.Module) -> dict:
        """PSNR/SSIM of the EMA weights (raw weights without EMA) on every val set, on rank 0."""
        results: dict = {}
        if self.dist.is_main:
            net = self.ema.module if self.ema is not None else model
            was_training = net.training
            net.eval()
            k = self.cfg.val.k if net.descriptor.supports_k else None
            # inference's own restorer, in fp32: large validation images are tiled, small ones whole
            restorer = Restorer(net, tile="auto", precision="fp32", device=self.device, k=k)
            for dataset in self.val_sets:
                r = evaluate(
                    restorer, dataset, self._val_degradation(dataset.layout), model_name=self.cfg.run.name
                )
                for message in r["failed"]:  # e.g. NaN outputs: the set's mean leaves them out
                    print(f"{self.cfg.run.name}: validation failed: {message}", file=sys.stderr, flush=True)
                results[dataset.name] = {
                    key: round(r[key], 4) for key in ("psnr", "ssim", "psnr_b") if key in r
                }
                if r["failed"]:  # a mean over fewer images than the set's says so
                    results[dataset.name]["images"] = f"{len(r['per_image'])} of {r['images']}"
            net.train(was_training)
        distributed.barrier()
        return results

    # ---- checkpoints

    def summary(self) -> dict:
        cfg = self.cfg
        return {
            "steps": self.step,
            "total_steps": cfg.train.steps,
            "seconds": round(self.elapsed, 1),
            "world_size": self.dist.world_size,
            **({"world_sizes": self.world_sizes} if len(self.world_sizes) > 1 else {}),
            "task": cfg.data.task,
            "data": [
                {"target": s.target, "input": s.input, "weight": s.weight, **s.degrade}
                for s in cfg.data.train
            ],
            "validation": self.validation,
            "recipe": self.recipe(),
            **({"init": {"path": self.init_path, "training": self.init_training}} if self.init_path else {}),
        }

    def _replays_init_data(self) -> bool:
        """A stage started from earlier weights with their seed and data replays their patch stream."""
        before = self.init_training or {}
        targets = [s.target for s in self.cfg.data.train]
        same_data = [d.get("target") for d in before.get("data", [])] == targets
        return same_data and (before.get("recipe") or {}).get("seed") == self.cfg.run.seed

    def recipe(self) -> dict:
        """How the weights were trained, so that a weights file says it without its run's config."""
        cfg, t = self.cfg, self.cfg.train
        degrade = {k: getattr(cfg.data, k) for k in DEGRADE_KEYS}
        return {
            "run": cfg.run.name,
            "seed": cfg.run.seed,
            "degrade": {k: v for k, v in degrade.items() if v is not None and v is not False},
            "patches": [[s.start, s.patch_size, s.batch_size] for s in stages(cfg.data)],
            "optimizer": t.optimizer,
            "lr": t.lr,
            "schedule": t.schedule,
            **({"cosine_start": t.cosine_start} if t.cosine_start else {}),
            "loss": t.loss,
            "precision": t.precision,
            "ema_decay": t.ema_decay,
        }

    def _checkpoint(self, model: nn.Module, elapsed: float, draws: int) -> None:
        """Weights, then training state, from rank 0; every rank contributes its RNG state. `draws`: how
        far the data stream is, which a resume on another number of processes goes on from. In that order
        a run killed between the two writes resumes from the older state and writes the weights again;
        the other way round its state said "finished" beside the previous checkpoint's weights, for good."""
        rngs = distributed.gather(rng_state())
        if self.dist.is_main:
            state = {
                "version": STATE_VERSION,
                "step": self.step,
                "elapsed": elapsed,
                "model": model.state_dict(),
                "ema": self.ema.module.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rngs,
                "data": {
                    "seed": self.cfg.run.seed,
                    "step": self.step,
                    "draws": draws,
                    "world_size": self.dist.world_size,
                    "world_sizes": self.world_sizes,
                },
                "validation": self.validation,
                "config": self.cfg.to_dict(),
                "init": {"path": self.init_path, "training": self.init_training},
            }
            weights = self.ema.module if self.ema is not None else model
            metadata = {
                "preset": self.cfg.model.get("preset"),
                "task": model.descriptor.task,
                "scale": model.descriptor.scale,
                "weights": "ema" if self.ema is not None else "raw",
                "training": {**self.summary(), "seconds": round(elapsed, 1)},
            }
            save_weights(self.run_dir / WEIGHTS_FILE, model, metadata, state_dict=weights.state_dict())
            if self.cfg.checkpoint.snapshots:
                snapshot = self.run_dir / "snapshots" / f"step_{self.step:07d}.safetensors"
                save_weights(snapshot, model, metadata, state_dict=weights.state_dict())
            save_training_state(self.run_dir / STATE_FILE, state)
        distributed.barrier()

    def _restore(self, state: dict) -> None:
        """Everything but the raw weights, which `__init__` loaded (and checked) already."""
        if self.ema is not None and state["ema"] is not None:
            self.ema.module.load_state_dict(state["ema"])
        recipe = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, settings in zip(self.optimizer.param_groups, recipe, strict=True):
            group.update(settings)  # this recipe's betas, weight decay, AdamW's decoupling: not the state's
        if state["scaler"]:  # a disabled scaler (fp32/bf16) saved {}: a run resumed in fp16 starts one
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.validation = state.get("validation", {})
        self.init_path, self.init_training = _init_of(state)
        data = state.get("data", {})
        self.resumed_world = int(data.get("world_size", len(state["rng"])))  # older states: one RNG per rank
        draws = data.get("draws")
        if draws is None:  # a state from before "draws" was kept: every step drew on resumed_world ranks
            draws = draws_before(self.step, stages(self.cfg.data), self.resumed_world)
        self.data_origin = (self.step, int(draws))
        before = data.get("world_sizes") or [self.resumed_world]  # the process counts of its sessions
        self.world_sizes = before + ([self.dist.world_size] if before[-1] != self.dist.world_size else [])
        if self.dist.rank < len(state["rng"]):
            set_rng_state(state["rng"][self.dist.rank])


def _init_of(state: dict) -> tuple[str | None, dict | None]:
    """The weights a resumed run started from, and their training summary; states from before they were
    kept name them only in their config, as its last session had it."""
    if "init" in state:
        return state["init"]["path"], state["init"]["training"]
    path = state.get("config", {}).get("train", {}).get("init")
    try:
        return path, read_metadata(init_weights_path(path)).get("training") if path else None
    except CheckpointError:  # moved or deleted since: the start is named, its summary lost
        return path, None


def train(cfg: Config) -> dict:
    """Check the config and data, then train; the Python API behind `irformers train`."""
    return Trainer(cfg).fit()


__all__ = [
    "EMA",
    "Trainer",
    "TrainingError",
    "TrainingInterrupted",
    "build_model_from_config",
    "enable_grad_checkpointing",
    "train",
]
