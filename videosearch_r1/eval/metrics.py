"""Metrics as pure functions on typed records (definitions: docs/metrics.md; tests: tests/test_metrics.py).

    temporal_iou((1.0, 4.0), (2.0, 5.0))          # 0.5
    paper_metrics(preds, gts, (0.3, 0.5, 0.7))    # VCMR R@1, VER (+ its two sides), VR@1, tokens, stops
    tvr_metrics(ranked, gts, (0.5, 0.7), (1, 5, 10, 100))

`preds` / `ranked` are aligned with `gts`, one entry per query in the denominator; None marks a query
with no scorable prediction, which scores as a miss everywhere. Rates are percentages (0-100).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import NamedTuple, Optional, Sequence

MATCHED, NOT_MATCHED = "matched", "not_matched"
IOU_EPS = 1e-9  # IoU >= t - IOU_EPS counts as a hit (float round-off on exact thresholds)


class GT(NamedTuple):
    video: str
    start: float  # seconds
    end: float  # seconds


class Turn(NamedTuple):
    video: Optional[str]  # the video verified in this turn
    answer: Optional[str]  # "matched" | "not_matched" | None (unparseable)


class Pred(NamedTuple):
    """One checked prediction row (schema: notes/contracts.md, "prediction rows")."""

    qid: str
    video: Optional[str]  # final.video: the video verified in the last executed turn
    answer: Optional[str]  # final.answer
    start: Optional[float]  # final.start (None: no span parsed)
    end: Optional[float]
    turns: list[Turn]  # every executed turn, in order
    stop_reason: str
    text_tokens: int  # generated text tokens, all turns
    latent_tokens: int  # latent (soft) tokens, all turns
    ranked: Optional[list[tuple]]  # [(video, start, end, score), ...] best first; None when absent


# ----------------------------------------------------------------------------- spans and IoU
def valid_span(start, end) -> bool:
    """A span is valid iff start and end are finite real numbers with start < end.

    Reversed (start > end) and zero-length (start == end) spans are invalid: they score IoU 0.
    """
    for x in (start, end):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            return False
    return start < end


def temporal_iou(pred, gt) -> float:
    """|pred ∩ gt| / |pred ∪ gt| for (start, end) pairs; 0.0 when either is None or invalid."""
    if pred is None or gt is None or not valid_span(*pred) or not valid_span(*gt):
        return 0.0
    inter = min(pred[1], gt[1]) - max(pred[0], gt[0])
    if inter <= 0:
        return 0.0
    union = (pred[1] - pred[0]) + (gt[1] - gt[0]) - inter
    return inter / union


def iou_hit(iou: float, threshold: float) -> bool:
    return iou >= threshold - IOU_EPS


def verification_correct(video: Optional[str], answer: Optional[str], gt_video: str) -> bool:
    """A verification is right iff a video was shown, the answer parsed, and
    (answer == matched) == (video == gt_video). Unparseable answers are wrong."""
    if video is None or answer not in (MATCHED, NOT_MATCHED):
        return False
    return (answer == MATCHED) == (video == gt_video)


def grounded_iou(p: Pred, g: GT) -> float:
    """The paper's gated IoU: nonzero only for a `matched` final answer on the GT video with a valid span."""
    if p.answer != MATCHED or p.video != g.video:
        return 0.0
    return temporal_iou((p.start, p.end), (g.start, g.end))


def _pct(num: float, den: int) -> Optional[float]:
    return 100.0 * num / den if den else None


def _key(t: float) -> str:
    return f"{t:g}"


VERDICT_COUNTS = ("gt_shown", "gt_accepted", "wrong_shown", "wrong_rejected")


def verdict_counts(turns: Sequence[Turn], gt_video: str) -> Counter:
    """The verdict's confusion over `turns`: GT video shown / accepted (`matched`), a wrong video shown /
    rejected (`not_matched`). A turn with no video is skipped; an unparseable answer is shown, neither."""
    c: Counter = Counter()
    for tr in turns:
        if tr.video is None:
            continue
        side = "gt" if tr.video == gt_video else "wrong"
        c[f"{side}_shown"] += 1
        c["gt_accepted"] += side == "gt" and tr.answer == MATCHED
        c["wrong_rejected"] += side == "wrong" and tr.answer == NOT_MATCHED
    return c


def _verdicts(c: Counter) -> dict:
    return {**{k: c[k] for k in VERDICT_COUNTS}, "gt_accept_rate": _pct(c["gt_accepted"], c["gt_shown"]),
            "wrong_reject_rate": _pct(c["wrong_rejected"], c["wrong_shown"])}


# ----------------------------------------------------------------------------- paper view
def paper_metrics(preds: Sequence[Optional[Pred]], gts: Sequence[Optional[GT]],
                  iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> dict:
    """VCMR R@1 at each IoU, mIoU, VER (final and per turn), VR@1 (final, turn 1), tokens, turns, stops,
    and `verdicts`: the verdict's confusion (verdict_counts) at turn 1 and over all turns.

    Rates over n = len(gts) queries (None preds are misses). Per-turn VER and `verdicts` are over the
    executed turns of scored queries; tokens and mean turns are per scored query.
    """
    n = len(gts)
    hits = Counter()
    iou_sum = ver = vr = vr1 = turn_ok = n_turns = text = latent = 0
    stops: Counter = Counter()
    v_first: Counter = Counter()
    v_all: Counter = Counter()
    scored = [(p, g) for p, g in zip(preds, gts, strict=True) if p is not None]
    for p, g in scored:
        iou = grounded_iou(p, g)
        iou_sum += iou
        for t in iou_thresholds:
            hits[t] += iou_hit(iou, t)
        ver += verification_correct(p.video, p.answer, g.video)
        vr += p.video is not None and p.video == g.video
        vr1 += bool(p.turns) and p.turns[0].video == g.video
        turn_ok += sum(verification_correct(tr.video, tr.answer, g.video) for tr in p.turns)
        n_turns += len(p.turns)
        v_first.update(verdict_counts(p.turns[:1], g.video))
        v_all.update(verdict_counts(p.turns, g.video))
        text += p.text_tokens
        latent += p.latent_tokens
        stops[p.stop_reason] += 1
    if n > len(scored):
        stops["(missing)"] = n - len(scored)
    m = len(scored)
    return {
        "n": n,
        "vcmr_r1": {_key(t): _pct(hits[t], n) for t in iou_thresholds},
        "miou": _pct(iou_sum, n),
        "ver_acc": _pct(ver, n),
        "ver_acc_per_turn": _pct(turn_ok, n_turns),
        "turns_verified": n_turns,
        "verdicts": {"turn1": _verdicts(v_first), "all_turns": _verdicts(v_all)},
        "vr_r1": _pct(vr, n),
        "vr_r1_turn1": _pct(vr1, n),
        "mean_turns": n_turns / m if m else None,
        "text_tokens_per_query": text / m if m else None,
        "latent_tokens_per_query": latent / m if m else None,
        "stop_reasons": dict(sorted(stops.items())),
    }


# ----------------------------------------------------------------------------- TVR view
def first_hit_ranks(ranked: Optional[Sequence[tuple]], g: Optional[GT],
                    iou_thresholds: Sequence[float]) -> tuple[dict, float]:
    """1-based rank of the first moment hit per threshold (inf if none), and of the GT video in the
    de-duplicated video order of `ranked` (inf if absent)."""
    inf = math.inf
    first = {t: inf for t in iou_thresholds}
    if not ranked or g is None:
        return first, inf
    for rank, (video, start, end, _score) in enumerate(ranked, 1):
        if video != g.video:
            continue
        iou = temporal_iou((start, end), (g.start, g.end))
        for t in iou_thresholds:
            if first[t] == inf and iou_hit(iou, t):
                first[t] = rank
    order = list(dict.fromkeys(entry[0] for entry in ranked))
    vrank = order.index(g.video) + 1 if g.video in order else inf
    return first, vrank


def spans_beyond_first(ranked: Sequence[Optional[Sequence[tuple]]]) -> bool:
    """True iff some entry at rank >= 2 of some list carries a span (start or end not None)."""
    return any(e[1] is not None or e[2] is not None for lst in ranked if lst for e in lst[1:])


def tvr_metrics(ranked: Sequence[Optional[Sequence[tuple]]], gts: Sequence[Optional[GT]],
                iou_thresholds: Sequence[float] = (0.5, 0.7), ks: Sequence[int] = (1, 5, 10, 100)) -> dict:
    """TVR-style VCMR R@k at each IoU (moment rank in `ranked`) and VR@k (GT video's rank in the
    de-duplicated video order). n = len(gts); a None list is a miss.

    Moment R@k for k > 1 is reported only when ranked entries below the first carry spans: without
    them it equals R@1 by construction (the agent grounds only the video it accepts), so `vcmr` then
    has k <= 1 only and `moment_ks` says which ks it has.
    """
    n = len(gts)
    moment_ks = [k for k in ks if k <= 1 or spans_beyond_first(ranked)]
    moment = {t: Counter() for t in iou_thresholds}
    video = Counter()
    for lst, g in zip(ranked, gts, strict=True):
        first, vrank = first_hit_ranks(lst, g, iou_thresholds)
        for k in ks:
            video[k] += vrank <= k
            for t in iou_thresholds:
                moment[t][k] += first[t] <= k
    return {
        "n": n,
        "with_ranked": sum(lst is not None for lst in ranked),
        "moment_ks": moment_ks,
        "vcmr": {_key(t): {str(k): _pct(moment[t][k], n) for k in moment_ks} for t in iou_thresholds},
        "vr": {str(k): _pct(video[k], n) for k in ks},
    }
