#!/usr/bin/env bash
# Create the raw layout of a dataset and print where its annotation files and raw videos go.
#   bash scripts/data_construct/prepare_raw_layout.bash [charades|didemo|activitynet|all] [key=value ...]
# = vsr1 data layout (videosearch_r1/data/raw.py). DRY_RUN=1 prints the command, one argument a line; VSR1 picks the executable.
set -euo pipefail
exec ${DRY_RUN:+printf '%s\n'} "${VSR1:-vsr1}" data layout "${1:-all}" "${@:2}"
