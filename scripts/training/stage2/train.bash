#!/usr/bin/env bash
# Stage 2: GRPO from the Stage 1 checkpoint MODEL_PATH.
#   [GPUS=0] [MODEL_PATH=ckpt] bash scripts/training/stage2/train.bash DATASET [key=value ...]
# = vsr1 train grpo (videosearch_r1/train/). DRY_RUN=1 prints the command, one argument a line; VSR1 picks the executable.
set -euo pipefail
exec ${DRY_RUN:+printf '%s\n'} env CUDA_VISIBLE_DEVICES="${GPUS:-0}" "${VSR1:-vsr1}" train grpo \
  "${1:?usage: train.bash DATASET}" ${MODEL_PATH:+--checkpoint "$MODEL_PATH"} "${@:2}"
