#!/usr/bin/env bash
# The authors' prepared data (frames, embeddings, annotations), converted into our layout on arrival.
#   bash scripts/data_construct/download_preextracted_data.bash [charades|didemo|activitynet|all] [--mirror DIR] [key=value ...]
# = vsr1 download data (videosearch_r1/data/download.py). DRY_RUN=1 prints the command, one argument a line; VSR1 picks the executable.
set -euo pipefail
exec ${DRY_RUN:+printf '%s\n'} "${VSR1:-vsr1}" download data "${1:-all}" "${@:2}"
