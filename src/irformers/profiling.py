"""What a model costs to run: parameters, MACs, latency, peak memory, and the machine's matmul peak.

`irformers bench` and the scripts in `benchmarks/` measure through these functions, so every figure
the project quotes is taken the same way:

- MACs come from `torch.utils.flop_counter` on the meta device (no compute) and are reported as
  MACs = FLOPs / 2 (one multiply-add is two FLOPs). SemanIR is counted on its `gather` path, the
  work its sparse attention really does (k keys per query, not the dense N x N scores).
- Latency is the median of `repeat` timed calls after `warmup` untimed ones (CUDA: synchronised).
- Peak memory is what one call adds at its peak: the CUDA allocator's high-water mark, or on Linux
  CPUs the rise of the resident-set high-water mark, with glibc told to map every large block
  afresh and to hand its free pages back first (`mallopt`, `malloc_trim`), so that memory freed by
  earlier calls does not hide this call's allocations. None elsewhere.
- Achieved GFLOP/s = 2 x MACs / median time; `matmul_peak_gflops` measures the reference it is
  compared with (a large square matmul of the same dtype on the same device, in the same run).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from irformers.devices import fp32_context, resolve_device

_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def machine_info(device: torch.device, dtype: torch.dtype = torch.float32) -> dict:
    """Where a measurement was taken: CPU model, cores, torch threads, GPU, and how busy the machine was."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln]
        cpu = names[0] if names else cpu
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):  # other processes disturb CPU timings: record how busy the machine was
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer stops when the work does (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_macs(model: nn.Module, shape: tuple[int, ...], **runtime) -> int:
    """Multiply-accumulates of one inference call on an input of `shape`, counted on the meta device."""
    meta = copy.deepcopy(model).to("meta").eval()  # inference: e.g. SemanIR uses its k, not a random one
    if getattr(getattr(model, "descriptor", None), "supports_k", False):
        runtime["backend"] = "gather"  # the sparse work, not the dense scores; fused counts the same
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.empty(shape, device="meta"), **runtime)
    return counter.get_total_flops() // 2


def time_calls(
    fn: Callable[[], object], device: torch.device, repeat: int = 5, warmup: int = 1
) -> list[float]:
    """Milliseconds of each of `repeat` calls, after `warmup` calls that are not timed."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _status_kb(field: str) -> int:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field + ":"))
    return int(line.split()[1])


@contextlib.contextmanager
def _large_blocks_unmapped():
    """glibc: serve blocks over 128 KiB by mmap, so that free() returns them to the system at once."""
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    libc.malloc_trim(0)  # free heap pages go back too: reusing them must fault them in again
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # glibc's ceiling for its dynamic threshold


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Extra memory (MiB) one call of `fn` needs at its peak; None where it cannot be measured."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    with _large_blocks_unmapped():
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark to the current RSS
        except OSError:
            return None
        base = _status_kb("VmRSS")
        fn()
        return (_status_kb("VmHWM") - base) / 1024


def matmul_peak_gflops(
    device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048, repeat: int = 5
) -> float:
    """Best GFLOP/s of a `size`-square matmul: the practical ceiling a model's throughput is compared with."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    times = time_calls(lambda: torch.mm(a, b), device, repeat=repeat, warmup=2)
    return 2 * size**3 / (min(times) / 1000) / 1e9


def profile_model(
    model: nn.Module,
    shape: tuple[int, ...],
    *,
    device: str | torch.device,
    dtype: torch.dtype = torch.float32,
    repeat: int = 5,
    warmup: int = 1,
    memory: bool = True,
    compile: bool = False,
    **runtime,
) -> dict:
    """Params, MACs, latency (median / min ms of `repeat` calls) and peak memory of inference on `shape`.

    fp32 runs without TF32, bf16 / fp16 under autocast, as `irformers restore` does.
    `compile=True` times `torch.compile(model)` (compilation happens in the warm-up calls). The model is
    moved to `device` and put in eval mode; the caller's random state is left as it was.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    device = resolve_device(device)  # "auto" as everywhere else
    model = model.to(device).eval()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)  # a private generator
    net = torch.compile(model) if compile else model
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def call() -> None:
        with torch.inference_mode(), autocast, fp32_context(device, dtype):
            net(x, **runtime)

    macs = count_macs(model, shape, **runtime)
    time_calls(call, device, repeat=0, warmup=max(warmup, 2 if compile else 1))  # compiles, if at all
    peak = peak_memory_mb(call, device) if memory else None
    times = time_calls(call, device, repeat=repeat, warmup=0)
    median = statistics.median(times)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "macs": macs,
        "input": list(shape),
        "median_ms": median,
        "min_ms": min(times),
        "times_ms": times,
        "peak_mb": peak,
        "gflops": 2 * macs / (median / 1000) / 1e9,
    }
