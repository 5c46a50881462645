"""Cost against image size of one Hi-IR layer, one SemanIR layer and one plain window-attention layer.

All three at the same width (C = 180, 6 heads):
- Hi-IR Version 3 with p = 16, P = 64 (L3 in blocks of at most 16 x 16 regions), as it runs (on CPU,
  region-local work in tiles of `hiir.TILE_TOKENS`) and as `hiir_whole` (every step on the whole map);
- SemanIR with its dictionary (window 32, k = 512), built in the timed call as a one-layer stage would,
  on the dense `mask` backend (the paper's path, about 7 GB at 512^2; `auto` runs `fused` at this
  density on CPU, 1.5x faster per call in benchmarks/attention.py: the exponent here is the dense one);
- window attention with window p = 16 (the `baseline` layer, unshifted).
Forward without autograd on square feature maps of 64^2 .. 512^2 tokens: time and peak memory
(CPU: rise of the resident-set high-water mark over one call, in a child process whose allocator maps
every large block, so that freed memory leaves the RSS; CUDA: the allocator's peak). Rounds interleave
the layers so that load from other processes spreads over all of them; the time reported is the
median (the minimum is kept as min_ms). The exponent b of time ~ pixels^b is fitted by least squares
on log-log axes. The receptive field of one layer is measured too: the input pixels with a non-zero
gradient for one output pixel.
Writes benchmarks/results/complexity.json and docs/complexity.png (drawn with Pillow).

    python benchmarks/complexity.py [--sizes 64 128 256 512] [--repeat 3] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
from irformers import profiling  # noqa: E402
from irformers.data.io import write_text  # noqa: E402
from irformers.models import baseline, hiir, semanir  # noqa: E402
from irformers.models.layers import ResidualLayer, window_partition, window_reverse  # noqa: E402

DIM, HEADS = 180, 6
P_WINDOW, P_REGION, L3_MAX = 16, 64, 16
SEMANIR_WINDOW, SEMANIR_K = 32, 512
MAC_SIZES = (1024, 2048)  # counted only (meta device): beyond 1024 L3 blocks stop growing
RESULTS = HERE / "results"
PLOT = HERE.parent / "docs" / "complexity.png"
COLORS = {
    "hiir": (214, 39, 40),
    "semanir": (31, 119, 180),
    "window": (44, 160, 44),
    "hiir_no_l3": (255, 127, 14),
    "hiir_whole": (255, 152, 150),
}


class SemanIROneLayer(torch.nn.Module):
    """A SemanIR layer with the dictionary it needs (a one-layer stage without the stage conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = semanir.SemanIRLayer(
            DIM, HEADS, mlp_ratio=2.0, norm="post", drop_path=0.0, attn_type="cosine", backend="mask"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        window = (SEMANIR_WINDOW, SEMANIR_WINDOW)
        tokens = window_partition(x, window)
        dictionary = semanir.build_dictionary(tokens, SEMANIR_K, window)
        return window_reverse(self.layer(tokens, dictionary), window, h, w)


class WholeImage(torch.nn.Module):
    """A Hi-IR layer without its tiled CPU inference path: every step on the whole feature map."""

    def __init__(self, layer: hiir.HiIRLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ResidualLayer.forward(self.layer, x)


def make_layers(use_l3: bool = True) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    segments = hiir.attention_segments(3, use_l3=use_l3)
    layer = hiir.HiIRLayer(DIM, HEADS, segments, window=P_WINDOW, region=P_REGION, l3_max_regions=L3_MAX)
    return {
        "hiir": layer,
        "hiir_whole": WholeImage(layer),
        "semanir": SemanIROneLayer(),
        "window": ResidualLayer(DIM, baseline.WindowAttention(DIM, HEADS, P_WINDOW)),
    }


def fit_exponent(pixels: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(pixels)."""
    return float(np.polyfit(np.log(pixels), np.log(values), 1)[0])


def receptive_field(layer: torch.nn.Module, size: int, device: torch.device) -> dict:
    """Input pixels that one output pixel (near the centre) depends on: non-zero gradient."""
    x = torch.randn(1, size, size, DIM, device=device, requires_grad=True)
    i = j = size // 2 + 5
    # a random projection: the plain sum of a post-norm layer's channels has no gradient through LN
    probe = torch.randn(DIM, device=device)
    (layer(x)[0, i, j] * probe).sum().backward()
    rows, cols = (x.grad[0].abs().amax(-1) > 0).nonzero(as_tuple=True)
    return {
        "pixels": int(rows.numel()),
        "box": [int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)],
        "image": [size, size],
    }


# ------------------------------------------------------------------------------------------ measuring


def _call(layer: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        layer(x)


def _warm_up(layers: dict, device: torch.device) -> None:
    """One small call per layer: library initialisation stays out of the measurements."""
    x = torch.randn(1, P_REGION, P_REGION, DIM, device=device)
    for layer in layers.values():
        _call(layer, x)


def time_layers(layers: dict, x: torch.Tensor, repeat: int) -> dict[str, list[float]]:
    """Milliseconds per call, `repeat` rounds interleaving the layers."""
    times: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(repeat):
        for name, layer in layers.items():
            profiling.synchronize(x.device)
            t = time.perf_counter()
            _call(layer, x)
            profiling.synchronize(x.device)
            times[name].append((time.perf_counter() - t) * 1000)
    return times


def measure_memory(layers: dict, x: torch.Tensor) -> dict[str, float | None]:
    """Extra MB at the peak of one call, per layer."""
    _warm_up(layers, x.device)
    return {
        name: profiling.peak_memory_mb(lambda layer=layer: _call(layer, x), x.device)
        for name, layer in layers.items()
    }


def peak_memory(size: int, args, layers: dict, device: torch.device) -> dict[str, float | None]:
    """CUDA: in process. CPU: in a child process with every large block mmap-ed (Linux only)."""
    if device.type == "cuda":
        return measure_memory(layers, torch.randn(1, size, size, DIM, device=device))
    if sys.platform != "linux":
        return dict.fromkeys(layers)
    cmd = [sys.executable, __file__, "--memory-probe", str(size), "--threads", str(args.threads)]
    done = subprocess.run(
        cmd, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(f"  memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
        return dict.fromkeys(layers)
    return json.loads(done.stdout.strip().splitlines()[-1])


def macs_per_pixel(sizes: list[int]) -> dict[str, dict[int, float]]:
    """Multiply-accumulates per pixel of one call: torch's flop counter on the meta device (no compute)."""
    with torch.device("meta"):
        layers = make_layers()
    return {
        name: {size: profiling.count_macs(layer, (1, size, size, DIM)) / size**2 for size in sizes}
        for name, layer in layers.items()
    }


# ------------------------------------------------------------------------------------------ the plot


def _panel(draw: ImageDraw.ImageDraw, box, series: dict, ylabel: str, fonts, reference: str | None) -> None:
    """One log-log panel: x = pixels, y = values (decades), a line per series (+ a grey line of slope 1)."""
    left, top, right, bottom = box
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts if y > 0]
    x0, x1 = math.log2(min(xs)), math.log2(max(xs))
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    y1 = max(y1, y0 + 1)

    def at(x: float, y: float) -> tuple[float, float]:
        u = left + (math.log2(x) - x0) / (x1 - x0) * (right - left)
        v = bottom - (math.log10(y) - y0) / (y1 - y0) * (bottom - top)
        return u, v

    small, normal = fonts
    for e in range(y0, y1 + 1):
        for m in (1, 2, 5):
            if e == y1 and m > 1:
                break
            _, v = at(min(xs), m * 10.0**e)
            draw.line([(left, v), (right, v)], fill=(225, 225, 225) if m > 1 else (190, 190, 190))
            if m == 1:
                draw.text((left - 8, v), f"{10.0**e:g}", fill="black", font=small, anchor="rm")
    for x in sorted(set(xs)):
        u, _ = at(x, 10.0**y0)
        draw.line([(u, top), (u, bottom)], fill=(225, 225, 225))
        draw.text((u, bottom + 8), f"{math.isqrt(x)}x{math.isqrt(x)}", fill="black", font=small, anchor="mt")
    draw.rectangle(box, outline="black")
    draw.text(((left + right) / 2, bottom + 30), "tokens (H x W)", fill="black", font=normal, anchor="mt")
    draw.text((left, top - 10), ylabel, fill="black", font=normal, anchor="ls")
    if reference in series and len(series[reference]) > 1:  # slope 1 through the largest point: linear cost
        xr, yr = series[reference][-1]
        xa = max(min(xs), xr * 10.0**y0 / yr)
        draw.line([at(xa, yr * xa / xr), at(xr, yr)], fill=(150, 150, 150), width=1)
        u, v = at((xa * xr) ** 0.5, yr * (xa / xr) ** 0.5)  # the middle of the line
        draw.text((u - 6, v - 6), "slope 1", fill=(120, 120, 120), font=small, anchor="rs")
    for name, pts in series.items():
        line = [at(x, y) for x, y in pts if y > 0]
        draw.line(line, fill=COLORS[name], width=3)
        for u, v in line:
            draw.ellipse([u - 4, v - 4, u + 4, v + 4], fill=COLORS[name])


def plot(rows: list[dict], macs: dict, fits: dict, title: str, path: Path) -> None:
    width, height = 1500, 600
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    fonts = (ImageFont.load_default(size=13), ImageFont.load_default(size=16))
    names = list(macs)
    panels = [
        (
            {n: [(r["pixels"], r["time_ms"]) for r in rows if r["model"] == n] for n in names},
            "forward time (ms)",
        ),
        (
            {n: [(r["pixels"], r["peak_mb"] or 0) for r in rows if r["model"] == n] for n in names},
            "peak memory (MB)",
        ),
        ({n: [(s * s, m / 1e6) for s, m in macs[n].items()] for n in names}, "MACs per pixel (millions)"),
    ]
    for k, (series, label) in enumerate(panels):
        reference = "hiir" if k < 2 else None
        _panel(draw, (90 + 480 * k, 70, 450 + 480 * k, 470), series, label, fonts, reference)
    draw.text((width / 2, 12), title, fill="black", font=fonts[1], anchor="mt")
    for k, name in enumerate(names):
        x, y = 90 + 720 * (k % 2), 525 + 30 * (k // 2)
        draw.line([(x, y), (x + 30, y)], fill=COLORS[name], width=4)
        f = fits[name]
        mem = "-" if f["memory_exponent"] is None else f"{f['memory_exponent']:.2f}"
        macs_b = f"{f['macs_exponent']:.2f}"
        text = f"{name}: time ~ px^{f['time_exponent']:.2f}, memory ~ px^{mem}, MACs ~ px^{macs_b}"
        draw.text((x + 38, y), text, fill="black", font=fonts[0], anchor="lm")
    img.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[64, 128, 256, 512], help="square sides (tokens)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rf-size", type=int, default=256, help="side of the receptive-field probe")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--memory-probe", type=int, metavar="SIZE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:  # the child process of `peak_memory`
        torch.set_num_threads(args.threads)
        x = torch.randn(1, args.memory_probe, args.memory_probe, DIM)
        print(json.dumps(measure_memory({n: m.eval() for n, m in make_layers().items()}, x)))
        return
    if len(set(args.sizes)) < 2:
        parser.error("the fit needs at least two sizes")
    args.sizes = sorted(set(args.sizes))
    if any(s % P_REGION for s in args.sizes):
        parser.error(f"sizes must be multiples of the Hi-IR region {P_REGION}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = profiling.machine_info(device)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))

    layers = {name: layer.to(device).eval() for name, layer in make_layers().items()}
    _warm_up(layers, device)
    rows = []
    for size in args.sizes:
        times = time_layers(layers, torch.randn(1, size, size, DIM, device=device), args.repeat)
        peaks = peak_memory(size, args, layers, device)
        for name in layers:
            ms, mb = statistics.median(times[name]), peaks[name]
            rows.append(
                {
                    "model": name,
                    "size": [size, size],
                    "pixels": size * size,
                    "time_ms": round(ms, 2),
                    "min_ms": round(min(times[name]), 2),
                    "peak_mb": None if mb is None else round(mb, 1),
                }
            )
            print(f"  {name:10s} {size:4d}^2: {ms:9.1f} ms  peak {mb if mb is None else round(mb)} MB")

    mac_sizes = sorted({*args.sizes, *MAC_SIZES})
    macs = macs_per_pixel(mac_sizes)
    for row in rows:
        row["macs_per_pixel"] = round(macs[row["model"]][row["size"][0]])
    fits = {}
    for name in layers:
        pts = [r for r in rows if r["model"] == name]
        pixels = [r["pixels"] for r in pts]
        mems = [r["peak_mb"] for r in pts]
        times = [r["time_ms"] for r in pts]
        fits[name] = {
            "macs_exponent": round(
                fit_exponent([s * s for s in mac_sizes], [macs[name][s] * s * s for s in mac_sizes]), 3
            ),
            "time_exponent": round(fit_exponent(pixels, times), 3),
            # the two largest sizes only: fixed per-call costs weigh on the smallest ones
            "time_exponent_largest": round(fit_exponent(pixels[-2:], times[-2:]), 3),
            "memory_exponent": None
            if None in mems or min(mems) <= 0
            else round(fit_exponent(pixels, mems), 3),
        }
        f = fits[name]
        print(
            f"{name}: time ~ pixels^{f['time_exponent']} (largest two sizes: {f['time_exponent_largest']}),"
            f" memory ~ pixels^{f['memory_exponent']}, MACs ~ pixels^{f['macs_exponent']}"
            f" ({', '.join(f'{m / 1e3:.0f}k' for m in macs[name].values())} per pixel at {mac_sizes}^2)"
        )

    probes = {name: layer for name, layer in layers.items() if name != "hiir_whole"}
    probes["hiir_no_l3"] = make_layers(use_l3=False)["hiir"].to(device)
    fields = {name: receptive_field(layer, args.rf_size, device) for name, layer in probes.items()}
    for name, rf in fields.items():
        print(f"receptive field of one {name} layer: {rf['pixels']} pixels, box {rf['box']} of {rf['image']}")

    report = {
        "machine": {
            **info,
            "load_average_1min_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
        "dim": DIM,
        "heads": HEADS,
        "hiir": {"version": 3, "window": P_WINDOW, "region": P_REGION, "l3_max_regions": L3_MAX},
        "semanir": {
            "window": SEMANIR_WINDOW,
            "k": SEMANIR_K,
            "backend": "mask",
            "dictionary": "built in the timed call",
        },
        "window": {"window": P_WINDOW},
        "mode": "forward, no_grad, batch 1",
        "repeat": args.repeat,
        "time": "median over the rounds (min_ms: the minimum)",
        "rows": rows,
        "macs_per_pixel": {name: {str(k): round(v) for k, v in m.items()} for name, m in macs.items()},
        "macs_note": "torch.utils.flop_counter FLOPs / 2, counted on the meta device, sizes as sides",
        "fits": fits,
        "receptive_field": fields,
        "receptive_field_note": (
            f"L1+L2 reach the {P_REGION}x{P_REGION} region (hiir_no_l3); L3 then reaches every region of"
            f" its block (at most {L3_MAX}x{L3_MAX} regions, {L3_MAX * P_REGION} pixels a side)"
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "complexity.json", json.dumps(report, indent=1) + "\n")
    title = (
        f"One layer, C={DIM}: Hi-IR (p={P_WINDOW}, P={P_REGION}), SemanIR (window {SEMANIR_WINDOW},"
        f" k={SEMANIR_K}), window attention ({P_WINDOW}) - {info['device']},"
        f" {torch.get_num_threads()} threads, float32"
    )
    plot(rows, macs, fits, title, PLOT)
    print(f"wrote {args.out / 'complexity.json'} and {PLOT}")


if __name__ == "__main__":
    main()
