"""`vsr1 search "TEXT"` over your library, with or without the agent, and `vsr1 clip` to cut a moment.

    vsr1 search "a red square jumps" [--k 10] [--json]
    vsr1 search "a red square jumps" --agent --checkpoint DIR [agent.max_turns=3 ...]

Plain search embeds the text with the library's engine and ranks the stored moments by inner product
(file, start, end, score; `id` is what `vsr1 clip` takes). `--agent` runs the agent loop (agent/loop.py
AgentLoop: retrieve -> verify -> refine -> ground) over the library's whole-video vectors: a
SearchEngine (engine/search.py) built from them, whose video ids are the file paths, so the policy is
shown real decoded videos (the library's sampling budget) and grounds its answer in them; the moment
ranking is printed beside the agent's answer. `vsr1 clip` (library/clip.py) cuts a result to an mp4.
"""
from __future__ import annotations

import json
import sys

from videosearch_r1.library.build import LibraryError, load_embedder, video_cfg
from videosearch_r1.library.store import LibraryStore, StoreError, open_store


def search(store: LibraryStore, embedder, text: str, k: int) -> list[dict]:
    """Ranked moments for one query text: [{rank, id, file, start, end, score}] best first."""
    if not isinstance(text, str) or not text.strip():
        raise LibraryError("the query text is empty")
    if k < 1:
        raise LibraryError(f"k must be >= 1, got {k}")
    q = embedder.embed_texts([text]).detach().float().cpu().numpy()
    hits = store.search_moments(q, k)[0]
    return [{"rank": r + 1, "id": h.id, "file": h.path, "start": round(h.start, 3), "end": round(h.end, 3),
             "score": round(h.score, 6)} for r, h in enumerate(hits)]


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "no results (is the library empty? `vsr1 library status`)"
    w = max(len(r["file"]) for r in rows)
    lines = [f"{'#':>3}  {'id':>12}  {'file':<{w}}  {'start':>8}  {'end':>8}  score"]
    lines += [f"{r['rank']:>3}  {r['id']:>12}  {r['file']:<{w}}  {r['start']:8.2f}  {r['end']:8.2f}  {r['score']:.4f}"
              for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- agent mode
def library_query(text: str):
    """A data.records.Query for the loop with no ground truth (video "" is in no index: ranks are not logged)."""
    import dataclasses
    import typing

    from videosearch_r1.data.records import Query

    blank = {str: "", int: 0, float: 0.0, bool: False}
    hints = typing.get_type_hints(Query)
    kw = {f.name: blank.get(hints[f.name], None) for f in dataclasses.fields(Query)}
    return Query(**{**kw, "qid": "q", "fig_desc": text, "cog_desc": text})


def library_engine(store: LibraryStore, embedder):
    """A SearchEngine over the library's whole-video vectors; its video ids are the file paths."""
    from videosearch_r1.engine.search import SearchEngine

    paths, vecs = store.video_vectors()
    if not paths:
        raise LibraryError("the library is empty: `vsr1 library add DIR` first")
    return SearchEngine.build(vecs, paths, embedder=embedder)


def agent_search(cfg, store: LibraryStore, embedder, text: str, policy=None) -> dict:
    """One query through AgentLoop over the library: the answer (file, span, stop reason) and its turns."""
    from videosearch_r1.agent.infer import load_policy
    from videosearch_r1.agent.loop import AgentLoop
    from videosearch_r1.models.qwen3vl import configure_processor
    from videosearch_r1.video.decode import decode

    engine = library_engine(store, embedder)
    vcfg = video_cfg(cfg)
    if policy is None and cfg.agent.method != "engine":
        policy = load_policy(cfg, engine)
        configure_processor(policy.processor, vcfg)  # the library's sampling budget
    durations = {p: r.duration for p, r in store.files().items()}
    loop = AgentLoop(cfg.agent, engine, policy, clip_fn=lambda p: decode(p, vcfg), durations=durations,
                     clip_workers=2)
    traj = loop.run([library_query(text)])[0]
    last = traj.turns[-1] if traj.turns else None
    found = traj.stop_reason in ("matched", "engine_only") and last is not None and last.span is not None
    return {"query": text, "stop_reason": traj.stop_reason, "file": last.video if found else None,
            "start": last.span[0] if found else None, "end": last.span[1] if found else None,
            "turns": [{"turn": t.turn, "file": t.video, "score": t.score, "answer": t.answer, "span": t.span,
                       "refined": t.refined, "output": t.output} for t in traj.turns]}


# ----------------------------------------------------------------------------- CLI
def query_embedder(cfg, store: LibraryStore):
    """The engine for queries, checked against the one that embedded the library (a changed engine.model,
    instruction or video budget is a StoreError naming the setting, never a search over another space)."""
    from videosearch_r1.library.build import settings

    embedder = load_embedder(cfg)
    store.check_settings(settings(cfg, embedder))
    return embedder


def open_library(cfg) -> LibraryStore:
    store = open_store(cfg)
    if store.meta("settings") is None:
        store.close()
        raise LibraryError(f"no library in {store.uri.dir}: `vsr1 library add DIR` first")
    return store


def main(argv: list[str] | None = None) -> int:
    """`vsr1 search`."""
    from videosearch_r1.utils import command_parser, config_from_args, parse_command

    p = command_parser("vsr1 search", __doc__)
    p.add_argument("text", help="what you are looking for")
    p.add_argument("--k", type=int, default=None, help="moments to list (default library.top_k)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--agent", action="store_true", help="run the agent loop (needs --checkpoint)")
    p.add_argument("--checkpoint", default=None, help="policy for --agent (hub id or path)")
    args = parse_command(p, argv)
    cfg = config_from_args(args, [f"agent.checkpoint={args.checkpoint}"] if args.checkpoint else [])
    try:
        store = open_library(cfg)
    except (LibraryError, StoreError) as e:
        print(f"search: {e}", file=sys.stderr)
        return 2
    try:
        embedder = query_embedder(cfg, store)
        rows = search(store, embedder, args.text, args.k or cfg.library.top_k)
        out: dict = {"results": rows}
        if args.agent:
            out["agent"] = agent_search(cfg, store, embedder, args.text)
        if args.json:
            print(json.dumps(out if args.agent else rows, indent=2))
        else:
            if args.agent:
                a = out["agent"]
                print(f"agent: {a['stop_reason']} after {len(a['turns'])} turn(s)"
                      + (f": {a['file']} [{a['start']:.2f}, {a['end']:.2f}] s" if a["file"] else ""))
            print(format_table(rows))
        return 0
    except (LibraryError, StoreError, ValueError) as e:
        print(f"search: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
