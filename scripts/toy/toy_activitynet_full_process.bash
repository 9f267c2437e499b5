#!/usr/bin/env bash
# The whole process on about 10 ActivityNet videos per split: data, engine, base, SFT, GRPO, inference, report.
#   [TOY_GPUS=0] [TOY_ACTIVITYNET_VIDEO_SOURCE=DIR] [RUN_FROM_STEP=S] bash scripts/toy/toy_activitynet_full_process.bash
# = vsr1 toy activitynet (the synthetic world when no videos are given). DRY_RUN=1 prints the command, one argument a line.
set -euo pipefail
exec ${DRY_RUN:+printf '%s\n'} env CUDA_VISIBLE_DEVICES="${TOY_GPUS:-0}" "${VSR1:-vsr1}" toy activitynet \
  ${TOY_ACTIVITYNET_VIDEO_SOURCE:+--video-source "$TOY_ACTIVITYNET_VIDEO_SOURCE"} \
  ${RUN_FROM_STEP:+--from-step "$RUN_FROM_STEP"} "$@"
