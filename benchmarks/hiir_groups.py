"""Hi-IR group attention on CPU: the fused SDPA kernel against plain batched matmuls, by group size.

One `LevelAttention._attend` call on 16 384 tokens (C = 180, 6 heads, half-width q, k) cut into
groups of n tokens, through each of its two CPU paths: `hiir.SMALL_GROUP_TOKENS` decides which one a
group size takes, and this is the measurement behind its value. Median of `--repeat` calls after one
warm-up call, without autograd.

    python benchmarks/hiir_groups.py [--threads 1 2] [--repeat 9]

Writes benchmarks/results/hiir_groups.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
from irformers import profiling  # noqa: E402
from irformers.data.io import write_text  # noqa: E402
from irformers.models import hiir  # noqa: E402

DIM, HEADS, TOKENS = 180, 6, 128 * 128
SIDES = (2, 4, 8, 16)  # group grids: 4, 16, 64, 256 tokens


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(side: int, repeat: int) -> dict:
    attn = hiir.LevelAttention(DIM, HEADS, 3, qk_dim=DIM // 2, window=1, region=1).eval()
    n = side * side
    t = torch.randn(TOKENS // n, n, 2 * DIM)
    row = {"tokens_per_group": n}
    for name, threshold in (("fused_ms", 0), ("matmul_ms", n)):
        hiir.SMALL_GROUP_TOKENS = threshold
        with torch.inference_mode():
            row[name] = median_ms(lambda: attn._attend(t, (side, side)), repeat)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    default = hiir.SMALL_GROUP_TOKENS
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows += [{"threads": threads, **measure(side, args.repeat)} for side in SIDES]
    hiir.SMALL_GROUP_TOKENS = default
    data = {
        "machine": profiling.machine_info(torch.device("cpu")),
        "command": " ".join(["python benchmarks/hiir_groups.py", *sys.argv[1:]]),
        "tokens": TOKENS,
        "small_group_tokens": default,
        "rows": rows,
    }
    (HERE / "results").mkdir(exist_ok=True)
    write_text(HERE / "results" / "hiir_groups.json", json.dumps(data, indent=1) + "\n")
    print(f"{data['command']}: {TOKENS} tokens, C {DIM}, {HEADS} heads; `SMALL_GROUP_TOKENS` = {default}\n")
    print("| threads | tokens per group | fused SDPA ms | matmuls ms | fused / matmuls |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = (r["threads"], r["tokens_per_group"], f"{r['fused_ms']:.1f}", f"{r['matmul_ms']:.1f}")
        print("| " + " | ".join(map(str, cells)) + f" | {r['fused_ms'] / r['matmul_ms']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
