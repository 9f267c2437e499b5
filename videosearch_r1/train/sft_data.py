"""`vsr1 build sft DATASET`: SFT rows (train/rows.py schema) from the engine's top-1 on the TRAIN split.

    vsr1 index synth --split train            # the train-split index + hard negatives (done here if missing)
    vsr1 build sft synth [sft.max_queries=N] [sft.matched_share=0.5] [sft.n_negatives=24]
    vsr1 build sft charades sft.teacher=Qwen/Qwen3-VL-8B-Instruct     # real data: teacher reasoning traces

1. load the train split and open its index (cfg.index_dir(DATASET)/train; built here when missing)
2. per training query: the engine's top-1 video (label matched iff it is the GT video); queries whose GT
   video is not in the index are counted skips
3. balance (sft.balance): add pairs towards sft.matched_share matched rows: the GT video shown for
   queries whose top-1 was wrong, or the first hard negative shown for queries whose top-1 was right
   (each query gives at most two rows; choices seeded by sft.seed)
4. reasoning: synthetic world: written from the world's known timelines (world.json: what is seen, with
   times, and how it differs from the query); real datasets (or any dataset with sft.teacher set): a
   teacher VLM (sft.teacher) loaded through our Policy loader, batched, resumable
   (<prepared>/sft_teacher.jsonl), told the gold label, output tags stripped; or sft.teacher=none
   for plain template traces. The cache is keyed by everything that changes a trace (teacher_key: the
   teacher's files or hub id, the prompt, the video config, the generation settings; the key and its
   parts in sft_teacher.key.json): another key sets the old cache aside (sft_teacher.<key>.jsonl, taken
   back when that key returns) and starts a new one, never mixing traces. A pair whose video cannot be
   decoded is a counted skip (video_unreadable), retried on the next build
5. target: prompts.format_target(think, label, GT span if matched) (ends with <REFINE>)
6. InfoNCE negatives per row (sft.n_negatives): the wrong top-1 first, then the index's hard negatives
   in order, then a seeded random fill from the corpus. No "ambiguous negative" filter (reference.md
   §3.2, §9.6): negatives the original query already ranks above the GT are exactly what SQR must beat.
Writes <workspace>/data/<dataset>/prepared/sft_train.jsonl (atomic) and sft_train.summary.json.
"""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from videosearch_r1.agent.prompts import format_target
from videosearch_r1.train.rows import TrainRow, write_rows


@dataclass
class SFTDataSummary:
    dataset: str
    out: str = ""
    queries: int = 0
    rows: int = 0
    matched: int = 0
    not_matched: int = 0
    top1_correct: int = 0  # queries whose engine top-1 is the GT video
    added_matched: int = 0  # balancing pairs: GT shown
    added_not_matched: int = 0  # balancing pairs: a hard negative shown
    negatives_per_row: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    examples: list[str] = field(default_factory=list)  # first skipped items, one line each
    traces: str = ""  # "synth-timeline" | "teacher:<id>" | "template"
    trace_style: str = ""  # synth-timeline traces: sft.trace_style (TRACE_STYLES)
    teacher_cache: str = ""  # the teacher cache used and whether it was reused, new or rebuilt (and why)
    same_description: int = 0  # not-matched pairs whose shown video also fits the query's wording
    over_turn_budget: int = 0  # targets longer than agent.max_new_tokens (engine tokenizer): cut at inference
    turn_budget: int = 0  # that agent.max_new_tokens

    def skip(self, what: str, reason: str, detail: str = "") -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.examples) < 20:
            self.examples.append(f"{what}: {reason}" + (f" ({detail})" if detail else ""))

    def format(self) -> str:
        style = f" ({self.trace_style})" if self.trace_style else ""
        lines = [f"sft rows {self.dataset}: {self.rows} rows ({self.matched} matched, {self.not_matched} not matched) "
                 f"from {self.queries} queries; engine top-1 correct for {self.top1_correct}; balancing added "
                 f"{self.added_matched} matched + {self.added_not_matched} not-matched pairs; "
                 f"{self.negatives_per_row:.1f} negatives/row; traces: {self.traces}{style}; skipped "
                 f"{sum(self.skipped.values())} {self.skipped or ''} -> {self.out}"]
        if self.teacher_cache:
            lines.append(f"  teacher cache: {self.teacher_cache}")
        if self.over_turn_budget:
            lines.append(f"  WARNING: {self.over_turn_budget} of {self.rows} targets are longer than agent.max_new_tokens "
                         f"({self.turn_budget}): the policy would be cut off mid-answer at inference and in GRPO "
                         "rollouts; raise agent.max_new_tokens and grpo.max_new_tokens")
        lines += [f"  {e}" for e in self.examples]
        if self.same_description:
            lines.append(f"  {self.same_description} not-matched pairs show a video that also fits the query text")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- pairs
def open_train_index(cfg, dataset: str):
    """The train split's engine (index built first when missing)."""
    from videosearch_r1.agent.infer import load_engine
    from videosearch_r1.engine.index import build_index

    index_dir = cfg.index_dir(dataset) / "train"
    if not (index_dir / "meta.json").is_file():
        s = build_index(cfg, dataset, "train")
        print(s.format(), flush=True)
        if not s.complete:
            raise RuntimeError(f"the train index of {dataset} is incomplete; rerun `vsr1 index {dataset} --split train`")
    return load_engine(cfg, dataset, "train")


def top1_pairs(cfg, engine, queries, field_name: str, summary: SFTDataSummary) -> list[tuple]:
    """[(query, shown video, label)] with the engine's top-1 for every query whose GT is indexed."""
    from videosearch_r1.utils import progress

    kept = []
    for q in queries:
        if q.video_id in engine.row:
            kept.append(q)
        else:
            summary.skip(f"query {q.qid}", "gt_video_not_indexed")
    bs = max(1, cfg.engine.batch_size)
    pairs = []
    bar = progress(total=len(kept), desc="top-1 pairs", unit="query")
    for i in range(0, len(kept), bs):
        chunk = kept[i:i + bs]
        res = engine.search(engine.embed_queries([getattr(q, field_name) for q in chunk]), k=1)
        for q, ids in zip(chunk, res.ids):
            label = "matched" if ids[0] == q.video_id else "not_matched"
            pairs.append((q, ids[0], label))
        bar.update(len(chunk))
    bar.close()
    summary.top1_correct = sum(1 for _, _, lab in pairs if lab == "matched")
    return pairs


def balance(pairs: list[tuple], hard: dict, engine, share: float, rng, summary: SFTDataSummary) -> list[tuple]:
    """Extra pairs towards `share` matched (see the module docstring, step 3)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"sft.matched_share must be in (0, 1), got {share}")
    m = sum(1 for p in pairs if p[2] == "matched")
    n = len(pairs) - m
    extra = []
    if m < share * (m + n):
        want = min(n, math.ceil((share * (m + n) - m) / (1 - share)))
        cands = [p for p in pairs if p[2] == "not_matched"]
        for i in sorted(rng.choice(len(cands), size=want, replace=False).tolist()):
            q = cands[i][0]
            extra.append((q, q.video_id, "matched"))
        summary.added_matched = len(extra)
    elif m > share * (m + n):
        want = min(m, math.ceil(m / share - m - n))
        cands = [p for p in pairs if p[2] == "matched"]
        for i in sorted(rng.choice(len(cands), size=want, replace=False).tolist()):
            q = cands[i][0]
            neg = next((v for v in hard.get(q.qid, []) if v != q.video_id and v in engine.row), None)
            if neg is None:
                summary.skip(f"query {q.qid}", "no_hard_negative_for_balancing")
                continue
            extra.append((q, neg, "not_matched"))
        summary.added_not_matched = len(extra)
    return pairs + extra


def negatives_for(q, shown: str, hard: dict, corpus: list[str], n: int, rng, indexed: set[str]) -> list[str]:
    """Wrong top-1 first, then hard negatives in order, then a random fill; never the GT, only indexed
    videos (their vectors are the InfoNCE negatives); no ambiguity filter."""
    out: list[str] = []
    for v in ([shown] if shown != q.video_id else []) + list(hard.get(q.qid, [])):
        if v != q.video_id and v in indexed and v not in out and len(out) < n:
            out.append(v)
    pool = [v for v in corpus if v != q.video_id and v not in out]
    if len(out) < n and pool:
        out += [pool[i] for i in rng.choice(len(pool), size=min(n - len(out), len(pool)), replace=False)]
    return out


# ----------------------------------------------------------------------------- synthetic traces
TRACE_STYLES = ("restate", "checklist", "details", "plain", "query_first")


class SynthTraces:
    """Reasoning from the world's timelines: what the shown video contains, and how it differs.
    style "restate" (sft.trace_style, the default since 2026-12-01) puts, between what is seen and the verdict,
    the query restated in the same words and order ("I see a small yellow diamond ... The query asks for a
    small orange diamond ..."), so the verdict compares two aligned sentences; "plain" (before) goes from what
    is seen straight to the verdict, and the fourth GPU run's SFT policy then wrote a correct description
    ("a small yellow diamond") followed by "as the query asks" for a query about an orange one (LOG.md);
    "checklist" lists each detail seen next to the one asked for, with same / differs, then whether the
    queried event is seen (the comparison made local; the gpu toy profile's choice, bench/probe_verdict.py);
    the fifth GPU run's checklist policy then copied the seen detail into the asked one. "details" is the checklist
    with the object split into size, colour and shape (one word against one word each): the seventh run's
    checklist policy wrote "large red hexagon / large red cross: same" (bench/probe_verdict.py). "query_first" restates
    the query BEFORE anything is seen ("The query asks for ... I see ... Check: object same; beside same;
    wall differs; event seen."), so the asked details can only be read out of the query, and the check holds
    the decisions alone."""

    def __init__(self, world_path: Path, style: str = "restate"):
        if style not in TRACE_STYLES:
            raise ValueError(f"sft.trace_style must be one of {TRACE_STYLES}, got {style!r}")
        self.style_name = style
        if not world_path.is_file():
            raise FileNotFoundError(f"{world_path} missing: rebuild the world with `vsr1 synth`")
        data = json.loads(world_path.read_text())
        self.videos = data["videos"]
        self.style = {(f["split"], f["family"]): f["style"] for f in data["families"]}

    def _spec(self, vid: str):
        from videosearch_r1.synth.world import Segment, Thing, Wall

        v = self.videos[vid]
        comp = Thing(**v["companion"]) if v["companion"] else None
        return Thing(**v["thing"]), Wall(**v["wall"]), comp, [Segment(**s) for s in v["segments"]]

    def describe(self, vid: str, keep: list[int] | None = None) -> str:
        """What is seen: the object, its companion and wall, and its events with times (all of them, or only
        the `keep` indices: a verification trace names the events the query is about, which keeps it near
        the agent's token budget even for videos of eight events)."""
        from videosearch_r1.synth.world import article, phrase, wall_phrase

        thing, wall, comp, segs = self._spec(vid)
        beside = f" next to {article(f'{comp.colour} {comp.shape}')}" if comp else ""
        idx = sorted(set(range(len(segs)) if keep is None else keep))
        acts, prev = "", None
        for i in idx:
            sep = "" if prev is None else (", then " if i == prev + 1 else "; later it ")
            acts += f"{sep}{phrase(segs[i])} ({segs[i].start:.1f}-{segs[i].end:.1f} s)"
            prev = i
        return (f"I see {article(f'{thing.size} {thing.colour} {thing.shape}')}{beside} in front of "
                f"{article(wall_phrase(wall))}." + (f" It {acts}." if acts else ""))

    def bridge(self, gt, want_colour: str, shown, have_colour: str, event_problem: str | None, k: int,
               context: str) -> str:
        """What goes between what is seen and the verdict (sft.trace_style): "plain" nothing; "restate" the
        query in the words and order of `describe` (object with its colour at the queried moment, companion,
        wall, the queried event and its context); "checklist" each detail seen next to the one asked for,
        with same / differs, and whether the queried event is seen ("details": size, colour and shape apart);
        "query_first" the same decisions without
        the details (the query was restated before what is seen: `lead`). gt / shown: _spec tuples."""
        from videosearch_r1.synth.world import phrase, wall_phrase

        if self.style_name == "plain":
            return ""
        (thing, wall, comp, segs), (s_thing, s_wall, s_comp, _) = gt, shown
        if self.style_name == "restate":
            return " " + self.restated(gt, want_colour, k, context)
        pairs = [("size", s_thing.size, thing.size), ("colour", have_colour, want_colour),
                 ("shape", s_thing.shape, thing.shape)] if self.style_name == "details" else \
            [("object", f"{s_thing.size} {have_colour} {s_thing.shape}", f"{thing.size} {want_colour} {thing.shape}")]
        pairs += [("beside", f"{s_comp.colour} {s_comp.shape}" if s_comp else "nothing",
                   f"{comp.colour} {comp.shape}" if comp else "nothing"),
                  ("wall", wall_phrase(s_wall), wall_phrase(wall))]
        event = "not seen" if event_problem else "seen"
        if self.style_name == "query_first":  # both sides were written before: the decisions only
            return " Check: " + "; ".join(f"{name} {'same' if a == b else 'differs'}" for name, a, b in pairs) \
                + f"; event {event}."
        checks = "; ".join(f"{name} {a} / {b}: {'same' if a == b else 'differs'}" for name, a, b in pairs)
        return f" Check: {checks}; event {phrase(segs[k])}{self.context(segs, k, context)}: {event}."

    def restated(self, gt, want_colour: str, k: int, context: str) -> str:
        """The query in the words and order of `describe`: "The query asks for <object> [next to ..] in front
        of <wall> that <event>[, context]." (gt: a _spec tuple, k: the queried event)."""
        from videosearch_r1.synth.world import article, phrase, wall_phrase

        thing, wall, comp, segs = gt
        beside = f" next to {article(f'{comp.colour} {comp.shape}')}" if comp else ""
        return (f"The query asks for {article(f'{thing.size} {want_colour} {thing.shape}')}{beside} in "
                f"front of {article(wall_phrase(wall))} that {phrase(segs[k])}{self.context(segs, k, context)}.")

    @staticmethod
    def context(segs, k: int, context: str) -> str:
        """The queried event's context as the query words it: ", after it X" / ", and then it Y" / ""."""
        from videosearch_r1.synth.world import phrase

        return (f", after it {phrase(segs[k - 1])}" if context == "after" and k >= 1 else
                f", and then it {phrase(segs[k + 1])}" if context == "then" and k + 1 < len(segs) else "")

    def lead(self, gt, want_colour: str, k: int, context: str) -> str:
        """What comes before what is seen: the restated query for "query_first", else nothing."""
        return self.restated(gt, want_colour, k, context) + " " if self.style_name == "query_first" else ""

    @staticmethod
    def focus(segs, target: str, context: str, limit: int = 4) -> list[int]:
        """Indices of the events a query about `target` (with its "after"/"then" context) is about: each
        occurrence of the action and its context neighbour, at most `limit` (the first ones)."""
        from videosearch_r1.synth.world import phrase

        keep = []
        for i, s in enumerate(segs):
            if phrase(s) == target:
                keep += ([i - 1] if context == "after" and i >= 1 else []) + [i] \
                    + ([i + 1] if context == "then" and i + 1 < len(segs) else [])
        return sorted(set(keep))[:limit]

    @staticmethod
    def event_problem(segs, gt_segs, same: list[int], k: int, context: str) -> str | None:
        """How the shown timeline `segs` misses the queried event gt_segs[k] with its context (None: it
        does not); `same`: the indices of segs with the queried event's phrase."""
        from videosearch_r1.synth.world import phrase

        seg = gt_segs[k]
        if not same:
            return f"it never {phrase(seg)}"
        if context == "after" and not any(i >= 1 and phrase(segs[i - 1]) == phrase(gt_segs[k - 1]) for i in same):
            return f"it {phrase(seg)}, but not after it {phrase(gt_segs[k - 1])}"
        if context == "then" and not any(i + 1 < len(segs) and phrase(segs[i + 1]) == phrase(gt_segs[k + 1])
                                         for i in same):
            return f"it {phrase(seg)}, but does not {phrase(gt_segs[k + 1])} next"
        return None

    def trace(self, q, shown: str, label: str) -> tuple[str, bool]:
        """(reasoning, whether the shown video also fits the query's wording)."""
        from videosearch_r1.synth.world import Style, article, colour_at, fine_desc, kind_of, phrase, wall_phrase

        g = self.videos[q.video_id]
        qs = next((x for x in g["queries"] if x["fig_desc"] == q.fig_desc), None)
        if qs is None:
            raise KeyError(f"query {q.qid} is not in world.json (world and annotations out of sync)")
        gt_thing, gt_wall, gt_comp, gt_segs = self._spec(q.video_id)
        seg = gt_segs[qs["segment"]]
        want_colour = colour_at(gt_thing, gt_segs, qs["segment"])
        gt = (gt_thing, gt_wall, gt_comp, gt_segs)
        if label == "matched":
            k = qs["segment"]
            keep = [k - 1] * (qs["context"] == "after" and k >= 1) + [k] + [k + 1] * (qs["context"] == "then")
            seen = self.describe(shown, [i for i in keep if 0 <= i < len(gt_segs)])
            asks = self.bridge(gt, want_colour, self._spec(shown), want_colour, None, k, qs["context"])
            lead = self.lead(gt, want_colour, k, qs["context"])
            return f"{lead}{seen}{asks} From {seg.start:.1f} to {seg.end:.1f} s it {phrase(seg)}, as the query asks.", False
        style = Style(**self.style[(g["split"], g["family"])])
        thing, wall, comp, segs = self._spec(shown)
        fits = any(fine_desc(style, thing, wall, comp, segs, i, qs["context"]) == q.fig_desc
                   for i in range(len(segs)) if (qs["context"] != "after" or i >= 1)
                   and (qs["context"] != "then" or i + 1 < len(segs)))
        same = [i for i, s in enumerate(segs) if phrase(s) == phrase(seg)]
        near = same or [i for i, s in enumerate(segs) if kind_of(s.action) == kind_of(seg.action)]
        seen = self.describe(shown, self.focus(segs, phrase(seg), qs["context"]) or near[:2] or [0])
        have_colour = colour_at(thing, segs, near[0]) if near else thing.colour
        event = self.event_problem(segs, gt_segs, same, qs["segment"], qs["context"])
        asks = self.bridge(gt, want_colour, (thing, wall, comp, segs), have_colour, event, qs["segment"], qs["context"])
        diffs = []
        if gt_thing.size != thing.size:
            diffs.append(f"it is {thing.size}, not {gt_thing.size}")
        if want_colour != have_colour:
            diffs.append(f"it is {have_colour}, not {want_colour}")
        if gt_thing.shape != thing.shape:
            diffs.append(f"it is {article(thing.shape)}, not {article(gt_thing.shape)}")
        if (gt_wall.colour, gt_wall.texture) != (wall.colour, wall.texture):
            diffs.append(f"the wall is {article(wall_phrase(wall))}, not {article(wall_phrase(gt_wall))}")
        if gt_comp != comp:
            have = article(f"{comp.colour} {comp.shape}") if comp else "no second object"
            want = article(f"{gt_comp.colour} {gt_comp.shape}") if gt_comp else "none"
            diffs.append(f"beside it there is {have}, not {want}")
        if event:
            diffs.append(event)
        if not diffs:
            diffs.append("its details do not add up to the queried moment")
        lead = self.lead(gt, want_colour, qs["segment"], qs["context"])
        return f"{lead}{seen}{asks} It does not match the query: {'; '.join(diffs)}.", fits


def template_trace(q, label: str) -> str:
    if label == "matched":
        return f"The video shows what the query describes from {q.start:.1f} to {q.end:.1f} s."
    return "The video does not show the moment the query describes."


# ----------------------------------------------------------------------------- teacher (real datasets)
_GRAMMAR_TAGS = re.compile(r"</?(?:think|answer|start|end|query)>|<REFINE>", re.IGNORECASE)  # kept out of traces


TEACHER_PROMPT_VERSION = 1  # bump when how a trace is asked for or cleaned changes beyond what teacher_key sees


def teacher_instruction(q, label: str) -> str:
    """What the teacher is asked about one (query, shown video) pair, told the gold label."""
    from videosearch_r1.agent.prompts import format_seconds

    fact = (f"It does contain this moment, from {format_seconds(q.start)} to {format_seconds(q.end)} s."
            if label == "matched" else "It does not contain this moment.")
    return (f'Search query: "{q.text}". {fact} In two or three sentences, say what the video shows and '
            f'how it {"matches" if label == "matched" else "differs from"} the query.')


def teacher_key(cfg, dataset: str) -> dict:
    """Everything that changes a teacher trace, as digests: the teacher (content of a local checkpoint's
    files, else its hub id), the prompt (the chat of a probe pair per label: system prompt and template,
    the tag filter, TEACHER_PROMPT_VERSION), the video config (video.decode.fingerprint: fps, frames,
    pixels) and the generation settings (greedy, max new tokens, resolved dtype)."""
    from types import SimpleNamespace

    from videosearch_r1.agent.prompts import build_task_messages
    from videosearch_r1.fingerprint import digest, dir_digest
    from videosearch_r1.utils import resolve_device, resolve_dtype
    from videosearch_r1.video.decode import fingerprint

    s = cfg.sft
    local = Path(s.teacher).expanduser()
    teacher = dir_digest(local) if local.is_dir() else f"hub:{s.teacher}"
    probe = SimpleNamespace(text="PROBE", start=1.5, end=4.0)
    chats = [build_task_messages(teacher_instruction(probe, lab), None) for lab in ("matched", "not_matched")]
    dtype = resolve_dtype(cfg.agent.dtype, resolve_device(cfg.agent.device))
    return {"teacher": teacher,
            "prompt": digest({"chats": chats, "tags": _GRAMMAR_TAGS.pattern, "version": TEACHER_PROMPT_VERSION}),
            "video": fingerprint(cfg.video_cfg(dataset)),
            "generation": digest({"decode": "greedy", "max_new_tokens": s.teacher_max_new_tokens,
                                  "dtype": str(dtype)})}


def open_teacher_cache(cache: Path, parts: dict, summary: SFTDataSummary) -> tuple[str, dict]:
    """(key, {(qid, video): think}) of the cache for these key parts. A cache of another key (or of none: an
    older version) is renamed to <stem>.<its key>.jsonl and a new one started, or an earlier one of this
    key taken back; traces of different keys never mix."""
    from videosearch_r1.fingerprint import changed, digest
    from videosearch_r1.utils import atomic_write_json, read_jsonl_resumable

    key = digest(parts)
    side = cache.with_suffix(".key.json")
    try:  # a missing or damaged key file: the traces' settings are unknown (set aside like another key)
        old = json.loads(side.read_text())
        old = {"key": str(old["key"]), "parts": dict(old["parts"])}
    except (OSError, ValueError, KeyError, TypeError):
        old = {"key": "unkeyed", "parts": {}}
    aside = lambda k: cache.with_name(f"{cache.stem}.{k}.jsonl")  # noqa: E731
    note = "reused"
    if cache.is_file() and old["key"] != key:
        cache.rename(aside(old["key"]))
        side.unlink(missing_ok=True)
        what = ", ".join(changed(old["parts"], parts)) or "no key recorded"
        note = f"rebuilt ({what} changed; the old traces are kept at {aside(old['key'])})"
        print(f"teacher traces: {cache} was made with other settings ({what}); starting anew", flush=True)
    if not cache.is_file() and aside(key).is_file():
        aside(key).rename(cache)
        note = f"taken back from {aside(key)}"
    elif not cache.is_file() and note == "reused":
        note = "new"
    atomic_write_json(side, {"key": key, "parts": parts})
    done = {(r["qid"], r["video"]): r["think"] for r in read_jsonl_resumable(cache) if r.get("key") == key}
    summary.teacher_cache = f"{cache}: {note}, {len(done)} traces cached"
    return key, done


def _teacher_chunk(cfg, dataset: str, teacher, chunk: list[tuple], summary: SFTDataSummary) -> tuple[list, list]:
    """(pairs kept, their rendered prompts + clips); a pair whose video fails to decode is a counted skip."""
    from videosearch_r1.agent.prompts import build_task_messages
    from videosearch_r1.models.qwen3vl import render_chat
    from videosearch_r1.video.decode import load_clip

    kept, msgs, clips = [], [], []
    for q, shown, label in chunk:
        try:
            clip = load_clip(cfg, dataset, shown)
        except Exception as e:  # noqa: BLE001  (a decode failure is this pair's problem, counted)
            summary.skip(f"query {q.qid} / {shown}", "video_unreadable", f"{type(e).__name__}: {e}")
            continue
        kept.append((q, shown, label))
        clips.append(clip)
        msgs.append(render_chat(teacher.processor, build_task_messages(teacher_instruction(q, label), None)))
    return kept, (msgs, clips)


def teacher_traces(cfg, dataset: str, pairs: list[tuple], summary: SFTDataSummary) -> dict:
    """{(qid, shown): reasoning} from a teacher VLM told the gold label; resumable through a keyed jsonl cache."""
    import torch

    from videosearch_r1.agent.decode import generate_tokens
    from videosearch_r1.agent.policy import Policy
    from videosearch_r1.models.qwen3vl import configure_processor, rope_positions, video_kwargs
    from videosearch_r1.utils import append_jsonl, progress

    s = cfg.sft
    cache = cfg.prepared_dir(dataset) / "sft_teacher.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    key, done = open_teacher_cache(cache, teacher_key(cfg, dataset), summary)
    todo = [p for p in pairs if (p[0].qid, p[1]) not in done]
    failed = set()
    if todo:
        teacher = Policy.from_pretrained(s.teacher, device=cfg.agent.device, dtype=cfg.agent.dtype)
        configure_processor(teacher.processor, cfg.video_cfg(dataset))
        bar = progress(total=len(todo), desc="teacher traces", unit="pair")
        for i in range(0, len(todo), max(1, s.teacher_batch_size)):
            chunk = todo[i:i + s.teacher_batch_size]
            kept, (msgs, clips) = _teacher_chunk(cfg, dataset, teacher, chunk, summary)
            got = {(q.qid, shown) for q, shown, _ in kept}
            failed.update((q.qid, shown) for q, shown, _ in chunk if (q.qid, shown) not in got)
            bar.update(len(chunk))
            if not kept:
                continue
            teacher.processor.tokenizer.padding_side = "left"
            inputs = {k: v.to(teacher.device) for k, v in teacher.processor(
                text=msgs, **video_kwargs(clips), padding=True, return_tensors="pt").items()}
            with torch.no_grad():
                res = generate_tokens(teacher.model, inputs, rope_positions(teacher.model, inputs),
                                      s.teacher_max_new_tokens, teacher.eos_token_ids, teacher.pad_token_id)
            tok = teacher.processor.tokenizer
            new = []
            for (q, shown, _), row, n in zip(kept, res.ids.cpu().tolist(), res.n_text.cpu().tolist()):
                text = _GRAMMAR_TAGS.sub(" ", tok.decode(row[:n], skip_special_tokens=True)).strip()
                text = re.sub(r"\s+", " ", text)
                new.append({"qid": q.qid, "video": shown, "teacher": s.teacher, "key": key, "think": text})
            append_jsonl(cache, new)
            done.update({(r["qid"], r["video"]): r["think"] for r in new})
        bar.close()
    out = {}
    for q, shown, _ in pairs:
        text = done.get((q.qid, shown), "")
        if text:
            out[(q.qid, shown)] = text
        elif (q.qid, shown) not in failed:  # an unreadable video is counted once, as video_unreadable
            summary.skip(f"query {q.qid} / {shown}", "teacher_empty")
    return out


# ----------------------------------------------------------------------------- the command
def build_sft_rows(cfg, dataset: str, engine=None) -> tuple[list[TrainRow], SFTDataSummary]:
    """Steps 1-6 of the module docstring (nothing written)."""
    from videosearch_r1.data.fig import load_split

    s = cfg.sft
    split = load_split(cfg, dataset, "train")
    engine = engine if engine is not None else open_train_index(cfg, dataset)
    summary = SFTDataSummary(dataset=dataset)
    queries = split.queries[: s.max_queries] if s.max_queries > 0 else split.queries
    summary.queries = len(queries)
    field_name = cfg.dataset_cfg(dataset).query_field
    hard_path = cfg.index_dir(dataset) / "train" / "hard_negatives.json"
    hard = json.loads(hard_path.read_text()) if hard_path.is_file() else {}
    rng = np.random.default_rng(s.seed)
    pairs = top1_pairs(cfg, engine, queries, field_name, summary)
    if s.balance and pairs:
        pairs = balance(pairs, hard, engine, s.matched_share, rng, summary)
    if s.teacher and s.teacher != "none":
        teacher, summary.traces = teacher_traces(cfg, dataset, pairs, summary), f"teacher:{s.teacher}"
    elif dataset == "synth":
        synth = SynthTraces(cfg.dataset_root(dataset) / "world.json", cfg.sft.trace_style)
        summary.traces, summary.trace_style = "synth-timeline", cfg.sft.trace_style
    elif s.teacher == "none":
        summary.traces = "template"
    else:
        raise ValueError(f"{dataset}: reasoning traces need a teacher VLM: set sft.teacher=HUB_ID_OR_PATH "
                         "(or sft.teacher=none for template traces)")
    rows, corpus = [], list(engine.ids)
    indexed = set(corpus)
    for q, shown, label in pairs:
        text = getattr(q, field_name)
        if summary.traces == "synth-timeline":
            try:
                think, fits = synth.trace(q, shown, label)
            except KeyError as e:
                summary.skip(f"query {q.qid}", f"no_timeline ({e})")
                continue
            summary.same_description += int(fits)
        elif summary.traces == "template":
            think = template_trace(q, label)
        else:
            think = teacher.get((q.qid, shown))
            if think is None:
                continue
        span = (q.start, q.end) if label == "matched" else None
        negs = negatives_for(q, shown, hard, corpus, s.n_negatives, rng, indexed)
        rows.append(TrainRow(id=f"{q.qid}:{shown}", dataset=dataset, split="train", video=shown, kind="verify",
                             query=text, target=format_target(think, label, span), positive=q.video_id,
                             negatives=tuple(negs), meta={"label": label, "qid": q.qid,
                                                          "gt_span": [q.start, q.end]}))
    summary.rows = len(rows)
    summary.matched = sum(1 for r in rows if r.meta["label"] == "matched")
    summary.not_matched = summary.rows - summary.matched
    summary.negatives_per_row = float(np.mean([len(r.negatives) for r in rows])) if rows else 0.0
    tok = getattr(getattr(engine, "embedder", None), "tokenizer", None)  # the policy's, for the synthetic world
    if tok is not None:  # (a real policy's Qwen tokenizer is the embedder's)
        summary.turn_budget = cfg.agent.max_new_tokens
        summary.over_turn_budget = sum(len(tok.encode(r.target, add_special_tokens=False)) > summary.turn_budget
                                       for r in rows)
    return rows, summary


def build_sft(cfg, dataset: str, engine=None) -> SFTDataSummary:
    from videosearch_r1.utils import atomic_write_json

    rows, summary = build_sft_rows(cfg, dataset, engine)
    out = Path(cfg.sft.rows) if cfg.sft.rows else cfg.prepared_dir(dataset) / "sft_train.jsonl"
    write_rows(out, rows)
    summary.out = str(out)
    atomic_write_json(out.with_suffix(".summary.json"), asdict(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.utils import command_parser, config_from_args, parse_command

    parser = command_parser("vsr1 build sft", __doc__)
    parser.add_argument("dataset", help="dataset name (an entry under `datasets` in the config)")
    args = parse_command(parser, argv)
    cfg = config_from_args(args, [f"dataset={args.dataset}"])
    try:
        summary = build_sft(cfg, args.dataset)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        print(f"vsr1 build sft: {e}", file=sys.stderr)
        return 2
    print(summary.format(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
