"""Typed records and the VERIFIED FIG JSONL loader/writer (see fig.py)."""
from videosearch_r1.data.fig import fig_row, load_fig_jsonl, load_split, write_fig_jsonl
from videosearch_r1.data.records import FIGFormatError, LoadSummary, Query, Split, VideoRef

__all__ = ["FIGFormatError", "LoadSummary", "Query", "Split", "VideoRef", "fig_row", "load_fig_jsonl",
           "load_split", "write_fig_jsonl"]
