#!/usr/bin/env bash
# Fetch the VERIFIED FIG annotation files into the raw layout (validated on arrival).
#   bash scripts/data_construct/download_verified_annotations.bash [charades|didemo|activitynet|all] [--mirror DIR]
# = vsr1 data annotations (videosearch_r1/data/raw.py). DRY_RUN=1 prints the command, one argument a line; VSR1 picks the executable.
set -euo pipefail
exec ${DRY_RUN:+printf '%s\n'} "${VSR1:-vsr1}" data annotations "${1:-all}" "${@:2}"
