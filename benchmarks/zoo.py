"""Scores of the models shipped in the package, and of the reference rows, for the README's table.

Each shipped model is evaluated with one `irformers test` command on every relevant set and level
(printed next to its rows), and the reference pseudo-model (bicubic, or the degraded input itself)
with the same command. The training summary (data, steps, time) comes from the weights' metadata.

    python benchmarks/zoo.py [--only PRESET ...] [--data-root DIR]
    python benchmarks/zoo.py --speed [--threads 2] [--repeat 3]

Writes benchmarks/results/zoo.json and prints the README table (markdown). `--speed` instead times
each shipped model restoring one 512x512 image on the CPU (`irformers bench`, the input side being
512 / scale), writes benchmarks/results/zoo_speed.json and prints that table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from itertools import groupby
from pathlib import Path

from irformers.data.io import write_text
from irformers.engine.checkpoint import read_metadata, training_stages
from irformers.inference import load_model
from irformers.models.presets import bundled_weights, get_preset

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "zoo.json"
SPEED_OUT = REPO / "benchmarks" / "results" / "zoo_speed.json"
SPEED_SIDE = 512  # output side of the timed restoration: a typical photo crop

# preset -> (the `irformers test` arguments, the reference pseudo-model)
SHIPPED = {
    "semanir-t-sr-x2": ("--task sr --scale 2 --dataset Set5,Set14,BSD100", "bicubic"),
    "hiir-t-sr-x2": ("--task sr --scale 2 --dataset Set5,Set14,BSD100", "bicubic"),
    "semanir-t-sr-x4": ("--task sr --scale 4 --dataset Set5,Set14,BSD100", "bicubic"),
    "semanir-t-denoise-gray": ("--task denoise --sigma 15,25,50 --dataset Set12,BSD68", "identity"),
    "hiir-t-denoise-color": ("--task denoise --sigma 15,25,50 --dataset CBSD68,Kodak24,McMaster", "identity"),
    "hiir-t-jpeg-gray": ("--task jpeg --gray --quality 10,20,30,40 --dataset Classic5,LIVE1", "identity"),
    "semanir-t-jpeg-gray": ("--task jpeg --gray --quality 10,20,30,40 --dataset Classic5,LIVE1", "identity"),
}


def command(model: str, args: str) -> str:
    return f"irformers test --model {model} {args} --device cpu --json"


def irformers_json(cmd: str, env: dict) -> dict | list:
    """Runs an `irformers ... --json` command line in its own process and returns what it printed."""
    argv = [sys.executable, "-m", "irformers", *cmd.split()[1:]]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def run(model: str, args: str, env: dict) -> list[dict]:
    rows = irformers_json(command(model, args), env)
    return rows if isinstance(rows, list) else [rows]


def speed(presets: list[str], threads: int, repeat: int, env: dict) -> dict:
    """Median CPU seconds per 512x512 restoration, each model timed in its own `irformers bench`."""
    rows, machine = [], None
    for preset in presets:
        side = SPEED_SIDE // get_preset(preset).scale
        cmd = f"irformers bench {preset} --size {side} --threads {threads} --repeat {repeat} --no-memory"
        report = irformers_json(f"{cmd} --json", env)
        machine = report["machine"]
        rows.append({"model": preset, "command": cmd, **report["rows"][0]})
        print(f"{preset}: {rows[-1]['median_ms'] / 1e3:.2f} s", file=sys.stderr, flush=True)
    return {"machine": machine, "rows": rows}


def speed_markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Wall-clock seconds to restore one {SPEED_SIDE}x{SPEED_SIDE} image ({m['cpu']}, "
        f"{m['threads']} threads, {m['dtype']}, torch {m['torch']}; median of the timed calls):",
        "",
        "| model | input | GMACs | seconds | command |",
        "|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        _, c, h, w = r["input"]
        lines.append(
            f"| {r['model']} | {c} x {h} x {w} | {r['macs'] / 1e9:.1f} | {r['median_ms'] / 1e3:.2f} | "
            f"`{r['command']}` |"
        )
    return "\n".join(lines)


def level(row: dict) -> str:
    if row["task"] == "sr":
        return f"x{row['scale']} (Y)"
    if row["task"] == "denoise":
        return f"σ {row['sigma']:g}"
    return f"q {row['quality']} (PSNR-B {row['psnr_b']:.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="presets to evaluate (default: every shipped one)")
    parser.add_argument(
        "--data-root", default=os.environ.get("IRFORMERS_DATA", str(REPO.parent / "shared" / "datasets"))
    )
    parser.add_argument("--speed", action="store_true", help="time the models instead of scoring them")
    parser.add_argument("--threads", type=int, default=2, help="--speed: CPU threads")
    parser.add_argument("--repeat", type=int, default=3, help="--speed: timed calls per model")
    args = parser.parse_args()
    env = {**os.environ, "IRFORMERS_DATA": str(Path(args.data_root).resolve()), "CUDA_VISIBLE_DEVICES": ""}
    if args.speed:
        results = speed(args.only or list(SHIPPED), args.threads, args.repeat, env)
        write_text(SPEED_OUT, json.dumps(results, indent=1) + "\n")
        print(speed_markdown(results))
        return 0
    for preset in args.only or SHIPPED:
        weights = bundled_weights(preset)
        if weights is None:
            print(f"{preset}: no weights shipped, skipped", file=sys.stderr)
            continue
        test_args, reference = SHIPPED[preset]
        meta = read_metadata(weights)
        entry = {
            "command": command(preset, test_args),
            "reference_command": command(reference, test_args),
            "params": sum(p.numel() for p in load_model(preset).parameters()),
            "training": meta.get("training"),
            "size_bytes": weights.stat().st_size,
            "rows": run(preset, test_args, env),
            "reference_rows": run(reference, test_args, env),
        }
        # merged into the file as it is now, after each model: other runs and partial runs keep theirs
        results = {**(json.loads(OUT.read_text()) if OUT.exists() else {}), preset: entry}
        write_text(OUT, json.dumps(results, indent=1) + "\n")
        print(f"{preset}: done", file=sys.stderr, flush=True)
    print(markdown(json.loads(OUT.read_text()) if OUT.exists() else {}))
    return 0


def _shown(cmd: str) -> str:
    """The command as a user types it: a table instead of JSON, and the default device."""
    return cmd.removesuffix(" --device cpu --json")


def markdown(results: dict) -> str:
    lines = []
    for preset, r in results.items():
        t = r["training"] or {}
        data = ", ".join(d["target"] for d in t.get("data", []))
        stages = training_stages(t)  # a fine-tuned model: its init's summary first
        by_task = [(task, list(group)) for task, group in groupby(stages, key=lambda s: s.get("task"))]
        steps = ", then ".join(  # a model fine-tuned from another task's says which steps were which
            " + ".join(str(s.get("steps")) for s in group) + (f" ({task})" if len(by_task) > 1 else "")
            for task, group in by_task
        )
        minutes = " + ".join(f"{s.get('seconds', 0) / 60:.0f}" for s in stages)
        lines += [
            f"**{preset}** — {r['params'] / 1e6:.2f} M parameters, trained on {data} for "
            f"{steps} steps in {minutes} min (CPU{', in stages' if len(stages) > 1 else ''}), "
            f"{r['size_bytes'] / 2**20:.1f} MiB. "
            f"`{_shown(r['command'])}`; reference: `{_shown(r['reference_command'])}`",
            "",
            "| set | setting | model PSNR / SSIM | reference PSNR / SSIM |",
            "|---|---|---|---|",
        ]
        for row, ref in zip(r["rows"], r["reference_rows"], strict=True):
            lines.append(
                f"| {row['dataset']} | {level(row)} | {row['psnr']:.2f} / {row['ssim']:.4f} | "
                f"{ref['psnr']:.2f} / {ref['ssim']:.4f} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
