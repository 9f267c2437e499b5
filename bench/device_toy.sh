#!/usr/bin/env bash
# `vsr1 toy` on the lent GPU machine within its limits (10 min a command, the machine kept only while
# calls follow each other): the run goes to the background and each call waits on it, then copies what
# exists so far to $OUT (report, channel ceiling, training summaries and logs).
#
#   device run (carry [".wheels"]):  bash bench/device_toy.sh start [SECONDS] [overrides...]
#   device run (right after):        bash bench/device_toy.sh wait [SECONDS]
#   same lease, any time after start: bash bench/device_toy.sh variant SECONDS NAME [overrides...]
#   a later lease, from a packed engine + SFT (bench/toy_carry.sh): bash bench/device_toy.sh resume [SECONDS]
# variant: another SFT recipe from the toy's base policy (e.g. sft.trace_style=query_first): it waits for the
# toy's base (runs/toy-base/summary.json), then builds its own SFT rows (sft.rows=<ws>/data/NAME.jsonl), runs
# `vsr1 train sft` (run NAME-train) and `vsr1 infer` on val (NAME-val), then on test (NAME-test), beside the toy on
# the same GPU (the tiny models leave it mostly idle); logged to <ws>/NAME.log. `wait` waits on the toy and every
# variant (<ws>/*.pid) and collects them all. OWN_BASE=1: the variant first trains a base of its own (run NAME-base,
# on the toy's base world, with its overrides, e.g. base.extra_layers=4) and starts its SFT from that. CONFIG=...:
# another profile for the variant (a CPU smoke: `vsr1 toy --profile cpu workspace=workspace/toy-gpu`, then
# CONFIG=videosearch_r1/configs/toy_cpu.yaml).
# start: install the carried wheels (bench/device_setup.sh), smoke-run the whole chain with the cpu
# profile on the GPU (workspace/toy-smoke; SKIP_SMOKE=1 skips it), then start `vsr1 toy --profile gpu`
# (workspace/toy-gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: device_toy.sh start|wait|resume|variant [SECONDS] [NAME] [overrides...]}
LIMIT=${2:-540}
shift $(( $# >= 2 ? 2 : 1 ))
WS=$PWD/workspace/toy-gpu
LOG=$WS/toy.log
if [[ $MODE == variant ]]; then
  NAME=${1:?variant needs a NAME}; shift
  LOG=$WS/$NAME.log
  C=(--config "${CONFIG:-videosearch_r1/configs/toy_gpu.yaml}" "workspace=$WS" "sft.rows=$WS/data/$NAME.jsonl" "$@")
  mkdir -p "$WS/runs"
  BASE=$WS/runs/toy-base/policy
  OWN=""
  if [[ -n ${OWN_BASE:-} ]]; then
    BASE=$WS/runs/$NAME-base/policy
    OWN="vsr1 train base ${C[*]@Q} run_name=$NAME-base"
  fi
  setsid nohup bash -c "set -e; until [[ -f $WS/runs/toy-base/summary.json ]]; do sleep 10; done
    $OWN
    vsr1 build sft synth ${C[*]@Q}
    vsr1 train sft synth --checkpoint $BASE ${C[*]@Q} run_name=$NAME-train
    vsr1 infer synth --split val --checkpoint $WS/runs/$NAME-train/final ${C[*]@Q} run_name=$NAME-val
    vsr1 infer synth --split test --checkpoint $WS/runs/$NAME-train/final ${C[*]@Q} run_name=$NAME-test" \
    > "$LOG" 2>&1 < /dev/null &
  echo $! > "$WS/$NAME.pid"
  echo "== variant $NAME in the background (after the toy's base): $LOG"
fi
T0=$(date +%s)

collect() {
  local out=${OUT:-/tmp/out}
  mkdir -p "$out"
  for f in "$WS"/*.log; do [[ $f == *smoke* ]] || { echo "##### $(basename "$f")"
    grep -v -E "it/s\]|s/it\]|video/s\]|step/s\]|\|[^|]*\| *[0-9]+/[0-9]+ \[" "$f"; }; done > "$out/toy_log.txt" 2>/dev/null
  cp "$WS/runs/toy-report/result.json" "$out/" 2>/dev/null
  [[ -d $WS/runs ]] && (cd "$WS/runs" && tar czf "$out/toy_plots.tar.gz" toy-report/*.png toy-report/*.md toy-*/grpo_curves.png \
     toy-*/summary.json toy-*/config.yaml 2>/dev/null)
  python - "$WS" "$out" <<'PY' 2>/dev/null
import json, sys, pathlib
ws, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
keep = {}
for p in sorted(ws.glob("runs/*/summary.json")) + sorted(ws.glob("runs/*/channel.json")) + \
        sorted(ws.glob("runs/*/train_summary.json")):
    try:
        keep[str(p.relative_to(ws))] = json.loads(p.read_text())
    except Exception as e:
        keep[str(p.relative_to(ws))] = f"unreadable: {e}"
for p in sorted(ws.glob("runs/*/metrics.jsonl")):
    keep[str(p.relative_to(ws))] = p.read_text().splitlines()[-400:]
for p in sorted(ws.glob("runs/*/predictions.jsonl")):  # what the policy wrote: the first 12 queries' turns,
    whole = p.parent.name in ("toy-sft", "toy-sft-val") or not p.parent.name.startswith("toy-")  # SFT's and the
    # variants' queries, every one (the verdicts are read from them)
    rows = [json.loads(x) for x in p.read_text().splitlines()[:None if whole else 12] if x.strip()]
    keep[str(p.relative_to(ws))] = rows if whole else [  # whole runs keep every field: `vsr1 report` reads them back
        {"qid": r.get("qid"), "query": r.get("query"), "stop": r.get("stop_reason"),
         "turns": [{k: t.get(k) for k in ("turn", "video", "gt_shown", "answer", "policy_answer", "span", "parse_error",
                                           "text_tokens", "latent_tokens", "output")} for t in r.get("turns", [])]}
        for r in rows]
(out / "toy_summaries.json").write_text(json.dumps(keep, indent=1, default=str))
PY
}

if [[ $MODE == start ]]; then
  bash bench/device_setup.sh || exit 1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  mkdir -p "$WS"
  SMOKE=$PWD/workspace/toy-smoke
  if [[ -n ${SKIP_SMOKE:-} ]]; then echo "== smoke skipped (SKIP_SMOKE)"
  else echo "== smoke: the whole chain with the cpu profile (on the GPU)"; fi
  if [[ -z ${SKIP_SMOKE:-} ]] && ! timeout 300 vsr1 toy --profile cpu workspace=$SMOKE "$@" > "$WS/smoke.log" 2>&1; then
    grep -v -E "it/s\]|s/it\]|video/s\]|step/s\]" "$WS/smoke.log" | tail -40
    echo "smoke FAILED"; exit 1
  fi
  grep -E "^==>|^ +[0-9.]+ s  |done in" "$WS/smoke.log" 2>/dev/null
  echo "== gpu profile in the background: $LOG"
  setsid nohup vsr1 toy --profile gpu workspace=$WS "$@" > "$LOG" 2>&1 < /dev/null &  # setsid: survives the call's end
  echo $! > "$WS/toy.pid"
fi
if [[ $MODE == resume ]]; then  # a later lease: GRPO on from what bench/toy_carry.sh packed (its header)
  [[ -n ${SKIP_SETUP:-} ]] || bash bench/device_setup.sh || exit 1  # SKIP_SETUP=1 PROFILE=cpu: a CPU rehearsal
  WS=$WS bash bench/toy_carry.sh unpack || exit 1
  C=(--config "videosearch_r1/configs/toy_${PROFILE:-gpu}.yaml" "workspace=$WS" "$@")
  echo "== world from its seed, then the toy from GRPO on, in the background: $LOG"
  setsid nohup bash -c "set -e; vsr1 synth ${C[*]@Q}; WS=${WS@Q} bash bench/toy_carry.sh verify
    vsr1 toy --profile ${PROFILE:-gpu} --from-step grpo ${C[*]@Q}" \
    >> "$LOG" 2>&1 < /dev/null &
  echo $! > "$WS/toy.pid"
fi
# wait (every mode): until the runs end or LIMIT seconds from this call's start
running() { local p; for p in "$WS"/*.pid; do kill -0 "$(cat "$p" 2>/dev/null)" 2>/dev/null && return 0; done; return 1; }
while running && (( $(date +%s) - T0 < LIMIT )); do sleep 5; done
collect
for f in "$WS"/*.log; do
  [[ $f == *smoke* ]] && continue
  echo "##### $(basename "$f")"
  grep -E "^==>|^ +\(|done in|failed|Error|error|^sft rows|^  (VER|turn 1|all turns|R1@|wrong videos|written checks)" "$f" | tail -30
  tail -c 1500 "$f" | tr '\r' '\n' | tail -3
done
for p in "$WS"/*.pid; do kill -0 "$(cat "$p" 2>/dev/null)" 2>/dev/null && echo "STILL RUNNING: $(basename "$p" .pid)"; done
running || echo "FINISHED"
