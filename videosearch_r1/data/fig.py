"""Load and write VERIFIED FIG annotation files (JSONL, one query a line; schema in shared/spec/data.md).

    queries, summary = load_fig_jsonl("charades_fig_test.jsonl")
    split = load_split(cfg, "charades", "test")      # queries + corpus VideoRefs + LoadSummary
    print(split.summary.format())

What the loader does with each row (nothing is dropped without being counted in LoadSummary):
- valid quirks of the real files load: ints for float fields (DiDeMo's 5-s grid), and an end past
  `duration` (Charades up to ~25 s, DiDeMo up to 3 s) is clamped to `duration` in `Query.end` (training
  targets, display; counted: clamped_end) while scoring uses `Query.annotated_end`, the file's end;
- a zero-length moment (start == end) loads with a warning naming file and line (counted:
  zero_length): it is in the denominator but can never be a grounding hit;
- a moment wholly past the video's end (start >= duration) is skipped with a warning naming file and
  line (counted: skipped_past_end); its video still belongs to the corpus;
- a malformed row (bad JSON / UTF-8, a missing or mistyped field, a non-finite number, negative times,
  start > end, a non-positive duration, a duplicate desc_id) raises FIGFormatError naming file, line
  and field, or with skip_bad=True is skipped, counted (skipped_bad) and listed in summary.messages.
Blank lines are not rows. `fig_desc_score` is optional, but must be a finite number when present.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import NamedTuple

from videosearch_r1.config import Config, ConfigError
from videosearch_r1.data.records import FIGFormatError, LoadSummary, Query, Split, VideoRef
from videosearch_r1.utils import atomic_path

log = logging.getLogger(__name__)

REQUIRED = ("video", "time", "desc_id", "duration", "cog_desc", "fig_desc")


class _Row(NamedTuple):
    video: str
    desc_id: int
    start: float
    end: float
    duration: float
    cog_desc: str
    fig_desc: str


# ----------------------------------------------------------------------------- row checks
def _bad(where: str, name: str, why: str) -> FIGFormatError:
    return FIGFormatError(f"{where}: field {name!r}: {why}")


def _number(value, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(where, name, f"expected a number, got {repr(value)[:100]}")
    try:
        value = float(value)
    except OverflowError:
        raise _bad(where, name, f"an integer of {len(str(value))} digits is not a float") from None
    if not math.isfinite(value):
        raise _bad(where, name, f"not a finite number: {value!r}")
    return value


def _decode(raw: bytes, where: str) -> dict:
    """One line -> a JSON object; bad UTF-8 / JSON / non-object raise with a pseudo-field name."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(where, "(line)", f"not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad(where, "(json)", f"bad JSON: {e.msg} at column {e.colno}") from None
    except (ValueError, RecursionError) as e:  # an integer over Python's digit limit; nesting too deep
        raise _bad(where, "(json)", f"unreadable JSON: {e.__class__.__name__}: {str(e)[:120]}") from None
    if not isinstance(obj, dict):
        raise _bad(where, "(row)", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _check_row(obj: dict, where: str) -> _Row:
    for name in REQUIRED:
        if name not in obj:
            raise _bad(where, name, "missing")
    video = obj["video"]
    if not isinstance(video, str) or not video.strip():
        raise _bad(where, "video", f"expected a non-empty string, got {video!r}")
    if "/" in video or "\\" in video or video in (".", ".."):
        raise _bad(where, "video", f"not a file-name id: {video!r}")
    desc_id = obj["desc_id"]
    if isinstance(desc_id, bool) or not isinstance(desc_id, int):
        raise _bad(where, "desc_id", f"expected an integer, got {desc_id!r}")
    time = obj["time"]
    if not isinstance(time, list) or len(time) != 2:
        raise _bad(where, "time", f"expected [start, end], got {time!r}")
    start, end = _number(time[0], where, "time"), _number(time[1], where, "time")
    if start < 0 or end < 0:
        raise _bad(where, "time", f"negative time {time!r}")
    if start > end:
        raise _bad(where, "time", f"start > end in {time!r}")
    duration = _number(obj["duration"], where, "duration")
    if duration <= 0:
        raise _bad(where, "duration", f"must be > 0, got {obj['duration']!r}")
    for name in ("cog_desc", "fig_desc"):
        if not isinstance(obj[name], str):
            raise _bad(where, name, f"expected a string, got {obj[name]!r}")
    if not obj["fig_desc"].strip():
        raise _bad(where, "fig_desc", "empty query text")
    if "fig_desc_score" in obj:
        _number(obj["fig_desc_score"], where, "fig_desc_score")
    return _Row(video, desc_id, start, end, duration, obj["cog_desc"], obj["fig_desc"])


# ----------------------------------------------------------------------------- loading
def _read(path: Path, skip_bad: bool) -> tuple[list[Query], LoadSummary, dict[str, float]]:
    """Queries, the summary, and video_id -> duration of every well-formed row (the corpus)."""
    summary = LoadSummary(file=str(path))
    queries: list[Query] = []
    durations: dict[str, float] = {}
    first_line: dict[int, int] = {}  # desc_id -> line it first appeared on
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # UTF-8 byte-order mark
            if not raw.strip():
                continue
            summary.rows += 1
            where = f"{path}:{lineno}"
            try:
                row = _check_row(_decode(raw, where), where)
                if row.desc_id in first_line:
                    raise _bad(where, "desc_id", f"duplicate {row.desc_id} (first on line {first_line[row.desc_id]})")
            except FIGFormatError as e:
                if not skip_bad:
                    raise
                summary.skipped_bad += 1
                summary.messages.append(f"skipped malformed row: {e}")
                continue
            first_line[row.desc_id] = lineno
            _note_duration(durations, row, where, summary)
            if row.start >= row.duration:
                msg = (f"{where}: skipped desc_id {row.desc_id}: moment [{row.start:g}, {row.end:g}] starts at or "
                       f"after the video's end (duration {row.duration:g})")
                log.warning(msg)
                summary.skipped_past_end += 1
                summary.messages.append(msg)
                continue
            if row.start == row.end:
                msg = (f"{where}: desc_id {row.desc_id}: zero-length moment [{row.start:g}, {row.end:g}] "
                       "(loaded; it can never be a grounding hit)")
                log.warning(msg)
                summary.zero_length += 1
                summary.messages.append(msg)
            clamped = row.end > row.duration
            summary.clamped_end += clamped
            queries.append(Query(qid=str(row.desc_id), desc_id=row.desc_id, video_id=row.video,
                                 fig_desc=row.fig_desc, cog_desc=row.cog_desc, start=row.start,
                                 end=min(row.end, row.duration), duration=row.duration, line=lineno,
                                 end_clamped=clamped, raw_end=row.end if clamped else None))
    summary.loaded = len(queries)
    return queries, summary, durations


def _note_duration(durations: dict[str, float], row: _Row, where: str, summary: LoadSummary) -> None:
    old = durations.get(row.video)
    if old is not None and abs(old - row.duration) > 1e-6:
        summary.messages.append(f"{where}: video {row.video} has duration {row.duration:g} here but "
                                f"{old:g} on an earlier line; the corpus keeps the larger")
    durations[row.video] = max(row.duration, old or 0.0)


def load_fig_jsonl(path: str | Path, skip_bad: bool = False) -> tuple[list[Query], LoadSummary]:
    """All queries of one FIG JSONL file, in file order, plus the LoadSummary of what happened."""
    queries, summary, _ = _read(Path(path), skip_bad)
    return queries, summary


def load_split(cfg: Config, dataset: str | None = None, split: str | None = None,
               skip_bad: bool = False) -> Split:
    """One split of a dataset in the raw layout <root>/<annotation_dir>/<splits[split]>."""
    name = dataset or cfg.dataset
    split = split or cfg.split
    dcfg = cfg.dataset_cfg(name)  # ConfigError on an unknown dataset
    if split not in dcfg.splits:
        raise ConfigError(f"dataset {name!r} has no split {split!r}; known: {sorted(dcfg.splits)}")
    root = cfg.dataset_root(name)
    path = root / dcfg.annotation_dir / dcfg.splits[split]
    if not path.is_file():
        raise FileNotFoundError(f"annotation file of {name}/{split} not found: {path} (expected the raw layout "
                                f"<root>/{dcfg.annotation_dir}/{dcfg.splits[split]} with root={root}; set "
                                f"datasets.{name}.root, or build the synthetic world with `vsr1 synth`)")
    queries, summary, durations = _read(path, skip_bad)
    vdir = root / dcfg.video_dir
    videos = {vid: VideoRef(vid, dur, vdir / f"{vid}{dcfg.video_ext}") for vid, dur in sorted(durations.items())}
    return Split(dataset=name, name=split, queries=queries, videos=videos, summary=summary)


# ----------------------------------------------------------------------------- writing
def fig_row(video_id: str, desc_id: int, start: float, end: float, duration: float, cog_desc: str,
            fig_desc: str, score: float = 0.0) -> dict:
    """One row in the FIG schema (key order as in the real files); raises FIGFormatError if invalid."""
    row = {"video": video_id, "time": [start, end], "desc_id": desc_id, "duration": duration,
           "cog_desc": cog_desc, "fig_desc": fig_desc, "fig_desc_score": score}
    _check_row(row, f"fig_row(desc_id={desc_id!r})")
    row.update(time=[float(start), float(end)], duration=float(duration), fig_desc_score=float(score))
    return row


def write_fig_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write rows as UTF-8 JSONL atomically (temp file + rename); NaN/inf refuse to serialise."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
