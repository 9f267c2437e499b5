"""The one prompt builder and the one output parser, shared by inference, SFT and GRPO.

    msgs = build_messages("a red circle spins", clip)             # system + user(query, video)
    msgs = build_task_messages("Describe the events with their times.", clip)   # generic video task
    target = format_target("The circle spins at 3 s.", "matched", (3.0, 9.5))
    p = parse_output(target)                                      # ParsedOutput(answer="matched", ...)

Output grammar (SQR, the default):
    <think>R</think> <answer>matched</answer> <start>S</start> <end>E</end> <REFINE>
    <think>R</think> <answer>not_matched</answer> <REFINE>
HQR (hard query refinement baseline: the policy rewrites the query as text):
    <think>R</think> <answer>matched</answer> <start>S</start> <end>E</end>
    <think>R</think> <answer>not_matched</answer> <query>NEW QUERY</query>

The user turn is the reference's: `Query: "<query>"` newline `Retrieved video: ` followed by the video.
The system prompt is ours (the reference's wording is not copied); it states the same grammar.
Seconds are printed like the reference's targets: integers as `12.0`, others with up to 6 decimals.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

REFINE_TOKEN = "<REFINE>"
GRAMMARS = ("sqr", "hqr")

_TASK = (
    "You are a video search assistant. Someone is looking for one moment in a large collection of "
    "videos, and a search engine has retrieved the video below for their query. Decide whether the "
    "moment the query describes happens in this video.\n"
    "First reason inside <think></think>: list what the query asks for (people, objects, actions, "
    "attributes, the order of events) and check each item against what you actually see, using the "
    "timestamps shown with the frames. Do not invent details you cannot see.\n"
    "Then answer in exactly one of these two forms:\n"
)

SYSTEM_PROMPT = _TASK + (
    "- the moment is in the video: <answer>matched</answer> <start>START</start> <end>END</end> "
    f"{REFINE_TOKEN}\n"
    "  where START and END are the moment's boundaries in seconds from the beginning of the video, "
    "written as numbers such as 4.0 or 12.5, with START before END;\n"
    f"- the moment is not in the video: <answer>not_matched</answer> {REFINE_TOKEN}\n"
    f"Always finish with {REFINE_TOKEN}. Keep the reasoning short and write nothing outside the tags."
)

HQR_SYSTEM_PROMPT = _TASK + (
    "- the moment is in the video: <answer>matched</answer> <start>START</start> <end>END</end>\n"
    "  where START and END are the moment's boundaries in seconds from the beginning of the video, "
    "written as numbers such as 4.0 or 12.5, with START before END;\n"
    "- the moment is not in the video: <answer>not_matched</answer> <query>NEW QUERY</query>\n"
    "  where NEW QUERY is a better search query for the engine: keep every detail of the original "
    "query and make explicit what tells the wanted moment apart from this video.\n"
    "Keep the reasoning short and write nothing outside the tags."
)


def system_prompt(method: str = "sqr") -> str:
    """The system prompt of a grammar: "sqr" (and every non-HQR method) or "hqr"."""
    return HQR_SYSTEM_PROMPT if method == "hqr" else SYSTEM_PROMPT


def user_text(query: str) -> str:
    """The text part of the user turn; the video follows it."""
    return f'Query: "{query}"\nRetrieved video: '


def build_messages(query: str, clip: Any, method: str = "sqr") -> list[dict]:
    """Chat messages for one verification turn: system prompt, then user = query text + the video.

    `clip` is carried in the video part (the chat template renders the placeholder only; the frames go
    to the processor through `models.qwen3vl.video_kwargs`).
    """
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt(method)}]},
        {"role": "user", "content": [{"type": "text", "text": user_text(query)},
                                     {"type": "video", "video": clip}]},
    ]


TASK_SYSTEM_PROMPT = (
    "You are a video assistant. Answer the request about the video below from what you actually see, "
    "using the timestamps shown with the frames. Give times in seconds from the beginning of the video. "
    "Be concise and do not invent details you cannot see."
)


def build_task_messages(instruction: str, clip: Any) -> list[dict]:
    """Chat messages for a generic task about one video (base-policy pretraining, teacher traces):
    system = TASK_SYSTEM_PROMPT, user = the instruction, then the video (same layout as build_messages)."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction must be a non-empty str, got {instruction!r}")
    return [
        {"role": "system", "content": [{"type": "text", "text": TASK_SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "text", "text": f"{instruction.strip()}\nVideo: "},
                                     {"type": "video", "video": clip}]},
    ]


# ------------------------------------------------------------------------------------ targets
def format_seconds(x: float) -> str:
    """Seconds as the reference prints them: integers as `12.0`, else up to 6 decimals (`12.5`)."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"seconds must be finite, got {x!r}")
    r = round(x, 6)
    if r == int(r):
        return f"{int(r)}.0"
    return f"{r:.6f}".rstrip("0")


def format_target(think: str, answer: str, span: tuple[float, float] | None = None,
                  rewritten_query: str | None = None, method: str = "sqr") -> str:
    """The assistant text for SFT targets (and scripted tests), in the grammar of `method`.

    matched needs a span (start <= end, both finite and >= 0); not_matched must have none. HQR
    not_matched needs `rewritten_query`.
    """
    if answer not in ("matched", "not_matched"):
        raise ValueError(f"answer must be 'matched' or 'not_matched', got {answer!r}")
    if method not in GRAMMARS:
        raise ValueError(f"method must be one of {GRAMMARS}, got {method!r}")
    parts = [f"<think>{think.strip()}</think>", f"<answer>{answer}</answer>"]
    if answer == "matched":
        if span is None:
            raise ValueError("a matched target needs a span (start, end)")
        start, end = float(span[0]), float(span[1])
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < start:
            raise ValueError(f"bad span {span!r}: need finite 0 <= start <= end")
        parts += [f"<start>{format_seconds(start)}</start>", f"<end>{format_seconds(end)}</end>"]
    elif span is not None:
        raise ValueError("a not_matched target has no span")
    if method == "sqr":
        parts.append(REFINE_TOKEN)
    elif answer == "not_matched":
        if not rewritten_query or not rewritten_query.strip():
            raise ValueError("an HQR not_matched target needs rewritten_query")
        parts.append(f"<query>{rewritten_query.strip()}</query>")
    return " ".join(parts)


# ------------------------------------------------------------------------------------ parser
@dataclass(frozen=True)
class ParsedOutput:
    """What one policy output says. `ok` is True iff `errors` is empty (the output follows the grammar)."""

    answer: str | None  # "matched" | "not_matched" | None (missing or unrecognised)
    start: float | None  # seconds, finite; None when missing/unparseable/non-finite
    end: float | None
    has_refine: bool  # a <REFINE> outside the reasoning
    think: str | None  # stripped content of the last complete <think> block
    rewritten_query: str | None  # stripped content of the last <query> block (HQR)
    ok: bool
    errors: tuple[str, ...]

    @property
    def span(self) -> tuple[float, float] | None:
        """(start, end) when both parsed, else None (a reversed span is returned as written)."""
        return None if self.start is None or self.end is None else (self.start, self.end)


_THINK_RE = re.compile(r"<think>(.*?)</think>", re.IGNORECASE | re.DOTALL)
_OPEN_THINK_RE = re.compile(r"<think>", re.IGNORECASE)
_TAG_RES = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.IGNORECASE | re.DOTALL)
            for name in ("answer", "start", "end", "query")}
_REFINE_RE = re.compile(re.escape(REFINE_TOKEN), re.IGNORECASE)
_END_TOKENS_RE = re.compile(r"(?:\s*(?:<\|im_end\|>|<\|endoftext\|>))+\s*$")
_NUMBER_RE = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf(?:inity)?|nan))"
                        r"\s*(?:s|sec|secs|second|seconds)?", re.IGNORECASE)
_CLOCK_RE = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)")
_ANSWER_ALIASES = {
    "matched": "matched", "match": "matched", "yes": "matched",
    "not_matched": "not_matched", "notmatched": "not_matched", "not_match": "not_matched",
    "notmatch": "not_matched", "mismatch": "not_matched", "mismatched": "not_matched",
    "unmatched": "not_matched", "no": "not_matched",
}


def _parse_seconds(raw: str, name: str, errors: list[str]) -> float | None:
    """`12`, `12.5`, `1e1`, `12.5s`, `12.5 seconds`, `01:02.5` -> seconds; else None with an error."""
    s = raw.strip()
    m = _NUMBER_RE.fullmatch(s)
    if m:
        value = float(m.group(1))
    else:
        c = _CLOCK_RE.fullmatch(s)
        if not c:
            errors.append(f"<{name}> is not a number: {s[:40]!r}")
            return None
        value = float(c.group(1) or 0) * 3600 + float(c.group(2)) * 60 + float(c.group(3))
    if not math.isfinite(value):
        errors.append(f"<{name}> is not finite: {s[:40]!r}")
        return None
    if value < 0:
        errors.append(f"<{name}> is negative: {value}")
    return value


def _last_tag(name: str, text: str, errors: list[str]) -> str | None:
    found = _TAG_RES[name].findall(text)
    if len(found) > 1:
        errors.append(f"<{name}> appears {len(found)} times; the last one counts")
    return found[-1] if found else None


def _split_think(text: str, errors: list[str]) -> tuple[str | None, str]:
    """Return (content of the last complete think block, the text outside every think block)."""
    blocks = _THINK_RE.findall(text)
    outside = _THINK_RE.sub(" ", text)
    unclosed = _OPEN_THINK_RE.search(outside)
    if unclosed:  # a <think> that never closes swallows the rest (typically a truncated output)
        errors.append("unclosed <think>")
        outside = outside[: unclosed.start()]
    if len(blocks) > 1:
        errors.append(f"<think> appears {len(blocks)} times; the last one counts")
    think = blocks[-1].strip() if blocks else None
    if think is None and not unclosed:
        errors.append("missing <think>")
    elif think is not None and not think:
        errors.append("empty <think>")
    return think, outside


def _normalise_answer(raw: str | None, errors: list[str]) -> str | None:
    if raw is None:
        errors.append("missing <answer>")
        return None
    key = re.sub(r"[\s\-]+", "_", raw.strip().lower())
    answer = _ANSWER_ALIASES.get(key)
    if answer is None:
        errors.append(f"unrecognised answer {raw.strip()[:40]!r}")
    elif key != answer:
        errors.append(f"non-canonical answer {raw.strip()!r} read as {answer}")
    return answer


def _check_span(answer: str | None, start: float | None, end: float | None, saw_start: bool,
                saw_end: bool, errors: list[str]) -> None:
    if answer == "matched" and not (saw_start and saw_end):
        errors.append("matched without <start> and <end>")
    if answer == "not_matched" and (saw_start or saw_end):
        errors.append("not_matched with a span")
    if saw_start != saw_end:
        errors.append("only one of <start>/<end>")
    if start is not None and end is not None:
        if start > end:
            errors.append(f"reversed span: start {start} > end {end} (kept as written, not swapped)")
        elif start == end:
            errors.append(f"zero-length span at {start}")


def parse_output(text: Any, grammar: str = "sqr") -> ParsedOutput:
    """Parse one policy output. Never raises on model output; every deviation is listed in `errors`.

    Rules (one set for inference, rewards and evaluation):
    - Input: str; bytes are decoded as UTF-8 with replacement; None is ""; anything else is str()'d.
      Trailing `<|im_end|>` / `<|endoftext|>` are ignored. Tag names are case-insensitive.
    - Reasoning: every complete `<think>...</think>` block is removed before looking for the other
      tags, so tags quoted inside the reasoning never count; `think` is the last block's content.
      A `<think>` that never closes swallows the rest of the text ("unclosed <think>").
    - Repeated tags: for every tag the LAST complete occurrence counts (an error notes the repeat).
    - Answer: lower-cased, whitespace/hyphens -> "_": matched | not_matched; aliases (match, mismatch,
      notmatch, ...) are read but flagged as non-canonical; anything else -> None.
    - Seconds: a plain decimal number, optionally with a unit suffix (`12.5s`, `12.5 sec`,
      `12.5 seconds`), or a clock `mm:ss(.f)` / `hh:mm:ss`. Other text -> None ("is not a number").
      inf/nan/overflow -> None ("not finite"). Negative values are kept and flagged. No clamping
      (the caller knows the duration).
    - Spans: a reversed span (start > end) is reported and kept as written, never swapped; a
      zero-length span is reported. matched without both tags, not_matched with a span, and a lone
      <start> or <end> are errors.
    - <REFINE> (grammar "sqr"): required, once, last (only end-of-turn tokens may follow).
      Grammar "hqr": <REFINE> is unexpected; not_matched needs a non-empty <query>.
    - Any other non-space text outside the tags is an error ("text outside the tags").
    """
    if text is None:
        text = ""
    elif isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        text = str(text)
    errors: list[str] = []
    if grammar not in GRAMMARS:
        errors.append(f"unknown grammar {grammar!r}; parsed as sqr")
        grammar = "sqr"
    text = _END_TOKENS_RE.sub("", text)
    think, outside = _split_think(text, errors)

    answer = _normalise_answer(_last_tag("answer", outside, errors), errors)
    raw_start, raw_end = _last_tag("start", outside, errors), _last_tag("end", outside, errors)
    start = _parse_seconds(raw_start, "start", errors) if raw_start is not None else None
    end = _parse_seconds(raw_end, "end", errors) if raw_end is not None else None
    _check_span(answer, start, end, raw_start is not None, raw_end is not None, errors)
    raw_query = _last_tag("query", outside, errors)
    rewritten = raw_query.strip() if raw_query is not None else None

    refines = list(_REFINE_RE.finditer(outside))
    has_refine = bool(refines)
    if grammar == "sqr":
        if raw_query is not None:
            errors.append("<query> in an sqr output")
        if not refines:
            errors.append(f"missing {REFINE_TOKEN}")
        else:
            if len(refines) > 1:
                errors.append(f"{REFINE_TOKEN} appears {len(refines)} times")
            if outside[refines[-1].end():].strip():
                errors.append(f"text after {REFINE_TOKEN}")
    else:
        if refines:
            errors.append(f"{REFINE_TOKEN} in an hqr output")
        if answer == "not_matched" and not rewritten:
            errors.append("not_matched without a rewritten <query>")

    leftover = _REFINE_RE.sub(" ", outside)
    for rx in _TAG_RES.values():
        leftover = rx.sub(" ", leftover)
    leftover = leftover.strip()
    if leftover:
        errors.append(f"text outside the tags: {leftover[:40]!r}")
    return ParsedOutput(answer=answer, start=start, end=end, has_refine=has_refine, think=think,
                        rewritten_query=rewritten, ok=not errors, errors=tuple(errors))
