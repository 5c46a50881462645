"""Peak memory of ``irformers restore`` against image size: tiling keeps it bounded by the tile.

Each size is restored by a separate ``irformers restore`` process (``--tile auto``, the default), and
its peak resident memory is read from ``os.wait4`` (``ru_maxrss`` of that process alone). The input is
a deterministic smooth random field with fine texture, written as an 8-bit PNG.

    python benchmarks/memory.py [--model hiir-t-denoise-color] [--sizes 1000x1000,4000x3000]
                                [--threads 2] [--precision fp32]

Prints a markdown table and writes ``benchmarks/results/memory.json``. The model is a preset with its
shipped weights, or random ones where it has none (``--allow-random-init``): memory and time do not
depend on the weights' values.
The default is a small x1 (denoising) model, so that what grows with the image is only the image itself
(the float32 input and output buffers, 8 bytes per pixel and channel) and tiling bounds the rest; an SR
model's output buffer grows with scale**2 on top. On a busy machine, ``--threads 1`` is
often faster than more threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from irformers.data.io import write_text

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def make_image(width: int, height: int) -> np.ndarray:
    """Coarse noise upscaled (smooth regions and edges) plus fine texture, seeded."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (max(height // 40, 2), max(width // 40, 2), 3), dtype=np.uint8)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-12, 13, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def measure(image: Path, outdir: Path, args: argparse.Namespace) -> dict:
    """Run one restore in its own process; its peak RSS (MiB), wall time and what it printed."""
    cmd = [sys.executable, "-m", "irformers", "restore", str(image), "-o", str(outdir)]
    cmd += ["--model", args.model, "--allow-random-init", "--precision", args.precision, "--device", "cpu"]
    cmd += ["--tile", args.tile]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"restore failed ({image.name}): {err.strip()}")
    return {
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "report": out.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hiir-t-denoise-color")
    parser.add_argument("--sizes", default="1000x1000,4000x3000", help="WxH, comma-separated")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--tile", default="auto")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "memory.json"))
    args = parser.parse_args()

    import torch

    from irformers.inference import CPU_MEMORY_MB, load_model, plan_tiles

    model = load_model(args.model, allow_random_init=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            image = Path(tmp) / f"input_{width}x{height}.png"
            cv2.imwrite(str(image), make_image(width, height))
            plan = plan_tiles(model, height, width, args.tile if args.tile == "auto" else int(args.tile))
            result = measure(image, Path(tmp) / "out", args)
            rows.append({"width": width, "height": height, "tile": plan, **result})
            print(f"{width}x{height}: {result['peak_rss_mib']} MiB, {result['seconds']} s", file=sys.stderr)

    print("| image | tile, overlap | peak RSS (MiB) | wall (s) | CPU (s) |\n|---|---|---|---|---|")
    for r in rows:
        tile = "whole image" if r["tile"] is None else f"{r['tile'][0]}, {r['tile'][1]}"
        size = f"{r['width']}x{r['height']}"
        print(f"| {size} | {tile} | {r['peak_rss_mib']} | {r['seconds']} | {r['cpu_seconds']} |")
    result = {
        "benchmark": "peak RSS of one `irformers restore` process per image size (--tile auto)",
        "model": args.model,
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(
            args.precision, args.precision
        ),
        "device": "cpu",
        "threads": args.threads,
        "activation_budget_mib": CPU_MEMORY_MB,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        },
        "sizes": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
