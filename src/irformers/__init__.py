"""irformers: SemanIR and Hi-IR image-restoration transformers."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["Restorer", "build_model", "list_presets", "load_model", "restore"]

# Imported on first use, so that `import irformers` (and every CLI command) does not load torch.
_EXPORTS = {
    "build_model": "irformers.models",
    "list_presets": "irformers.models",
    "load_model": "irformers.inference",
    "Restorer": "irformers.inference",
    "restore": "irformers.inference",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'irformers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
