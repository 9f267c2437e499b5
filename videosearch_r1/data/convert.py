"""Extract the authors' prepared-data shards and convert them into our layout (used by `vsr1 download data`).

    extract_shards([(name, [part paths], key), ...], staging, done_dir, keep=False)  # key: download.shard_key
    summary = convert_prepared(cfg, "charades", staging)      # idempotent; print(summary["text"])

The authors' prepared dataset (after extraction into `staging`) and what each part becomes:
  raw_annotation/<split>.jsonl           VERIFIED FIG rows: validated by data/fig.py (errors name file:line),
                                         copied to <root>/<annotation_dir>/<the dataset's file for split>
  <split>/video_npy_with_meta/<id>.npy   uint8 [T,H,W,3] RGB frames sampled by their extractor (1 fps, <= 64,
  + meta.jsonl                           <= 200,704 px) with the real source times in
                                         `sampled_timestamps_sec`: each clip goes into a JPEG frame store of
                                         its own (<workspace>/data/<name>/prepared/frames_authors; `vsr1
                                         build` writes ours to prepared/frames), resized to our per-frame
                                         size rule (multiples of 32) and keeping THEIR frame times (true
                                         seconds; we do not resample). A video without a meta line, or an
                                         unreadable npy, is a counted skip named in the summary.
  <split>/video_embedding_1fps/          Qwen3-VL-Embedding-2B video vectors: segment_embeds.npy rows by
    segment_embeds.npy + docid2row.json  docid2row.json -> a FAISS index in our format at
                                         index_dir(engine.model=download.engine_model)/<split>
  train/hard_negatives.json              copied beside that train index
Everything else (sft_data/, grpo_data/, query embeddings) stays under `staging` untouched.
Frames in the store therefore sit at the authors' sampling times, not at the times our decoder would
pick from the mp4 (frames_authors/converted_from.json says so); `vsr1 build` from raw videos gives ours,
in prepared/frames, which the front door (video/decode.py load_clip) reads first. A clip whose npy or meta
line changed (a new shard version) is converted again (frames_authors/sources.json keys each clip).
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from videosearch_r1.config import Config
from videosearch_r1.data.records import read_state
from videosearch_r1.utils import atomic_path, atomic_write_json, progress


def sha256_file(path: Path) -> str:
    from videosearch_r1.data.download import sha256_file as sha

    return sha(path)


class ConvertError(RuntimeError):
    """Prepared data that cannot be converted; the message names the file (and line)."""


# ----------------------------------------------------------------------------- shards
class _Chain:
    """A read-only stream over several files back to back (a shard split into parts)."""

    def __init__(self, paths: list[Path]):
        self.paths, self.i, self.f = list(paths), 0, None

    def read(self, n: int = -1) -> bytes:
        out = b""
        while self.i < len(self.paths) and (n < 0 or len(out) < n):
            if self.f is None:
                self.f = open(self.paths[self.i], "rb")
            chunk = self.f.read(-1 if n < 0 else n - len(out))
            if not chunk:
                self.f.close()
                self.f, self.i = None, self.i + 1
            out += chunk
        return out

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def extract_shards(shards: list[tuple[str, list[Path], list]], staging: Path, done_dir: Path, keep: bool) -> int:
    """Extract each (name, parts, key) shard (parts joined in order, streamed; tar members are checked by
    tarfile's "data" filter: no absolute paths, no links out of `staging`), then write done_dir/<name>.done
    holding its content key and each member's sha256. A shard extracted before from other content (its marker's key
    differs) is extracted again; files only its old version had are removed after all shards, unless another
    shard's marker lists them (a file moved between shards). Returns shards extracted."""
    done_dir.mkdir(parents=True, exist_ok=True)
    n, gone = 0, set()
    for name, parts, key in progress(shards, desc="extract", unit="shard"):
        marker = done_dir / f"{name}.done"
        old = _marker(marker)
        if old.get("key") == key:
            continue
        missing = [p for p in parts if not p.is_file()]
        if missing:
            raise ConvertError(f"shard {name}: part {missing[0]} is missing (rerun the download)")
        stream = _Chain(parts)
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                members = {}  # path in staging -> sha256 of the extracted file (what conversion keys on)
                for m in tar:
                    where = tarfile.data_filter(m, str(staging)).name  # FilterError (a TarError) when unsafe
                    tar.extract(m, staging, filter="data")
                    if m.isfile():
                        members[where] = sha256_file(staging / where)
        except (tarfile.TarError, OSError) as e:
            raise ConvertError(f"shard {name} ({', '.join(map(str, parts))}): cannot extract: {e}") from None
        finally:
            stream.close()
        gone |= set(old.get("members") or []) - set(members)  # only in the old version of this shard
        atomic_write_json(marker, {"name": name, "key": key, "members": members})
        if not keep:
            for p in parts:
                p.unlink()
        n += 1
    listed = {m for p in done_dir.glob("*.done") for m in (_marker(p).get("members") or [])}
    for path in sorted(gone - listed):  # after every shard: a file that moved to another shard is kept
        if not path.startswith("/") and ".." not in path.split("/"):
            (staging / path).unlink(missing_ok=True)
    return n


def _marker(path: Path) -> dict:
    got = read_state(path, {})  # an older marker ("done") is not JSON: no key, no members
    return got if isinstance(got, dict) else {}


def member_digests(staging: Path) -> dict[str, str]:
    """staging-relative path -> sha256 of every file the shards' markers list (extracted by this version)."""
    out = {}
    for marker in sorted((staging / ".vsr1_shards").glob("*.done")):
        members = _marker(marker).get("members")
        if isinstance(members, dict):
            out.update(members)
    return out


# ----------------------------------------------------------------------------- parts
def _annotations(cfg: Config, name: str, staging: Path, notes: list[str]) -> dict:
    from videosearch_r1.data.fig import load_fig_jsonl

    dcfg = cfg.dataset_cfg(name)
    out = {}
    for split, fname in dcfg.splits.items():
        src = staging / "raw_annotation" / f"{split}.jsonl"
        if not src.is_file():
            notes.append(f"annotations: {src.relative_to(staging)} not in the prepared data ({split} skipped)")
            continue
        _, summary = load_fig_jsonl(src)  # FIGFormatError names file:line:field
        dest = cfg.dataset_root(name) / dcfg.annotation_dir / fname
        if dest.is_file() and sha256_file(dest) != sha256_file(src):
            raise ConvertError(f"{dest} exists and differs from the prepared {src}; move it away (or set "
                               f"datasets.{name}.root) to use the prepared annotations")
        if not dest.is_file():
            with atomic_path(dest) as tmp:
                tmp.write_bytes(src.read_bytes())
        out[split] = summary.loaded
    return out


def _read_meta(path: Path) -> dict[str, dict]:
    metas = {}
    if not path.is_file():
        return metas
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            metas[str(row["video_id"])] = row  # the last line of an id wins (their extractor appends)
        except (ValueError, KeyError, TypeError) as e:
            raise ConvertError(f"{path}:{lineno}: bad meta line: {type(e).__name__}: {e}") from None
    return metas


def npy_to_clip(npy: Path, meta: dict, vcfg):
    """One of the authors' npy clips -> our Clip at our frame size, keeping their real frame times."""
    from PIL import Image

    from videosearch_r1.video.decode import Clip, VideoInfo, frame_size

    try:
        arr = np.load(npy, allow_pickle=False)
    except (OSError, EOFError) as e:  # truncated / unreadable: ValueError, a counted skip for the caller
        raise ValueError(f"unreadable npy: {type(e).__name__}: {e}") from None
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"expected uint8 [T,H,W,3] frames, got {arr.dtype} {arr.shape}")
    ts = np.asarray(meta.get("sampled_timestamps_sec", []), np.float64)
    idx = np.asarray(meta.get("sampled_indices_src", range(len(ts))), np.int64)
    if len(ts) != len(arr) or len(idx) != len(arr) or not np.all(np.isfinite(ts)):
        raise ValueError(f"{len(arr)} frames but {len(ts)} timestamps / {len(idx)} indices in meta.jsonl")
    keep = np.arange(len(arr))
    if len(arr) > vcfg.max_frames:  # spread over the whole clip, as our sampler does
        keep = np.unique(np.round(np.linspace(0, len(arr) - 1, vcfg.max_frames)).astype(np.int64))
    while len(keep) < vcfg.min_frames:
        keep = np.append(keep, keep[-1])
    h, w = int(arr.shape[1]), int(arr.shape[2])
    size = frame_size(h, w, vcfg.min_pixels, vcfg.max_pixels)
    frames = np.stack([np.asarray(Image.fromarray(arr[i]).resize((size[1], size[0]), Image.BICUBIC))
                       if (h, w) != size else arr[i] for i in keep])
    info = VideoInfo(path=str(meta.get("source_video_path") or npy), duration=float(meta["source_duration_sec"]),
                     fps=float(meta.get("raw_fps") or 0.0), num_frames=int(meta.get("source_total_frames") or 0),
                     width=w, height=h)
    return Clip(frames=frames, timestamps=ts[keep], indices=idx[keep], info=info)


def _npy_key(npy: Path, meta: dict | None, digest: str | None) -> list:
    """What a converted clip was made from: the npy's sha256 recorded at extraction (member_digests; else
    its size and mtime) and its meta line."""
    st = npy.stat()
    line = json.dumps(meta, sort_keys=True, default=str).encode()
    return [digest or [st.st_size, st.st_mtime_ns], hashlib.sha256(line).hexdigest()[:16]]


def _frames(cfg: Config, name: str, staging: Path, skipped: list, notes: list[str]) -> dict:
    from videosearch_r1.video.decode import AUTHORS
    from videosearch_r1.video.framestore import CONVERTED, FrameStore, separate_converted

    vcfg = cfg.video_cfg(name)
    dirs = sorted(p for p in staging.glob("*/video_npy_with_meta") if p.is_dir())
    if not dirs:
        return {}
    moved = separate_converted(cfg.prepared_dir(name))  # an older workspace's converted store, moved apart
    root = cfg.prepared_dir(name) / AUTHORS  # never prepared/frames: that one is `vsr1 build`'s, from the mp4s
    store = FrameStore(root, video_cfg=vcfg)
    atomic_write_json(root / CONVERTED, {
        "source": "the authors' prepared npy frames", "staging": str(staging),
        "note": "frames at the authors' sampling times (true seconds), resized to our frame size rule"})
    jobs = []
    for d in dirs:
        metas = _read_meta(d / "meta.jsonl")
        for npy in sorted(d.glob("*.npy")):
            jobs.append((npy, metas.get(npy.stem)))
    sources_path = root / "sources.json"  # id -> _npy_key: an npy changed by a new shard is converted again
    sources = read_state(sources_path, None) or {}
    digests = member_digests(staging)
    counts = {"stored": 0, "kept": 0}

    def one(job):
        npy, meta = job
        key = _npy_key(npy, meta, digests.get(npy.relative_to(staging).as_posix()))
        redo = npy.stem in store and sources.get(npy.stem, key) != key
        if npy.stem in store and not redo:
            return npy.stem, key, "kept"
        why = f"{npy}: no line for it in {npy.parent / 'meta.jsonl'}" if meta is None else None
        if why is None:
            try:  # a bad npy or meta line is a counted skip, named (a full disk still stops the run)
                store.put(npy.stem, npy_to_clip(npy, meta, vcfg), overwrite=redo)  # ValueError: not what the
            except (ValueError, KeyError, TypeError) as e:                      # store's video config yields
                why = f"{npy}: {type(e).__name__}: {e}"
        if why is not None:
            if redo:  # the new version is skipped: the old clip must not be served in its place
                store.remove(npy.stem)
            skipped.append((npy.stem, why))
            return npy.stem, None, None
        return npy.stem, key, "stored"

    with ThreadPoolExecutor(max(1, cfg.download.workers)) as pool:
        for vid, key, r in progress(pool.map(one, jobs), total=len(jobs), desc=f"frames {name}", unit="video"):
            if r:
                counts[r] += 1
                sources[vid] = key
    atomic_write_json(sources_path, dict(sorted(sources.items())))
    if moved:
        notes.append(moved)
    return counts


def _embeddings(cfg: Config, name: str, staging: Path, notes: list[str]) -> dict:
    from videosearch_r1.engine.search import SearchEngine

    ecfg = replace(cfg, engine=replace(cfg.engine, model=cfg.download.engine_model))
    out = {}
    for vdir in sorted(staging.glob("*/video_embedding_1fps")):
        split = vdir.parent.name
        npy, rows_path = vdir / "segment_embeds.npy", vdir / "docid2row.json"
        if not (npy.is_file() and rows_path.is_file()):
            notes.append(f"embeddings: {vdir.relative_to(staging)} lacks segment_embeds.npy or docid2row.json")
            continue
        dest = ecfg.index_dir(name) / split
        # the index is a function of the vectors, their row order and the index factory: all three in its key
        digest = sha256_file(npy) + ":" + sha256_file(rows_path)[:16] + ":" + cfg.index.factory
        if (read_state(dest / "meta.json", None) or {}).get("source_sha256") == digest:
            out[split] = "kept"
            continue
        if (dest / "shards" / "manifest.json").is_file():  # `vsr1 index` built this engine's index here
            notes.append(f"embeddings {split}: replaced the index embedded from the videos in {dest} "
                         "(`vsr1 index` makes it again from its shards)")
        vecs, ids, rows = _read_embeddings(npy, rows_path)
        vecs = vecs[rows]
        if not np.all(np.isfinite(vecs)):
            raise ConvertError(f"{npy}: non-finite values")
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        if np.any(np.abs(norms - 1) > 1e-3):
            notes.append(f"embeddings {split}: vectors were not unit length; normalised")
            vecs = vecs / np.maximum(norms, 1e-12)
        engine = SearchEngine.build(vecs, ids, factory=cfg.index.factory)
        engine.save(dest, extra_meta={"dataset": name, "split": split, "engine_model": cfg.download.engine_model,
                                      "source": "authors' prepared data", "source_sha256": digest})
        hn = staging / split / "hard_negatives.json"
        if hn.is_file():
            with atomic_path(dest / "hard_negatives.json") as tmp:
                tmp.write_bytes(hn.read_bytes())
        out[split] = len(ids)
    return out


def _read_embeddings(npy: Path, rows_path: Path) -> tuple[np.ndarray, list[str], list[int]]:
    """segment_embeds.npy [N, D] float and docid2row.json {id: row} -> (vectors, ids by row, rows); every
    way these files can be wrong is a ConvertError naming the file."""
    try:
        vecs = np.load(npy, allow_pickle=False)
    except (OSError, EOFError, ValueError) as e:
        raise ConvertError(f"{npy}: unreadable npy: {type(e).__name__}: {e}") from None
    if vecs.ndim != 2 or vecs.shape[0] < 1 or not np.issubdtype(vecs.dtype, np.floating):
        raise ConvertError(f"{npy}: expected float vectors [N, D], got {vecs.dtype} {vecs.shape}")
    try:
        docid2row = json.loads(rows_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConvertError(f"{rows_path}: not JSON: {e}") from None
    if (not isinstance(docid2row, dict) or not docid2row
            or not all(isinstance(r, int) and not isinstance(r, bool) for r in docid2row.values())):
        raise ConvertError(f"{rows_path}: expected a non-empty object mapping video ids to integer rows")
    ids = sorted(docid2row, key=lambda k: docid2row[k])
    rows = [docid2row[k] for k in ids]
    if min(rows) < 0 or max(rows) >= len(vecs):
        raise ConvertError(f"{rows_path}: rows {min(rows)}..{max(rows)} do not fit {npy} of shape {vecs.shape}")
    return vecs.astype(np.float32), ids, rows


def convert_prepared(cfg: Config, name: str, staging: Path) -> dict:
    """Convert every part present in `staging` (module doc); safe to rerun. Returns a summary dict."""
    notes: list[str] = []
    skipped: list[tuple[str, str]] = []
    summary = {"dataset": name, "staging": str(staging),
               "annotations": _annotations(cfg, name, staging, notes),
               "frames": _frames(cfg, name, staging, skipped, notes),
               "indexes": _embeddings(cfg, name, staging, notes),
               "skipped_videos": skipped, "notes": notes}
    lines = [f"prepared {name}: annotations {summary['annotations']}, frames {summary['frames']}, "
             f"indexes {summary['indexes']} (engine {cfg.download.engine_model}), {len(skipped)} videos skipped"]
    lines += [f"  skipped {v}: {why}" for v, why in skipped[:20]] + [f"  note: {n}" for n in notes]
    summary["text"] = "\n".join(lines)
    atomic_write_json(cfg.prepared_dir(name) / "download.json", {k: v for k, v in summary.items() if k != "text"})
    return summary
