"""`vsr1 synth`: build the synthetic fine-grained VCMR world in the raw VERIFIED layout.

    vsr1 synth [--config F] [key=value ...]
    vsr1 synth synth.preset=tiny workspace=/tmp/w          # a few families in seconds (tests)
    vsr1 synth synth.preset=large synth.workers=16          # several thousand videos (GPU training)

Writes, under cfg.dataset_root("synth"):
  videos/<id>.mp4                       libx264 yuv420p, synth.width x height at synth.fps
  annotations/synth_fig_{split}.jsonl   FIG schema (shared/spec/data.md); splits are disjoint in families;
                                        fig_desc_score 1.0 for a family's main moment, 0.5 for other moments
  world.json                            families, per-video attributes, timelines and queries
  contact_sheet.png                     a few families, frames over time with their fine queries
Deterministic: one config gives byte-identical files. Resumable: an mp4 whose stored render key
matches its content parameters is kept, so a killed build continues where it stopped.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from videosearch_r1.config import Config
from videosearch_r1.synth.render import read_key, render_key, write_video
from videosearch_r1.synth.world import VideoSpec, World, resolve, sample_world, world_json
from videosearch_r1.utils import atomic_write_json, command_parser, config_from_args, parse_command, progress

DATASET = "synth"


@dataclass
class BuildSummary:
    root: str
    videos: int = 0
    rendered: int = 0
    kept: int = 0  # already on disk with the same render key
    queries: dict[str, int] = field(default_factory=dict)  # split -> rows written
    dropped_queries: int = 0  # other moments with no unique fine description (world.py)
    duration_mean: float = 0.0
    duration_max: float = 0.0
    long_videos: int = 0  # longer than 64 s
    stale: int = 0  # mp4s in videos/ that this world does not contain (left alone)
    bytes: int = 0  # of the mp4s of this world
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    def format(self) -> str:
        q = " / ".join(f"{k} {v}" for k, v in self.queries.items())
        stale = f", {self.stale} stale mp4s not in this world left in videos/" if self.stale else ""
        return (f"synth: {self.videos} videos ({self.rendered} rendered, {self.kept} kept){stale} | queries {q} "
                f"({self.dropped_queries} other moments dropped: no unique fine query) | duration mean "
                f"{self.duration_mean:.1f} s, max {self.duration_max:.1f} s, {self.long_videos} > 64 s | "
                f"{self.bytes / 2**20:.1f} MiB of mp4 | {self.seconds:.1f} s | {self.root}")


# ----------------------------------------------------------------------------- rendering
def _render_one(job: tuple[VideoSpec, str, float]) -> str:
    spec, path, noise = job
    write_video(spec, path, noise)
    return spec.video_id


def _todo(videos: list[VideoSpec], vdir: Path, ext: str, noise: float) -> list[tuple[VideoSpec, str, float]]:
    """The videos whose file is missing or was written from other content parameters."""
    jobs = []
    for v in videos:
        path = vdir / f"{v.video_id}{ext}"
        if not path.exists() or read_key(path) != render_key(v, noise):
            jobs.append((v, str(path), noise))
    return jobs


def render_all(jobs: list[tuple[VideoSpec, str, float]], workers: int) -> None:
    """Write every job's mp4 (longest first), in `workers` spawned processes when > 1, with a progress bar."""
    jobs = sorted(jobs, key=lambda j: -j[0].num_frames)
    bar = progress(total=len(jobs), desc="synth: render", unit="video")
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                _render_one(job)
                bar.update(1)
            return
        with mp.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_one, jobs, chunksize=1):
                bar.update(1)
    finally:
        bar.close()


def _clean_temps(vdir: Path) -> None:
    """Remove temp files a killed build left behind (atomic writes never leave a partial mp4)."""
    for p in vdir.glob(".*.tmp*"):
        p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- annotations
def annotation_rows(world: World, split: str) -> list[dict]:
    """FIG rows of one split in file order (video order, main query first); desc_id is seed-unique:
    world.desc_id(seed, row number)."""
    from videosearch_r1.data.fig import fig_row
    from videosearch_r1.synth.world import desc_id

    seed = int(world.config["seed"])
    rows = []
    for fam in world.families:
        if fam.split != split:
            continue
        for v in fam.videos:
            for q in v.queries:
                rows.append(fig_row(v.video_id, desc_id(seed, len(rows)), q.start, q.end, v.duration, q.cog_desc, q.fig_desc,
                                    score=1.0 if q.main else 0.5))
    return rows


def _write_annotations(cfg: Config, world: World, summary: BuildSummary) -> None:
    from videosearch_r1.data.fig import write_fig_jsonl

    dcfg = cfg.dataset_cfg(DATASET)
    for split, name in dcfg.splits.items():
        rows = annotation_rows(world, split)
        path = cfg.dataset_root(DATASET) / dcfg.annotation_dir / name
        write_fig_jsonl(path, rows)
        summary.queries[split] = len(rows)
        summary.files.append(str(path))


# ----------------------------------------------------------------------------- the command
def build(cfg: Config) -> BuildSummary:
    """Sample the world, render what is missing, write annotations, world.json and the contact sheet."""
    t0 = time.time()
    s = resolve(cfg.synth)
    dcfg = cfg.dataset_cfg(DATASET)
    missing = sorted(set(s.families) - set(dcfg.splits))
    if missing:
        raise ValueError(f"synth.families names split(s) {missing} that datasets.synth.splits has no file for; "
                         f"known: {sorted(dcfg.splits)}")
    root = cfg.dataset_root(DATASET)
    vdir = root / dcfg.video_dir
    vdir.mkdir(parents=True, exist_ok=True)
    _clean_temps(vdir)
    world = sample_world(s)
    videos = world.videos()
    summary = BuildSummary(root=str(root), videos=len(videos), dropped_queries=world.dropped_queries)

    jobs = _todo(videos, vdir, dcfg.video_ext, s.noise)
    workers = min(s.workers or len(os.sched_getaffinity(0)), max(1, len(jobs)))
    print(f"synth: preset {s.preset}, {len(world.families)} families, {len(videos)} videos "
          f"({len(videos) - len(jobs)} already written), {workers} worker(s) -> {root}", flush=True)
    render_all(jobs, workers)
    summary.rendered, summary.kept = len(jobs), len(videos) - len(jobs)

    _write_annotations(cfg, world, summary)
    wj = world_json(world)
    wj["config"].pop("workers", None)  # how a build ran does not change the world
    atomic_write_json(root / "world.json", wj)
    summary.files.append(str(root / "world.json"))
    if s.sheet_families > 0:
        from videosearch_r1.synth.sheet import contact_sheet

        sheet = contact_sheet(world, vdir, dcfg.video_ext, root / "contact_sheet.png", s.sheet_families)
        summary.files.append(str(sheet))

    durations = [v.duration for v in videos]
    names = {f"{v.video_id}{dcfg.video_ext}" for v in videos}
    summary.duration_mean = sum(durations) / max(1, len(durations))
    summary.duration_max = max(durations, default=0.0)
    summary.long_videos = sum(d > 64.0 for d in durations)
    summary.stale = sum(1 for p in vdir.glob(f"*{dcfg.video_ext}") if p.name not in names)
    summary.bytes = sum((vdir / n).stat().st_size for n in names)
    summary.seconds = time.time() - t0
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("vsr1 synth", __doc__)
    args = parse_command(parser, argv)
    cfg = config_from_args(args)
    try:
        summary = build(cfg)
    except ValueError as e:
        print(f"vsr1 synth: {e}", file=sys.stderr)
        return 2
    print(summary.format(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
