"""`vsr1 data`: the raw layout of a dataset from scratch: folders, the VERIFIED FIG files, a video check.

    vsr1 data layout charades                    # create <root>/videos, <root>/annotations; print what goes where
    vsr1 data annotations charades               # fetch the VERIFIED FIG files (download.annotations_*); or `all`
    vsr1 data check charades [--deep]            # missing / corrupt / extra videos against the annotation ids
    vsr1 data check didemo --anno-root /data/fig/didemo-fig --video-root /data/didemo/videos

The raw layout is the config's (README "Paths"): <root>/<video_dir>/<id><video_ext> and
<root>/<annotation_dir>/<file per split>, root = datasets.<name>.root (default <workspace>/data/<name>/raw).
`--anno-root` / `--video-root` (the authors' ANNO_ROOT / VIDEO_BASE) point annotation_dir / video_dir
at other folders. The FIG files are published in the VERIFIED GitHub repository (hlchen23/VERIFIED,
fine-grained-anno/<dataset>-fig/); its git tree holds the Charades-FIG files and DiDeMo-FIG val/test
only, so the others are reported as not published there (get them through the VERIFIED README's links
and place them where `vsr1 data layout` says). Raw videos are never redistributed: each dataset's
source is printed by `layout`.
`check` exits 1 when a video is missing or corrupt (each named; `--deep` also decodes the sampled
frames, slower), 0 otherwise; extra files are listed as a warning. Its full report goes to
<workspace>/data/<name>/prepared/check.json.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from videosearch_r1.config import Config

SOURCES = {  # where each dataset's raw videos come from (we never redistribute them)
    "charades": ["Charades (480p): https://prior.allenai.org/projects/charades",
                 "  https://ai2-public-datasets.s3-us-west-2.amazonaws.com/charades/Charades_v1_480.zip"],
    "didemo": ["DiDeMo: https://github.com/LisaAnne/LocalizingMoments (download/download_videos_AWS.py)"],
    "activitynet": ["ActivityNet: http://activity-net.org/download.html",
                    "  ActivityNet Captions: https://cs.stanford.edu/people/ranjaykrishna/densevid/",
                    "  name files v_<youtube id>.mp4, as in the FIG `video` field"],
}


def root_overrides(dataset: str, anno_root: str | None, video_root: str | None) -> list[str]:
    """Dotted overrides that point a dataset's annotation / video folder elsewhere (absolute paths)."""
    out = []
    if anno_root:
        out.append(f"datasets.{dataset}.annotation_dir={Path(anno_root).expanduser().resolve()}")
    if video_root:
        out.append(f"datasets.{dataset}.video_dir={Path(video_root).expanduser().resolve()}")
    return out


def annotation_dir(cfg: Config, name: str) -> Path:
    return cfg.dataset_root(name) / cfg.dataset_cfg(name).annotation_dir


def video_dir(cfg: Config, name: str) -> Path:
    return cfg.dataset_root(name) / cfg.dataset_cfg(name).video_dir


# ----------------------------------------------------------------------------- layout
def make_layout(cfg: Config, name: str) -> str:
    """Create the raw folders; return the text saying what goes where."""
    dcfg = cfg.dataset_cfg(name)
    adir, vdir = annotation_dir(cfg, name), video_dir(cfg, name)
    adir.mkdir(parents=True, exist_ok=True)
    vdir.mkdir(parents=True, exist_ok=True)
    lines = [f"[{name}]", "Annotations (VERIFIED FIG JSONL; fetch: vsr1 data annotations " + name + "):"]
    lines += [f"  {adir / f}    ({split})" for split, f in dcfg.splits.items()]
    lines += ["Raw videos:", f"  {vdir}/<video_id>{dcfg.video_ext}    (<video_id> = the FIG `video` field)"]
    if name in SOURCES:
        lines += ["Sources:"] + [f"  {s}" for s in SOURCES[name]]
    lines += [f"Then: vsr1 data check {name}  and  vsr1 build {name}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- annotations
def fetch_annotations(cfg: Config, name: str, source=None) -> tuple[list[Path], list[str]]:
    """Fetch and validate every split file; returns (files in place, messages for files not published)."""
    from videosearch_r1.data.download import DownloadError, RemoteFile, make_source, sync_files
    from videosearch_r1.data.fig import load_fig_jsonl

    d = cfg.download
    if name not in SOURCES:
        raise DownloadError(f"dataset {name!r} has no published VERIFIED annotations (synth: `vsr1 synth`)")
    source = source or make_source(cfg)
    kind = {"github": "github", "hf": "dataset"}.get(d.annotations_host)
    if kind is None:
        raise DownloadError(f"download.annotations_host must be 'github' or 'hf', got {d.annotations_host!r}")
    adir = annotation_dir(cfg, name)
    folder = "/".join(p for p in (d.annotations_path.strip("/"), f"{name}-fig") if p)
    done, missing = [], []
    for split, fname in cfg.dataset_cfg(name).splits.items():
        remote = f"{folder}/{fname}"
        try:
            listed = source.list(kind, d.annotations_repo, remote) if kind != "github" or d.mirror else []
            rf = listed[0] if listed else RemoteFile(remote, None)
            sync_files(source, kind, d.annotations_repo, [rf], adir, cfg, strip=folder, what=f"{name} {split}")
        except DownloadError as e:
            missing.append(f"{split}: {e}; place it at {adir / fname}")
            continue
        load_fig_jsonl(adir / fname)  # FIGFormatError names file:line:field
        done.append(adir / fname)
    return done, missing


# ----------------------------------------------------------------------------- check
@dataclass
class CheckReport:
    dataset: str
    video_dir: str
    required: int = 0
    ok: int = 0
    missing: list[str] = field(default_factory=list)  # ids with no file
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (id, why)
    extra: list[str] = field(default_factory=list)  # files in the video folder no annotation names
    annotation_files: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.missing and not self.corrupt

    def format(self, limit: int = 50) -> str:
        lines = [f"check {self.dataset}: {self.required} videos named by {len(self.annotation_files)} annotation "
                 f"files; {self.ok} ok, {len(self.missing)} missing, {len(self.corrupt)} corrupt, "
                 f"{len(self.extra)} extra files in {self.video_dir}"]
        for tag, items in (("missing", self.missing), ("corrupt", [f"{v}: {w}" for v, w in self.corrupt]),
                           ("extra", self.extra)):
            lines += [f"  {tag} {x}" for x in items[:limit]]
            if len(items) > limit:
                lines.append(f"  ... {len(items) - limit} more {tag} (all in check.json)")
        return "\n".join(lines)


def required_ids(cfg: Config, name: str) -> tuple[list[str], list[str]]:
    """Sorted video ids named by the dataset's annotation files, and those files."""
    from videosearch_r1.data.fig import load_split

    ids: set[str] = set()
    files = []
    for split in cfg.dataset_cfg(name).splits:
        sp = load_split(cfg, name, split)  # FileNotFoundError names the file; FIGFormatError the line
        ids.update(sp.videos)
        files.append(sp.summary.file)
    return sorted(ids), files


def check_videos(cfg: Config, name: str, deep: bool = False, workers: int = 4) -> CheckReport:
    from videosearch_r1.video.decode import VideoError, decode, probe

    dcfg = cfg.dataset_cfg(name)
    vdir = video_dir(cfg, name)
    ids, files = required_ids(cfg, name)
    rep = CheckReport(name, str(vdir), required=len(ids), annotation_files=files)
    present = {p.name: p for p in vdir.iterdir() if p.is_file()} if vdir.is_dir() else {}
    wanted = {f"{v}{dcfg.video_ext}": v for v in ids}
    rep.extra = sorted(n for n in present if n not in wanted and not n.startswith("."))
    stems = {Path(n).stem: n for n in rep.extra}
    rep.missing = [v + (f" (found {stems[v]}: set datasets.{name}.video_ext={Path(stems[v]).suffix} or convert it)"
                        if v in stems else "")
                   for f, v in sorted(wanted.items(), key=lambda kv: kv[1]) if f not in present]
    todo = [(v, present[f]) for f, v in sorted(wanted.items(), key=lambda kv: kv[1]) if f in present]
    vcfg = cfg.video_cfg(name)

    def one(job):
        vid, path = job
        try:
            decode(path, vcfg) if deep else probe(path)
            return vid, None
        except (VideoError, OSError) as e:
            return vid, str(e)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for vid, why in pool.map(one, todo):
            if why is None:
                rep.ok += 1
            else:
                rep.corrupt.append((vid, why))
    return rep


# ----------------------------------------------------------------------------- the command
def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.config import ConfigError
    from videosearch_r1.data.download import DownloadError
    from videosearch_r1.data.records import FIGFormatError
    from videosearch_r1.utils import atomic_write_json, command_parser, config_from_args, parse_command

    parser = command_parser("vsr1 data", __doc__)
    parser.add_argument("action", choices=("layout", "annotations", "check"))
    parser.add_argument("dataset", help="charades | didemo | activitynet | all (layout, annotations) | any `datasets` entry")
    parser.add_argument("--anno-root", default=None, help="folder holding the FIG files (ANNO_ROOT)")
    parser.add_argument("--video-root", default=None, help="folder holding the raw videos (VIDEO_BASE)")
    parser.add_argument("--mirror", default=None, help="local directory laid out like the hub (download.mirror)")
    parser.add_argument("--deep", action="store_true", help="check: decode each video's sampled frames too")
    args = parse_command(parser, argv)
    extra = root_overrides(args.dataset, args.anno_root, args.video_root)
    cfg = config_from_args(args, extra + ([f"download.mirror={args.mirror}"] if args.mirror else []))
    names = list(SOURCES) if args.dataset == "all" and args.action != "check" else [args.dataset]
    try:
        for name in names:
            cfg.dataset_cfg(name)
        if args.action == "layout":
            print("\n\n".join(make_layout(cfg, name) for name in names))
            return 0
        if args.action == "annotations":
            failed = False
            for name in names:
                done, missing = fetch_annotations(cfg, name)
                for p in done:
                    print(f"annotations {name}: {p}")
                for m in missing:
                    print(f"annotations {name}: NOT FETCHED {m}", file=sys.stderr)
                failed |= bool(missing)
            return 1 if failed else 0
        rep = check_videos(cfg, args.dataset, deep=args.deep, workers=max(1, cfg.download.workers))
        print(rep.format())
        atomic_write_json(cfg.prepared_dir(args.dataset) / "check.json", {
            "dataset": rep.dataset, "video_dir": rep.video_dir, "required": rep.required, "ok": rep.ok,
            "missing": rep.missing, "corrupt": [{"id": v, "why": w} for v, w in rep.corrupt], "extra": rep.extra,
            "annotation_files": rep.annotation_files})
        return 0 if rep.passed else 1
    except (ConfigError, DownloadError, FIGFormatError, FileNotFoundError) as e:
        print(f"vsr1 data {args.action}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
