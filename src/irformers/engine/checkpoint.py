"""Weights files: self-describing `.safetensors`, safe loading, and one converter for foreign files.

A weights file holds the model's state dict and, in its metadata, the config that rebuilds the model
(plus task, scale and whatever summary the writer adds), so `model_from_file(path)` needs nothing else.
Nothing here unpickles arbitrary objects: `.safetensors` holds tensors only, and `.pth`/`.pt` files are
read with `torch.load(weights_only=True)`, which refuses pickles that would run code.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from irformers.data.io import atomic_write, error_line
from irformers.devices import resolve_device

METADATA_KEY = "irformers"
WEIGHTS_FILE = "model.safetensors"  # a training run's weights, in its run folder
WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
# Where other toolkits keep the weights inside a checkpoint dict, in order of preference
# (BasicSR/KAIR: params_ema before params; plain training scripts: state_dict / model).
NESTED_KEYS = ("params_ema", "params", "state_dict", "model", "net")
PREFIXES = ("module.", "model.", "net.")


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message is one line naming the file."""


def save_weights(
    path: str | Path,
    model: nn.Module,
    metadata: Mapping | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Write `state_dict` (default: the model's) with the model's config and `metadata` (JSON-able) to a
    `.safetensors` file (the one format that carries them, and that every reader takes for what it is)."""
    if Path(path).suffix.lower() != ".safetensors":
        raise CheckpointError(f"{path}: weights are written as .safetensors; name the file so")
    config = getattr(model, "config", None)
    if config is None:
        raise CheckpointError(f"{path}: the model has no .config; build it with irformers.build_model")
    if metadata and "config" in metadata:
        raise CheckpointError(f"{path}: metadata key 'config' is the model's own (it rebuilds the network)")
    state = state_dict if state_dict is not None else model.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    info = {"config": config, **(metadata or {})}
    atomic_write(
        Path(path), lambda tmp: save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(info)})
    )


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of an irformers `.safetensors` file ({} for foreign files, `.pth` ones too)."""
    from safetensors import safe_open

    if Path(path).suffix.lower() != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({error_line(err)})") from None
    if METADATA_KEY not in meta:
        return {}
    try:
        info = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its irformers metadata is not valid JSON ({err})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: its irformers metadata is not a JSON object")
    return info


def build_from_metadata(info: dict, path: str | Path) -> nn.Module:
    """The network a file's metadata describes; a config this version cannot build is the file's error."""
    from irformers.models import build_model

    try:
        return build_model(info["config"])
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: its metadata config does not build a model ({err})") from None


def training_stages(summary: dict | None) -> list[dict]:
    """A training summary's stages, oldest first: weights trained from earlier weights (`train.init`)
    nest that stage's summary under ``init``."""
    stages = []
    while isinstance(summary, dict):
        stages.append(summary)
        summary = (summary.get("init") or {}).get("training")
    return stages[::-1]


def check_weights_suffix(path: Path) -> None:
    """Refuse a file that is not named as weights (an image passed as --model) before reading it."""
    if path.suffix.lower() not in WEIGHTS_SUFFIXES:
        raise CheckpointError(f"{path}: not a weights file (expected {', '.join(WEIGHTS_SUFFIXES)})")


def _torch_load(path: Path) -> object:
    """`torch.load` that never runs code from the file; its warnings (e.g. an unusual pickle protocol)
    are dropped, as what goes wrong is reported in one line naming the file."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_error(err: Exception) -> str:
    """torch.load's failure in a few words: its own can be a bare "105", a sentence and a paragraph of
    advice, or, for a pickle that would run code, instructions for loading it unsafely."""
    if isinstance(err, pickle.UnpicklingError):
        return "refused: loading it would need to run code, or it is damaged"
    return f"{type(err).__name__}: {error_line(err).split('. ')[0]}"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, `.safetensors` or a (weights-only) PyTorch pickle, unconverted."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    check_weights_suffix(path)
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a readable .safetensors file ({error_line(err)})") from None
    try:
        raw = _torch_load(path)
    except pickle.UnpicklingError:  # torch's message is a page of advice; the verdict fits one line
        raise CheckpointError(
            f"{path}: refused: not a plain weights file (loading it would need to run code) or damaged"
        ) from None
    except Exception as err:  # truncated or not a PyTorch file at all
        raise CheckpointError(f"{path}: damaged or not a PyTorch weights file ({_load_error(err)})") from None
    if isinstance(raw, Mapping) and {"step", "optimizer", "config"} <= raw.keys():  # save_training_state's
        weights = path.parent / WEIGHTS_FILE  # its "model": raw weights of a config the file does not name
        hint = f"; its run's weights are {weights}" if weights.is_file() else ""
        raise CheckpointError(f"{path}: a training state (for resuming), not weights{hint}")
    return _unnest(raw, path)


def _unnest(raw: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(raw).__name__}")
    for key in NESTED_KEYS:
        if isinstance(raw.get(key), Mapping):
            return _unnest(raw[key], path)
    tensors = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: no tensors found (keys: {', '.join(list(raw)[:6])})")
    return tensors


def strip_prefixes(state: Mapping[str, torch.Tensor], expected: Mapping) -> dict[str, torch.Tensor]:
    """`state` without the `module.`/`model.`/`net.` prefix (DataParallel, wrappers) that every key of it
    has and none of `expected`'s."""
    state = dict(state)
    for prefix in PREFIXES:
        if (
            state
            and all(k.startswith(prefix) for k in state)
            and not any(k.startswith(prefix) for k in expected)
        ):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def convert_state_dict(
    state: Mapping[str, torch.Tensor], model: nn.Module, source: str | Path = "weights", strict: bool = True
) -> dict[str, torch.Tensor]:
    """Map foreign key names onto `model` and refuse loads that would be silently wrong.

    Strips `module.`/`model.`/`net.` prefixes (DataParallel, wrappers) when that makes keys match;
    any shape mismatch is an error; missing or unexpected keys are an error when `strict`.
    """
    expected = model.state_dict()
    state = strip_prefixes(state, expected)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]})")
    if strict and missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if problems:
        arch = getattr(getattr(model, "descriptor", None), "arch", type(model).__name__)
        raise CheckpointError(
            f"{source}: does not fit this {arch} model: {'; '.join(problems)} "
            f"(wrong architecture, size or scale?)"
        )
    return {k: v for k, v in state.items() if k in expected}


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load any supported weights file into an already built model (foreign files included)."""
    state = convert_state_dict(read_state_dict(path), model, source=path, strict=strict)
    model.load_state_dict(state, strict=strict)
    return model


def model_from_file(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild and load a model from a self-describing irformers `.safetensors` file, in eval mode."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        raise CheckpointError(f"{path}: expected an existing irformers .safetensors weights file")
    info = read_metadata(path)
    if "config" not in info:
        raise CheckpointError(
            f"{path}: no irformers config in its metadata; build the model by preset name "
            f"and load the file into it (foreign weights)"
        )
    try:  # "auto", and a GPU this machine lacks, in one line
        device = resolve_device(device)
    except ValueError as err:
        raise CheckpointError(f"device: {err}") from None
    model = build_from_metadata(info, path)
    load_weights(model, path)
    model.metadata = info
    return model.to(device).eval()


def save_training_state(path: str | Path, state: Mapping) -> None:
    """Write a training state (tensors and plain containers only) atomically with `torch.save`."""
    atomic_write(Path(path), lambda tmp: torch.save(dict(state), tmp))


def load_training_state(path: str | Path) -> dict:
    """Read a state written by `save_training_state`; weights-only unpickling, so no code runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such training state file")
    try:
        state = _torch_load(path)
    except Exception as err:  # damaged, truncated, or a pickle that would need to run code
        raise CheckpointError(f"{path}: not a readable training state ({_load_error(err)})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not an irformers training state (no 'step')")
    return state
