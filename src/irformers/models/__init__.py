"""Model registry: build a network from a preset name or a config dict, and list the presets."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .baseline import WindowBaseline
from .descriptor import ModelDescriptor, Preset
from .hiir import HiIR
from .presets import ARCHITECTURES, PRESETS, bundled_weights, get_preset
from .semanir import SemanIR

__all__ = [
    "PRESETS",
    "HiIR",
    "ModelDescriptor",
    "Preset",
    "SemanIR",
    "WindowBaseline",
    "build_model",
    "count_params",
    "get_preset",
    "list_presets",
]


def build_model(name_or_config: str | dict, **overrides) -> nn.Module:
    """Build a preset by name, or a config dict (`config["arch"]` selects the architecture).

    `overrides` replace config entries (e.g. `backend="mask"`); the built model carries the full
    config as `model.config` and what callers need to know as `model.descriptor`.
    """
    if isinstance(name_or_config, str):
        config = copy.deepcopy(get_preset(name_or_config).config)
    else:
        config = copy.deepcopy(dict(name_or_config))
    config.update(overrides)
    arch = config.get("arch")
    if arch not in ARCHITECTURES:
        raise ValueError(f"model config: unknown arch {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch].build(config)


def _on_meta(name_or_config: str | dict) -> nn.Module:
    """The network built on the meta device: shapes and config, no memory, no initialisation cost."""
    with torch.device("meta"):
        return build_model(name_or_config)


def count_params(config: dict) -> int:
    """Parameter count of a config."""
    return sum(p.numel() for p in _on_meta(config).parameters())


def list_presets() -> list[dict]:
    """One plain dict per preset, as `irformers models --json` prints them, with the full config: every
    key a recipe's `model:` section may override."""
    rows = []
    for p in PRESETS.values():
        model = _on_meta(p.name)
        rows.append(
            {
                "name": p.name,
                "arch": p.arch,
                "task": p.task,
                "scale": p.scale,
                "in_channels": p.in_channels,
                "params": sum(t.numel() for t in model.parameters()),
                "reported_params": p.reported_params_m,
                "weights": bundled_weights(p.name) is not None,
                "note": p.note,
                "config": model.config,
            }
        )
    return rows
