#!/usr/bin/env bash
# The synthetic chain on one GPU: worlds -> engine -> index -> channel check -> base policy (ZS) -> evaluation.
#
#   bash scripts/gpu_synth_chain.sh STAGE [gpu|cpu] [extra key=value overrides ...]
#   STAGE: worlds | engine | index | channel | base | eval | all      (each stage < 10 min on an H200)
#   gpu (default): synth.preset=large rendered at 192x128, engine size small (12.8 M), workspace/gpu
#   gpu-lo:        the same at the default 96x64 (the budget A/B), workspace/gpu-lo
#   cpu:           synth.preset=tiny at 96x64, engine size tiny, a few steps (a smoke run), workspace/cpu
# On the lent GPU machine: `bash bench/device_setup.sh && bash scripts/gpu_synth_chain.sh worlds`, then
# one call per stage (the workspace lives under workspace/, git-ignored, kept while the machine is warm).
# Every stage resumes when rerun (worlds, index, base; engine and channel redo their work).
#
# Why 192x128: at the default 96x64 one merged visual token covers 32x32 px and a small object is 14 px
# across (environment.md §11: shape and action differences stayed near chance). Rendering at 192x128 and
# sampling at that size (datasets.synth.video min/max_pixels = 192*128) gives 24 merged tokens per
# 2-frame group instead of 6 and a small object 28 px across. The A/B at the old budget: the profile
# gpu-lo (same recipe at 96x64, workspace/gpu-lo): stages worlds, engine, index, channel.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:?usage: gpu_synth_chain.sh STAGE [gpu|cpu] [overrides...]}
PROFILE=${2:-gpu}
shift $(( $# >= 2 ? 2 : 1 ))
VSR1=(python -m videosearch_r1.cli)

if [[ $PROFILE == gpu || $PROFILE == gpu-lo ]]; then
  WS=workspace/$PROFILE
  COMMON=(workspace=$WS synth.preset=large synth.workers=16)
  [[ $PROFILE == gpu ]] && COMMON+=(synth.width=192 synth.height=128
                                    datasets.synth.video.min_pixels=24576 datasets.synth.video.max_pixels=24576)
  # engine training does not resume: if the progress bar shows > 0.45 s/step, lower engine_train.steps so
  # the command stays under the 10-minute limit (decoding the world's clips first takes ~1-2 min)
  ENGINE=(engine_train.size=small engine_train.steps=1000 engine_train.batch_size=256 engine_train.lr=3e-4
          engine_train.warmup=100 engine_train.world_families=1500 "engine_train.eval_splits=[test]"
          engine.batch_size=256)
  ENGINE_WORLD=1500 BASE_WORLD=600
  CHANNEL=(channel.queries=512 channel.steps=600 channel.eval_every=100 channel.batch_size=512 engine.batch_size=512)
  # the base run resumes from its last checkpoint: rerun the stage if the 10-minute limit stops it;
  # clip_cache holds every clip of its world after the first pass (~2.4 MB each at 192x128)
  BASE=(base.world_families=600 base.steps=1500 base.batch_size=32 base.lr=3e-4 base.lr_vision=1e-4 base.warmup=100
        base.eval_videos=64 train.checkpoint_every=250 train.schedule=cosine train.min_lr_ratio=0.1
        train.clip_cache=2500)
  LIMIT=(--limit 1000)  # the first 1,000 test queries (infer resumes: rerun to go on)
else
  WS=workspace/cpu
  COMMON=(workspace=$WS synth.preset=tiny)
  ENGINE=(engine_train.size=tiny engine_train.steps=30 engine_train.batch_size=16 engine_train.world_families=6
          "engine_train.eval_splits=[test]")
  ENGINE_WORLD=6 BASE_WORLD=2
  CHANNEL=(channel.queries=0 channel.steps=40 channel.eval_every=20)
  BASE=(base.world_families=2 base.steps=4 base.batch_size=4 base.eval_videos=2)
  LIMIT=(--limit 4)
fi
COMMON+=("$@")

run() { echo "==> vsr1 $*"; "${VSR1[@]}" "$@"; }

worlds() {  # the benchmark, the engine's world (seed +7919) and the base policy's world (seed +104729)
  run synth "${COMMON[@]}"
  run synth "${COMMON[@]}" synth.seed=7919 "synth.families={train: $ENGINE_WORLD, val: 0, test: 0}" \
      datasets.synth.root=$WS/data/synth-engine/raw synth.sheet_families=0
  run synth "${COMMON[@]}" synth.seed=104729 "synth.families={train: $BASE_WORLD, val: 0, test: 0}" \
      datasets.synth.root=$WS/data/synth-base/raw synth.sheet_families=0
}
engine() { run engine train "${COMMON[@]}" "${ENGINE[@]}" run_name=engine-train; }
index() {
  run index synth --split test "${COMMON[@]}" engine.batch_size=256
  run index synth --split train "${COMMON[@]}" engine.batch_size=256
}
channel() {  # the ceiling with raw latents, the reference insert, then the default (scaled latents, last:
             # its channel.json is the one left beside the index)
  run engine channel synth --split test "${COMMON[@]}" "${CHANNEL[@]}" channel.scale=none channel.lr=0.01 \
      run_name=channel-raw
  run engine channel synth --split test "${COMMON[@]}" "${CHANNEL[@]}" engine.soft_insert=reference \
      run_name=channel-reference
  run engine channel synth --split test "${COMMON[@]}" "${CHANNEL[@]}" run_name=channel-embed
}
base() { run train base "${COMMON[@]}" "${BASE[@]}" run_name=base-synth; }
evaluate() {  # engine alone and the ZS base policy on the same test queries
  run infer synth --split test "${COMMON[@]}" agent.method=engine run_name=engine-alone "${LIMIT[@]}"
  run infer synth --split test "${COMMON[@]}" --checkpoint $WS/runs/base-synth/policy run_name=zs-base \
      agent.batch_size=32 "${LIMIT[@]}"
  run report $WS/runs/engine-alone/predictions.jsonl $WS/runs/zs-base/predictions.jsonl "${COMMON[@]}"
}

case $STAGE in
  worlds) worlds ;; engine) engine ;; index) index ;; channel) channel ;; base) base ;; eval) evaluate ;;
  all) worlds; engine; index; channel; base; evaluate ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
