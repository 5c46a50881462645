"""irformers.allocator: freed large blocks are reused (no page faults), and peak memory still sees them."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from irformers import allocator, profiling

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt needs Linux + glibc"
)

FAULTS_OF_A_SECOND_64MIB_TENSOR = """
import resource, sys, torch
from irformers import allocator
if sys.argv[1] == "keep":
    allocator.keep_freed_blocks()
torch.ones(64 * 2**20 // 4)  # allocated, touched, freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(64 * 2**20 // 4)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_A_SECOND_64MIB_TENSOR, mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_kept_blocks_are_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    assert _faults("default") > pages // 2  # glibc maps a 64 MiB block afresh: every page faults in
    assert _faults("keep") < pages // 10


def test_peak_memory_still_sees_allocations_once_blocks_are_kept():
    assert allocator.keep_freed_blocks()
    assert allocator.mmap_threshold_mb() == allocator.KEEP_UP_TO // 2**20

    def allocate():
        x = torch.ones(64 * 2**20 // 4)
        return float(x[0])

    allocate()  # the heap now holds a free 64 MiB block
    assert 60 < profiling.peak_memory_mb(allocate, torch.device("cpu")) < 200
    assert allocator.mmap_threshold_mb() == allocator.KEEP_UP_TO // 2**20  # restored after measuring
