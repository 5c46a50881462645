"""Time and peak memory of SemanIR's attention backends: dense `mask` vs sparse `gather` / `fused`.

One call = one layer's attention over windows of N tokens (C = 180, 6 heads, as SemanIR-S), with the
stage's dictionary (and its derived mask / bias rows) built beforehand, as a stage shares them across
its layers. The batch holds `--tokens` tokens (B' = tokens / N windows). Forward runs in inference mode;
forward+backward takes the gradient of q, k, v and the bias table. Times are the median (and the
minimum, in the JSON) over `--repeat` interleaved rounds, after two warm-up calls. Peak memory is the
rise of the resident-set high-water mark over one call, measured in a child process whose allocator
maps every large block (Linux; the timing process keeps the normal allocator, whose reuse of freed
memory would hide peaks but whose page faults would distort times). Prints a markdown table and writes
benchmarks/results/attention.json.

    python benchmarks/attention.py [--repeat 5] [--tokens 4096] [--device cpu] [--no-fused]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from irformers import profiling
from irformers.data.io import write_text
from irformers.models import semanir

NS = (256, 1024, 4096)
KS = (32, 64, 128, 256, 512)
DIM, HEADS = 180, 6
RESULTS = Path(__file__).resolve().parent / "results" / "attention.json"
BACKENDS = {
    "mask": semanir.mask_attention,
    "gather": semanir.gather_attention,
    "fused": semanir.fused_attention,
}


def measure(fns: dict, repeat: int, device: torch.device) -> dict[str, dict]:
    """Per backend: min and median milliseconds over `repeat` rounds (peak MB too on CUDA).

    Rounds interleave the backends (A B C A B C ...) so that load from other processes on a shared
    machine spreads over all of them; the ratios use the median.
    """
    stats = {}
    for name, fn in fns.items():
        fn()  # warm-up: compilation for the fused path (and a recompile with dynamic shapes)
        fn()
        peak = profiling.peak_memory_mb(fn, device) if device.type == "cuda" else None
        stats[name] = {"peak_mb": peak, "times": []}
    for _ in range(repeat):
        for name, fn in fns.items():
            profiling.synchronize(device)
            t = time.perf_counter()
            fn()
            profiling.synchronize(device)
            stats[name]["times"].append((time.perf_counter() - t) * 1000)
    return {
        name: {"min_ms": min(s["times"]), "median_ms": statistics.median(s["times"]), "peak_mb": s["peak_mb"]}
        for name, s in stats.items()
    }


def cpu_peaks(n: int, k: int, args) -> dict:
    """Run the memory probe for one case in a child process (see the module docstring)."""
    if sys.platform != "linux":
        return {}
    cmd = [
        sys.executable,
        __file__,
        "--memory-probe",
        "--ns",
        str(n),
        "--ks",
        str(k),
        "--tokens",
        str(args.tokens),
    ]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(
        cmd + (["--no-fused"] if args.no_fused else []), env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(f"  memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_probe(n: int, k: int, args, backends: list[str]) -> dict:
    (q, kk, v, table), dictionary, _, _ = make_inputs(n, k, args.tokens, torch.device("cpu"))
    peaks = {}
    for mode, fns in case_functions(q, kk, v, table, dictionary, backends).items():
        for name, fn in fns.items():
            fn()
            peaks[f"{mode}.{name}"] = profiling.peak_memory_mb(fn, torch.device("cpu"))
    return peaks


def make_inputs(n: int, k: int, tokens: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    side = int(n**0.5)
    b = max(1, tokens // n)
    x = torch.randn(b, n, DIM, generator=g)
    q, kk, v = (torch.randn(b, n, HEADS, DIM // HEADS, generator=g) for _ in range(3))
    q = F.normalize(q, dim=-1) * 10
    kk = F.normalize(kk, dim=-1)
    table = torch.randn(HEADS, (2 * side - 1) ** 2, generator=g)
    tensors = [t.to(device) for t in (x, q, kk, v, table)]
    t0 = time.perf_counter()
    dictionary = semanir.build_dictionary(tensors[0], k, (side, side))
    dict_ms = (time.perf_counter() - t0) * 1000
    dictionary.allowed()
    dictionary.bias_rows()
    return tensors[1:], dictionary, b, dict_ms


def case_functions(q, kk, v, table, dictionary, backends: list[str]) -> dict[str, dict]:
    """mode -> backend -> a call doing one layer's attention (inference, or forward + backward)."""
    out: dict[str, dict] = {"forward": {}, "forward_backward": {}}
    for name in backends:
        attend = BACKENDS[name]

        def forward(attend=attend):
            with torch.inference_mode():
                attend(q, kk, v, table, dictionary)

        leaves = [t.detach().requires_grad_() for t in (q, kk, v, table)]

        def forward_backward(attend=attend, leaves=leaves):
            attend(*leaves, dictionary).sum().backward()

        out["forward"][name] = forward
        out["forward_backward"][name] = forward_backward
    return out


def max_differences(q, kk, v, table, dictionary, backends: list[str]) -> dict[str, float]:
    """Largest |difference| from `mask` of each sparse backend's output and gradients, at this case's
    N and k (the test suite checks the compiled path on small windows only)."""
    weights = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(q.device) / q.shape[1]
    results = {}
    for name in backends:
        leaves = [t.detach().requires_grad_() for t in (q, kk, v, table)]
        out = BACKENDS[name](*leaves, dictionary)
        (out * weights).sum().backward()
        results[name] = [out.detach(), *(t.grad for t in leaves)]
    return {
        name: max((a - b).abs().max().item() for a, b in zip(results[name], results["mask"], strict=True))
        for name in backends
        if name != "mask"
    }


def run_case(n: int, k: int, args, device: torch.device, backends: list[str]) -> dict:
    # Each case compiles afresh, as a process running one model does: over all the cases' shapes one
    # process would reach dynamo's recompile limit (8) and time the rest of the fused path uncompiled.
    torch._dynamo.reset()
    (q, kk, v, table), dictionary, b, dict_ms = make_inputs(n, k, args.tokens, device)
    row = {"N": n, "k": k, "windows": b, "dictionary_ms": round(dict_ms, 3)}
    for name, diff in max_differences(q, kk, v, table, dictionary, backends).items():
        row[f"{name}.max_abs_diff_vs_mask"] = diff
    peaks = cpu_peaks(n, k, args) if device.type == "cpu" else {}
    for mode, fns in case_functions(q, kk, v, table, dictionary, backends).items():
        for name, st in measure(fns, args.repeat, device).items():
            peak = st["peak_mb"] if device.type == "cuda" else peaks.get(f"{mode}.{name}")
            row[f"{mode}.{name}.ms"] = round(st["median_ms"], 3)
            row[f"{mode}.{name}.min_ms"] = round(st["min_ms"], 3)
            row[f"{mode}.{name}.peak_mb"] = None if peak is None else round(peak, 1)
        sparse = [name for name in backends if name != "mask"]
        best = min(sparse, key=lambda s: row[f"{mode}.{s}.ms"])
        row[f"{mode}.best_sparse"] = best
        row[f"{mode}.mask_over_best_sparse"] = round(row[f"{mode}.mask.ms"] / row[f"{mode}.{best}.ms"], 3)
        row[f"{mode}.auto"] = semanir.choose_backend(
            n,
            k,
            batch=b,
            heads=HEADS,
            dim=DIM,
            device=device,
            backward=mode == "forward_backward",
            memory_bytes=1024 * 2**20,
        )
        print(f"  N={n} k={k} {mode}: " + ", ".join(f"{s} {row[f'{mode}.{s}.ms']:.1f} ms" for s in backends))
    return row


def table(rows: list[dict], backends: list[str]) -> str:
    lines = []
    for mode in ("forward", "forward_backward"):
        head = ["N", "k", *(f"{s} ms" for s in backends), *(f"{s} MB" for s in backends)]
        head += ["best sparse", "mask / best", "auto"]
        lines += [f"\n**{mode.replace('_', ' + ')}**\n", "| " + " | ".join(head) + " |"]
        lines.append("|" + "---|" * len(head))
        for r in rows:
            mbs = [r[f"{mode}.{s}.peak_mb"] for s in backends]
            cells = [r["N"], r["k"], *(f"{r[f'{mode}.{s}.ms']:.1f}" for s in backends)]
            cells += ["-" if m is None else f"{m:.0f}" for m in mbs]
            cells += [
                r[f"{mode}.best_sparse"],
                f"{r[f'{mode}.mask_over_best_sparse']:.2f}x",
                r[f"{mode}.auto"],
            ]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per call (windows = tokens / N)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-fused", action="store_true", help="skip the torch.compile path")
    parser.add_argument("--ns", type=int, nargs="+", default=list(NS))
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    backends = ["mask", "gather"] + ([] if args.no_fused else ["fused"])
    if args.memory_probe:
        print(json.dumps(memory_probe(args.ns[0], args.ks[0], args, backends)))
        return
    info = profiling.machine_info(device)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    rows = [run_case(n, k, args, device, backends) for n in args.ns for k in args.ks if k <= n]
    if not args.no_fused and not semanir.fused_available():
        print("note: torch.compile failed; the 'fused' columns ran the eager gather fallback")
    info["fused_compiled"] = semanir.fused_available() and not args.no_fused
    print(table(rows, backends))
    diffs = [v for r in rows for key, v in r.items() if key.endswith("max_abs_diff_vs_mask")]
    print(f"\nlargest |difference| from mask (outputs and gradients, all cases): {max(diffs, default=0):.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": info,
        "dim": DIM,
        "heads": HEADS,
        "tokens": args.tokens,
        "repeat": args.repeat,
        "rows": rows,
    }
    write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
