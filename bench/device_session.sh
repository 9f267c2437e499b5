#!/usr/bin/env bash
# One lease of the lent H200, planned for its limits (~30 device-minutes a session, 10 min a command, the
# machine released ~30 s after a call): `vsr1 toy --profile gpu` runs in the background the whole time
# (bench/device_toy.sh) while the 2B-shape benches run one after another in the foreground of the calls.
# The benches therefore share the GPU with a small training job (12.8 M parameters, mostly CPU-bound):
# docs/benchmarks.md says so beside each figure. Every call ends by copying what exists to $OUT.
# Each bench runs capped at BENCH_MEM (share of the GPU's memory, default 0.6): on 2026-12-01 the GRPO
# bench took 128 GB and the toy's engine training beside it died of CUDA OOM (a lost third of the lease).
#
#   device run (carry [".wheels"]):        bash bench/device_session.sh 1   # setup, toy start, bench_sft x2
#   device run:                            bash bench/device_session.sh 2   # bench_grpo, bench_infer (issue 18)
#   device run (carry [".wheels_faiss"]):  bash bench/device_session.sh 3   # faiss, bench_library, bench_verify
#   device run:                            bash bench/device_session.sh wait [SECONDS]   # the toy to its end
# (2026-12-01 measured stage 3's benches already: the next lease needs 1, 2 and wait.)
# SMOKE=1 runs every stage at CPU smoke sizes (the check before spending device time).
# Run it from a snapshot of HEAD: the working tree travels as it is, helpers' half-done edits included.
#   here:   git archive --format=tar.gz -o .snap/head.tar.gz HEAD
#   device run (carry [".wheels", ".snap"]): rm -rf /tmp/w && mkdir -p /tmp/w && tar xzf .snap/head.tar.gz \
#           -C /tmp/w && cp -r .wheels /tmp/w/ && cd /tmp/w && bash bench/device_session.sh 1
#   later calls: cd /tmp/w && bash bench/device_session.sh 2   (the machine keeps /tmp/w while warm: call
#   again within ~30 s of the previous call's end)
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:?usage: device_session.sh 1|2|3|wait [SECONDS]}
OUTD=${OUT:-/tmp/out}
mkdir -p "$OUTD" bench/results
T0=$(date +%s)
if [[ -n ${SMOKE:-} ]]; then DEV=cpu; SM=--smoke; TAG=smoke; TOYARGS=(--profile cpu); else DEV=cuda; SM=; TAG=h200; TOYARGS=(); fi

bench() {  # bench NAME SECONDS ARGS...: run one bench under a time limit, keep its log and JSON
  local name=$1 limit=$2; shift 2
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
  timeout "$limit" python -c 'import runpy, sys, torch
if torch.cuda.is_available(): torch.cuda.set_per_process_memory_fraction(float(sys.argv[1]))
sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name="__main__")' "${BENCH_MEM:-0.6}" "bench/$name.py" "$@" \
    > "bench/results/${name}_$TAG.log" 2>&1
  echo "rc $? after $(( $(date +%s) - T0 )) s"
  grep -v -E "it/s\]|s/it\]" "bench/results/${name}_$TAG.log" | tail -25
}

bring_back() {  # everything small goes back as one archive + the toy's text summary
  tar czf "$OUTD/session.tar.gz" bench/results/*_$TAG.json bench/results/*_$TAG.log 2>/dev/null
  ls "$OUTD"
}

case $STAGE in
  1)
    SKIP_SMOKE=1 bash bench/device_toy.sh start 5 "${TOYARGS[@]}" || exit 1   # setup + background toy
    bench bench_sft 200 --device "$DEV" $SM --ckpt 0 --out bench/results/bench_sft_$TAG.json   # our step vs HF's
    cp "bench/results/bench_sft_$TAG.log" "bench/results/bench_sft_plain_$TAG.log"
    bench bench_sft 200 --device "$DEV" $SM --sqr --variants ours --ckpt 0 --out bench/results/bench_sft_sqr_$TAG.json
    ;;
  2)
    bench bench_grpo 280 --device "$DEV" $SM --steps 2 --micro-batch 1 --out bench/results/bench_grpo_$TAG.json
    bench bench_infer 290 --device "$DEV" $SM --tag "$TAG"
    ;;
  3)
    if [[ -d .wheels_faiss ]]; then python -m pip install -q --no-deps --no-index .wheels_faiss/*.whl 2>&1 | tail -1; fi
    if [[ -n ${SMOKE:-} ]]; then bench bench_library 200 --smoke --tag smoke
    else bench bench_library 240 --engine 2b --device cuda --preset default --videos 24 --search-dim 2048 --tag h200
    fi
    bench bench_verify 420 --device "$DEV" $SM --budget-s 200 --batches 1,8,32 --out bench/results/bench_verify_$TAG.json
    ;;
  wait) ;;
  *) echo "unknown stage $STAGE"; exit 2 ;;
esac
LEFT=${2:-5}
[[ $STAGE == wait ]] || LEFT=5
bash bench/device_toy.sh wait "$LEFT"    # toy progress (waits up to LEFT s) + its files into $OUT
bring_back
