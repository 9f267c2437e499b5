"""The multi-turn agent loop, batched across queries: retrieve -> verify -> refine (SQR) or ground.

    loop = AgentLoop(cfg.agent, engine, policy, clip_fn=lambda v: load_clip(cfg, "synth", v),
                     durations={v: ref.duration for v, ref in split.videos.items()})
    trajs = loop.run(split.queries[:8])          # list[Trajectory]; .to_row() -> prediction rows

Turn t, for every still-active query of the batch at once:
1. search with the query's current vector, excluding every video already shown to that query, and
   show the top-1 unseen video (none left: stop "exhausted"; an empty corpus: "no_candidates");
2. verify: ONE Policy.generate call for the whole batch; parse each output (agent/prompts.py);
3. unparseable answer -> stop "malformed"; matched -> ground (the parsed span, clamped to the video's
   duration) and stop "matched"; not_matched -> refine by method, and stop "max_turns" at the limit.
Methods (AgentConfig.method):
- "sqr": a not_matched with <REFINE> rolls out N latents (agent/sqr.py, one batched rollout), the
  policy projects them to embedder soft tokens, and the refined vector is
  engine.embed_refined(original text, soft). refine_mode "replace": this turn's soft tokens only (the
  authors' code); "accumulate": all turns' soft tokens concatenated in turn order (the paper's
  q_{t+1} = [q_t || q_t^soft]). A not_matched without <REFINE> keeps the current vector (the next
  unseen candidate is shown; the authors stop there instead).
- "zeroshot": no refinement; a not_matched moves on to the next unseen candidate of the original query.
- "hqr": hard query refinement: the policy writes <query>NEW</query>; the search text becomes the
  original query + " " + NEW (replace) or + all rewrites so far (accumulate), re-embedded with
  engine.embed_queries. Its generated tokens are counted (text_tokens; refine_tokens = rewrite tokens).
  A not_matched without a <query> keeps the current vector.
- "engine": no agent: the engine's top-1 is answered "matched" with the span [0, duration] of that
  video (the whole video), stop "engine_only"; no policy, no video decoding.
Refinement also runs on the last turn (its rank is logged as the final retrieval rank), so the turns
of a run with limit T are exactly the first T turns of a run with a larger limit (report.py relies on it).
Ground truth is read only to log ranks and IoU; no decision uses it, except under agent.oracle_verifier (a
diagnostic: every turn's verdict is the truth, the policy's own kept as policy_answer, so a method's
retrieval and refinement are measured apart from its verifier). A video that fails to decode
stops that query with "video_error" (counted in the summary), never the run.
"""
from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from videosearch_r1.agent.prompts import REFINE_TOKEN, parse_output
from videosearch_r1.agent.trajectory import Trajectory, TurnRecord
from videosearch_r1.config import AgentConfig
from videosearch_r1.eval.metrics import temporal_iou

METHODS = ("sqr", "zeroshot", "hqr", "engine")
PREFETCH_AHEAD = 2  # batches whose first-turn clips may be prefetched at once (this one + the next)


def _cut_after_refine(text: str) -> str:
    """The output up to and including its last <REFINE> (what the rollout's prefix must end with)."""
    i = text.rfind(REFINE_TOKEN)
    return text[: i + len(REFINE_TOKEN)] if i >= 0 else text

REFINE_MODES = ("replace", "accumulate")


def check_agent_config(acfg: AgentConfig) -> None:
    """ValueError naming the agent.* field that the loop cannot run with."""
    if acfg.method not in METHODS:
        raise ValueError(f"agent.method must be one of {METHODS}, got {acfg.method!r}")
    if acfg.refine_mode not in REFINE_MODES:
        raise ValueError(f"agent.refine_mode must be one of {REFINE_MODES}, got {acfg.refine_mode!r}")
    if acfg.decode_attention not in ("auto", "sdpa", "matmul"):
        raise ValueError(f"agent.decode_attention must be 'auto', 'sdpa' or 'matmul', got {acfg.decode_attention!r}")
    if acfg.max_turns < 1 or acfg.n_latents < 1 or acfg.batch_size < 1:
        raise ValueError(f"agent.max_turns, n_latents and batch_size must be >= 1, got {acfg.max_turns}, "
                         f"{acfg.n_latents}, {acfg.batch_size}")
    if acfg.prefill_tokens < 0 or acfg.vision_cache_mb < 0:
        raise ValueError(f"agent.prefill_tokens and agent.vision_cache_mb must be >= 0, got {acfg.prefill_tokens}, "
                         f"{acfg.vision_cache_mb}")
    if acfg.oracle_verifier and acfg.method == "engine":
        raise ValueError("agent.oracle_verifier needs a policy's turns; agent.method=engine has none")
    bad = [d for d in acfg.profile_depths if not 1 <= d <= acfg.n_latents]
    if bad:
        raise ValueError(f"agent.profile_depths must lie in 1..n_latents={acfg.n_latents}, got {bad}")


@dataclass
class _State:
    """One query's running state inside a batch."""

    query: Any  # data.records.Query
    text: str  # the query text (config query_field)
    traj: Trajectory
    qvec: np.ndarray  # [D] the vector the next turn searches with
    seen: set[str] = field(default_factory=set)
    soft: list[np.ndarray] = field(default_factory=list)  # per refinement turn: [N, He] soft tokens
    rewrites: list[str] = field(default_factory=list)  # HQR rewrites, in turn order
    done: bool = False

    def stop(self, reason: str) -> None:
        self.traj.stop_reason = reason
        self.done = True


class AgentLoop:
    """Runs batches of queries through the loop; keeps stage timings and counters for the summary."""

    def __init__(self, acfg: AgentConfig, engine, policy=None, clip_fn: Optional[Callable[[str], Any]] = None,
                 durations: Optional[dict[str, float]] = None, query_field: str = "fig_desc",
                 ranked_k: int = 0, clip_workers: int = 4):
        check_agent_config(acfg)
        if acfg.method != "engine" and (policy is None or clip_fn is None):
            raise ValueError(f"method {acfg.method!r} needs a policy and a clip loader")
        self.acfg, self.engine, self.policy, self.clip_fn = acfg, engine, policy, clip_fn
        self.durations = dict(durations or {})
        self.query_field = query_field
        self.ranked_k = ranked_k
        self.index_ids = set(engine.ids)
        self.pool = ThreadPoolExecutor(max_workers=max(1, clip_workers)) if clip_fn is not None else None
        # the next batch's first-turn clips, decoding in the background while this batch runs (prefetch_first)
        self.prefetch_pool = ThreadPoolExecutor(max_workers=2) if clip_fn is not None else None
        self._prefetched: dict = {}  # video id -> Future[(clip, error)]
        self._prefetch_order: list[list[str]] = []  # video ids per prefetched batch (at most PREFETCH_AHEAD kept)
        self._first_qv: dict = {}  # texts -> [B, D] query vectors embedded by prefetch_first, reused by run
        self.timings: Counter = Counter()  # seconds per stage
        self.counts: Counter = Counter()  # generate calls, rollouts, video errors, ...
        # GRPO rollouts (train/grpo_rollout.py) run this same loop with three additions:
        self.sampling: dict = {}  # extra Policy.generate kwargs (top_p, a seeded torch.Generator)
        self.recorder = None  # .on_generate(states, gen, clips) / .on_refine(states, mean, used, before, after)
        self.soft_noise: Optional[Callable[[np.ndarray], np.ndarray]] = None  # soft [B,N,He] -> the soft tokens used
        # query -> the sub-corpus its searches are confined to (None: the whole index); GRPO's grpo.corpus_size.
        # GT ranks (TurnRecord.rank_before, orig_rank) stay ranks over the whole index.
        self.scope: Optional[Callable[[Any], Optional[frozenset]]] = None

    # ------------------------------------------------------------------ helpers
    def _search(self, qvecs: np.ndarray, k: int, queries: list, exclude: Optional[list] = None):
        """engine.search for these queries (their `scope` when set)."""
        kw = {} if self.scope is None else {"scope": [self.scope(q) for q in queries]}
        return self._timed("search", self.engine.search, qvecs, k=k, exclude=exclude, **kw)

    def _timed(self, name: str, fn, *args, **kw):
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            self.timings[name] += time.perf_counter() - t

    def _ranks(self, qvecs: np.ndarray, states: list[_State]) -> list[Optional[int]]:
        """Exact GT ranks for logging (None where the GT video is not in the index)."""
        keep = [i for i, s in enumerate(states) if s.query.video_id in self.index_ids]
        out: list[Optional[int]] = [None] * len(states)
        if keep:
            got = self._timed("rank", self.engine.rank_of, qvecs[keep], [states[i].query.video_id for i in keep])
            for i, r in zip(keep, got):
                out[i] = int(r)
        return out

    def _duration(self, video_id: str, clip=None) -> Optional[float]:
        if video_id in self.durations:
            return float(self.durations[video_id])
        info = getattr(clip, "info", None)
        return float(info.duration) if info is not None else None

    def _load_one(self, v: str) -> tuple[Any, Optional[str]]:
        try:
            return self.clip_fn(v), None
        except Exception as e:  # noqa: BLE001 - any decode failure is this query's stop, not the run's
            return None, f"{type(e).__name__}: {e}"

    def _load_clips(self, videos: list[str]) -> list[tuple[Any, Optional[str]]]:
        """Decode the shown videos in parallel (threads; PyAV releases the GIL): (clip, error) each. Clips
        prefetched for this batch (prefetch_first) are taken from their background loads."""
        uniq = list(dict.fromkeys(videos))
        futures = {}
        for v in uniq:
            fut = self._prefetched.pop(v, None)
            if fut is not None:
                self.counts["prefetched_clips"] += 1
            futures[v] = fut if fut is not None else self.pool.submit(self._load_one, v)
        got = {v: f.result() for v, f in futures.items()}
        return [got[v] for v in videos]

    def prefetch_first(self, queries: list) -> list[str]:
        """Start decoding, in background threads, the videos the first turn of `queries` will show (their
        engine top-1: turn 1 excludes nothing), e.g. the next batch's while this one runs on the GPU. Only
        CPU work runs in the background (clip_fn); the query embedding is done here and reused by `run`.
        Prefetches of at most PREFETCH_AHEAD batches are held; older unused ones are dropped."""
        if not queries or self.acfg.method == "engine" or self.prefetch_pool is None:
            return []
        texts = [getattr(q, self.query_field) for q in queries]
        qv = self._timed("embed", self.engine.embed_queries, texts)
        res = self._search(qv, 1, queries)
        videos = list(dict.fromkeys(ids[0] for ids in res.ids if ids))
        self._prefetch_order.append(videos)
        while len(self._prefetch_order) > PREFETCH_AHEAD:
            for v in self._prefetch_order.pop(0):
                self._prefetched.pop(v, None)
        while len(self._first_qv) >= PREFETCH_AHEAD:
            self._first_qv.pop(next(iter(self._first_qv)))
        self._first_qv[tuple(texts)] = qv
        for v in videos:
            if v not in self._prefetched:
                self._prefetched[v] = self.prefetch_pool.submit(self._load_one, v)
        return videos

    # ------------------------------------------------------------------ the loop
    def run(self, queries: list) -> list[Trajectory]:
        """Run the whole loop for one batch of queries; returns one finished Trajectory per query."""
        if not queries:
            return []
        texts = [getattr(q, self.query_field) for q in queries]
        qv = self._first_qv.pop(tuple(texts), None)  # embedded by prefetch_first (same batch, same call)
        if qv is None:
            qv = self._timed("embed", self.engine.embed_queries, texts)  # [B, D]
        states = [_State(q, text, Trajectory(qid=q.qid, query=text, gt_video=q.video_id, gt_start=q.start,
                                             gt_end=q.annotated_end, duration=q.duration, method=self.acfg.method),
                         qvec=qv[i]) for i, (q, text) in enumerate(zip(queries, texts))]
        for s, r in zip(states, self._ranks(qv, states)):
            s.traj.orig_rank = r
        for turn in range(1, self.acfg.max_turns + 1):
            active = [s for s in states if not s.done]
            if not active:
                break
            shown = self._retrieve(active, turn)
            if not shown:
                continue
            if self.acfg.method == "engine":
                self._engine_answer(shown)
                continue
            verified = self._verify(shown)
            refine = [(s, p) for s, p in verified if not s.done]
            if refine:
                self._refine(refine)
            if turn == self.acfg.max_turns:
                for s in states:
                    if not s.done:
                        s.stop("max_turns")
        for s in states:
            if not s.done:  # unreachable: every path above sets a stop reason
                raise RuntimeError(f"query {s.query.qid}: loop ended without a stop reason")
        if self.ranked_k > 0:
            self._ranked(states)
        self.counts["queries"] += len(states)
        return [s.traj for s in states]

    def _retrieve(self, active: list[_State], turn: int) -> list[_State]:
        """Search every active query once (seen videos excluded); record the turn for those shown one."""
        qvecs = np.stack([s.qvec for s in active])
        res = self._search(qvecs, 1, [s.query for s in active], exclude=[set(s.seen) for s in active])
        ranks = self._ranks(qvecs, active)
        shown = []
        for i, s in enumerate(active):
            if not res.ids[i]:
                s.stop("exhausted" if s.seen else "no_candidates")
                continue
            video = res.ids[i][0]
            s.seen.add(video)
            s.traj.turns.append(TurnRecord(turn=turn, video=video, score=float(res.scores[i, 0]),
                                           rank_before=ranks[i], gt_shown=video == s.query.video_id))
            shown.append(s)
        return shown

    def _engine_answer(self, shown: list[_State]) -> None:
        """Baseline "engine": the top-1 is the answer, grounded to the whole video."""
        for s in shown:
            tr = s.traj.turns[-1]
            dur = self._duration(tr.video)
            tr.answer, tr.parse_ok = "matched", dur is not None
            tr.span = [0.0, dur] if dur is not None else None
            tr.parse_error = None if dur is not None else f"unknown duration of {tr.video}"
            tr.iou = self._iou(s, tr)
            s.stop("engine_only")

    def _iou(self, s: _State, tr: TurnRecord) -> Optional[float]:
        if tr.video != s.query.video_id or tr.span is None:
            return None
        return float(temporal_iou(tuple(tr.span), (s.query.start, s.query.end)))

    def _verify(self, shown: list[_State]) -> list[tuple[_State, Any]]:
        """Decode the shown videos, one batched generate, parse; stop matched / malformed / video_error."""
        loaded = self._timed("clips", self._load_clips, [s.traj.turns[-1].video for s in shown])
        ok = []
        for s, (clip, err) in zip(shown, loaded):
            if clip is None:
                tr = s.traj.turns[-1]
                tr.parse_error = f"video error: {err}"
                self.counts["video_errors"] += 1
                s.stop("video_error")
            else:
                ok.append((s, clip))
        if not ok:
            return []
        grammar = "hqr" if self.acfg.method == "hqr" else "sqr"
        keep = self.acfg.method == "sqr" and self.acfg.kv_cache  # the rollout continues from this cache
        gen = self._timed("generate", self.policy.generate, [s.text for s, _ in ok], [c for _, c in ok],
                          max_new_tokens=self.acfg.max_new_tokens, temperature=self.acfg.temperature,
                          method=grammar, keep_state=keep, reserve=self.acfg.n_latents, **self.sampling)
        self.counts["generate_calls"] += 1
        self.counts["generate_rows"] += len(ok)
        self.counts["decode_steps"] += max((len(x) for x in gen.ids), default=0)  # the batch runs to its longest row
        if self.recorder is not None:
            self.recorder.on_generate([s for s, _ in ok], gen, [c for _, c in ok])
        out = []
        for i, (s, clip) in enumerate(ok):
            tr = s.traj.turns[-1]
            tr.output = gen.texts[i]
            tr.text_tokens = int(gen.n_tokens[i])
            p = parse_output(gen.texts[i], grammar=grammar)
            # refine only on a <REFINE> outside the reasoning that is also a generated <REFINE> id
            tr.answer, tr.parse_ok = p.answer, p.ok
            tr.has_refine = bool(p.has_refine and gen.has_refine[i])
            tr.parse_error = "; ".join(p.errors) or None
            tr.rewritten_query = p.rewritten_query
            if p.span is not None:
                dur = self._duration(tr.video, clip)
                lo, hi = (0.0, dur) if dur is not None else (0.0, float("inf"))
                tr.span = [min(max(p.span[0], lo), hi), min(max(p.span[1], lo), hi)]
            if self.acfg.oracle_verifier:  # the truth decides; the policy's verdict is kept beside it
                tr.policy_answer, tr.answer = p.answer, ("matched" if tr.gt_shown else "not_matched")
            tr.iou = self._iou(s, tr)
            if tr.answer is None:
                s.stop("malformed")
            elif tr.answer == "matched":
                s.stop("matched")
            out.append((s, (i, gen, clip)))
        return out

    # ------------------------------------------------------------------ refinement
    def _refine(self, items: list[tuple[_State, Any]]) -> None:
        """New query vectors for the not-matched queries of this turn (method-dependent), ranks logged."""
        method = self.acfg.method
        if method == "sqr":
            todo = [(s, x) for s, x in items if s.traj.turns[-1].has_refine]
            if todo:
                self._refine_sqr(todo)
        elif method == "hqr":
            todo = [(s, x) for s, x in items if s.traj.turns[-1].rewritten_query]
            if todo:
                self._refine_hqr(todo)

    def _refine_sqr(self, todo: list[tuple[_State, Any]]) -> None:
        """One batched latent rollout for every refining query, then embed_refined per soft length."""
        soft = mean = self._timed("rollout", self._rollout, todo)  # [B, N, He]
        if self.soft_noise is not None:  # a sampled latent action (GRPO): the refined query is embedded from it
            soft = self.soft_noise(mean)
        self.counts["rollouts"] += 1
        n = soft.shape[1]
        for j, (s, _) in enumerate(todo):
            s.soft.append(soft[j])
            tr = s.traj.turns[-1]
            tr.latent_tokens = tr.refine_tokens = n
        stacks = [self._soft_input(s) for s, _ in todo]
        vecs = self._embed_soft_groups([s.text for s, _ in todo], stacks)
        before = np.stack([s.qvec for s, _ in todo])
        self._apply_refined([s for s, _ in todo], vecs, [x.shape[0] for x in stacks])
        if self.recorder is not None:
            self.recorder.on_refine([s for s, _ in todo], mean, soft, before, vecs)
        depths = [d for d in self.acfg.profile_depths if d <= n]
        if depths:
            self._profile_depths([s for s, _ in todo], depths)

    def _rollout(self, todo: list[tuple[_State, Any]]) -> np.ndarray:
        """Soft tokens [B, N, He] for the refining rows: continued from the generation's KV cache
        (agent.kv_cache), else a fresh forward of prompt + output cut after its last <REFINE>
        (cached prefill, or the authors' full forward per latent when kv_cache is off)."""
        import torch

        from videosearch_r1.agent.sqr import find_refine_positions, refine_from_generation, rollout_latents

        gen, n = todo[0][1][1], self.acfg.n_latents
        rows = [x[0] for _, x in todo]
        if gen.state is not None:
            soft = refine_from_generation(self.policy, gen, n_latents=n).soft[rows]
        else:
            responses = [_cut_after_refine(gen.texts[r]) for r in rows]
            inputs = self.policy.build_inputs([s.text for s, _ in todo], [x[2] for _, x in todo], "sqr",
                                              responses=responses)
            pos = find_refine_positions(inputs["input_ids"], self.policy.refine_token_id,
                                        attention_mask=inputs["attention_mask"])
            with torch.no_grad():
                z = rollout_latents(self.policy, inputs, pos, n_latents=n, cached=self.acfg.kv_cache)
                soft = self.policy.soft_tokens(z)
        return soft.detach().float().cpu().numpy()

    def _soft_input(self, s: _State, depth: Optional[int] = None) -> np.ndarray:
        """Soft tokens for the embedder: this turn's (replace) or all turns' (accumulate), [N_total, He]."""
        cur = s.soft[-1] if depth is None else s.soft[-1][:depth]
        if self.acfg.refine_mode == "replace":
            return cur
        return np.concatenate(s.soft[:-1] + [cur], axis=0)

    def _embed_soft_groups(self, texts: list[str], stacks: list[np.ndarray]) -> np.ndarray:
        """engine.embed_refined batched by soft-token count (accumulate mixes counts in one batch)."""
        out: list[Optional[np.ndarray]] = [None] * len(texts)
        by_len: dict[int, list[int]] = {}
        for i, x in enumerate(stacks):
            by_len.setdefault(x.shape[0], []).append(i)
        for _, idx in sorted(by_len.items()):
            vecs = self._timed("embed", self.engine.embed_refined, [texts[i] for i in idx],
                               np.stack([stacks[i] for i in idx]))
            for i, v in zip(idx, vecs):
                out[i] = v
        return np.stack(out)

    def _apply_refined(self, states: list[_State], vecs: np.ndarray, soft_counts: list[int]) -> None:
        ranks = self._ranks(vecs, states)
        for s, v, r, c in zip(states, vecs, ranks, soft_counts):
            s.qvec = v
            tr = s.traj.turns[-1]
            tr.refined, tr.rank_after, tr.soft_tokens = True, r, int(c)

    def _profile_depths(self, states: list[_State], depths: list[int]) -> None:
        """Rank after refinement from the first d latents of the same rollout (reference PROFILE_ROLLOUT_DEPTHS)."""
        for s in states:
            s.traj.turns[-1].rank_after_by_depth = {}
        for d in depths:
            stacks = [self._soft_input(s, depth=d) for s in states]
            vecs = self._embed_soft_groups([s.text for s in states], stacks)
            for s, r in zip(states, self._ranks(vecs, states)):
                s.traj.turns[-1].rank_after_by_depth[str(d)] = r

    def _refine_hqr(self, todo: list[tuple[_State, Any]]) -> None:
        """Hard refinement: original text + rewrite(s), re-embedded as plain text."""
        states = [s for s, _ in todo]
        for s in states:
            tr = s.traj.turns[-1]
            s.rewrites.append(tr.rewritten_query)
            tr.refine_tokens = self._count_tokens(tr.rewritten_query)
        replace = self.acfg.refine_mode == "replace"
        search_texts = [" ".join([s.text] + (s.rewrites[-1:] if replace else s.rewrites)) for s in states]
        vecs = self._timed("embed", self.engine.embed_queries, search_texts)
        self._apply_refined(states, vecs, [0] * len(states))

    def _count_tokens(self, text: str) -> int:
        tok = self.policy.processor.tokenizer
        return len(tok(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ TVR view
    def _ranked(self, states: list[_State]) -> None:
        """TVR ranked list: the matched moment, then unseen candidates of the final vector, then rejected."""
        qvecs = np.stack([s.qvec for s in states])
        res = self._search(qvecs, self.ranked_k, [s.query for s in states], exclude=[set(s.seen) for s in states])
        for i, s in enumerate(states):
            s.traj.candidates = [[v, None, None, float(sc)] for v, sc in zip(res.ids[i], res.scores[i].tolist())]
