"""`vsr1 library add|status|remove`: a searchable library of your own video folders.

    vsr1 library add ~/Videos [~/More ...] [--max-files N] [library.store=faiss+sqlite:///data/lib ...]
    vsr1 library status [--json]
    vsr1 library remove ~/Videos

`add DIR` scans DIR recursively for library.extensions (symlinks that lead out of DIR are skipped and
counted), fingerprints each file (size + mtime + sha1 of its first library.hash_bytes bytes), and
syncs DIR with the store: files that vanished are dropped, unchanged files are kept as they are, and
new or changed files are probed and decoded through the video front door (video/decode.py) with the
engine's sampling budget (library.video_budget) and embedded with the configured engine (engine/
embedder.py): the whole video (one vector, the same one `vsr1 index` would make) and its moments,
overlapping windows of library.window s every library.stride s with their real start/end times (up to
library.window_frames frames each; the last window ends at the video's end) and a JPEG thumbnail of
each window's middle frame. Every file is one store transaction (library/store.py), so a killed add
resumes where it stopped; the index is updated in place, never rebuilt. A file that cannot be read is
counted and listed (`status` shows it) and retried only once its fingerprint changes; any other error
while embedding a file is listed in the summary and that file retried on the next add. A file already
claimed by another library folder (nested folders) is left to that folder.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from videosearch_r1.library.store import FileRecord, LibraryStore, StoreError, open_store


class LibraryError(ValueError):
    """A bad library folder or request; the message names it."""


@dataclass
class AddSummary:
    root: str
    found: int = 0  # video files under the folder
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0  # files gone from disk, dropped from the store
    moments: int = 0  # moments embedded by this run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): unreadable files
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): symlinks out, other roots
    pending: int = 0  # left for the next run (--max-files)
    seconds: float = 0.0

    def format(self) -> str:
        head = (f"library add {self.root}: {self.found} videos found; {self.new} new, {self.changed} changed, "
                f"{self.unchanged} unchanged, {self.removed} removed; {self.moments} moments embedded; "
                f"{len(self.failed)} unreadable, {len(self.skipped)} skipped"
                + (f"; {self.pending} left (rerun to go on)" if self.pending else "") + f" ({self.seconds:.1f} s)")
        lines = [head] + [f"  unreadable {p}: {r}" for p, r in self.failed[:20]]
        lines += [f"  skipped {p}: {r}" for p, r in self.skipped[:20]]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- pure parts
def video_cfg(cfg):
    """The sampling budget library frames use: datasets.<library.video_budget>.video, or `video`."""
    name = cfg.library.video_budget
    return cfg.video_cfg(name) if name else cfg.video


def windows(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """Moment spans: [s, s + window) every `stride` s; the last one ends at `duration`."""
    if window <= 0 or stride <= 0 or duration <= 0:
        raise ValueError(f"windows: need positive duration/window/stride, got {duration}, {window}, {stride}")
    if duration <= window:
        return [(0.0, float(duration))]
    starts = [float(s) for s in np.arange(0.0, duration - window + 1e-9, stride)]
    if starts[-1] + window < duration - 1e-6:
        starts.append(float(duration - window))
    return [(s, s + window) for s in starts]


def file_record(path: Path, root: Path, hash_bytes: int) -> FileRecord:
    st = path.stat()
    h = hashlib.sha1()
    with open(path, "rb") as f:
        h.update(f.read(hash_bytes))
    return FileRecord(str(path), str(root), int(st.st_size), int(st.st_mtime_ns), h.hexdigest()[:16])


def scan(root: Path, extensions) -> tuple[list[Path], list[tuple[str, str]]]:
    """Video files under `root` (resolved, sorted) and skipped ones (symlinks leading out of root)."""
    exts = {e.lower() for e in extensions}
    found, skipped, seen = [], [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.suffix.lower() not in exts:
                continue
            real = p.resolve()
            if not real.is_relative_to(root):
                skipped.append((str(p), f"symlink to {real}, outside the library folder"))
            elif real.is_file() and real not in seen:
                seen.add(real)
                found.append(real)
    return found, skipped


def settings(cfg, embedder) -> dict:
    """What the stored vectors depend on; a library refuses to mix vectors made otherwise."""
    from videosearch_r1.video.decode import fingerprint

    lc = cfg.library
    return {"engine": embedder.fingerprint(), "instruction": cfg.engine.instruction, "dim": int(embedder.dim),
            "video_fingerprint": fingerprint(video_cfg(cfg)), "window": lc.window, "stride": lc.stride,
            "window_frames": lc.window_frames}


def thumbnail(frame: np.ndarray, size: int) -> bytes:
    from PIL import Image

    img = Image.fromarray(frame)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


# ----------------------------------------------------------------------------- embedding one file
def embed_file(path: Path, embedder, cfg):
    """(info, video vector [D], spans, thumbnails, moment vectors [M, D]) of one video file."""
    from videosearch_r1.video.decode import Clip, decode, decode_times, probe, sample_times

    lc, vcfg = cfg.library, video_cfg(cfg)
    info = probe(path)
    whole = decode(path, vcfg)
    video_vec = embedder.embed_videos([whole]).detach().float().cpu().numpy()[0]
    spans = windows(info.duration, lc.window, lc.stride)
    vecs, thumbs = [], []
    for g in range(0, len(spans), max(1, lc.windows_per_batch)):
        group = spans[g:g + lc.windows_per_batch]
        times = [s + sample_times(e - s, vcfg.fps, max(lc.window_frames, vcfg.min_frames), vcfg.min_frames)
                 for s, e in group]
        got = decode_times(path, np.concatenate(times), vcfg)
        clips, at = [], 0
        for t in times:
            sl = slice(at, at + len(t))
            clips.append(Clip(got.frames[sl], got.timestamps[sl], got.indices[sl], info))
            at += len(t)
        vecs.append(embedder.embed_videos(clips).detach().float().cpu().numpy())
        thumbs += [thumbnail(c.frames[len(c.frames) // 2], lc.thumb_size) for c in clips]
    return info, video_vec, spans, thumbs, np.concatenate(vecs)


# ----------------------------------------------------------------------------- add / remove
def _owner_roots(store: LibraryStore, root: str) -> dict[str, str]:
    return {p: r.root for p, r in store.files().items() if r.root != root}


def add_folder(cfg, folder, store: LibraryStore, embedder, max_files: int | None = None) -> AddSummary:
    """Sync one folder into the store (module doc); returns what changed."""
    from videosearch_r1.utils import progress
    from videosearch_r1.video.decode import VideoError

    t0 = time.perf_counter()
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise LibraryError(f"{folder}: not a directory")
    store.check_settings(settings(cfg, embedder))
    store.add_root(str(root))
    s = AddSummary(root=str(root))
    found, s.skipped = scan(root, cfg.library.extensions)
    others = _owner_roots(store, str(root))
    s.skipped += [(str(p), f"belongs to library folder {others[str(p)]}") for p in found if str(p) in others]
    found = [p for p in found if str(p) not in others]
    s.found = len(found)
    names = {str(p) for p in found}
    known, failed = store.files(str(root)), store.failed(str(root))
    s.removed = store.drop_files([p for p in known if p not in names])
    store.forget_failed([p for p in failed if p not in names])
    todo = []
    for p in found:
        try:
            rec = file_record(p, root, cfg.library.hash_bytes)
        except OSError as e:
            s.failed.append((str(p), f"{type(e).__name__}: {e}"))
            continue
        old = known.get(str(p))
        if old is not None and old[:5] == rec[:5]:
            s.unchanged += 1
        elif str(p) in failed and failed[str(p)][0][:5] == rec[:5]:
            s.failed.append((str(p), failed[str(p)][1]))  # same bytes as when it failed: not retried
        else:
            todo.append((rec, old is not None))
    if max_files is not None:
        todo, s.pending = todo[:max_files], max(0, len(todo) - max_files)
    for rec, was_known in progress(todo, total=len(todo), desc=f"library {root.name}", unit="video"):
        try:
            info, vvec, spans, thumbs, mvecs = embed_file(Path(rec.path), embedder, cfg)
        except (VideoError, OSError, ValueError) as e:  # the file: recorded, retried once its bytes change
            reason = f"{type(e).__name__}: {e}"
            store.put_failed(rec, reason)
            s.failed.append((rec.path, reason))
            continue
        except Exception as e:  # noqa: BLE001 - anything else may be ours, not the file's: listed, retried next run
            s.failed.append((rec.path, f"{type(e).__name__}: {e} (not recorded: retried on the next add)"))
            continue
        rec = rec._replace(duration=info.duration, width=info.width, height=info.height, fps=info.fps)
        store.put_file(rec, spans, thumbs, vvec, mvecs)
        s.changed += was_known
        s.new += not was_known
        s.moments += len(spans)
    store.flush()
    s.seconds = time.perf_counter() - t0
    return s


def remove_folder(store: LibraryStore, folder) -> int:
    root = str(Path(folder).expanduser().resolve())
    if root not in store.roots():
        raise LibraryError(f"{folder}: not a library folder; library folders: {store.roots() or 'none'}")
    n = store.remove_root(root)
    store.flush()
    return n


def load_embedder(cfg):
    """The configured engine, its processor bounded by the library's sampling budget."""
    from videosearch_r1.engine.embedder import Embedder

    return Embedder.from_config(cfg, None, video_cfg=video_cfg(cfg))


def format_status(st: dict) -> str:
    lines = [f"library {st['store']}: {st['files']} videos ({st['hours']} h), {st['moments']} moments "
             f"({st['indexed_vectors']} in the vector index), {len(st['failed'])} unreadable"]
    lines += [f"  folder {r}" for r in st["roots"]]
    lines += [f"  unreadable {f['path']}: {f['reason']}" for f in st["failed"][:50]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.utils import command_parser, config_from_args, parse_command

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("add", "status", "remove"):
        print("usage: vsr1 library {add DIR... | status [--json] | remove DIR}", file=sys.stderr)
        return 2
    action, rest = argv[0], argv[1:]
    p = command_parser(f"vsr1 library {action}", __doc__)
    if action in ("add", "remove"):
        p.add_argument("folders", nargs="+", metavar="DIR")
    if action == "add":
        p.add_argument("--max-files", type=int, default=None, help="embed at most N new/changed files (rerun to go on)")
    if action == "status":
        p.add_argument("--json", action="store_true", help="print the status as JSON")
    # folders are positionals before the dotted overrides: split them off by the '=' sign
    args = parse_command(p, rest)
    folders = [a for a in getattr(args, "folders", []) + args.overrides if "=" not in a]
    args.overrides = [a for a in getattr(args, "folders", []) + args.overrides if "=" in a]
    if action != "status" and not folders:
        p.error("name at least one folder")
    cfg = config_from_args(args)
    try:
        store = open_store(cfg)
    except StoreError as e:
        print(f"library: {e}", file=sys.stderr)
        return 2
    try:
        if action == "status":
            st = store.status()
            print(json.dumps(st, indent=2) if args.json else format_status(st))
            return 0
        if action == "remove":
            for f in folders:
                print(f"library remove {f}: {remove_folder(store, f)} videos dropped")
            return 0
        embedder = load_embedder(cfg)
        for f in folders:
            print(add_folder(cfg, f, store, embedder, max_files=args.max_files).format())
        return 0
    except (LibraryError, StoreError) as e:
        print(f"library: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
