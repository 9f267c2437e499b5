"""GRPO rewards as plain functions (the TRL contract), a registry, and the retrieval probability.

    from videosearch_r1.train.rewards import score
    total, parts = score({"verification": 1.0, "iou": 1.0}, completions, shown=..., gt_video=..., gt_span=...)

Contract: `f(completions, **kwargs) -> list[float]`, one float per trajectory. A completion is one
trajectory of the agent loop: the list of its assistant outputs, one string per executed turn (the
loop is multi-turn; a single-turn sample is a one-element list). Per-trajectory columns arrive as
keyword lists of the same length (unknown ones are ignored, so every function takes `**kwargs`):

    shown     list[list[str]]          the video shown at each turn
    gt_video  list[str]                the ground-truth video
    gt_span   list[tuple[float, float]]  the ground-truth moment (seconds)
    duration  list[list[float | None]] the shown video's duration per turn (spans are clamped to it)
    p_before  list[list[float]]        retrieval probability of the vector each turn searched with
    p_after   list[list[float | None]] ... of the vector the turn's refinement produced (None: no refinement)

Every output is parsed by the one parser (agent/prompts.parse_output), so rewards, inference and
evaluation read outputs alike (reference §9.12). The functions, each logged as `reward/<name>`:
- format:       mean over turns of 1.0 when the output follows the grammar, else 0.0;
- verification: per turn +1 when the answer is right (matched iff the shown video is the GT), -1 when it is
                wrong or unparseable (the reference's r_answer_binary); over a trajectory's turns the minimum
                (mode "all", the default: +1 only when every turn was right) or the mean (mode "mean").
                The mean pays for giving up: once the GT is rejected every later video is wrong, and
                rejecting those is "right", so always answering not_matched scores about +0.3 where GT was
                top-1 (-1, +1, +1) and beats a policy that accepts (measured: GRPO under the mean drifted
                to max_turns, LOG.md 2026-12-01). Under "all" only a correct verifier scores +1;
- iou:          temporal IoU of the last turn's span with the GT when that turn answered matched on
                the GT video (the loop stops there), else 0;
- retrieval:    the quality of the refined query: mean over refinement turns of p_after =
                exp(-L_ret) (InfoNCE of the refined vector against the GT and negatives, retrieval_prob),
                or with mode="delta" the authors' p_after - p_before; a trajectory that never refined
                scores its first search vector's p (exp mode) or 0 (delta mode), so not refining is neither
                rewarded nor punished per se;
- turn_cost:    -(turns - 1): an optional price on extra turns (weight 0 by default).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np

from videosearch_r1.agent.prompts import parse_output
from videosearch_r1.eval.metrics import temporal_iou

RewardFn = Callable[..., list]
RETRIEVAL_MODES = ("exp_neg_loss", "delta")


def _turns(completion) -> list[str]:
    if isinstance(completion, str):
        raise TypeError("a completion is the list of a trajectory's turn outputs, not one string: wrap it in [...]")
    return list(completion)


def format_reward(completions: list[list[str]], **kwargs) -> list[float]:
    """Mean over turns of 1.0 for an output that follows the grammar (parse_output(...).ok), else 0.0.

    >>> format_reward([["<think>Red.</think> <answer>not_matched</answer> <REFINE>"], ["red circle"]])
    [1.0, 0.0]
    """
    out = []
    for c in completions:
        turns = _turns(c)
        out.append(float(np.mean([parse_output(t).ok for t in turns])) if turns else 0.0)
    return out


VERIFICATION_MODES = ("all", "mean")


def verification_reward(completions: list[list[str]], shown: list[list[str]], gt_video: list[str],
                        verification_mode: str = "all", **kwargs) -> list[float]:
    """Per turn +1 (matched iff the shown video is the GT) / -1 (wrong or unparseable); over the turns the
    minimum (verification_mode "all") or the mean ("mean").

    >>> no = "<think>a</think> <answer>not_matched</answer> <REFINE>"
    >>> yes = "<think>b</think> <answer>matched</answer> <start>1.0</start> <end>2.0</end> <REFINE>"
    >>> verification_reward([[no, yes], [no, no, no]], shown=[["v1", "v2"], ["v2", "v1", "v3"]], gt_video=["v2", "v2"])
    [1.0, -1.0]
    >>> verification_reward([[no, no, no]], shown=[["v2", "v1", "v3"]], gt_video=["v2"], verification_mode="mean")
    [0.3333333333333333]
    """
    if verification_mode not in VERIFICATION_MODES:
        raise ValueError(f"verification reward mode must be one of {VERIFICATION_MODES}, got {verification_mode!r}")
    agg = min if verification_mode == "all" else (lambda x: float(np.mean(x)))
    out = []
    for c, vids, gt in zip(completions, shown, gt_video, strict=True):
        turns = _turns(c)
        if len(turns) != len(vids):
            raise ValueError(f"{len(turns)} outputs but {len(vids)} shown videos in one trajectory")
        scores = [1.0 if parse_output(t).answer == ("matched" if v == gt else "not_matched") else -1.0
                  for t, v in zip(turns, vids)]
        out.append(float(agg(scores)) if scores else -1.0)
    return out


def iou_reward(completions: list[list[str]], shown: list[list[str]], gt_video: list[str],
               gt_span: list[Sequence[float]], duration: Optional[list[list[Optional[float]]]] = None,
               **kwargs) -> list[float]:
    """IoU of the last turn's span with the GT moment when it answered matched on the GT video, else 0.
    The span is clamped to [0, duration] like the loop does (duration None: no clamping).

    >>> iou_reward([["<think>x</think> <answer>matched</answer> <start>2.0</start> <end>6.0</end> <REFINE>"]],
    ...            shown=[["v2"]], gt_video=["v2"], gt_span=[(4.0, 6.0)])
    [0.5]
    """
    out = []
    for i, (c, vids, gt, span) in enumerate(zip(completions, shown, gt_video, gt_span, strict=True)):
        turns = _turns(c)
        if not turns or vids[len(turns) - 1] != gt:
            out.append(0.0)
            continue
        p = parse_output(turns[-1])
        if p.answer != "matched" or p.span is None:
            out.append(0.0)
            continue
        dur = duration[i][len(turns) - 1] if duration is not None else None
        hi = float(dur) if dur is not None else math.inf
        pred = (min(max(p.span[0], 0.0), hi), min(max(p.span[1], 0.0), hi))
        out.append(float(temporal_iou(pred, (float(span[0]), float(span[1])))))
    return out


def retrieval_reward(completions: list[list[str]], p_before: list[list[float]],
                     p_after: list[list[Optional[float]]], mode: str = "exp_neg_loss", **kwargs) -> list[float]:
    """Refined-query quality: mean over refinement turns of p_after (= exp(-L_ret)), or of
    p_after - p_before (mode="delta", the authors' R_ret); no refinement: p_before of turn 1 / 0.

    >>> retrieval_reward([["a", "b"], ["c"]], p_before=[[0.2, 0.6], [0.3]], p_after=[[0.6, None], [None]])
    [0.6, 0.3]
    >>> retrieval_reward([["a", "b"]], p_before=[[0.2, 0.6]], p_after=[[0.6, None]], mode="delta")
    [0.4]
    """
    if mode not in RETRIEVAL_MODES:
        raise ValueError(f"retrieval reward mode must be one of {RETRIEVAL_MODES}, got {mode!r}")
    out = []
    for c, before, after in zip(completions, p_before, p_after, strict=True):
        pairs = [(b, a) for b, a in zip(before, after) if a is not None]
        if mode == "delta":
            out.append(float(np.mean([a - b for b, a in pairs])) if pairs else 0.0)
        elif pairs:
            out.append(float(np.mean([a for _, a in pairs])))
        else:
            out.append(float(before[0]) if before else 0.0)
    return [round(x, 12) for x in out]


def turn_cost_reward(completions: list[list[str]], **kwargs) -> list[float]:
    """-(turns - 1): the price of every turn after the first.

    >>> turn_cost_reward([["a"], ["a", "b", "c"]])
    [0.0, -2.0]
    """
    return [float(-max(len(_turns(c)) - 1, 0)) for c in completions]


REWARDS: dict[str, RewardFn] = {
    "format": format_reward,
    "verification": verification_reward,
    "iou": iou_reward,
    "retrieval": retrieval_reward,
    "turn_cost": turn_cost_reward,
}


def check_weights(weights: dict[str, float]) -> None:
    """ValueError naming an unknown reward or a non-finite weight (grpo.reward_weights)."""
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise ValueError(f"grpo.reward_weights: unknown reward(s) {unknown}; known: {sorted(REWARDS)}")
    bad = {k: w for k, w in weights.items() if not math.isfinite(float(w))}
    if bad:
        raise ValueError(f"grpo.reward_weights: non-finite weight(s) {bad}")


def score(weights: dict[str, float], completions: list[list[str]],
          **kwargs) -> tuple[list[float], dict[str, list[float]]]:
    """Total reward sum_i w_i r_i per trajectory, and each named reward's values (weight 0: skipped).

    >>> total, parts = score({"turn_cost": 0.5, "format": 0.0}, [["a"], ["a", "b"]])
    >>> total, sorted(parts)
    ([0.0, -0.5], ['turn_cost'])
    """
    check_weights(weights)
    parts: dict[str, list[float]] = {}
    total = np.zeros(len(completions), dtype=np.float64)
    for name, w in weights.items():
        if float(w) == 0.0:
            continue
        vals = REWARDS[name](completions, **kwargs)
        if len(vals) != len(completions):
            raise ValueError(f"reward {name} returned {len(vals)} values for {len(completions)} completions")
        parts[name] = [float(v) for v in vals]
        total += float(w) * np.asarray(parts[name], dtype=np.float64)
    return [float(x) for x in total], parts


# ------------------------------------------------------------------------------------ retrieval probability
def retrieval_prob(q: np.ndarray, pos: np.ndarray, negs: np.ndarray, tau: float) -> float:
    """exp(-L_ret) = softmax([q.pos, q.neg_1, ...] / tau)[0] for unit vectors q, pos [D], negs [K, D].

    >>> e = np.eye(3, dtype=np.float32)
    >>> round(retrieval_prob(e[0], e[0], e[1:], tau=1.0), 4)   # e / (e + 2)
    0.5761
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    logits = np.concatenate([[float(q @ pos)], (np.asarray(negs, dtype=np.float64) @ q).reshape(-1)]) / tau
    logits -= logits.max()
    e = np.exp(logits)
    return float(e[0] / e.sum())


def hard_negatives(vectors: np.ndarray, ids: list[str], q: np.ndarray, gt: str, k: int) -> list[str]:
    """The k corpus videos closest to q (exact inner product), the GT excluded: InfoNCE negatives.

    >>> v = np.eye(4, dtype=np.float32); q = np.array([0.9, 0.1, 0.4, 0.0], np.float32)
    >>> hard_negatives(v, ["a", "b", "c", "d"], q, gt="a", k=2)
    ['c', 'b']
    """
    s = vectors @ np.asarray(q, dtype=np.float32)
    order = np.argsort(-s, kind="stable")
    return [ids[r] for r in order if ids[r] != gt][:k]
