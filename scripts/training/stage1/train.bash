#!/usr/bin/env bash
# Stage 1: SFT (token CE + InfoNCE of the refined query) from MODEL_PATH on the dataset's SFT rows.
#   [GPUS=0] [MODEL_PATH=ckpt] bash scripts/training/stage1/train.bash DATASET [key=value ...]
# = vsr1 train sft (videosearch_r1/train/). DRY_RUN=1 prints the command, one argument a line; VSR1 picks the executable.
set -euo pipefail
exec ${DRY_RUN:+printf '%s\n'} env CUDA_VISIBLE_DEVICES="${GPUS:-0}" "${VSR1:-vsr1}" train sft \
  "${1:?usage: train.bash DATASET}" ${MODEL_PATH:+--checkpoint "$MODEL_PATH"} "${@:2}"
