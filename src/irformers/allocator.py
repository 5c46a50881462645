"""How the process's C allocator (glibc) treats the large blocks of CPU tensors.

glibc serves every block above its mmap threshold (at most 32 MiB by default) with a fresh `mmap`
and returns it with `munmap` when freed. A model on a large input allocates and frees activations of
that size in every layer, so each call page-faults all of them in again, and page faults serialise
threads. `keep_freed_blocks()` raises the threshold so that such blocks come from the heap and are
reused; `irformers` (the CLI) and the benchmarks call it at start. Elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3
KEEP_UP_TO = 2**30  # blocks up to this size come from the heap once kept
_GLIBC_DEFAULT_MAX = 32 * 2**20  # the ceiling of glibc's own dynamic mmap threshold
_state = {"mmap_threshold": _GLIBC_DEFAULT_MAX}


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(None)


def keep_freed_blocks() -> bool:
    """Serve blocks up to `KEEP_UP_TO` from the heap and keep freed ones; False where not glibc.

    Trades resident memory (the heap stays at its high-water mark) for speed: at x2 SR on a 128x128
    input, SemanIR-S at k = 128 runs about 1.4x faster (BENCHMARKS.md).
    """
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, KEEP_UP_TO) and libc.mallopt(_M_TRIM_THRESHOLD, 2 * KEEP_UP_TO)
    if ok:
        _state["mmap_threshold"] = KEEP_UP_TO
    return bool(ok)


def mmap_threshold_mb() -> int | None:
    """Blocks above this many MiB are mapped afresh per allocation (glibc); None elsewhere."""
    return _state["mmap_threshold"] // 2**20 if _libc() is not None else None


@contextlib.contextmanager
def large_blocks_unmapped() -> Iterator[bool]:
    """Within: blocks over 128 KiB are mapped afresh and unmapped when freed (False where not glibc).

    Peak-memory measurement needs this: memory that earlier calls freed but the heap kept would
    otherwise hide this call's allocations from the resident-set high-water mark.
    """
    libc = _libc()
    if libc is None:
        yield False
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    libc.malloc_trim(0)  # free heap pages go back too: reusing them must fault them in again
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _state["mmap_threshold"])
