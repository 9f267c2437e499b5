#!/usr/bin/env bash
# Carry a GPU toy run's trained parts from one lease of the lent machine to the next. A lease is 30 minutes and
# the chain before GRPO (world, engine, indexes, base, SFT, their evaluations) takes ~1,650 s of it, so GRPO gets a
# lease of its own: this one packs what GRPO starts from, the next one unpacks it and runs the toy from GRPO on.
#
#   device run (same lease, once the toy's SFT is done): bash bench/toy_carry.sh pack engine sft evals
#       -> $OUT/toy_<group>.tgz.partNN (parts of 16,000,000 bytes; a call returns at most 8 files);
#       WAIT=600 bash bench/toy_carry.sh pack engine sft: first wait (up to 600 s in all) for those runs to finish
#   here:  bash bench/toy_carry.sh keep <files_at>      (-> .toyckpt/<group>/, git-ignored)
#   next lease, one call per group (a call carries at most 64 MiB; the machine keeps /tmp between calls):
#       device run (carry [".toyckpt/engine"]):      bash bench/toy_carry.sh stash
#       device run (carry [".toyckpt/sft", ".toyckpt/evals"]): bash bench/toy_carry.sh stash
#       device run (carry [".wheels"]): rm -rf /tmp/w && cp -a . /tmp/w && cd /tmp/w && bash bench/device_toy.sh resume 300
#   (device_toy.sh resume: unpack the stash into the toy's workspace, regenerate the world from its seed with
#   `vsr1 synth`, `verify` it against the packed world's checksums (a different world.json stops the resume; a
#   video that differs byte-wise is a warning), then `vsr1 toy --profile gpu --from-step grpo` in the background;
#   `wait` as after `start`.)
#   (from a base instead, e.g. an SFT recipe of its own: `vsr1 synth` + `vsr1 toy --from-step sft-data`.)
#   The carried SFT is weights only (no trainer_state.pt), so its fingerprint differs from the packed lease's:
#   an evaluation made there from it cannot be resumed here (`vsr1 infer` refuses: "different policy_weights").
#   Carry the finished evaluations; one left unfinished is rerun here under another run_name.
# groups: engine = models/synth-engine + indexes/ (the index vectors GRPO searches); base = runs/toy-base (the
# exported policy, summary.json, config.yaml); sft = runs/toy-sft-train
# (final/ without its optimizer state, summary.json, config.yaml); evals = the toy's evaluation runs before GRPO
# (summary, predictions, config: the final report's other rows).
set -uo pipefail
cd "$(dirname "$0")/.."
WS=${WS:-$PWD/workspace/toy-gpu}
STASH=${STASH:-/tmp/toyckpt}
PART=${PART:-16000000}  # bytes a part (a returned file may be 16 MiB)
MODE=${1:?usage: toy_carry.sh pack GROUP... | keep DIR | stash | unpack | verify}
shift

paths() {  # the workspace paths of a group (relative to $WS)
  case $1 in
    engine) echo models/synth-engine indexes  # + the world's checksums (verify) when there is a world
            [[ -f $WS/carried/world.md5 ]] && echo carried/world.md5; true ;;
    base) echo runs/toy-base/policy runs/toy-base/summary.json runs/toy-base/config.yaml ;;
    sft) echo runs/toy-sft-train/final runs/toy-sft-train/summary.json runs/toy-sft-train/config.yaml ;;
    evals) for r in toy-engine toy-zs toy-sft toy-sft-val toy-sft-nosqr toy-sft-oracle toy-sft-nosqr-oracle; do
             [[ -f $WS/runs/$r/summary.json ]] && echo "runs/$r"  # the finished ones
           done; true ;;
    *) echo "toy_carry: unknown group '$1' (engine, base, sft, evals)" >&2; return 1 ;;
  esac
}

ready() {  # whether a group's runs have finished (WAIT=S: pack waits up to S seconds for them)
  local r
  case $1 in
    engine) for r in train test val; do compgen -G "$WS/indexes/synth/*/$r/meta.json" > /dev/null || return 1; done ;;
    base) [[ -f $WS/runs/toy-base/summary.json ]] ;;
    sft) [[ -f $WS/runs/toy-sft-train/summary.json ]] ;;
    evals) for r in toy-engine toy-zs toy-sft toy-sft-val toy-sft-nosqr toy-sft-oracle toy-sft-nosqr-oracle; do
             [[ -f $WS/runs/$r/summary.json ]] || return 1
           done ;;
  esac
}

case $MODE in
  pack)
    out=${OUT:-/tmp/out}; mkdir -p "$out"
    t0=$(date +%s)
    for g in "$@"; do
      while ! ready "$g" && (( $(date +%s) - t0 < ${WAIT:-0} )); do sleep 5; done
      if [[ $g == engine && -f $WS/data/synth/raw/world.json ]]; then  # what the index was built on, to verify later
        mkdir -p "$WS/carried"
        (cd "$WS/data/synth/raw" && md5sum world.json videos/*.mp4) > "$WS/carried/world.md5"
      fi
      p=$(paths "$g") || exit 2
      [[ -n $p ]] || { echo "toy_carry: $g: nothing under $WS yet" >&2; exit 1; }
      for x in $p; do  # a run's summary.json is written last: its absence means the run has not finished
        [[ -e $WS/$x ]] || { echo "toy_carry: $g: $WS/$x does not exist (not finished yet?)" >&2; exit 1; }
      done
      # shellcheck disable=SC2086
      tar czf - -C "$WS" --exclude=trainer_state.pt --exclude='checkpoint-*' $p | split -b $PART -d - "$out/toy_$g.tgz.part"
      echo "packed $g: $(cat "$out"/toy_"$g".tgz.part* | wc -c) bytes in $(ls "$out"/toy_"$g".tgz.part* | wc -l) part(s)"
    done
    n=$(ls "$out" | wc -l)
    (( n > 8 )) && echo "WARNING: $n files under \$OUT, a call returns 8: pack fewer groups per call"
    exit 0 ;;
  keep)  # here: the returned parts -> .toyckpt/<group>/ (a group's older parts are replaced, never mixed in)
    src=${1:?keep needs the folder the parts came back to}
    groups=$(for f in "$src"/toy_*.tgz.part*; do [[ -f $f ]] || continue; g=$(basename "$f"); g=${g#toy_}
             echo "${g%%.tgz.part*}"; done | sort -u)
    [[ -n $groups ]] || { echo "toy_carry: no toy_*.tgz.part* files in $src" >&2; exit 1; }
    for g in $groups; do
      rm -rf ".toyckpt/$g" && mkdir -p ".toyckpt/$g" && cp "$src"/toy_"$g".tgz.part* ".toyckpt/$g/"
    done
    du -sh .toyckpt/* ;;
  stash)  # on the machine: the carried parts -> $STASH (outside the copied working tree)
    mkdir -p "$STASH"
    found=0
    for f in .toyckpt/*/toy_*.tgz.part*; do [[ -f $f ]] && cp "$f" "$STASH/" && found=1; done
    (( found )) || { echo "toy_carry: nothing carried under .toyckpt/" >&2; exit 1; }
    ls -la "$STASH" ;;
  unpack)  # on the machine: $STASH -> the workspace (the engine is required; base, sft, evals when stashed)
    mkdir -p "$WS"
    for g in engine base sft evals; do
      if ! ls "$STASH"/toy_"$g".tgz.part* > /dev/null 2>&1; then
        [[ $g != engine ]] && { echo "toy_carry: no $g stashed"; continue; }
        echo "toy_carry: no $g parts in $STASH" >&2; exit 1
      fi
      cat "$STASH"/toy_"$g".tgz.part* | tar xzf - -C "$WS" || { echo "toy_carry: $g parts do not unpack" >&2; exit 1; }
      echo "unpacked $g"
    done ;;
  verify)  # on the machine, after `vsr1 synth`: the regenerated world against the packed one's checksums
    sums=$WS/carried/world.md5
    [[ -f $sums ]] || { echo "toy_carry: no $sums (packed without a world): not verified"; exit 0; }
    bad=$(cd "$WS/data/synth/raw" && md5sum -c --quiet "$sums" 2>/dev/null | grep -c FAILED)
    if (cd "$WS/data/synth/raw" && ! md5sum -c --status <(grep " world.json$" "$sums")); then
      echo "toy_carry: the regenerated world.json differs from the packed one: the carried index and runs do not fit" >&2
      exit 1
    fi
    if (( bad > 0 )); then
      echo "toy_carry: WARNING: $bad regenerated video file(s) differ byte-wise from the packed world's (same spec)"
    else
      echo "toy_carry: the regenerated world equals the packed one ($(wc -l < "$sums") files)"
    fi ;;
  *) echo "toy_carry: unknown mode $MODE" >&2; exit 2 ;;
esac
