"""The registry of named configurations, gathered from each architecture module's `PRESETS`."""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from types import ModuleType

from .descriptor import Preset

# Each architecture module defines `PRESETS: list[Preset]` and `build(config) -> nn.Module`.
ARCHITECTURES: dict[str, ModuleType] = {
    name: importlib.import_module(f"{__package__}.{name}") for name in ("semanir", "hiir", "baseline")
}

PRESETS: dict[str, Preset] = {p.name: p for module in ARCHITECTURES.values() for p in module.PRESETS}


def get_preset(name: str) -> Preset:
    """The preset of that name; an unknown name is a KeyError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), PRESETS, n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise KeyError(
            f"unknown model preset {name!r}; {hint}known presets: {', '.join(sorted(PRESETS))}"
        ) from None


WEIGHTS_DIR = Path(__file__).parents[1] / "weights"  # weights shipped in the package: <preset>.safetensors


def bundled_weights(preset: str) -> Path | None:
    """The weights file shipped with the package for `preset`, if any."""
    path = WEIGHTS_DIR / f"{preset}.safetensors"
    return path if path.is_file() else None
