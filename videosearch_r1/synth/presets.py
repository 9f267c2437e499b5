"""Sizes and ids of a synthetic world: the presets that fill unset `synth.*` size fields, and the
seed-unique video / query ids (split out of world.py, which samples the world itself).

    cfg = resolve(cfg.synth)               # every None size field from PRESETS[cfg.synth.preset]
    video_id(0, "test", 3, 1)              # "s0-test0003v1"
"""
from __future__ import annotations

import dataclasses

from videosearch_r1.config import SynthConfig

ID_STRIDE = 10**6  # query ids of seed s are s * ID_STRIDE + n, n < ID_STRIDE rows per split file


def video_id(seed: int, split: str, family: int, variant: int) -> str:
    """The seed-unique id (and mp4 file stem) of one video."""
    return f"s{seed}-{split}{family:04d}v{variant}"


def desc_id(seed: int, n: int) -> int:
    """The seed-unique FIG desc_id of row n (0-based) of a split's annotation file."""
    if not 0 <= n < ID_STRIDE or seed < 0:
        raise ValueError(f"synth: query row {n} of seed {seed} is outside the id range (seed >= 0, "
                         f"< {ID_STRIDE} queries per split)")
    return seed * ID_STRIDE + n


# ----------------------------------------------------------------------------- presets
PRESETS: dict[str, dict] = {
    # tests: a few short families, one long family in train and test; builds in seconds
    "tiny": dict(families={"train": 3, "val": 1, "test": 2}, variants_per_family=3, queries_per_video=2,
                 min_duration=8.0, max_duration=16.0, long_fraction=0.34, long_duration=(65.0, 68.0)),
    # CPU default: 100 families x 4 variants, < 2 min on 2 cores
    "default": dict(families={"train": 60, "val": 10, "test": 30}, variants_per_family=4, queries_per_video=2,
                    min_duration=8.0, max_duration=40.0, long_fraction=0.1, long_duration=(66.0, 90.0)),
    # GPU engine / policy training: 7,400 videos; the test corpus is 1,000 videos as in environment.md §8
    "large": dict(families={"train": 1500, "val": 100, "test": 250}, variants_per_family=4, queries_per_video=3,
                  min_duration=8.0, max_duration=48.0, long_fraction=0.1, long_duration=(66.0, 120.0)),
}


def resolve(s: SynthConfig) -> SynthConfig:
    """A copy of `s` with every unset (None) size field taken from its preset; set fields win."""
    if s.preset not in PRESETS:
        raise ValueError(f"synth.preset: unknown preset {s.preset!r}; known: {sorted(PRESETS)}")
    preset = PRESETS[s.preset]
    out = {k: (preset[k] if getattr(s, k) is None else getattr(s, k)) for k in preset}
    out["families"] = {**preset["families"], **(s.families or {})}
    out["long_duration"] = tuple(float(x) for x in out["long_duration"])
    r = dataclasses.replace(s, **out)
    lo, hi = r.long_duration
    if not (0 < r.min_duration <= r.max_duration and 64.0 < lo <= hi):
        raise ValueError(f"need 0 < synth.min_duration <= max_duration and 64 < long_duration[0] <= [1]; got "
                         f"{r.min_duration}, {r.max_duration}, {r.long_duration}")
    if r.variants_per_family < 2 or r.queries_per_video < 1 or not 0 <= r.long_fraction <= 1:
        raise ValueError("need synth.variants_per_family >= 2, queries_per_video >= 1, 0 <= long_fraction <= 1")
    if any(n < 0 for n in r.families.values()):
        raise ValueError(f"synth.families: negative count in {r.families}")
    return r
