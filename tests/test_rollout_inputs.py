"""A GRPO rollout shows each clip to G copies of a query, turn after turn: its pixels are made once per
distinct clip of a batch (qwen3vl.fast_video_inputs) and its cache key is hashed once per clip object
(vision_cache.clip_keys), not once per copy and turn; the key memo follows the clip's life and attributes.

    .venv/bin/python -m pytest -q tests/test_rollout_inputs.py
"""
import functools
import gc
import types
from pathlib import Path

import numpy as np
import torch

import _world as W
from _policy_inputs import make_clip
from videosearch_r1.agent import vision_cache
from videosearch_r1.agent.loop import AgentLoop
from videosearch_r1.models import qwen3vl
from videosearch_r1.train.grpo_rollout import rollout
from videosearch_r1.video.decode import load_clip


def test_grpo_rollout_prepares_and_hashes_each_clip_once(monkeypatch):
    """2 queries x G=3 copies, 2 turns each (every answer not_matched + <REFINE>), then a second rollout (the
    next GRPO step) through the same cached clip loader (as train/grpo.py): every clip object is hashed once
    over both rollouts, and each batch makes the pixels of its distinct clips only."""
    pol = W.policy()
    W.forced(pol, lambda q, v, k: W.NOT_MATCH)
    cfg = W.world().cfg("agent.max_new_tokens=24", "agent.max_turns=2")
    loads = []
    clip_fn = functools.lru_cache(maxsize=64)(lambda v: loads.append(v) or load_clip(cfg, "synth", v))
    loop = AgentLoop(cfg.agent, W.engine(), pol, clip_fn=clip_fn,
                     durations={v: r.duration for v, r in W.split().videos.items()})
    hashed, made, batches = [], [], []
    real_key, real_pixels, real_build = vision_cache.clip_key, qwen3vl.video_pixels, pol.build_inputs
    monkeypatch.setattr(vision_cache, "clip_key", lambda c: hashed.append(Path(c.info.path).stem) or real_key(c))
    monkeypatch.setattr(qwen3vl, "video_pixels", lambda vp, f, dev: made.append(id(f)) or real_pixels(vp, f, dev))
    monkeypatch.setattr(pol, "build_inputs", lambda q, clips, *a, **kw: batches.append(
        (len(clips), len({id(c.frames) for c in clips}))) or real_build(q, clips, *a, **kw))
    qs = W.split().queries[:2]
    for seed in (1, 2):
        trajs, _ = rollout(loop, qs, group_size=3, generator=torch.Generator().manual_seed(seed), temperature=1.0)
        assert [len(t.turns) for t in trajs] == [2] * 6 and all(ts.refined for t in trajs for ts in t.turns)
    assert len(batches) == 4 and all(rows == 6 for rows, _ in batches)  # 2 rollouts x 2 turns, 6 rows each
    assert sorted(hashed) == sorted(set(loads)) and len(loads) >= 2  # one hash per clip, over both rollouts
    assert len(made) == sum(d for _, d in batches) < sum(r for r, _ in batches)  # pixels per distinct clip


def test_clip_key_memo_follows_the_clip(monkeypatch):
    """Same object: hashed once; another object with equal content: hashed, same key; a replaced frames
    attribute: hashed again, another key; a clip type without weak references: hashed every call; a dead
    clip leaves the memo."""
    calls = []
    real = vision_cache.clip_key
    monkeypatch.setattr(vision_cache, "clip_key", lambda c: calls.append(1) or real(c))
    a = make_clip(4, 32, 32, 11)
    k = vision_cache.clip_keys([a, a])
    assert vision_cache.clip_keys([a]) == k[:1] and len(calls) == 1
    twin = make_clip(4, 32, 32, 11)
    assert vision_cache.clip_keys([twin, a]) == k and len(calls) == 2
    a.frames = a.frames.copy()
    a.frames[0, 0, 0, 0] ^= 1
    assert vision_cache.clip_keys([a]) != k[:1] and len(calls) == 3
    ns = types.SimpleNamespace(frames=twin.frames, timestamps=np.asarray(twin.timestamps))
    assert vision_cache.clip_keys([ns]) == vision_cache.clip_keys([ns]) == k[:1] and len(calls) == 5
    n = len(vision_cache._DIGESTS)
    del a, twin
    gc.collect()
    assert len(vision_cache._DIGESTS) == n - 2
