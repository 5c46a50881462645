"""Timed quick CPU training runs: do the quick recipes learn something real in minutes?

Runs, one at a time, each in its own process:
- `configs/quick-semanir-sr-x2.yaml` and `configs/quick-hiir-sr-x2.yaml`: tiny SemanIR / Hi-IR, x2 SR on
  T91, scored on Set5 (Y-PSNR) against the bicubic baseline (target: +1 dB);
- `configs/quick-semanir-denoise-gray.yaml`: tiny SemanIR U-Net, sigma-25 gray denoising on Train400,
  scored on Set12 against the noisy input (target: +6 dB).

Each run is `irformers train RECIPE` (wall time measured around the whole command, start-up included)
followed by `irformers test --model runs/<name>/model.safetensors --json` on the saved weights and the
same command for the baseline pseudo-model.

    python benchmarks/train_quick.py [--runs semanir-sr-x2,hiir-sr-x2,semanir-denoise-gray]
                                     [--data-root DIR] [--out-dir runs] [--threads 2]

Writes `benchmarks/results/train_quick.json` and prints a markdown table. Not part of CI (6-8 minutes a
run on 2 quiet cores, about 21 minutes for the three); the weights stay under `--out-dir` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from irformers import profiling
from irformers.data.io import write_text

REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "semanir-sr-x2": {
        "recipe": "configs/quick-semanir-sr-x2.yaml",
        "test": ["--task", "sr", "--scale", "2", "--dataset", "Set5"],
        "baseline": "bicubic",
        "target_gain_db": 1.0,
    },
    "hiir-sr-x2": {
        "recipe": "configs/quick-hiir-sr-x2.yaml",
        "test": ["--task", "sr", "--scale", "2", "--dataset", "Set5"],
        "baseline": "bicubic",
        "target_gain_db": 1.0,
    },
    "semanir-denoise-gray": {
        "recipe": "configs/quick-semanir-denoise-gray.yaml",
        "test": ["--task", "denoise", "--sigma", "25", "--dataset", "Set12"],
        "baseline": "identity",
        "target_gain_db": 6.0,
    },
}


def _irformers(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "irformers", *args], env=env, cwd=REPO, capture_output=True, text=True
    )


def _test(model: str, test_args: list[str], env: dict) -> dict:
    done = _irformers(["test", "--model", model, *test_args, "--device", "cpu", "--json"], env)
    if done.returncode != 0:
        raise RuntimeError(f"irformers test --model {model} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def run_one(name: str, spec: dict, out_dir: Path, env: dict) -> dict:
    recipe = REPO / spec["recipe"]
    run_name = recipe.stem
    overrides = [f"run.out_dir={out_dir}", f"run.name={run_name}", "run.resume=never"]
    start = time.perf_counter()
    done = _irformers(["train", str(recipe), *overrides], env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"irformers train {recipe.name} failed:\n{done.stderr[-3000:]}")
    weights = out_dir / run_name / "model.safetensors"
    log = [json.loads(line) for line in (out_dir / run_name / "log.jsonl").read_text().splitlines()]
    end = [r for r in log if r["kind"] == "end"][-1]
    model = _test(str(weights), spec["test"], env)
    baseline = _test(spec["baseline"], spec["test"], env)
    gain = model["psnr"] - baseline["psnr"]
    return {
        "run": name,
        "recipe": spec["recipe"],
        "weights": str(weights),
        "steps": end["steps"],
        "train_seconds": end["seconds"],
        "wall_seconds": round(wall, 1),
        "dataset": model["dataset"],
        "psnr": round(model["psnr"], 3),
        "ssim": round(model["ssim"], 4),
        "baseline": spec["baseline"],
        "baseline_psnr": round(baseline["psnr"], 3),
        "gain_db": round(gain, 3),
        "target_gain_db": spec["target_gain_db"],
        "passed": bool(gain >= spec["target_gain_db"] and wall < 600),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, from {', '.join(RUNS)}")
    parser.add_argument(
        "--data-root", default=os.environ.get("IRFORMERS_DATA", str(REPO.parent / "shared" / "datasets"))
    )
    parser.add_argument("--out-dir", default=str(REPO / "runs"))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch and OpenMP)")
    args = parser.parse_args()
    env = {
        **os.environ,
        "IRFORMERS_DATA": str(Path(args.data_root).resolve()),
        "OMP_NUM_THREADS": str(args.threads),
        "CUDA_VISIBLE_DEVICES": "",
    }
    results = []
    for name in args.runs.split(","):
        result = run_one(name, RUNS[name], Path(args.out_dir).resolve(), env)
        results.append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
    out = REPO / "benchmarks" / "results" / "train_quick.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {  # dtype: the quick recipes train in fp32 (no train.precision)
        **profiling.machine_info(torch.device("cpu")),
        "threads": args.threads,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_text(out, json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    print("| run | steps | wall (s) | set | PSNR | baseline | gain (dB) | target | passed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['run']} | {r['steps']} | {r['wall_seconds']:.0f} | {r['dataset']} | {r['psnr']:.2f} | "
            f"{r['baseline']} {r['baseline_psnr']:.2f} | {r['gain_db']:+.2f} | +{r['target_gain_db']:.0f} | "
            f"{'yes' if r['passed'] else 'no'} |"
        )
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
