"""`vsr1 evaluate`: score prediction rows (paper view, and the TVR view when rows carry `ranked`).

    vsr1 evaluate run/predictions.jsonl                          # ground truth from the rows themselves
    vsr1 evaluate run/predictions.jsonl --dataset charades --split test --json run/metrics.json
    vsr1 evaluate run/predictions.jsonl --gt charades_fig_test.jsonl

With ground truth (--dataset/--split or --gt), gt_video/gt_start/gt_end come from it by qid, and the
denominator is the number of GT queries: a query without a scorable prediction is `missing` and scores
as a miss. Rows that cannot be scored (unreadable lines, including JSON nested too deep or integers over
Python's digit limit; missing/mistyped fields; without GT, a row's own GT span that is reversed, empty,
negative or not finite; unknown or duplicate qid) are counted by reason and listed. GT from a file is
scored as annotated (ends past `duration` not clamped). Definitions: docs/metrics.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from videosearch_r1.config import ConfigError
from videosearch_r1.data.fig import load_fig_jsonl, load_split
from videosearch_r1.data.records import FIGFormatError, Query
from videosearch_r1.eval.metrics import GT, Pred, Turn, paper_metrics, tvr_metrics, valid_span
from videosearch_r1.utils import atomic_write_json, config_from_args, parse_command

MAX_MESSAGES = 100


class Unscorable(ValueError):
    def __init__(self, reason: str, detail: str, qid: Optional[str] = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.qid = reason, qid


# ----------------------------------------------------------------------------- reading and checking rows
def read_predictions(path: str | Path) -> tuple[list, list[str]]:
    """Rows of a predictions JSONL (dicts; an unreadable line becomes its error string) and a label
    `file:line` per row. Blank lines are not rows."""
    rows, labels = [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # UTF-8 byte-order mark
            if not raw.strip():
                continue
            labels.append(f"{path}:{lineno}")
            rows.append(parse_line(raw))
    return rows, labels


def parse_line(raw: bytes):
    """One JSONL line -> its value, or an error string for an unreadable line. Bad UTF-8, bad JSON, a
    nesting too deep for the parser (RecursionError) and an integer over Python's digit limit
    (ValueError) are all unreadable lines, never a crash."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return f"bad JSON ({e.__class__.__name__}: {str(e)[:200]})"


def _get(d: dict, key: str, types: tuple, where: str, qid=None, optional=False):
    if key not in d:
        if optional:
            return None
        raise Unscorable("missing_field", f"{where}{key!r} missing", qid)
    v = d[key]
    if not ((v is None and type(None) in types) or (isinstance(v, types) and not isinstance(v, bool))):
        raise Unscorable("bad_type", f"{where}{key!r} = {repr(v)[:100]}", qid)
    return v


NUM, OPT_NUM, OPT_STR = (int, float), (int, float, type(None)), (str, type(None))


def _get_num(d: dict, key: str, types: tuple, where: str, qid=None) -> Optional[float]:
    """A number field as float (None where allowed); an int too large for a float is bad_type."""
    v = _get(d, key, types, where, qid)
    try:
        return None if v is None else float(v)
    except OverflowError:
        raise Unscorable("bad_type", f"{where}{key!r} = an integer of {len(str(v))} digits", qid) from None


def check_prediction(row, need_gt: bool) -> tuple[Pred, Optional[GT]]:
    """A prediction row -> (Pred, GT from the row or None); raises Unscorable naming reason and field."""
    if isinstance(row, str):
        raise Unscorable("bad_json", row)
    if not isinstance(row, dict):
        raise Unscorable("not_object", f"got {type(row).__name__}")
    qid = _get(row, "qid", (str, int), "")
    qid = str(qid)
    final = _get(row, "final", (dict,), "", qid)
    video = _get(final, "video", OPT_STR, "final.", qid)
    answer = _get(final, "answer", OPT_STR, "final.", qid)
    start = _get_num(final, "start", OPT_NUM, "final.", qid)
    end = _get_num(final, "end", OPT_NUM, "final.", qid)
    turns = []
    for i, t in enumerate(_get(row, "turns", (list,), "", qid)):
        if not isinstance(t, dict):
            raise Unscorable("bad_type", f"turns[{i}] is not an object", qid)
        where = f"turns[{i}]."
        turns.append(Turn(_get(t, "video", OPT_STR, where, qid), _get(t, "answer", OPT_STR, where, qid)))
    stop = _get(row, "stop_reason", (str,), "", qid)
    tokens = [_get(row, k, (int,), "", qid) for k in ("text_tokens", "latent_tokens")]
    if min(tokens) < 0 or max(tokens) >= 2**63:
        raise Unscorable("bad_type", f"token count out of range [0, 2**63): {str(tokens)[:100]}", qid)
    ranked = _check_ranked(_get(row, "ranked", (list, type(None)), "", qid, optional=True), qid)
    gt = None
    if need_gt:
        gt = GT(_get(row, "gt_video", (str,), "", qid), _get_num(row, "gt_start", NUM, "", qid),
                _get_num(row, "gt_end", NUM, "", qid))
        if not valid_span(gt.start, gt.end) or gt.start < 0:
            raise Unscorable("bad_gt", f"ground truth [gt_start, gt_end] = [{gt.start!r}, {gt.end!r}] is not a "
                             "finite, non-negative span with start < end", qid)
    return Pred(qid, video, answer, start, end, turns, stop, tokens[0], tokens[1], ranked), gt


def _check_ranked(ranked: Optional[list], qid: str) -> Optional[list[tuple]]:
    if ranked is None:
        return None
    out = []
    for i, e in enumerate(ranked):
        if (not isinstance(e, list) or len(e) != 4 or not isinstance(e[0], str)
                or any(x is not None and (isinstance(x, bool) or not isinstance(x, NUM)) for x in e[1:3])
                or isinstance(e[3], bool) or not isinstance(e[3], NUM)):
            raise Unscorable("bad_type", f"ranked[{i}] = {str(e)[:200]} is not [video, start, end, score]", qid)
        try:
            out.append((e[0], *(None if x is None else float(x) for x in e[1:])))
        except OverflowError:
            raise Unscorable("bad_type", f"ranked[{i}] holds an integer too large for a float", qid) from None
    return out


# ----------------------------------------------------------------------------- evaluation
def _gt_index(gt_queries) -> dict[str, GT]:
    out: dict[str, GT] = {}
    for q in gt_queries:
        if q.qid in out:
            raise ValueError(f"ground truth has qid {q.qid!r} twice")
        out[q.qid] = GT(q.video_id, q.start, getattr(q, "annotated_end", q.end))  # as annotated, not clamped
    return out


def evaluate_rows(rows: Sequence, gt_queries: Optional[Sequence[Query]] = None,
                  iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7), ks: Sequence[int] = (1, 5, 10, 100),
                  labels: Optional[Sequence[str]] = None) -> dict:
    """Score prediction rows (dicts; a str stands for an unreadable line, its text the error).

    With gt_queries (Query records, or anything with qid/video_id/start/end) the denominator is the GT
    queries; without, it is every distinct query among the rows (unscorable ones score as misses).
    """
    gt_by_qid = None if gt_queries is None else _gt_index(gt_queries)
    preds: dict[str, tuple[Pred, GT]] = {}
    reasons: Counter = Counter()
    messages: list[str] = []
    bad_qids: set[str] = set()
    anonymous_bad = gt_disagree = 0
    for i, row in enumerate(rows):
        label = labels[i] if labels else f"row {i + 1}"
        try:
            pred, gt = check_prediction(row, need_gt=gt_by_qid is None)
            if pred.qid in preds:
                raise Unscorable("duplicate_qid", f"qid {pred.qid!r} already scored (first row kept)", pred.qid)
            if gt_by_qid is not None:
                if pred.qid not in gt_by_qid:
                    raise Unscorable("unknown_qid", f"qid {pred.qid!r} is not in the ground truth", pred.qid)
                gt = gt_by_qid[pred.qid]
                if isinstance(row.get("gt_video"), str) and row["gt_video"] != gt.video:
                    gt_disagree += 1
                    messages.append(f"{label}: gt_video {row['gt_video']!r} differs from the ground truth's "
                                    f"{gt.video!r} (the ground truth is used)")
        except Unscorable as e:
            reasons[e.reason] += 1
            messages.append(f"{label}: {e}")
            if e.reason not in ("duplicate_qid", "unknown_qid"):
                if e.qid is None:
                    anonymous_bad += 1
                else:
                    bad_qids.add(e.qid)
            continue
        preds[pred.qid] = (pred, gt)

    if gt_by_qid is not None:
        pairs = [(preds[q][0] if q in preds else None, g) for q, g in gt_by_qid.items()]
    else:
        missing = anonymous_bad + len(bad_qids - preds.keys())
        pairs = list(preds.values()) + [(None, None)] * missing
    plist, glist = [p for p, _ in pairs], [g for _, g in pairs]
    n, scored = len(pairs), len(preds)
    has_ranked = any(p is not None and p.ranked is not None for p in plist)
    return {
        "n": n,
        "counts": {"rows": len(rows), "scored": scored, "missing": n - scored, "unscorable": sum(reasons.values()),
                   "unscorable_by_reason": dict(sorted(reasons.items())), "gt_disagree": gt_disagree,
                   "gt_source": "rows" if gt_by_qid is None else "ground_truth"},
        "paper": paper_metrics(plist, glist, iou_thresholds),
        "tvr": tvr_metrics([p.ranked if p else None for p in plist], glist, iou_thresholds, ks) if has_ranked else None,
        "messages": messages[:MAX_MESSAGES] + ([f"... {len(messages) - MAX_MESSAGES} more"]
                                               if len(messages) > MAX_MESSAGES else []),
        "settings": {"iou_thresholds": list(iou_thresholds), "ks": list(ks)},
    }


# ----------------------------------------------------------------------------- table
def _f(x, digits=1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _side(num: int, den: int, rate) -> str:
    return f"{num}/{den} ({_f(rate)} %)" if den else f"{num}/{den}"


def format_table(result: dict) -> str:
    """A plain-text table of an evaluate_rows result (rates in %)."""
    p, c = result["paper"], result["counts"]
    why = ", ".join(f"{k} {v}" for k, v in c["unscorable_by_reason"].items())
    lines = [f"queries {result['n']}  scored {c['scored']}  missing {c['missing']}  unscorable rows "
             f"{c['unscorable']}{f' ({why})' if why else ''}  gt from {c['gt_source']}"
             + (f"  gt_disagree {c['gt_disagree']}" if c["gt_disagree"] else ""),
             "paper view (rates in %; R@1 counts a `matched` final answer on the GT video)"]
    lines.append("  " + "  ".join(f"R1@{t} {_f(v)}" for t, v in p["vcmr_r1"].items()) + f"  mIoU {_f(p['miou'])}")
    lines.append(f"  VER {_f(p['ver_acc'])}  VER/turn {_f(p['ver_acc_per_turn'])} ({p['turns_verified']} turns)"
                 f"  VR@1 {_f(p['vr_r1'])}  VR@1(turn1) {_f(p['vr_r1_turn1'])}")
    verdicts = p.get("verdicts") or {}  # absent in results written before it existed
    for name, key in (("turn 1", "turn1"), ("all turns", "all_turns")):
        v = verdicts.get(key)
        if v and v["gt_shown"] + v["wrong_shown"]:
            lines.append(f"  {name}: GT accepted {_side(v['gt_accepted'], v['gt_shown'], v['gt_accept_rate'])}, "
                         f"wrong rejected {_side(v['wrong_rejected'], v['wrong_shown'], v['wrong_reject_rate'])}")
    lines.append(f"  turns/query {_f(p['mean_turns'], 2)}  text tok/query {_f(p['text_tokens_per_query'])}"
                 f"  latent tok/query {_f(p['latent_tokens_per_query'])}")
    lines.append("  stop: " + "  ".join(f"{k} {v}" for k, v in p["stop_reasons"].items()))
    tvr = result.get("tvr")
    if tvr:
        lines.append(f"TVR view ({tvr['with_ranked']} of {tvr['n']} queries have `ranked`)")
        for t, row in tvr["vcmr"].items():
            lines.append(f"  VCMR IoU>={t}: " + "  ".join(f"R@{k} {_f(v)}" for k, v in row.items()))
        if len(tvr["moment_ks"]) < len(tvr["vr"]):
            lines.append("  (VCMR R@k>1 not shown: ranked entries below the first carry no span, so it would "
                         "equal R@1)")
        lines.append("  VR: " + "  ".join(f"R@{k} {_f(v)}" for k, v in tvr["vr"].items()))
    if result["messages"]:
        lines.append("messages:")
        lines += [f"  {m}" for m in result["messages"][:20]]
        if len(result["messages"]) > 20:
            lines.append(f"  ... (all {len(result['messages'])} in the JSON output)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vsr1 evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("pred", help="predictions JSONL (one row per query)")
    ap.add_argument("--dataset", default=None, help="ground truth from this dataset's split (config datasets)")
    ap.add_argument("--split", default=None, help="split of --dataset (default: config split)")
    ap.add_argument("--gt", default=None, help="ground truth from a FIG JSONL file")
    ap.add_argument("--skip-bad-gt", action="store_true", help="skip (and count) malformed ground-truth rows")
    ap.add_argument("--json", default=None, help="also write the result as JSON here")
    args = parse_command(ap, argv)
    cfg = config_from_args(args)
    if args.gt and (args.dataset or args.split):
        print("vsr1 evaluate: give either --gt or --dataset/--split, not both", file=sys.stderr)
        return 2
    try:
        gt_queries = None
        if args.gt:
            gt_queries, summary = load_fig_jsonl(args.gt, skip_bad=args.skip_bad_gt)
            print(summary.format())
        elif args.dataset or args.split:
            split = load_split(cfg, args.dataset, args.split, skip_bad=args.skip_bad_gt)
            gt_queries = split.queries
            print(split.summary.format())
        rows, labels = read_predictions(args.pred)
    except (OSError, FIGFormatError, ConfigError) as e:
        print(f"vsr1 evaluate: error: {e}", file=sys.stderr)
        return 2
    result = evaluate_rows(rows, gt_queries, cfg.eval.iou_thresholds, cfg.eval.recall_ks, labels=labels)
    result["inputs"] = {"pred": str(args.pred), "gt": args.gt, "dataset": args.dataset, "split": args.split}
    print(format_table(result))
    if args.json:
        try:
            atomic_write_json(args.json, result)
        except OSError as e:
            print(f"vsr1 evaluate: error: cannot write --json {args.json}: {e.strerror or e}", file=sys.stderr)
            return 2
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
