"""The real-dataset toy's data: about toy.videos_per_split videos of each split of a real dataset, laid out
as a small dataset of its own (`toy-<dataset>`) in the raw VERIFIED layout. `vsr1 toy --dataset D` runs it.

    vsr1 toy --dataset activitynet --video-source /data/anet/videos [--annotations /data/anet/fig]
    from videosearch_r1.data.toyset import prepare
    chosen = prepare(cfg, "activitynet", "/data/anet/videos", "/data/anet/fig"); print(chosen.format())

Sources: the videos are `<video-source>/<id><video_ext>` (default: the dataset's own raw video folder,
datasets.D.root/video_dir); the FIG files are `<annotations>/<file per split>` (default: its annotation
folder; fetch them with `vsr1 data annotations D`). Every split's FIG file is loaded and validated
(data/fig.py: a malformed row is an error naming file:line:field).

Choice, per split: the split's annotated videos in a fixed order (sha1 of "<toy.seed>:<id>", so the pick
spreads over the dataset and is the same on every machine), taken one by one until toy.videos_per_split
are found that exist and decode (video/decode.py at the toy copy's sampling budget). A video with no file
is a counted skip (missing), one that does not decode a counted skip (corrupt, with the reason); both
are named in the report and in <root>/toy_selection.json. A split with no usable video is an error.
Splits that share videos (ActivityNet's val_1 / val_2) decode each video once.

Layout, root = <workspace>/data/toy-<D>/raw: videos/<id><ext> are symlinks to the source files (copies
where the file system has no symlinks); annotations/<file per split> hold the chosen videos' rows,
unchanged (atomic writes). Files the choice no longer names are removed from videos/. The choice is
recorded with a key (source folder, annotation contents, videos_per_split, seed, sampling budget) and
the size + mtime of each chosen video: a rerun with the same key and unchanged videos reuses it without
decoding anything.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from videosearch_r1.config import Config, DatasetConfig, VideoConfig
from videosearch_r1.data.records import read_state

SELECTION = "toy_selection.json"
VERSION = 1  # bump when the choice rule changes


class ToySetError(RuntimeError):
    pass


def toy_name(dataset: str) -> str:
    """The toy copy's dataset name (its own `datasets` entry, data, index and runs)."""
    return f"toy-{dataset}"


def toy_entry(cfg: Config, dataset: str) -> DatasetConfig:
    """The toy copy's `datasets` entry: the source's splits, extension and query field in the default raw
    layout under <workspace>/data/toy-<D>/raw; frames sampled as toy.video (None: the source's budget)."""
    src = cfg.dataset_cfg(dataset)
    return DatasetConfig(splits=dict(src.splits), video_ext=src.video_ext, query_field=src.query_field,
                         video=cfg.toy.video or src.video)


@dataclass
class SplitChoice:
    split: str
    file: str  # the source FIG file
    annotated: int = 0  # videos the file names
    chosen: list[str] = field(default_factory=list)
    queries: int = 0  # rows of the chosen videos
    missing: list[str] = field(default_factory=list)  # tried, no file in the source (counted skip)
    corrupt: list[list[str]] = field(default_factory=list)  # tried, [id, why] (counted skip)


@dataclass
class ToySet:
    dataset: str
    name: str
    root: str
    video_source: str
    annotations: str
    splits: dict[str, SplitChoice] = field(default_factory=dict)
    reused: bool = False

    @property
    def skipped(self) -> dict[str, int]:
        return {"missing": len({v for s in self.splits.values() for v in s.missing}),
                "corrupt": len({v for s in self.splits.values() for v, _ in s.corrupt})}

    def format(self, limit: int = 5) -> str:
        sk = self.skipped
        lines = [f"toy {self.dataset} -> {self.name} at {self.root} ({'reused' if self.reused else 'chosen now'}; "
                 f"videos from {self.video_source}); skipped {sk['missing']} missing, {sk['corrupt']} corrupt"]
        for s in self.splits.values():
            lines.append(f"  {s.split}: {len(s.chosen)} of {s.annotated} annotated videos, {s.queries} queries; "
                         f"skipped {len(s.missing)} missing, {len(s.corrupt)} corrupt  ({s.file})")
            lines += [f"    missing {v}" for v in s.missing[:limit]]
            lines += [f"    corrupt {v}: {why}" for v, why in s.corrupt[:limit]]
            more = len(s.missing[limit:]) + len(s.corrupt[limit:])
            if more:
                lines.append(f"    ... {more} more (all in {Path(self.root) / SELECTION})")
        return "\n".join(lines)


def candidate_order(ids, seed: int) -> list[str]:
    """The order a split's videos are tried in: sha1 of "<seed>:<id>" (deterministic, spread out)."""
    return sorted(ids, key=lambda v: (hashlib.sha1(f"{seed}:{v}".encode()).hexdigest(), v))


def _sha256(path: Path) -> str:
    from videosearch_r1.data.download import sha256_file

    return sha256_file(path)


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _sources(cfg: Config, dataset: str, video_source, annotations) -> tuple[Path, Path]:
    from videosearch_r1.data.raw import annotation_dir, video_dir

    vsrc = Path(video_source).expanduser().resolve() if video_source else video_dir(cfg, dataset)
    asrc = Path(annotations).expanduser().resolve() if annotations else annotation_dir(cfg, dataset)
    if not vsrc.is_dir():
        raise ToySetError(f"--video-source {vsrc}: not a folder (it holds the raw videos <id>"
                          f"{cfg.dataset_cfg(dataset).video_ext}; `vsr1 data layout {dataset}` says where they go)")
    for split, fname in cfg.dataset_cfg(dataset).splits.items():
        if not (asrc / fname).is_file():
            raise ToySetError(f"annotation file of {dataset}/{split} not found: {asrc / fname} (fetch it with `vsr1 "
                              f"data annotations {dataset}`, or pass --annotations DIR holding {fname})")
    return vsrc, asrc


def _load_rows(path: Path) -> list[dict]:
    """The file's rows as JSON objects, after the FIG loader validated it (errors name file:line:field)."""
    from videosearch_r1.data.fig import load_fig_jsonl

    load_fig_jsonl(path)
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _choose(ids: list[str], n: int, seed: int, vsrc: Path, ext: str, vcfg: VideoConfig, checked: dict,
            out: SplitChoice) -> None:
    """Walk the candidate order until n videos exist and decode; `checked` caches id -> None | why."""
    from videosearch_r1.video.decode import VideoError, decode

    for vid in candidate_order(ids, seed):
        if len(out.chosen) >= n:
            break
        path = vsrc / f"{vid}{ext}"
        if vid not in checked:
            if not path.is_file():
                checked[vid] = "missing"
            else:
                try:
                    decode(path, vcfg)
                    checked[vid] = None
                except (VideoError, OSError, ValueError, RuntimeError) as e:
                    checked[vid] = f"{type(e).__name__}: {e}"
        why = checked[vid]
        if why is None:
            out.chosen.append(vid)
        elif why == "missing":
            out.missing.append(vid)
        else:
            out.corrupt.append([vid, why])


def _link(target: Path, link: Path) -> None:
    """link -> target (a symlink; a copy where symlinks are refused), replaced atomically."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(target, tmp)
    except OSError:
        shutil.copy2(target, tmp)
    os.replace(tmp, link)


def _reusable(record: dict, key: str, root: Path, ext: str, vsrc: Path) -> bool:
    if record.get("key") != key:
        return False
    for vid, st in record.get("videos", {}).items():
        src, link = vsrc / f"{vid}{ext}", root / "videos" / f"{vid}{ext}"
        if not src.is_file() or _stat(src) != st or not link.exists():
            return False
    return all((root / "annotations" / s["annotation_file"]).is_file() for s in record.get("splits", {}).values())


def prepare(cfg: Config, dataset: str, video_source=None, annotations=None) -> ToySet:
    """Choose the videos and lay out the toy copy (module doc); returns what was chosen and skipped."""
    from videosearch_r1.data.fig import write_fig_jsonl
    from videosearch_r1.fingerprint import digest
    from videosearch_r1.utils import atomic_write_json

    if dataset == "synth" or dataset.startswith("toy-"):
        raise ToySetError(f"--dataset {dataset}: a real dataset is expected (the synthetic toy is `vsr1 toy`)")
    dcfg = cfg.dataset_cfg(dataset)
    vsrc, asrc = _sources(cfg, dataset, video_source, annotations)
    name = toy_name(dataset)
    entry = toy_entry(cfg, dataset)
    vcfg = entry.video or cfg.video
    root = cfg.dataset_root(name) if name in cfg.datasets else Path(cfg.workspace).expanduser() / "data" / name / "raw"
    n, seed = cfg.toy.videos_per_split, cfg.toy.seed
    if n <= 0:
        raise ToySetError(f"toy.videos_per_split must be > 0, got {n}")
    files = {split: asrc / fname for split, fname in dcfg.splits.items()}
    key = digest({"version": VERSION, "dataset": dataset, "video_source": str(vsrc), "n": n, "seed": seed,
                  "video": asdict(vcfg), "ext": dcfg.video_ext, "files": {s: _sha256(p) for s, p in files.items()}})
    rec_path = root / SELECTION
    record = read_state(rec_path, None) or {}  # damaged: the choice is made again
    out = ToySet(dataset, name, str(root), str(vsrc), str(asrc))
    if _reusable(record, key, root, dcfg.video_ext, vsrc):
        out.splits = {s: SplitChoice(**{k: v for k, v in c.items() if k != "annotation_file"})
                      for s, c in record["splits"].items()}
        out.reused = True
        return out
    checked: dict[str, str | None] = {}
    rows_by_split = {}
    for split, path in files.items():
        rows = _load_rows(path)
        ids = sorted({r["video"] for r in rows})
        choice = SplitChoice(split, str(path), annotated=len(ids))
        _choose(ids, n, seed, vsrc, dcfg.video_ext, vcfg, checked, choice)
        if not choice.chosen:
            raise ToySetError(f"{dataset}/{split}: none of the {len(ids)} videos named by {path} exists and decodes "
                              f"in {vsrc} ({len(choice.missing)} missing, {len(choice.corrupt)} corrupt)")
        keep = set(choice.chosen)
        rows_by_split[split] = [r for r in rows if r["video"] in keep]
        choice.queries = len(rows_by_split[split])
        out.splits[split] = choice
    chosen = sorted({v for c in out.splits.values() for v in c.chosen})
    vdir, adir = root / "videos", root / "annotations"
    vdir.mkdir(parents=True, exist_ok=True)
    wanted = {f"{v}{dcfg.video_ext}" for v in chosen}
    for p in vdir.iterdir():  # the toy copy's own folder: drop what this choice does not name
        if p.name not in wanted and (p.is_symlink() or p.is_file()):
            p.unlink()
    for v in chosen:
        _link(vsrc / f"{v}{dcfg.video_ext}", vdir / f"{v}{dcfg.video_ext}")
    for split, rows in rows_by_split.items():
        write_fig_jsonl(adir / dcfg.splits[split], rows)
    atomic_write_json(rec_path, {
        "key": key, "dataset": dataset, "video_source": str(vsrc), "annotations": str(asrc),
        "videos": {v: _stat(vsrc / f"{v}{dcfg.video_ext}") for v in chosen},
        "splits": {s: {**asdict(c), "annotation_file": dcfg.splits[s]} for s, c in out.splits.items()}})
    return out
