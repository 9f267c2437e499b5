"""`vsr1 infer`: run the agent (or a baseline) over a split; resumable predictions + summary.

    vsr1 infer synth --checkpoint PATH_OR_ID [--split test] [--limit N] [--config F] [key=value ...]
    vsr1 infer synth agent.method=engine run_name=engine-test        # no checkpoint needed

1. load the split (data.fig.load_split; its load summary is printed and saved)
2. open the engine: SearchEngine.load(cfg.index_dir(DATASET)/SPLIT, Embedder) (build it: `vsr1 index`)
3. load the policy (agent/policy.py), unless agent.method=engine
4. run the loop (agent/loop.py) over fixed batches of agent.batch_size queries with a progress bar;
   each finished batch is appended to <run_dir>/predictions.jsonl and fsync'ed
5. score the run (eval.evaluate.evaluate_rows against the split's ground truth) and write
   <run_dir>/summary.json atomically; print the metric table.
<run_dir> = <workspace>/runs/<run_name> (default infer-<time>), with the resolved config.yaml.
Resume: rerun with the same run_name: queries whose qid is already in predictions.jsonl are skipped (a
kill leaves at most a torn last line, which is dropped; any other unreadable line is an error). Batches
are fixed slices of the query list, so a resumed run forms the same batches as an uninterrupted one.
Resuming with a different agent / engine / dataset / synth / index / video setting, or with other
weights (engine or policy checkpoint content) or another index build (fingerprints.json in the run dir),
is refused (use another run_name). summary.json counts the queries whose ground-truth video is not in
the index (gt_not_in_index: scored as misses) and the printed summary says how many. Timings in
summary.json cover the last invocation only.
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from videosearch_r1.config import Config, ConfigError, to_dict
from videosearch_r1.utils import (append_jsonl, atomic_write_json, command_parser, config_from_args, make_run_dir,
                                  parse_command, progress, read_jsonl_resumable)

# config fields that must match to resume a run -> fields of them that may differ (they only regroup the
# work or say how a build ran)
_RESUME_KEYS = {"dataset": (), "split": (), "agent": ("batch_size", "compile_blocks"), "engine.model": (),
                "engine.instruction": (), "engine.soft_insert": (), "engine.dim": (),
                "engine.max_query_tokens": (), "video": (), "datasets": (),
                "synth": ("workers", "sheet_families"), "index": ("shard_size", "hard_negatives")}
FINGERPRINTS = "fingerprints.json"  # in the run dir: the weights and index the predictions were made with


def _pick(d: dict, dotted: str, drop: tuple[str, ...] = ()):
    for part in dotted.split("."):
        d = d.get(part, {}) if isinstance(d, dict) else {}
    return {k: v for k, v in d.items() if k not in drop} if isinstance(d, dict) else d


def _weights(path_or_id: str) -> str:
    from videosearch_r1.fingerprint import dir_digest
    from videosearch_r1.models.hub import resolve_checkpoint

    try:
        return dir_digest(resolve_checkpoint(path_or_id))
    except FileNotFoundError as e:
        return f"unavailable ({e})"


def run_fingerprints(cfg: Config) -> dict:
    """Content fingerprints of what a run's predictions depend on beyond its config: the engine's and the
    policy's weight files and the index (its meta.json: engine, corpus, skips)."""
    from videosearch_r1.fingerprint import digest

    meta = cfg.index_dir(cfg.dataset) / cfg.split / "meta.json"
    policy = cfg.agent.checkpoint if cfg.agent.method != "engine" else ""
    return {"engine_weights": _weights(cfg.engine_model()),
            "policy_weights": _weights(policy) if policy else "",
            "index": digest(meta.read_text()) if meta.is_file() else "missing"}


def resume_key(cfg: Config) -> str:
    """8 hex chars over everything check_resumable compares (config keys + run_fingerprints): a run name
    that includes it is never refused, and a changed setting gets a fresh run dir."""
    from videosearch_r1.fingerprint import digest

    d = to_dict(cfg)
    return digest({"config": {k: _pick(d, k, drop) for k, drop in _RESUME_KEYS.items()},
                   "fingerprints": run_fingerprints(cfg)})[:8]


def check_resumable(run_dir: Path, cfg: Config, fingerprints: dict) -> None:
    """Refuse to append to predictions made under a different setting, other weights or another index."""
    from videosearch_r1.fingerprint import changed

    old_path, pred = run_dir / "config.yaml", run_dir / "predictions.jsonl"
    if not (old_path.is_file() and pred.is_file() and pred.stat().st_size > 0):
        return
    old, new = yaml.safe_load(old_path.read_text()) or {}, to_dict(cfg)
    diff = [k for k, drop in _RESUME_KEYS.items() if _pick(old, k, drop) != _pick(new, k, drop)]
    fp_path = run_dir / FINGERPRINTS
    if not fp_path.is_file():
        diff.append(f"(unrecorded) weights and index: {fp_path.name} is missing")
    else:
        diff += changed(json.loads(fp_path.read_text()), fingerprints)
    if diff:
        raise ConfigError(f"{run_dir} holds predictions made with a different {', '.join(diff)}; "
                          f"use another run_name (or delete the run directory)")


def load_engine(cfg: Config, dataset: str, split: str, with_embedder: bool = True):
    from videosearch_r1.engine.index import load_embedder
    from videosearch_r1.engine.search import SearchEngine

    index_dir = cfg.index_dir(dataset) / split
    embedder = load_embedder(cfg, dataset) if with_embedder else None
    return SearchEngine.load(index_dir, embedder=embedder, use_gpu=cfg.index.use_gpu)


def load_policy(cfg: Config, engine):
    """The policy, its fresh SQR modules (if none are saved) sized to the engine's soft-token width."""
    from videosearch_r1.agent.policy import Policy
    from videosearch_r1.models.qwen3vl import configure_processor

    a = cfg.agent
    if not a.checkpoint:
        raise ConfigError(f"agent.method={a.method} needs a policy: pass --checkpoint PATH_OR_ID")
    he = int(getattr(getattr(engine, "embedder", None), "hidden_size", 0) or 0)
    policy = Policy.from_pretrained(a.checkpoint, device=a.device, dtype=a.dtype,
                                    reference_layout=a.reference_layout, embedder_hidden=he, seed=cfg.seed)
    configure_processor(policy.processor, cfg.video_cfg(cfg.dataset))  # the dataset's video budget
    opts = policy.set_decode(a.decode_attention, a.decode_compile, a.cuda_graph, a.compile_blocks)
    policy.set_prefill(a.prefill_tokens, a.vision_cache_mb)
    print(f"policy decode path on {policy.device}: {opts.name}", flush=True)
    if a.method == "sqr" and policy.sqr_config.soft_insert != cfg.engine.soft_insert:
        raise ConfigError(f"the policy's soft tokens were trained for engine.soft_insert="
                          f"{policy.sqr_config.soft_insert!r}, the config has {cfg.engine.soft_insert!r}")
    return policy


def make_loop(cfg: Config, split, engine, policy):
    from videosearch_r1.agent.loop import AgentLoop
    from videosearch_r1.video.decode import load_clip

    dataset = split.dataset
    return AgentLoop(cfg.agent, engine, policy, clip_fn=lambda v: load_clip(cfg, dataset, v),
                     durations={v: r.duration for v, r in split.videos.items()},
                     query_field=cfg.dataset_cfg(dataset).query_field,
                     ranked_k=max(cfg.eval.recall_ks) if cfg.eval.recall_ks else 0)


def run_infer(cfg: Config, limit: int | None = None, engine=None, policy=None,
              max_batches: int | None = None) -> dict:
    """Steps 1-5 of the module doc; returns the summary dict. `engine` / `policy` may be passed in
    (tests, notebooks); `max_batches` stops after that many new batches (the run is then partial)."""
    from videosearch_r1.agent.loop import check_agent_config
    from videosearch_r1.data.fig import load_split
    from videosearch_r1.eval.evaluate import evaluate_rows, format_table

    t0 = time.time()
    check_agent_config(cfg.agent)
    dataset, split_name = cfg.dataset, cfg.split
    split = load_split(cfg, dataset, split_name)
    print(split.summary.format(), flush=True)
    queries = split.queries[:limit] if limit is not None else split.queries
    run_dir = cfg.runs_dir() / cfg.run_name if cfg.run_name else None
    fingerprints = run_fingerprints(cfg)
    if run_dir is not None:
        check_resumable(run_dir, cfg, fingerprints)
    run_dir = make_run_dir(cfg, "infer")
    atomic_write_json(run_dir / FINGERPRINTS, fingerprints)
    pred_path = run_dir / "predictions.jsonl"
    done = {str(r.get("qid")) for r in read_jsonl_resumable(pred_path)}
    todo_batches = _batches(queries, done, max(1, cfg.agent.batch_size))
    print(f"run dir {run_dir}: {len(queries)} queries, {len(done & {q.qid for q in queries})} already done, "
          f"{sum(len(b) for b in todo_batches)} to run", flush=True)

    loop = None
    if todo_batches:
        engine = engine if engine is not None else load_engine(cfg, dataset, split_name)
        if getattr(engine, "ids", None) is not None and len(engine.ids) == 0:
            raise ValueError(f"the index of {dataset}/{split_name} holds no videos: rebuild it with `vsr1 index`")
        if policy is None and cfg.agent.method != "engine":
            policy = load_policy(cfg, engine)
        loop = make_loop(cfg, split, engine, policy)
        bar = progress(total=len(queries), desc=f"infer {cfg.agent.method}", unit="q")
        bar.update(len(queries) - sum(len(b) for b in todo_batches))
        n_run = len(todo_batches) if max_batches is None else min(max_batches, len(todo_batches))
        if cfg.agent.prefetch and n_run:
            loop.prefetch_first(todo_batches[0])
        for bi, batch in enumerate(todo_batches[:n_run]):
            if cfg.agent.prefetch and bi + 1 < n_run:  # the next batch's first clips decode while this one runs
                loop.prefetch_first(todo_batches[bi + 1])
            trajs = loop.run(batch)
            append_jsonl(pred_path, [t.to_row() for t in trajs])
            bar.update(len(batch))
        bar.close()

    wanted = {q.qid for q in queries}
    rows = [r for r in read_jsonl_resumable(pred_path) if str(r.get("qid")) in wanted]
    result = evaluate_rows(rows, gt_queries=queries, iou_thresholds=cfg.eval.iou_thresholds, ks=cfg.eval.recall_ks)
    index_ids, index_skipped = _index_contents(cfg, engine)
    from videosearch_r1.engine.channel import load_world
    from videosearch_r1.eval.traces import format_trace_checks, trace_checks

    by_diff = verdicts_by_difference(load_world(cfg, dataset), rows, cfg.agent.oracle_verifier) \
        if cfg.agent.method != "engine" else None
    checks = trace_checks(rows)
    gt_missing = None if index_ids is None else sum(q.video_id not in index_ids for q in queries)
    summary = {
        "dataset": dataset, "split": split_name, "method": cfg.agent.method, "checkpoint": cfg.agent.checkpoint,
        "oracle_verifier": cfg.agent.oracle_verifier,  # a diagnostic run: verdicts were the truth (VER means nothing)
        "decode": getattr(getattr(policy, "decode_options", None), "name", None),  # this invocation's path
        "run_dir": str(run_dir), "queries": len(queries), "finished": len(rows), "complete": len(rows) == len(queries),
        "gt_not_in_index": gt_missing,  # queries whose GT video the index lacks (always misses); None: unknown
        "index_videos": None if index_ids is None else len(index_ids),
        "index_skipped_videos": index_skipped,  # corpus videos `vsr1 index` could not decode
        "fingerprints": fingerprints,
        "stop_reasons": dict(sorted(Counter(r.get("stop_reason") for r in rows).items())),
        "load_summary": {"rows": split.summary.rows, "loaded": split.summary.loaded,
                         "clamped_end": split.summary.clamped_end,
                         "skipped_past_end": split.summary.skipped_past_end,
                         "skipped_bad": split.summary.skipped_bad, "zero_length": split.summary.zero_length},
        "metrics": result,
        "wrong_shown_by_difference": by_diff,  # synthetic worlds: which wrong videos the verifier rejects
        "trace_checks": checks,  # checklist traces: checks contradicting their own two sides, the event check
        "timings_s": {k: round(v, 4) for k, v in sorted(loop.timings.items())} if loop else {},
        "counts": dict(sorted(loop.counts.items())) if loop else {},
        "vision_cache": policy.vision_cache.stats() if getattr(policy, "vision_cache", None) is not None else None,
        "wall_s": round(time.time() - t0, 3),
    }
    atomic_write_json(run_dir / "summary.json", summary)
    print(format_table(result), flush=True)
    if by_diff:
        print("  wrong videos shown, rejected / shown by how they differ from the GT: "
              + ", ".join(f"{k} {v['rejected']}/{v['shown']}" for k, v in by_diff.items()), flush=True)
    if checks:
        print(format_trace_checks(checks), flush=True)
    if gt_missing is None:
        print("ground truth not in the index: unknown (no index contents to check)", flush=True)
    else:
        print(f"ground truth not in the index: {gt_missing} of {len(queries)} queries (scored as misses); "
              f"index: {len(index_ids)} videos, {index_skipped} of the corpus skipped at indexing", flush=True)
    print(f"predictions: {pred_path}\nsummary: {run_dir / 'summary.json'}", flush=True)
    return summary


def verdicts_by_difference(world: dict | None, rows: list, oracle: bool = False) -> dict | None:
    """Synthetic worlds: every turn that showed a wrong video, by how it differs from the row's GT ("other_family",
    or each detail a sibling differs in: a turn can count under several) -> {"shown", "rejected"}; "any" counts each
    turn once. `oracle` (agent.oracle_verifier: `answer` is the truth): the policy's own verdict, policy_answer,
    is counted instead. None: no world."""
    from videosearch_r1.engine.channel import differences

    if not world:
        return None
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        for t in r.get("turns") or []:
            video = t.get("video") if isinstance(t, dict) else None
            if video is None or video == r.get("gt_video"):
                continue
            diff = differences(world, str(r.get("gt_video")), str(video))
            if diff is None:
                continue
            verdict = t.get("policy_answer") if oracle else t.get("answer")
            for k in ["any", *diff]:
                c = out.setdefault(k, {"shown": 0, "rejected": 0})
                c["shown"] += 1
                c["rejected"] += verdict == "not_matched"
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "any", -kv[1]["shown"])))


def _index_contents(cfg: Config, engine) -> tuple[set[str] | None, int | None]:
    """(video ids, corpus videos skipped at indexing) of the engine used, else of the index on disk."""
    d = cfg.index_dir(cfg.dataset) / cfg.split
    meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").is_file() else {}
    skipped = len(meta["skipped"]) if isinstance(meta.get("skipped"), list) else None
    if getattr(engine, "ids", None) is not None:
        return set(engine.ids), skipped
    if (d / "ids.json").is_file():
        return set(json.loads((d / "ids.json").read_text())), skipped
    return None, skipped


def _batches(queries: list, done: set[str], size: int) -> list[list]:
    """Fixed slices of the query list (so resumed runs batch alike), minus the finished queries."""
    out = []
    for i in range(0, len(queries), size):
        b = [q for q in queries[i:i + size] if q.qid not in done]
        if b:
            out.append(b)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("vsr1 infer", __doc__)
    ap.add_argument("dataset", help="dataset name (an entry under `datasets` in the config)")
    ap.add_argument("--checkpoint", default=None, help="policy checkpoint: local path or hub id (agent.checkpoint)")
    ap.add_argument("--split", default=None, help="split to run (default: config split)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N queries of the split")
    args = parse_command(ap, argv)
    cfg = config_from_args(args, [f"dataset={args.dataset}"])
    if args.split:
        cfg.split = args.split
    if args.checkpoint:
        cfg.agent.checkpoint = args.checkpoint
    try:
        cfg.dataset_cfg(cfg.dataset)
        run_infer(cfg, limit=args.limit)
    except (ConfigError, FileNotFoundError, ValueError, OSError) as e:
        print(f"vsr1 infer: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
