#!/usr/bin/env bash
# Missing, corrupt and extra raw videos against the annotation ids (each named; exit 1 if any missing/corrupt).
#   [ANNO_ROOT=DIR] [VIDEO_BASE=DIR] bash scripts/data_construct/check_raw_videos.bash DATASET [--deep]
# = vsr1 data check (videosearch_r1/data/raw.py). DRY_RUN=1 prints the command, one argument a line; VSR1 picks the executable.
set -euo pipefail
exec ${DRY_RUN:+printf '%s\n'} "${VSR1:-vsr1}" data check "${1:?usage: check_raw_videos.bash DATASET}" \
  ${ANNO_ROOT:+--anno-root "$ANNO_ROOT"} ${VIDEO_BASE:+--video-root "$VIDEO_BASE"} "${@:2}"
