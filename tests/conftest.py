"""Shared fixtures: where the benchmark images live, and a skip when they are absent."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    return Path(os.environ.get("IRFORMERS_DATA", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not (root / "Set5").is_dir():
        pytest.skip(f"benchmark images not found under {root} (set IRFORMERS_DATA)")
    return root
