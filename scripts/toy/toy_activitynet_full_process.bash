#!/usr/bin/env bash
# The whole process at toy size: data, engine, base, SFT, GRPO, inference, report (vsr1 toy, videosearch_r1/toy.py).
#   [TOY_GPUS=0] [TOY_ACTIVITYNET_VIDEO_SOURCE=DIR [ANNO_ROOT=DIR]] [RUN_FROM_STEP=step] bash scripts/toy/toy_activitynet_full_process.bash
# With TOY_ACTIVITYNET_VIDEO_SOURCE: about 10 ActivityNet videos per split from DIR (FIG files from ANNO_ROOT, else
# the dataset's annotation folder); without: the synthetic world. DRY_RUN=1 prints the command, one argument a line;
# VSR1 picks the executable.
set -euo pipefail
exec ${DRY_RUN:+printf '%s\n'} env CUDA_VISIBLE_DEVICES="${TOY_GPUS:-0}" "${VSR1:-vsr1}" toy \
  ${TOY_ACTIVITYNET_VIDEO_SOURCE:+--dataset activitynet --video-source "$TOY_ACTIVITYNET_VIDEO_SOURCE"} \
  ${TOY_ACTIVITYNET_VIDEO_SOURCE:+${ANNO_ROOT:+--annotations "$ANNO_ROOT"}} \
  ${RUN_FROM_STEP:+--from-step "$RUN_FROM_STEP"} "$@"
