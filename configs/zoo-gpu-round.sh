#!/usr/bin/env bash
# Model zoo (issue 8): continue models that miss their targets on one GPU, side by side, in a fixed time.
# By default only the gray denoiser (the one target still missed); MODELS="semanir-t-denoise-gray hiir-t-jpeg-gray"
# trains both. A short probe of each recipe measures its speed on this machine; the real runs then get the step count
# that fills BUDGET_S, so that their cosine schedules end inside it. Each model is then scored on its target
# set in fp32, the precision of the README's table (`irformers test` defaults to it; said here too, explicitly).
#
#   IRFORMERS_DATA=../shared/datasets BUDGET_S=1800 bash configs/zoo-gpu-round.sh
#
# Needs the CPU-trained weights each recipe starts from (train.init) and, under $IRFORMERS_DATA, Train400,
# Set12, BSD68 and Classic5.
# Writes $RUNS/zoo-gpu-*/ and puts three files per model in $OUT (default $RUNS/zoo-gpu-round): the weights, the
# run's log.jsonl, and the output of the probe, the run and the scoring.
# To check the script itself on a machine without a GPU: DEVICE=cpu BUDGET_S=60 PROBE_STEPS=4
# EXTRA="data.batch_size=2 data.num_workers=1" (EXTRA: overrides for every run).
set -euo pipefail
BUDGET_S=${BUDGET_S:-1800}   # seconds of training for each model, both running side by side
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-runs}           # the run folders go under it (run.out_dir)
OUT=${OUT:-$RUNS/zoo-gpu-round}
PY=${PY:-python3}
PROBE_STEPS=${PROBE_STEPS:-60}
read -ra EXTRA <<<"${EXTRA:-}"
mkdir -p "$OUT"
read -ra MODELS <<<"${MODELS:-semanir-t-denoise-gray}"
declare -A SCORE=(
  [semanir-t-denoise-gray]="--task denoise --sigma 25 --dataset BSD68,Set12"
  [hiir-t-jpeg-gray]="--task jpeg --quality 10 --dataset Classic5"
)

train() {  # recipe name, extra overrides...
  local m=$1; shift
  $PY -m irformers train "configs/zoo-gpu-$m.yaml" run.device="$DEVICE" run.out_dir="$RUNS" "${EXTRA[@]}" "$@"
}

pids=()
for m in "${MODELS[@]}"; do  # the probe, side by side as the real runs will be; its last third is timed
  train "$m" train.steps="$PROBE_STEPS" log.every=$((PROBE_STEPS / 3)) checkpoint.every="$PROBE_STEPS" \
    train.warmup_steps=0 val.sets=[] run.resume=never \
    run.name="probe-$m" >"$OUT/$m.out" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done  # a failed probe stops the round (set -e), its .out says why

for m in "${MODELS[@]}"; do
  steps=$($PY - "$RUNS/probe-$m" "$BUDGET_S" <<'EOF'
import json, sys, yaml
run, budget = sys.argv[1], float(sys.argv[2])
rate = [r for r in map(json.loads, open(f"{run}/log.jsonl")) if r["kind"] == "train"][-1]["samples_per_s"]
batch = yaml.safe_load(open(f"{run}/config.yaml"))["data"]["batch_size"]
print(max(200, int(0.9 * budget * rate / batch)))  # 10% for the checkpoints and the final validation
EOF
)
  echo "$m: $steps steps" | tee -a "$OUT/$m.out"
  # never: a run folder left by an earlier round would be resumed (or found finished) instead
  train "$m" train.steps="$steps" run.resume=never >>"$OUT/$m.out" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]:${#MODELS[@]}}"; do wait "$pid"; done  # a failed run is not scored as if it finished

for m in "${MODELS[@]}"; do
  cp "$RUNS/zoo-gpu-$m/model.safetensors" "$OUT/$m.safetensors"
  cp "$RUNS/zoo-gpu-$m/log.jsonl" "$OUT/$m.log.jsonl"
  # shellcheck disable=SC2086  # SCORE holds several arguments
  $PY -m irformers test --model "$OUT/$m.safetensors" ${SCORE[$m]} --precision fp32 --device "$DEVICE" \
    2>&1 | tee -a "$OUT/$m.out"
done
