"""GRPO rollouts: groups of G trajectories per query through the SAME agent loop as inference, sampled.

    scorer = RetrievalScorer(engine.vectors, engine.ids, tau=0.1, n_negatives=24)
    trajs, clips = rollout(loop, queries, group_size=8, scorer=scorer, generator=g, temperature=1.0)
    completions, columns = reward_columns(trajs)               # -> rewards.score(weights, completions, **columns)

What runs: `AgentLoop.run` on each query repeated G times (live engine, seen videos excluded, SQR
between turns, up to agent.max_turns), with the fast decode path sampling at `temperature` / `top_p`
from one seeded torch.Generator (a run repeats with its seed). Three small hooks of the loop record
what training needs (agent/loop.py): the generated ids of every turn (`on_generate`), the soft tokens
and query vectors of every refinement (`on_refine`), and, for the Gaussian latent objective, the
sampled latent action (`soft_noise`: the refined query is embedded from the SAMPLE, so the action
drives the reward). Nothing is re-tokenised: a turn keeps the sampled ids, and its prompt is rendered
by the one prompt builder from (query, video) — the same call generation made (grpo_step.collate_turns
checks the rebuilt conversation decodes to exactly the prompt text + the generated text).
A group's G copies of a query are shown the same clip object (train/grpo.py's clip loader is cached):
its pixels are made once per batch (qwen3vl.fast_video_inputs) and its visual-token cache key hashed once
while it lives (vision_cache.clip_keys), not per copy and turn (tests/test_rollout_inputs.py).

Retrieval probabilities for the retrieval reward (rewards.retrieval_reward): p(q) = softmax over
[q.v_gt, q.v_neg...] / tau with the query's fixed negatives = the `n_negatives` corpus videos closest to
the ORIGINAL query vector, GT excluded (exact inner products over the index's own vectors), recorded
for the vector each turn searched with (p_before) and the one its refinement produced (p_after).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from videosearch_r1.agent.trajectory import Trajectory
from videosearch_r1.train.rewards import hard_negatives, retrieval_prob


# ------------------------------------------------------------------------------------ types
@dataclass
class TurnSample:
    """One assistant turn: what the policy was shown and what it sampled (the training unit of the loss).

    The conversation is [system, user(query text + the video `video`)] -> completion_ids; the prompt
    tokens (system prompt, user message, video) are environment tokens, masked out of the loss.
    """

    traj: int  # index of its trajectory in the rollout batch
    turn: int  # 1-based turn number
    query: str  # the query text of the user message
    video: str  # id of the video shown (environment)
    completion_ids: list[int]  # [C] sampled ids, the stop token included when one was sampled
    text: str  # the generated text (completion ids before the stop token, decoded)
    refined: bool = False  # an SQR refinement ran from this turn's last generated <REFINE>
    soft_mean: Optional[np.ndarray] = None  # [N, He] soft tokens of the deterministic latent rollout
    soft_used: Optional[np.ndarray] = None  # [N, He] soft tokens the refined query was embedded from
    soft_prefix: Optional[np.ndarray] = None  # [M, He] earlier turns' soft tokens (refine_mode accumulate)


@dataclass
class RolloutTrajectory:
    """One sampled trajectory (one query of a group), its turns and what its rewards read."""

    index: int  # position in the rollout batch (group-major: query q's copies are q*G .. q*G+G-1)
    group: int  # which query of the batch
    record: Trajectory  # the agent loop's own record (turns, stop reason, ranks, spans)
    turns: list[TurnSample] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)  # fixed InfoNCE negatives of the query
    p_before: list[float] = field(default_factory=list)  # per turn: p of the vector it searched with
    p_after: list[Optional[float]] = field(default_factory=list)  # per turn: p of its refined vector


# ------------------------------------------------------------------------------------ retrieval
class RetrievalScorer:
    """exp(-L_ret) of query vectors against a query's GT video and its fixed hard negatives."""

    def __init__(self, vectors: np.ndarray, ids: list[str], tau: float, n_negatives: int):
        if tau <= 0 or n_negatives < 1:
            raise ValueError(f"retrieval tau must be > 0 and negatives >= 1, got {tau}, {n_negatives}")
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.ids = list(ids)
        self.row = {v: i for i, v in enumerate(self.ids)}
        self.tau, self.n_negatives = float(tau), int(n_negatives)

    def negatives(self, q_orig: np.ndarray, gt: str) -> list[str]:
        return hard_negatives(self.vectors, self.ids, q_orig, gt, self.n_negatives)

    def prob(self, q: np.ndarray, gt: str, negatives: list[str]) -> Optional[float]:
        """p(q), or None when the GT video is not in the index (no retrieval reward for that query)."""
        if gt not in self.row or not negatives:
            return None
        negs = self.vectors[[self.row[v] for v in negatives]]
        return retrieval_prob(np.asarray(q, dtype=np.float32), self.vectors[self.row[gt]], negs, self.tau)


# ------------------------------------------------------------------------------------ the recorder
class Recorder:
    """The loop's hooks (AgentLoop.recorder): fills one RolloutTrajectory per loop Trajectory as it runs."""

    def __init__(self, scorer: Optional[RetrievalScorer]):
        self.scorer = scorer
        self.by_record: dict[int, RolloutTrajectory] = {}  # id(loop Trajectory) -> its RolloutTrajectory
        self.clips: dict[str, Any] = {}  # video id -> the clip shown (collate needs its frames)

    def trajectory(self, record: Trajectory) -> RolloutTrajectory:
        key = id(record)
        if key not in self.by_record:  # index / group are set by `rollout` once the batch order is known
            self.by_record[key] = RolloutTrajectory(index=-1, group=-1, record=record)
        return self.by_record[key]

    def on_generate(self, states, gen, clips) -> None:
        for i, (s, clip) in enumerate(zip(states, clips)):
            t = self.trajectory(s.traj)
            video = s.traj.turns[-1].video
            self.clips.setdefault(video, clip)
            t.turns.append(TurnSample(traj=-1, turn=len(s.traj.turns), query=s.text, video=video,
                                      completion_ids=[int(x) for x in gen.ids[i]], text=gen.texts[i]))
            if self.scorer is not None:
                if not t.negatives:  # turn 1 searches with the original query vector
                    t.negatives = self.scorer.negatives(s.qvec, s.query.video_id)
                t.p_before.append(self.scorer.prob(s.qvec, s.query.video_id, t.negatives))
            t.p_after.append(None)

    def on_refine(self, states, mean: np.ndarray, used: np.ndarray, before: np.ndarray, after: np.ndarray) -> None:
        for j, s in enumerate(states):
            t = self.trajectory(s.traj)
            turn = t.turns[-1]
            turn.refined = True
            turn.soft_mean = np.asarray(mean[j], dtype=np.float32)
            turn.soft_used = np.asarray(used[j], dtype=np.float32)
            if len(s.soft) > 1:  # accumulate: the earlier turns' soft tokens come first (constants here)
                turn.soft_prefix = np.concatenate(s.soft[:-1], axis=0).astype(np.float32)
            if self.scorer is not None:
                t.p_after[-1] = self.scorer.prob(after[j], s.query.video_id, t.negatives)


def gaussian_noise(sigma: float, generator: torch.Generator):
    """soft_noise hook: soft + sigma * N(0, 1), drawn from `generator` (CPU) so a run repeats."""
    def noise(soft: np.ndarray) -> np.ndarray:
        eps = torch.randn(soft.shape, generator=generator, dtype=torch.float32).numpy()
        return (np.asarray(soft, dtype=np.float32) + sigma * eps).astype(np.float32)
    return noise


# ------------------------------------------------------------------------------------ rollout
def rollout(loop, queries: list, group_size: int, scorer: Optional[RetrievalScorer] = None,
            generator: Optional[torch.Generator] = None, temperature: float = 1.0, top_p: float = 1.0,
            latent_sigma: float = 0.0, noise_generator: Optional[torch.Generator] = None
            ) -> tuple[list[RolloutTrajectory], dict[str, Any]]:
    """G trajectories for each query (group-major order) through `loop` with sampling switched on, and
    the clips shown (video id -> clip) for the loss's forward.

    latent_sigma > 0: the Gaussian latent action (soft tokens sampled around the rollout's mean).
    The loop's own settings (temperature, hooks) are restored afterwards.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if loop.acfg.method != "sqr":
        raise ValueError(f"GRPO trains the SQR agent: agent.method must be 'sqr', got {loop.acfg.method!r}")
    batch = [q for q in queries for _ in range(group_size)]
    saved = (loop.acfg.temperature, loop.sampling, loop.recorder, loop.soft_noise)
    recorder = Recorder(scorer)
    loop.acfg.temperature = temperature
    loop.sampling = {"top_p": top_p, **({"generator": generator} if generator is not None else {})}
    loop.recorder = recorder
    loop.soft_noise = gaussian_noise(latent_sigma, noise_generator or torch.Generator().manual_seed(0)) \
        if latent_sigma > 0 else None
    try:
        records = loop.run(batch)
    finally:
        loop.acfg.temperature, loop.sampling, loop.recorder, loop.soft_noise = saved
    out = []
    for i, record in enumerate(records):
        t = recorder.trajectory(record)  # a query stopped before any generation has no turns
        t.index, t.group = i, i // group_size
        for turn in t.turns:
            turn.traj = i
        out.append(t)
    return out, recorder.clips


def reward_columns(trajs: list[RolloutTrajectory], durations: Optional[dict[str, float]] = None
                   ) -> tuple[list[list[str]], dict]:
    """(completions, keyword columns) for rewards.score: one entry per trajectory, one item per
    generated turn (a turn whose video failed to decode generated nothing and is not there)."""
    durations = durations or {}
    return [[ts.text for ts in t.turns] for t in trajs], {
        "shown": [[ts.video for ts in t.turns] for t in trajs],
        "gt_video": [t.record.gt_video for t in trajs],
        "gt_span": [(t.record.gt_start, t.record.gt_end) for t in trajs],
        "duration": [[durations.get(ts.video) for ts in t.turns] for t in trajs],
        "p_before": [[0.0 if p is None else p for p in t.p_before] for t in trajs],
        "p_after": [list(t.p_after) for t in trajs],
    }


class LoopDelta:
    """What one rollout adds to the agent loop's stage timings and counters and to torch.compile's graphs (the
    GRPO metrics' rollout_stage_s, rollout_counts and rollout_new_graphs: where a step's rollout time went)."""

    def __init__(self, loop):
        self.loop, self.timings, self.counts = loop, Counter(loop.timings), Counter(loop.counts)
        self.graphs = compiled_graphs()

    def metrics(self) -> dict:
        stages, calls = Counter(self.loop.timings), Counter(self.loop.counts)
        stages.subtract(self.timings)  # seconds by loop stage (clips, generate, embed, search, rollout, ...)
        calls.subtract(self.counts)  # generate calls, their rows and decode steps (a batch decodes to its longest row)
        return {"rollout_stage_s": {k: round(v, 4) for k, v in sorted(stages.items()) if v > 0},
                "rollout_counts": {k: v for k, v in sorted(calls.items()) if v > 0},
                "rollout_new_graphs": compiled_graphs() - self.graphs}


def compiled_graphs() -> int:
    """Graphs torch.compile has made in this process so far (a recompiling step shows up as a rise)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
