"""What a policy trained on the synthetic world's checklist traces wrote in its checks, read back from predictions.

    trace_checks(rows)   # {"items": {name: {"agree", "contradict"}}, "event": {"gt" / "wrong": {"seen", "not_seen"}}}

The synthetic SFT traces (train/sft_data.py, sft.trace_style checklist / details) write
"Check: <name> <seen> / <asked>: same|differs; ...; event <query's event>: seen|not seen." inside <think>.
A check whose verdict disagrees with its own two written sides ("shape star / star: differs") is a comparison
error, not a perception one; the event check on the GT video says whether the queried event was found. Read per
turn, split by whether the turn showed the GT. Turns without a parseable "Check:" clause are counted apart
(`unparsed`), never dropped silently. `vsr1 infer` writes this into summary.json (`trace_checks`).
"""
from __future__ import annotations

import re

_CHECKS = re.compile(r"Check: (.*?)\.(?: It does not match| From |$)", re.S)
_ITEM = re.compile(r"^(\w+) (.+?) / (.+?): (same|differs)$")
_EVENT = re.compile(r"^event .*: (seen|not seen)$")


def parse_checks(text: str) -> tuple[list[tuple[str, str, str, str]], str | None] | None:
    """([(name, seen, asked, verdict)], event verdict or None) of a trace's "Check:" clause; None: no clause."""
    m = _CHECKS.search(text or "")
    if m is None:
        return None
    items, event = [], None
    for part in m.group(1).split("; "):
        it, ev = _ITEM.match(part), _EVENT.match(part)
        if it:
            items.append(it.groups())
        elif ev:
            event = ev.group(1)
    return items, event


def trace_checks(rows: list[dict]) -> dict | None:
    """Counts over every generated turn of the prediction rows (see the module docstring); None when no turn has a
    "Check:" clause (another trace style, or no generation)."""
    items: dict[str, dict[str, int]] = {}
    event = {"gt": {"seen": 0, "not_seen": 0}, "wrong": {"seen": 0, "not_seen": 0}}
    parsed = unparsed = 0
    for r in rows:
        if not isinstance(r, dict):  # an unreadable row (the evaluator counts it)
            continue
        for t in r.get("turns") or []:
            if not isinstance(t, dict) or t.get("output") is None:
                continue
            got = parse_checks(t["output"])
            if got is None:
                unparsed += 1
                continue
            parsed += 1
            for name, seen, asked, verdict in got[0]:
                c = items.setdefault(name, {"agree": 0, "contradict": 0})
                c["agree" if (seen == asked) == (verdict == "same") else "contradict"] += 1
            if got[1] is not None:
                gt = t["gt_shown"] if "gt_shown" in t else t.get("video") is not None and t.get("video") == r.get("gt_video")
                side = "gt" if gt else "wrong"
                event[side][got[1].replace(" ", "_")] += 1
    if not parsed:
        return None
    return {"turns": parsed, "unparsed": unparsed, "items": items, "event": event}


def format_trace_checks(tc: dict) -> str:
    """One line: each check's verdicts that contradict their two written sides, and the event check by side."""
    items = ", ".join(f"{k} {v['contradict']}/{v['agree'] + v['contradict']}" for k, v in tc["items"].items())
    ev = tc["event"]
    return (f"  written checks contradicting their two sides: {items or 'none'}; event 'not seen' on the GT "
            f"{ev['gt']['not_seen']}/{sum(ev['gt'].values())}, on wrong videos {ev['wrong']['not_seen']}/"
            f"{sum(ev['wrong'].values())} ({tc['turns']} turns read, {tc['unparsed']} without checks)")
