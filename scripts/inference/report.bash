#!/usr/bin/env bash
# Metric table, result JSON and plots of one or more runs.
#   bash scripts/inference/report.bash RUN/predictions.jsonl [RUN2/predictions.jsonl ...]
# = vsr1 report (videosearch_r1/agent/report.py). DRY_RUN=1 prints the command, one argument a line; VSR1 picks the executable.
set -euo pipefail
exec ${DRY_RUN:+printf '%s\n'} "${VSR1:-vsr1}" report "$@"
