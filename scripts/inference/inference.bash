#!/usr/bin/env bash
# The agent on a dataset's test split; --checkpoint takes a path, a hub id or an alias (didemo-grpo, ...).
#   [EVAL_GPUS=0] [MAX_TURN=2] bash scripts/inference/inference.bash DATASET --checkpoint PATH [key=value ...]
# = vsr1 infer (videosearch_r1/agent/infer.py). DRY_RUN=1 prints the command, one argument a line; VSR1 picks the executable.
set -euo pipefail
exec ${DRY_RUN:+printf '%s\n'} env CUDA_VISIBLE_DEVICES="${EVAL_GPUS:-0}" "${VSR1:-vsr1}" infer \
  "${1:?usage: inference.bash DATASET --checkpoint PATH}" ${MAX_TURN:+agent.max_turns=$MAX_TURN} "${@:2}"
