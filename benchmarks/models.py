"""Whole-model inference cost of the paper-size presets against the window-attention baseline.

For SemanIR-S (k in 64..512; at the largest k also on the dense `mask` path, to show what `auto`
chose against it), SemanIR-B, Hi-IR-B, Hi-IR-L and the SwinIR-like window baseline (same
frame, width 180, 6 x 6 layers, window 32): x2 SR on a 128x128 LR input, and the same networks built
for a same-size task (scale 1: no upsampler) on 256x256. Per row: params, MACs (FLOPs / 2, torch's
flop counter; SemanIR's sparse work), median latency of `--repeat` calls after a warm-up, peak
memory of one call, achieved GFLOP/s and its fraction of the machine's fp32 matmul peak, measured in
the same run (`irformers.profiling`). Writes benchmarks/results/models.json, docs/models.png and
BENCHMARKS.md (which also reports the results of the other benchmark scripts, each with its command).

    python benchmarks/models.py [--repeat 3] [--threads N] [--device cpu] [--sr-size 128] [--same-size 256]
                                [--ks 64 ...] [--same-models ...] [--same-ks 64 ...]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import statistics
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from irformers import profiling
from irformers.data.io import write_text
from irformers.models import build_model, layers, semanir

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPO = HERE.parent
WHOLE = "semanir-s-sr-x2-whole"  # SemanIR-S on whole feature maps (no CPU tiling), at the smallest k
DENSE = "semanir-s-sr-x2-mask"  # SemanIR-S on the dense `mask` path at the largest k: what `auto` beats
# label -> (preset, config overrides): Hi-IR-L has presets for x3/x4 only; at x2 it is the same network
MODELS = {
    "semanir-s-sr-x2": ("semanir-s-sr-x2", {}),
    "semanir-b-sr-x2": ("semanir-b-sr-x2", {}),
    "hiir-b-sr-x2": ("hiir-b-sr-x2", {}),
    "hiir-l-sr-x2": ("hiir-l-sr-x4", {"scale": 2}),
    "baseline-swin-sr-x2": ("baseline-swin-sr-x2", {}),
    WHOLE: ("semanir-s-sr-x2", {}),
    DENSE: ("semanir-s-sr-x2", {"backend": "mask"}),
}
KS = (64, 128, 256, 512)
BASELINE = "baseline-swin-sr-x2"


def cases(
    sr_size: int, same_size: int, same_models: list[str], same_ks: list[int], ks: list[int]
) -> list[dict]:
    """(label, size, scale, k) in measuring order: every model at x2 SR, then the same-size subset.

    SemanIR-S runs at every k of `ks` (`same_ks` at the same size), SemanIR-B at the largest."""
    out = []
    for size, scale, names, kks in ((sr_size, 2, list(MODELS), ks), (same_size, 1, same_models, same_ks)):
        for name in names:
            kk = (None,) if not name.startswith("semanir") else kks if "-s-" in name else (max(kks),)
            kk = (min(kks),) if name == WHOLE else (max(kks),) if name == DENSE else kk
            out += [{"model": name, "size": size, "scale": scale, "k": k} for k in kk]
    return out


def measure(case: dict, device: torch.device, repeat: int) -> dict:
    torch.manual_seed(0)
    torch._dynamo.reset()  # SemanIR's fused kernels compile afresh per row, as in one `irformers` call
    preset, overrides = MODELS[case["model"]]
    same_size = {} if case["scale"] == 2 else {"scale": 1, "task": "denoise"}
    model = build_model(preset, **{**overrides, **same_size})
    runtime = {"k": case["k"]} if case["k"] else {}
    shape = (1, 3, case["size"], case["size"])
    tile = semanir.TILE_TOKENS
    semanir.TILE_TOKENS = sys.maxsize if case["model"] == WHOLE else tile
    try:
        result = profiling.profile_model(model, shape, device=device, repeat=repeat, **runtime)
    finally:
        semanir.TILE_TOKENS = tile
    backend = model.config["backend"] if case["k"] else None  # SemanIR's: asked, or what `auto` ran
    if backend == "auto":  # for this window size and k (inference, no backward)
        n = model.config["window_size"] ** 2
        backend = semanir.choose_backend(
            n, case["k"], batch=1, heads=6, dim=180, device=device, backward=False, memory_bytes=1 << 30
        )
    return {**case, **result, "backend": backend}


def bar_chart(rows: list[dict], path: Path, title: str) -> None:
    """Horizontal bars of median latency, one panel per input size, the baseline's bar in grey."""
    sizes = sorted({r["size"] for r in rows})
    height_per = 26
    n = max(sum(r["size"] == s for r in rows) for s in sizes)
    width, height = 1400, 90 + n * height_per + 40
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, big = ImageFont.load_default(size=13), ImageFont.load_default(size=16)
    draw.text((width / 2, 12), title, fill="black", font=big, anchor="mt")
    panel = width // len(sizes)
    for p, size in enumerate(sizes):
        sub = [r for r in rows if r["size"] == size]
        longest = max(r["median_ms"] for r in sub)
        left, bar_w = p * panel + 210, panel - 300
        kind = "x2 SR, LR" if sub[0]["scale"] == 2 else "same size,"
        draw.text((p * panel + 20, 50), f"{kind} {size}x{size}: median latency (s)", fill="black", font=big)
        for i, r in enumerate(sub):
            y = 80 + i * height_per
            variant = r["model"].removesuffix("-sr-x2").replace("-sr-x2-", " ")  # "semanir-s whole"
            label = variant + (f" k={r['k']}" if r["k"] else "")
            color = (150, 150, 150) if r["model"] == BASELINE else (31, 119, 180)
            if r["model"].startswith("hiir"):
                color = (214, 39, 40)
            w = bar_w * r["median_ms"] / longest
            draw.text((left - 8, y + 9), label, fill="black", font=font, anchor="rm")
            draw.rectangle([left, y, left + w, y + 18], fill=color)
            draw.text(
                (left + w + 6, y + 9), f"{r['median_ms'] / 1000:.2f}", fill="black", font=font, anchor="lm"
            )
    img.save(path)


def write_chart(data: dict) -> None:
    """docs/models.png from a models.json (a fresh run's, or the stored one for --markdown-only)."""
    machine = data["machine"]
    title = f"Inference latency, {machine['cpu']}, {machine['threads']} threads, fp32"
    bar_chart(data["rows"], REPO / "docs" / "models.png", title)


def _row(r: dict, peak: float) -> str:
    k = r["k"] if r["k"] else "-"
    mem = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-"
    return (
        f"| {r['model']} | {k} | {r['backend'] or '-'} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e9:.1f} | "
        f"{r['median_ms'] / 1000:.2f} | {mem} | {r['gflops']:.1f} | {r['gflops'] / peak:.0%} |"
    )


def _time(rows: list[dict], model: str, size: int, k: int | None = None) -> float:
    return next(r["median_ms"] for r in rows if r["model"] == model and r["size"] == size and r["k"] == k)


def models_section(data: dict) -> list[str]:
    rows, peak, m = data["rows"], data["matmul_peak_gflops"], data["machine"]
    lines = [
        "## Whole models: params, MACs, latency, memory, throughput",
        "",
        f"Command: `{data['command']}` (writes `benchmarks/results/models.json`, "
        "`docs/models.png` and this file).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']}, "
        f"{m['device']}, {m['dtype']}, batch 1, inference (`torch.inference_mode`). Load average "
        f"{m.get('load_average_1min', '?')} at the start. Measured {data['date']}.",
        f"Matmul peak, measured in the same run (best of 5 calls of a 2048-square fp32 matmul): "
        f"**{peak:.1f} GFLOP/s**. Latency: median of {data['repeat']} calls after one warm-up call; "
        "peak memory: what one call adds (see `irformers.profiling`). MACs = FLOPs / 2 "
        "(`torch.utils.flop_counter`; SemanIR counted on its sparse `gather` path). Achieved GFLOP/s = "
        "2 x MACs / median time.",
        f"Rows of the SR tables name presets (what `irformers bench` takes), except three: {WHOLE} is "
        f"semanir-s-sr-x2 on the whole feature map (no CPU tiling), {DENSE} the same on the `mask` "
        "backend, hiir-l-sr-x2 the hiir-l-sr-x4 network at scale 2 (Hi-IR-L has x3/x4 presets only). "
        "The same-size (x1) table builds each network at scale 1 for denoising, so its parameter counts "
        "differ from the presets' and `irformers bench` does not reproduce it.",
        "",
    ]
    for size in sorted({r["size"] for r in rows}):
        sub = [r for r in rows if r["size"] == size]
        what = (
            f"x2 SR, {size}x{size} LR input"
            if sub[0]["scale"] == 2
            else f"same-size task (scale 1), {size}x{size}"
        )
        lines += [
            f"### {what}",
            "",
            "| model | k | attention | params (M) | GMACs | median s | peak MiB | GFLOP/s | of peak |",
            "|---|---|---|---|---|---|---|---|---|",
            *(_row(r, peak) for r in sub),
            "",
        ]
        ks = [r["k"] for r in sub if r["model"] == "semanir-s-sr-x2"]
        if not ks or not any(r["model"] == BASELINE for r in sub):
            continue
        base = _time(rows, BASELINE, size)
        ratios = ", ".join(f"k={k}: {base / _time(rows, 'semanir-s-sr-x2', size, k):.2f}x" for k in ks)
        ratios += "".join(
            f"; on whole feature maps, as the baseline runs, k={r['k']}: {base / r['median_ms']:.2f}x"
            for r in sub
            if r["model"] == WHOLE
        )
        for r in sub:  # the dense row against what `auto` ran at its k, where both were measured
            auto = next((a for a in sub if a["model"] == "semanir-s-sr-x2" and a["k"] == r["k"]), None)
            if r["model"] == DENSE and auto:
                speed = r["median_ms"] / auto["median_ms"]
                ratios += (
                    f". At k={r['k']} `auto` ran `{auto['backend']}`: {speed:.2f}x the speed of the dense "
                    f"`mask` path (`{DENSE}`)"
                )
        lines += [
            f"SemanIR-S against the window baseline (same width 180, depth 6 x 6, window 32), speed-up "
            f"(baseline time / SemanIR time): {ratios}.",
            "",
        ]
    lines += [
        f"On CPU, Hi-IR runs the region-local part of each layer (L1, L2, projections, MLP) in tiles of "
        f"{layers.TILE_TOKENS} tokens when the feature map is larger, and SemanIR takes the windows of "
        f"a stage through its dictionary and layers about {layers.TILE_TOKENS} tokens at a time "
        "(`TILE_TOKENS`; same result, tensors stay in cache). The baseline runs whole feature maps; "
        f"`{WHOLE}` is SemanIR-S run that way too.",
        "",
        "![latency per model](docs/models.png)",
        "",
    ]
    return lines


def complexity_section() -> list[str]:
    path = RESULTS / "complexity.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    m, fits = data["machine"], data["fits"]
    lines = [
        "## One layer against image size (64x64 .. 512x512 tokens)",
        "",
        "Command: `python benchmarks/complexity.py` (writes `benchmarks/results/complexity.json` and "
        "`docs/complexity.png`).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, {m['device']}, {m['dtype']}; load "
        f"average {m.get('load_average_1min', '?')}. One layer at C = 180, forward without autograd, the "
        f"median of {data['repeat']} interleaved rounds; exponent b of time ~ pixels^b fitted over all sizes "
        "and over the largest two; the MACs exponent is counted (not timed) over "
        f"{min(map(int, next(iter(data['macs_per_pixel'].values()))))}.."
        f"{max(map(int, next(iter(data['macs_per_pixel'].values()))))} px sides.",
        "",
        "| layer | time exp. (all sizes) | time exp. (largest two) | memory exp. | MACs exp. |",
        "|---|---|---|---|---|",
    ]
    for name, f in fits.items():
        mem = "-" if f["memory_exponent"] is None else f"{f['memory_exponent']:.2f}"
        lines.append(
            f"| {name} | {f['time_exponent']:.2f} | {f['time_exponent_largest']:.2f} | {mem} | "
            f"{f['macs_exponent']:.2f} |"
        )
    return [*lines, "", "![cost against size](docs/complexity.png)", ""]


def summary_section(data: dict) -> list[str]:
    """The efficiency claims, checked against the measurements below."""
    rows, peak = data["rows"], data["matmul_peak_gflops"]
    size = min(r["size"] for r in rows)
    base = _time(rows, BASELINE, size)
    ks = sorted(r["k"] for r in rows if r["model"] == "semanir-s-sr-x2" and r["size"] == size)
    semanir_s = [_time(rows, "semanir-s-sr-x2", size, k) for k in ks]
    falls = all(a < b for a, b in itertools.pairwise(semanir_s))
    densest = next(
        r for r in rows if r["model"] == "semanir-s-sr-x2" and r["size"] == size and r["k"] == ks[-1]
    )

    def fraction(model: str, k: int | None = None) -> str:
        row = next(r for r in rows if r["model"] == model and r["size"] == size and r["k"] == k)
        return f"{row['gflops'] / peak:.0%}" + ("" if row["gflops"] >= 0.4 * peak else " (below 40%)")

    lines = [
        "## Summary",
        "",
        f"- SemanIR-S at k = {ks[0]} against the window baseline of the same width, depth and window (32), "
        f"x2 SR on {size}x{size}: **{base / semanir_s[0]:.2f}x faster**; time falls as k falls: "
        f"{'yes' if falls else 'no'} ("
        + ", ".join(f"k={k}: {t / 1000:.2f} s" for k, t in zip(ks, semanir_s, strict=True))
        + f"; baseline {base / 1000:.2f} s)"
        + "".join(
            f". On whole feature maps, as the baseline runs (no CPU tiling): {base / r['median_ms']:.2f}x"
            for r in rows
            if r["model"] == WHOLE and r["size"] == size
        )
        + ".",
        f"- Achieved throughput, fraction of the measured fp32 matmul peak ({peak:.0f} GFLOP/s), x2 SR on "
        f"{size}x{size}: Hi-IR-B **{fraction('hiir-b-sr-x2')}**, SemanIR-S k = {ks[0]} **"
        f"{fraction('semanir-s-sr-x2', ks[0])}**, k = {ks[-1]} {fraction('semanir-s-sr-x2', ks[-1])} "
        f"(attention path `{densest['backend']}` at this density; FLOPs are counted as the sparse work).",
    ]
    path = RESULTS / "complexity.json"
    if path.exists():
        fits = json.loads(path.read_text())["fits"]
        lines.append(
            "- Growth exponent of time in pixels, one layer, 64x64 to 512x512: "
            + ", ".join(f"{name} {f['time_exponent']:.2f}" for name, f in fits.items())
            + " (the goal for Hi-IR and SemanIR: at most 1.1; largest two sizes: "
            + ", ".join(f"{name} {fits[name]['time_exponent_largest']:.2f}" for name in ("hiir", "semanir"))
            + ")."
        )
    return [*lines, ""]


def write_markdown(data: dict) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Every number here comes from the JSON file a benchmark script wrote; the command that "
        "reproduces it is next to it. Timings depend on the machine and on how busy it was (recorded).",
        "",
        *summary_section(data),
        *models_section(data),
        *complexity_section(),
    ]
    write_text(REPO / "BENCHMARKS.md", "\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sr-size", type=int, default=128, help="LR side of the x2 SR case")
    parser.add_argument("--same-size", type=int, default=256, help="side of the same-size (scale 1) case")
    parser.add_argument("--same-models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS), help="SemanIR-S k at x2 SR")
    parser.add_argument(
        "--same-ks", type=int, nargs="+", default=list(KS), help="SemanIR-S k at the same size"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="measure nothing: rewrite BENCHMARKS.md and docs/models.png from the JSON files",
    )
    args = parser.parse_args()
    out = RESULTS / "models.json"
    if args.markdown_only:
        data = json.loads(out.read_text())
        write_chart(data)
        write_markdown(data)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = profiling.machine_info(device)
    data = {
        "machine": machine,
        "date": datetime.date.today().isoformat(),
        "repeat": args.repeat,
        "command": " ".join(["python benchmarks/models.py", *sys.argv[1:]]),
        "matmul_peak_runs": [profiling.matmul_peak_gflops(device)],
        "rows": [],
    }
    RESULTS.mkdir(exist_ok=True)
    for case in cases(args.sr_size, args.same_size, args.same_models, args.same_ks, args.ks):
        row = measure(case, device, args.repeat)
        data["rows"].append(row)
        write_text(out, json.dumps(data, indent=1) + "\n")  # row by row: an interrupted run keeps its rows
        print(json.dumps({k: v for k, v in row.items() if k != "times_ms"}), file=sys.stderr, flush=True)
    data["matmul_peak_runs"].append(profiling.matmul_peak_gflops(device))  # again at the end: the best
    data["matmul_peak_gflops"] = max(data["matmul_peak_runs"])
    write_text(out, json.dumps(data, indent=1) + "\n")
    rows = data["rows"]
    write_chart(data)
    write_markdown(data)
    print("\n".join(models_section(data)))
    print(f"median of medians: {statistics.median(r['median_ms'] for r in rows):.0f} ms", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
