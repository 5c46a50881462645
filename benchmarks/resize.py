"""Time irformers' MATLAB-exact ``imresize`` against OpenCV's bicubic ``cv2.resize``.

Case: a 2040x1356 RGB uint8 image (the size of a DIV2K HR image) downscaled x4 (scale 1/4), which is
how SR training and evaluation make LR inputs. OpenCV's INTER_CUBIC is not the same operation (no
antialiasing: 4 taps per output instead of 16, fixed-point arithmetic, no rounding between the
passes); it is the speed reference, not the numerical one.

    python benchmarks/resize.py [--data-root DIR] [--reps 30] [--warmup 3]

Prints a markdown table and writes ``benchmarks/results/resize.json``. The calls are interleaved;
on a shared machine, compare the CPU-time column too (wall times include time spent descheduled).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from irformers.data.io import write_text
from irformers.data.resize import imresize

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 2040, 1356


def _default_data_root() -> Path:
    return Path(os.environ.get("IRFORMERS_DATA", REPO.parent / "shared" / "datasets"))


def make_image(data_root: Path) -> tuple[np.ndarray, str]:
    """A deterministic natural-looking 2040x1356 RGB uint8 image, and where it came from."""
    for rel in ("Set5/HR/baby.png", "T91/t1.png"):
        path = data_root / rel
        img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if img is not None:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            return cv2.resize(img, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC), f"{rel} upscaled (cv2)"
    # No data: a smooth random field (coarse noise upscaled) plus fine texture, seeded.
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (HEIGHT // 40, WIDTH // 40, 3), dtype=np.uint8)
    img = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-12, 13, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8), "smooth random field (seed 0)"


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "cv2": cv2.__version__,
        "cv2_threads": cv2.getNumThreads(),
        "env_threads": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
            if k in os.environ
        },
    }
    try:
        cpu = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        info["cpu_model"] = cpu[0].split(":", 1)[1].strip() if cpu else None
    except OSError:
        info["cpu_model"] = None
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        info["numpy_blas"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def _resize_threads() -> int:
    from irformers.data import resize

    return resize._threads()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=_default_data_root())
    ap.add_argument("--reps", type=int, default=30, help="timed repetitions of each (interleaved)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--scale", type=int, default=4, help="downscaling factor")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "resize.json")
    args = ap.parse_args(argv)

    img, source = make_image(args.data_root)
    s = args.scale
    out_hw = (-(-HEIGHT // s), -(-WIDTH // s))
    threads = _resize_threads()

    def ours() -> np.ndarray:
        return imresize(img, 1 / s)

    def ours_one_thread() -> np.ndarray:
        old = os.environ.get("IRFORMERS_RESIZE_THREADS")
        os.environ["IRFORMERS_RESIZE_THREADS"] = "1"
        try:
            return imresize(img, 1 / s)
        finally:
            if old is None:
                del os.environ["IRFORMERS_RESIZE_THREADS"]
            else:
                os.environ["IRFORMERS_RESIZE_THREADS"] = old

    def opencv() -> np.ndarray:
        return cv2.resize(img, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_CUBIC)

    methods = {"ours": ours, "opencv": opencv}
    if threads > 1:
        methods["ours_1_thread"] = ours_one_thread
    a, b = ours(), opencv()
    assert a.shape == b.shape == (*out_hw, 3) and a.dtype == b.dtype == np.uint8
    assert np.array_equal(ours_one_thread(), a)
    for _ in range(args.warmup):
        for fn in methods.values():
            fn()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    times: dict[str, list[float]] = {k: [] for k in methods}
    cpu: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.reps):  # interleaved, so that load changes hit all alike
        for name, fn in methods.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
            cpu[name].append((time.process_time() - c0) * 1e3)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    result = {
        "case": f"{WIDTH}x{HEIGHT} RGB uint8, x{s} down (scale 1/{s}) -> {out_hw[1]}x{out_hw[0]}",
        "image": source,
        "reps": args.reps,
        "warmup": args.warmup,
        "resize_threads": threads,
        "median_ms": med,
        "min_ms": best,
        "cpu_median_ms": cpu_med,  # process CPU time per call, summed over threads
        "ratio_ours_over_opencv_median": med["ours"] / med["opencv"],
        "ratio_ours_over_opencv_min": best["ours"] / best["opencv"],
        "ratio_ours_over_opencv_cpu": cpu_med["ours"] / cpu_med["opencv"],
        "target_ratio": 5.0,
        "mean_abs_diff_vs_opencv": float(np.abs(a.astype(np.int16) - b).mean()),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "times_ms": times,
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=2) + "\n")

    labels = {
        "ours": f"irformers imresize, MATLAB bicubic ({threads} thread{'s' if threads > 1 else ''})",
        "ours_1_thread": "irformers imresize, MATLAB bicubic (1 thread)",
        "opencv": f"cv2.resize INTER_CUBIC ({cv2.getNumThreads()} threads)",
    }
    print(f"{result['case']}; image: {source}; {args.reps} reps after {args.warmup} warm-up")
    print()
    print("| method | median ms | min ms | CPU ms (median) |")
    print("|---|---|---|---|")
    for k in methods:
        print(f"| {labels[k]} | {med[k]:.2f} | {best[k]:.2f} | {cpu_med[k]:.2f} |")
    print(
        f"| ratio ours / OpenCV | {result['ratio_ours_over_opencv_median']:.1f}x | "
        f"{result['ratio_ours_over_opencv_min']:.1f}x | {result['ratio_ours_over_opencv_cpu']:.1f}x |"
    )
    print()
    print(f"cpu: {result['machine'].get('cpu_model')} x{os.cpu_count()}; load average before {load_before}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
