#!/usr/bin/env bash
# The GPU check of issue 12 (item 7), one script: `make bench DEVICE=cuda`, the tests that need a GPU
# (plus the CLI/recipe tests on a machine with CUDA), and the Camelyon17 recipe for a few hundred
# steps at full size (torchcfm's 35.7 M CIFAR-10 network, batch 128, 32 and 96 px, every method).
# Writes benchmarks/results-<gpu>.{json,md} (make bench) and benchmarks/gpu-check-<gpu>/ (logs,
# timings.json, timings.md, the recipe's eval.json files).
#
#   scripts/gpu_check.sh                                   # synthetic data, random weights
#   CKPT=otcfm_cifar10_weights_step_400000.pt WILDS_ROOT=/data/wilds scripts/gpu_check.sh
#
# Without CKPT / WILDS_ROOT it times the recipe on torchcfm's architecture with random weights and a
# synthetic Camelyon17 root (N_FAKE random 96x96 patches in the WILDS layout): timings are real, the
# metrics then mean nothing. Nothing is downloaded. Needs .venv (make setup) and one CUDA GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-300}
METHODS=${METHODS:-"scratch ft ft-ot l2-reg gft-drift gft-coupling reflow"}
SIZES=${SIZES:-"32 96"}
N_FAKE=${N_FAKE:-6000}
export PYTHONPATH=$PWD MPLBACKEND=Agg PYTHONHASHSEED=0

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible')"
GPU=$("$PY" -c "import torch, re; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name(0).lower()).strip('-'))")
OUT=benchmarks/gpu-check-$GPU
mkdir -p "$OUT"
TIMES="$OUT/timings.tsv"
printf 'step\tseconds\tstatus\n' > "$TIMES"

timed() {  # timed NAME CMD...: run, log to $OUT/NAME.log, append the wall time; keep going on failure
  local name=$1; shift
  local t0 ms status=ok
  t0=$(date +%s%N)
  "$@" > "$OUT/$name.log" 2>&1 || status="failed($?)"
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%s\t%d.%03d\t%s\n' "$name" $((ms / 1000)) $((ms % 1000)) "$status" >> "$TIMES"
  echo "[gpu_check] $name: $status"
}

# 1. benchmarks (torchcfm vs gftlib steps, GFT overhead, OT, sampling, data path at 96 px)
timed bench make -o .venv/.installed bench DEVICE=cuda
# 2. tests that need (or change behaviour with) a GPU, and the CLI end to end on this machine
timed tests_gpu "$PY" -m pytest -q -p no:xdist tests/training/test_fastpath.py tests/training/test_train.py tests/core/test_bad_inputs.py \
    tests/cli/test_cli.py tests/cli/test_cli_recipe.py tests/core/test_loss_reduction.py tests/benchmarks/test_bench_data.py

# 3. the recipe at full size for $STEPS steps
WORK="$OUT/recipe"
mkdir -p "$WORK"
if [[ -z "${CKPT:-}" ]]; then
  CKPT="$WORK/otcfm_random.pt"
  "$PY" -c "
import torch, sys
from gftlib.models.torchcfm import TorchCFMVelocity, save_torchcfm
torch.manual_seed(0); m = TorchCFMVelocity(); save_torchcfm(m, sys.argv[1], ema_model=m, step=0)" "$CKPT"
fi
if [[ -z "${WILDS_ROOT:-}" ]]; then
  WILDS_ROOT="$WORK/wilds"
  "$PY" -c "
import sys; sys.path.insert(0, 'tests/cli')
from pathlib import Path
from test_cli_recipe import fake_camelyon17
fake_camelyon17(Path(sys.argv[1]), n_train=int(sys.argv[2]), n_val=int(sys.argv[2]) // 2)" "$WILDS_ROOT" "$N_FAKE"
fi
for S in $SIZES; do
  for M in $METHODS; do
    timed "recipe_${S}px_${M}" env CKPT="$CKPT" WILDS_ROOT="$WILDS_ROOT" OUT="$WORK/runs" SIZES="$S" METHODS="$M" \
        STEPS="$STEPS" N_DATA=2000 N_EVAL=1000 CACHE=2000 TRAJ=256 CKPT_EVERY=100 GFT="$PY -m gftlib" \
        EXTRA="--no-progress --device cuda" TRAIN_EXTRA="--amp bf16" bash scripts/recipe_camelyon17.sh
  done
done

"$PY" - "$TIMES" "$OUT" <<'PYEOF'
import csv, json, sys
from pathlib import Path
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
out = Path(sys.argv[2])
evals = {str(p.relative_to(out)): json.loads(p.read_text())["metrics"] for p in sorted(out.glob("recipe/runs/*/*/eval.json"))}
json.dump({"timings": rows, "evals": evals}, open(out / "timings.json", "w"), indent=2)
md = ["| step | seconds | status |", "|---|---|---|"] + [f"| {r['step']} | {r['seconds']} | {r['status']} |" for r in rows]
(out / "timings.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PYEOF
echo "[gpu_check] wrote benchmarks/results-$GPU.{json,md} and $OUT/ - commit them"
