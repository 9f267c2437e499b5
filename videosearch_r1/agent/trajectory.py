"""Typed per-query / per-turn records of the agent loop, and their prediction-row JSON form.

One `Trajectory` per query, one `TurnRecord` per executed turn. `Trajectory.to_row()` writes the
prediction-row schema of the contract (docs/metrics.md reads it); `from_row` reads it back (report).
Ground truth is carried only for logging (ranks, IoU); the loop never reads it to decide anything.

Rank fields (exact 1-based rank of the GT video in the whole corpus, None if the GT video is not in
the index):
- `rank_before`: under the query vector this turn searched with;
- `rank_after`: under the refined query vector this turn produced (SQR / HQR), which the next turn
  searches with; None when the turn did not refine;
- `rank_after_by_depth`: {"1": r, "2": r, ...}: rank of the refined query built from the first d
  latents of this turn's rollout (AgentConfig.profile_depths), None when not profiled.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

STOP_REASONS = ("matched", "max_turns", "malformed", "exhausted", "no_candidates", "engine_only",
                "video_error")


def _score(x) -> float:
    """A finite float for the `ranked` score slot (its order, not its value, is what counts)."""
    return float(x) if x is not None and math.isfinite(x) else 0.0


@dataclass
class TurnRecord:
    turn: int  # 1-based
    video: Optional[str]  # the video shown (top-1 unseen); None when none was left
    score: Optional[float] = None  # engine inner product of the shown video
    rank_before: Optional[int] = None
    rank_after: Optional[int] = None
    answer: Optional[str] = None  # "matched" | "not_matched" | None (unparseable)
    span: Optional[list[float]] = None  # [start, end] seconds, clamped to the shown video's duration
    parse_ok: bool = False
    parse_error: Optional[str] = None
    iou: Optional[float] = None  # vs the GT span when the shown video is the GT video and a span parsed
    text_tokens: int = 0  # generated text tokens this turn (incl. an HQR rewrite)
    latent_tokens: int = 0  # latent vectors generated this turn (SQR rollout depth)
    output: str = ""  # raw generated text
    refined: bool = False  # this turn produced a new query vector for the next turn
    has_refine: bool = False  # the output contained <REFINE>
    rewritten_query: Optional[str] = None  # HQR: the policy's rewritten query text
    refine_tokens: int = 0  # tokens that carry the refinement: latents (SQR) or rewrite tokens (HQR)
    soft_tokens: int = 0  # soft tokens fed to the embedder for the refined query (accumulate > latents)
    rank_after_by_depth: Optional[dict[str, int]] = None
    gt_shown: bool = False  # the shown video is the GT video (logging only)
    policy_answer: Optional[str] = None  # agent.oracle_verifier: the policy's own verdict (`answer` is the truth)


@dataclass
class Trajectory:
    qid: str
    query: str
    gt_video: str
    gt_start: float
    gt_end: float
    duration: float
    method: str
    turns: list[TurnRecord] = field(default_factory=list)
    stop_reason: Optional[str] = None
    orig_rank: Optional[int] = None  # GT rank under the original query (= turn-1 rank_before)
    candidates: list[list] = field(default_factory=list)  # [video, None, None, score]: final-vector top-k

    @property
    def text_tokens(self) -> int:
        return sum(t.text_tokens for t in self.turns)

    @property
    def latent_tokens(self) -> int:
        return sum(t.latent_tokens for t in self.turns)

    def final(self) -> dict:
        """The counted turn is the last executed one."""
        if not self.turns:
            return {"video": None, "answer": None, "start": None, "end": None}
        t = self.turns[-1]
        span = t.span or [None, None]
        return {"video": t.video, "answer": t.answer, "start": span[0], "end": span[1]}

    def ranked(self) -> list[list]:
        """TVR view [video, start, end, score], best first: the last shown video unless the policy
        rejected it (`not_matched`; with its span when `matched`), then the unseen candidates of the
        final query vector, then the shown-and-rejected videos (no span)."""
        out, seen = [], set()
        fin = self.final()
        last = self.turns[-1] if self.turns else None
        if last is not None and fin["video"] is not None and fin["answer"] != "not_matched":
            matched = fin["answer"] == "matched"  # an unparseable answer keeps its rank, not a span
            out.append([fin["video"], fin["start"] if matched else None, fin["end"] if matched else None,
                        _score(last.score)])
            seen.add(fin["video"])
        for v, start, end, score in self.candidates:
            if v not in seen:
                seen.add(v)
                out.append([v, start, end, _score(score)])
        for t in self.turns:
            if t.video is not None and t.video not in seen:
                seen.add(t.video)
                out.append([t.video, None, None, _score(t.score)])
        return out

    def to_row(self) -> dict:
        if self.stop_reason not in STOP_REASONS:
            raise ValueError(f"query {self.qid}: stop reason {self.stop_reason!r} not in {STOP_REASONS}")
        return {
            "qid": self.qid, "query": self.query, "gt_video": self.gt_video, "gt_start": self.gt_start,
            "gt_end": self.gt_end, "duration": self.duration, "method": self.method,
            "turns": [asdict(t) for t in self.turns],
            "final": self.final(), "stop_reason": self.stop_reason,
            "text_tokens": self.text_tokens, "latent_tokens": self.latent_tokens,
            "orig_rank": self.orig_rank,
            "ranked": self.ranked(),
        }

    @classmethod
    def from_row(cls, row: dict) -> "Trajectory":
        names = set(TurnRecord.__dataclass_fields__)
        turns = []
        for i, t in enumerate(row.get("turns", []), 1):
            if not isinstance(t, dict) or "turn" not in t or "video" not in t:
                raise ValueError(f"query {row.get('qid')!r}: turn {i} is not a turn record (needs the fields "
                                 f"'turn' and 'video'; has {sorted(t) if isinstance(t, dict) else type(t).__name__})")
            turns.append(TurnRecord(**{k: v for k, v in t.items() if k in names}))
        return cls(qid=str(row["qid"]), query=row.get("query", ""), gt_video=row.get("gt_video", ""),
                   gt_start=row.get("gt_start", 0.0), gt_end=row.get("gt_end", 0.0),
                   duration=row.get("duration", 0.0), method=row.get("method", ""), turns=turns,
                   stop_reason=row.get("stop_reason"), orig_rank=row.get("orig_rank"))


def truncate_row(row: dict, max_turns: int) -> dict:
    """The row a run with turn limit `max_turns` would have written (turns are prefix-identical).

    Exact because the loop refines on every not-matched turn, including the last one, so turn t does
    the same work whatever the limit; only the stop reason becomes "max_turns". The TVR `ranked` list
    depends on the final query vector, which a truncated row no longer has: it is dropped (None).
    """
    turns = row.get("turns", [])
    stop = row.get("stop_reason")
    if len(turns) < max_turns or (len(turns) == max_turns and stop != "exhausted"):
        return row
    traj = Trajectory.from_row(row)
    traj.turns = traj.turns[:max_turns]
    traj.stop_reason = "max_turns"
    out = dict(row)
    out.update(traj.to_row())
    out["ranked"] = None
    return out
