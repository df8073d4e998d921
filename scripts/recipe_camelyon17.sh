#!/usr/bin/env bash
# The paper's image setting with the `gft` command: torchcfm's CIFAR-10 OT-CFM checkpoint fine-tuned
# on WILDS Camelyon17 with every method, at 32 and 96 pixels, then sampled and evaluated.
#
#   CKPT=otcfm_cifar10_weights_step_400000.pt WILDS_ROOT=/data/wilds scripts/recipe_camelyon17.sh
#
# Every setting is an environment variable (defaults: the paper-scale run below). Re-running the
# same command resumes every unfinished step from its --checkpoint-dir; finished steps are skipped.
# tests/cli/test_cli_recipe.py runs this very script at dry-run size (2 steps, batch 2, random weights).
set -euo pipefail

CKPT=${CKPT:?set CKPT to torchcfm\'s CIFAR-10 OT-CFM release checkpoint (net_model/ema_model)}
WILDS_ROOT=${WILDS_ROOT:?set WILDS_ROOT to the folder holding camelyon17_v1.0/}
OUT=${OUT:-runs/camelyon17}
SIZES=${SIZES:-"32 96"}
METHODS=${METHODS:-"scratch ft ft-ot l2-reg gft-drift gft-coupling reflow"}
STEPS=${STEPS:-20000}          # fine-tuning steps per method
BATCH=${BATCH:-128}            # global batch (torchcfm's)
LR=${LR:-2e-4}                 # torchcfm's lr; with its loss reduction (mean over elements, the default
WARMUP=${WARMUP:-0}            #   for torchcfm networks) and grad clip 1
N_DATA=${N_DATA:-5000}         # Camelyon17 training patches held in memory (a seeded subset)
N_EVAL=${N_EVAL:-5000}         # generated and held-out (id_val) images per evaluation
NFE=${NFE:-50}                 # Euler steps for sampling and evaluation
N_GRID=${N_GRID:-64}           # samples shown in each method's samples.png
CACHE=${CACHE:-5000}           # pretrained pairs (gft-coupling, reflow)
TRAJ=${TRAJ:-1024}             # pretrained trajectories (gft-drift)
TIME_GRID=${TIME_GRID:-32}     # drift-cache times per trajectory
SOLVER_STEPS=${SOLVER_STEPS:-50}  # Euler steps of the frozen pretrained sampler (caches)
BETA0=${BETA0:-2.0}
CKPT_EVERY=${CKPT_EVERY:-1000} # checkpoint period (a killed run resumes from the last one)
INCEPTION=${INCEPTION:-}       # local inception-2015-12-05.pt: adds true FID
GFT=${GFT:-gft}                # e.g. "python -m gftlib" or "torchrun --nproc_per_node=8 -m gftlib"
EXTRA=${EXTRA:-}               # extra options for every command, e.g. "--no-progress --device cuda"
TRAIN_EXTRA=${TRAIN_EXTRA:-}   # extra options for finetune only, e.g. "--amp bf16"

METRICS=fd,path_length,nfe,w2
INC=()
if [[ -n "$INCEPTION" ]]; then METRICS=$METRICS,fid; INC=(--inception "$INCEPTION"); fi
DATA="wilds-camelyon17:$WILDS_ROOT"

for S in $SIZES; do
  D="$OUT/$S"
  mkdir -p "$D/pretrained"
  # the pretrained model itself (same network at any image side: convolutions are size-free)
  [[ -f "$D/pretrained/eval.json" ]] || $GFT eval --weights "torchcfm:$CKPT" --image-size "$S" --data "$DATA" \
      --metrics "$METRICS" "${INC[@]}" --num-samples "$N_EVAL" --n-ref "$N_EVAL" --nfe "$NFE" \
      --checkpoint-dir "$D/pretrained/ckpt" --out "$D/pretrained/eval.json" $EXTRA
  for M in $METHODS; do
    R="$D/$M"
    mkdir -p "$R"
    $GFT finetune --pretrained "torchcfm:$CKPT" --data "$DATA" --image-size "$S" --method "$M" \
        --steps "$STEPS" --batch-size "$BATCH" --lr "$LR" --warmup-steps "$WARMUP" --grad-clip 1 \
        --ema-decay 0.9999 --n-data "$N_DATA" --beta0 "$BETA0" --cache-size "$CACHE" --n-trajectories "$TRAJ" \
        --time-grid "$TIME_GRID" --solver-steps "$SOLVER_STEPS" --checkpoint-dir "$R/ckpt" --checkpoint-every "$CKPT_EVERY" \
        --out "$R/weights.pt" --torchcfm-out "$R/torchcfm.pt" --history "$R/history.json" $EXTRA $TRAIN_EXTRA
    $GFT sample --weights "$R/weights.pt" --num-samples "$N_GRID" --nfe "$NFE" --out "$R/samples.npz" \
        --grid "$R/samples.png" $EXTRA
    $GFT eval --weights "$R/weights.pt" --data "$DATA" --metrics "$METRICS" "${INC[@]}" \
        --num-samples "$N_EVAL" --n-ref "$N_EVAL" --nfe "$NFE" --checkpoint-dir "$R/ckpt-eval" \
        --out "$R/eval.json" $EXTRA
  done
done
echo "done: $OUT/<size>/<method>/eval.json"
