"""`vsr1 infer` prefetch (agent.prefetch): the next batch's first-turn clips decode in background threads while
the current batch runs; the run's rows are the same as without it, and the clips and query vectors are reused.

    .venv/bin/python -m pytest -q tests/test_prefetch.py
"""
import threading
import uuid

import _world as W
from videosearch_r1.agent.infer import run_infer
from videosearch_r1.agent.loop import AgentLoop
from videosearch_r1.utils import read_jsonl_resumable


class CountingEngine:
    """The real engine, counting query embeddings."""

    def __init__(self, eng):
        self.eng, self.ids, self.embeds = eng, eng.ids, 0

    def __getattr__(self, name):
        return getattr(self.eng, name)

    def embed_queries(self, texts):
        self.embeds += 1
        return self.eng.embed_queries(texts)


def test_prefetched_clips_and_vectors_are_used():
    sp, cfg = W.split(), W.world().cfg("agent.max_turns=1")
    calls = []
    load = W.clip_fn(cfg)

    def clip_fn(v):
        calls.append((v, threading.current_thread().name))
        return load(v)

    eng = CountingEngine(W.engine())
    pol = W.policy()
    W.scripted(pol, lambda q, v, k: W.NOT_MATCH)
    loop = AgentLoop(cfg.agent, eng, pol, clip_fn=clip_fn, durations={v: r.duration for v, r in sp.videos.items()})
    batch = sp.queries[:3]
    videos = loop.prefetch_first(batch)
    qv = eng.eng.embed_queries([q.text for q in batch])
    assert videos == list(dict.fromkeys(ids[0] for ids in eng.eng.search(qv, k=1).ids))
    for f in list(loop._prefetched.values()):
        f.result()  # decoded in the background before the batch runs
    assert sorted(v for v, _ in calls) == sorted(videos)
    assert all(t != threading.main_thread().name for _, t in calls)
    trajs = loop.run(batch)
    assert loop.counts["prefetched_clips"] == len(videos) and len(calls) == len(videos)  # no second decode
    assert eng.embeds == 1  # the batch's query vectors came from prefetch_first
    assert [t.turns[0].video for t in trajs] == [ids[0] for ids in eng.eng.search(qv, k=1).ids]


def test_infer_rows_equal_with_and_without_prefetch():
    def run(prefetch):
        name = f"prefetch-{prefetch}-{uuid.uuid4().hex[:6]}"
        cfg = W.world().cfg(f"run_name={name}", "agent.batch_size=2", "agent.max_turns=2",
                            f"agent.prefetch={str(prefetch).lower()}")
        pol = W.policy()
        W.scripted(pol, lambda q, v, k: W.MATCH.format(s="1.0", e="2.0") if len(q) % 2 else W.NOT_MATCH)
        summary = run_infer(cfg, engine=W.engine(), policy=pol)
        rows = read_jsonl_resumable(cfg.runs_dir() / name / "predictions.jsonl")
        return [{k: v for k, v in r.items()} for r in rows], summary

    on, s_on = run(True)
    off, s_off = run(False)
    assert on == off and len(on) == len(W.split().queries)
    assert s_on["counts"]["prefetched_clips"] > 0 and "prefetched_clips" not in s_off["counts"]
