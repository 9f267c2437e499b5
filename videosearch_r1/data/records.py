"""Typed records for VERIFIED FIG annotations: one Query per JSONL row, one VideoRef per corpus video.

The loader that fills them is `videosearch_r1/data/fig.py`; the file format is in
`shared/spec/data.md` (and docs/metrics.md for how queries are scored).
read_state(path, default): our own bookkeeping JSON (build records, stores' sources.json, markers), where a
damaged file means "redo", not a crash.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


def read_state(path: Path, default=None):
    """A bookkeeping JSON file we wrote ourselves; `default` when it is missing, unreadable or damaged
    (a kill mid-write on a file system without atomic rename, a full disk): the caller redoes that work."""
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


class FIGFormatError(ValueError):
    """A malformed FIG row. The message names `file:line` and the offending field."""


@dataclass(frozen=True)
class Query:
    """One FIG query (one row of the annotation file)."""

    qid: str  # str(desc_id): unique within a file
    desc_id: int
    video_id: str
    fig_desc: str  # fine-grained query (the one evaluated)
    cog_desc: str  # coarse query
    start: float  # seconds
    end: float  # seconds, clamped to duration when the file's end is past it (training targets, display)
    duration: float  # the file's duration field (metadata, not the decoded length)
    line: int  # 1-based line in the source file
    end_clamped: bool  # True when the file's end was past `duration`
    raw_end: Optional[float] = None  # the file's end when it was clamped (None: `end` is as annotated)

    @property
    def text(self) -> str:
        return self.fig_desc

    @property
    def annotated_end(self) -> float:
        """The end as annotated in the file, never clamped: what scoring uses (docs/metrics.md)."""
        return self.end if self.raw_end is None else self.raw_end


@dataclass(frozen=True)
class VideoRef:
    """One corpus video: the raw file is <root>/<video_dir>/<video_id><video_ext>."""

    video_id: str
    duration: float  # from the annotation file (the probed length is the truth once decoded)
    path: Path


@dataclass
class LoadSummary:
    """What a load did with every row: nothing is dropped without being counted here."""

    file: str
    rows: int = 0  # non-blank lines read
    loaded: int = 0  # queries returned
    clamped_end: int = 0  # loaded rows whose end was past `duration` (end clamped to duration)
    skipped_past_end: int = 0  # rows whose moment starts at/after the video's end (skipped)
    skipped_bad: int = 0  # malformed rows skipped under skip_bad=True
    zero_length: int = 0  # loaded rows whose moment has start == end (never a grounding hit)
    messages: list[str] = field(default_factory=list)  # one line per skipped row / notable event

    def format(self, max_messages: int = 20) -> str:
        head = (f"{self.file}: {self.rows} rows, {self.loaded} loaded, {self.clamped_end} end clamped to "
                f"duration, {self.skipped_past_end} skipped (moment past video end), "
                f"{self.skipped_bad} skipped (malformed), {self.zero_length} zero-length moments (loaded)")
        lines = [head] + [f"  {m}" for m in self.messages[:max_messages]]
        if len(self.messages) > max_messages:
            lines.append(f"  ... {len(self.messages) - max_messages} more")
        return "\n".join(lines)


@dataclass
class Split:
    """The queries of one dataset split and its corpus (every video named by a well-formed row)."""

    dataset: str
    name: str
    queries: list[Query]
    videos: dict[str, VideoRef]  # video_id -> VideoRef
    summary: LoadSummary

    def corpus_ids(self) -> list[str]:
        return sorted(self.videos)
