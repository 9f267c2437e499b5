#!/usr/bin/env bash
# Build everything from raw videos: splits, frame store, embeddings + index, hard negatives, SFT/GRPO rows.
#   [RUN_FROM_STEP=index|1..6] [ANNO_ROOT=DIR] [VIDEO_BASE=DIR] bash scripts/data_construct/start_from_scratch.bash DATASET
# = vsr1 build (videosearch_r1/data/build.py; our 6 steps, not the authors' 11). DRY_RUN=1 prints the command, one argument a line.
set -euo pipefail
exec ${DRY_RUN:+printf '%s\n'} "${VSR1:-vsr1}" build "${1:?usage: start_from_scratch.bash DATASET}" \
  ${RUN_FROM_STEP:+--from-step "$RUN_FROM_STEP"} ${ANNO_ROOT:+--anno-root "$ANNO_ROOT"} \
  ${VIDEO_BASE:+--video-root "$VIDEO_BASE"} "${@:2}"
