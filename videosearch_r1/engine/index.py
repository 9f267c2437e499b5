"""`vsr1 index`: embed a split's video corpus and build its search index (resumable, atomic).

    vsr1 index synth [--split test] [--config F] [--max-shards N] [index.factory=HNSW32 ...]

1. load the split (data.fig.load_split) and its corpus (sorted video ids)
2. embed the videos shard by shard (index.shard_size videos each; video.load_clip -> Embedder.embed_videos
   in batches of engine.batch_size). Each finished shard is written atomically to <out>/shards/, so a
   killed run resumes at the first missing shard and ends with identical files. A missing or corrupt
   video is a counted, reported skip; a corpus where no video decodes is an error (EmptyIndexError, no
   index written).
3. build the FAISS index (index.factory) and write <out>/index.faiss, embeddings.npy, ids.json, meta.json
4. for a train split: hard negatives per query (top index.hard_negatives videos by the query vector,
   GT excluded) -> <out>/hard_negatives.json
where <out> = cfg.index_dir(DATASET)/<split>. `--max-shards N` stops after N new shards (rerun to go on).
Content-keyed reuse: <out>/shards/manifest.json holds the engine's fingerprint (Embedder.fingerprint: weight
files' content, instruction, dim), the video sampling and the corpus ids; any difference (an engine
retrained in place included) drops the shards and the old index and re-embeds, naming what changed. Each
shard records its videos' (size, mtime) and is re-embedded when a file changed (e.g. a repaired video).
<out> is named after the engine folder, not its content: a different engine of the same folder name
rebuilds it here, and SearchEngine.load refuses to pair an index with an engine that did not build it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from videosearch_r1.engine.search import SearchEngine


class EmptyIndexError(ValueError):
    """No video of the corpus could be embedded: an index would hold nothing."""


@dataclass
class IndexSummary:
    dataset: str
    split: str
    out_dir: str
    corpus: int = 0  # videos named by the split
    embedded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (video id, reason)
    shards_done: int = 0
    shards_total: int = 0
    hard_negative_queries: int = 0
    complete: bool = False

    def format(self) -> str:
        head = (f"index {self.dataset}/{self.split}: {self.embedded} of {self.corpus} videos embedded, "
                f"{len(self.skipped)} skipped; shards {self.shards_done}/{self.shards_total}"
                + ("" if self.complete else " (INCOMPLETE: rerun to resume)") + f" -> {self.out_dir}")
        lines = [head] + [f"  skipped {vid}: {why}" for vid, why in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ... {len(self.skipped) - 20} more")
        if self.hard_negative_queries:
            lines.append(f"  hard negatives for {self.hard_negative_queries} queries")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- shards
def _manifest(cfg, dataset: str, corpus: list[str], embedder) -> dict:
    """What decides the stored vectors: the engine's fingerprint (weights content, instruction, dim), the
    video sampling and the corpus. The engine's path is not part of it (a moved engine is the same engine;
    a retrained one at the same path is not)."""
    from videosearch_r1.video.decode import fingerprint

    vcfg = cfg.video_cfg(dataset)
    return {"engine_fingerprint": embedder.fingerprint(), "instruction": cfg.engine.instruction,
            "engine_dim": int(embedder.dim), "batch_size": cfg.engine.batch_size,
            "video_config": dataclasses.asdict(vcfg), "video_fingerprint": fingerprint(vcfg),
            "shard_size": cfg.index.shard_size, "corpus_size": len(corpus),
            "corpus_sha1": hashlib.sha1("\n".join(corpus).encode()).hexdigest()}


FINAL_FILES = ("embeddings.npy", "ids.json", "meta.json", "index.faiss", "hard_negatives.json")


def _clear_final(out: Path) -> None:
    """Remove a previous build's index files (they no longer describe the shards)."""
    for name in FINAL_FILES:
        (out / name).unlink(missing_ok=True)


def _converted_from(out: Path) -> str | None:
    """The source of an index converted from prepared data (data/convert.py) in `out`, else None."""
    from videosearch_r1.data.records import read_state

    meta = read_state(out / "meta.json")
    return meta.get("source") if isinstance(meta, dict) and meta.get("source_sha256") else None


def _prepare_shard_dir(shard_dir: Path, manifest: dict) -> None:
    """Keep finished shards only if they were made by the same engine, video config and corpus; otherwise
    drop them and the index built from them."""
    from videosearch_r1.fingerprint import changed
    from videosearch_r1.utils import atomic_write_json

    path = shard_dir / "manifest.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old == manifest:
            return
        print(f"index: existing shards in {shard_dir} were made with other settings "
              f"({', '.join(changed(old, manifest))}); re-embedding", file=sys.stderr)
        shutil.rmtree(shard_dir)
    elif shard_dir.is_dir():
        shutil.rmtree(shard_dir)  # shards without a manifest: nothing says what made them
    _clear_final(shard_dir.parent)
    shard_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, manifest)


def _shard_paths(shard_dir: Path, s: int) -> tuple[Path, Path]:
    return shard_dir / f"shard_{s:05d}.npy", shard_dir / f"shard_{s:05d}.json"


def _files_key(cfg, dataset: str, vids: list[str]) -> str:
    """Digest of (size, mtime_ns) of a shard's video files (None where missing): a video replaced or
    repaired since its shard was embedded changes it, so that shard is embedded again."""
    from videosearch_r1.fingerprint import digest

    dcfg = cfg.dataset_cfg(dataset)
    vdir = cfg.dataset_root(dataset) / dcfg.video_dir
    stats = []
    for v in vids:
        try:
            st = (vdir / f"{v}{dcfg.video_ext}").stat()
            stats.append([v, st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append([v, None, None])
    return digest(stats)


def _shard_done(meta_path: Path, files_key: str) -> bool:
    if not meta_path.is_file():
        return False
    if json.loads(meta_path.read_text()).get("files") == files_key:
        return True
    print(f"index: {meta_path.name}: video files changed since it was embedded; re-embedding", file=sys.stderr)
    return False


def load_clip_or_reason(cfg, dataset: str, vid: str):
    from videosearch_r1.video.decode import VideoError, load_clip

    try:
        return load_clip(cfg, dataset, vid), None
    except (VideoError, OSError) as e:
        return None, f"{type(e).__name__}: {e}"


def _embed_shard(cfg, dataset: str, vids: list[str], embedder, pool, bar) -> tuple[np.ndarray, list, list]:
    """Embed one shard's videos in batches, decoding the next batch while this one is embedded."""
    bs = max(1, cfg.engine.batch_size)
    batches = [vids[i:i + bs] for i in range(0, len(vids), bs)]
    submit = lambda b: [pool.submit(load_clip_or_reason, cfg, dataset, v) for v in b]  # noqa: E731
    pending = submit(batches[0]) if batches else []
    kept, vecs, skipped = [], [], []
    for bi, batch in enumerate(batches):
        loaded = [f.result() for f in pending]
        pending = submit(batches[bi + 1]) if bi + 1 < len(batches) else []
        clips = []
        for vid, (clip, reason) in zip(batch, loaded):
            if clip is None:
                skipped.append([vid, reason])
            else:
                kept.append(vid)
                clips.append(clip)
        if clips:
            vecs.append(embedder.embed_videos(clips).detach().float().cpu().numpy())
        bar.update(len(batch))
    dim = int(embedder.dim)
    out = np.concatenate(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    return out, kept, skipped


def embed_corpus(cfg, dataset: str, corpus: list[str], embedder, shard_dir: Path, summary: IndexSummary,
                 max_new_shards: int | None = None) -> tuple[np.ndarray, list[str]] | None:
    """Embed every missing shard; return (vectors [N, D], ids) when all shards exist, else None."""
    from videosearch_r1.utils import atomic_path, atomic_write_json, decode_workers, progress

    size = max(1, cfg.index.shard_size)
    n_shards = (len(corpus) + size - 1) // size
    summary.shards_total = n_shards
    keys = [_files_key(cfg, dataset, corpus[s * size:(s + 1) * size]) for s in range(n_shards)]
    todo = [s for s in range(n_shards) if not _shard_done(_shard_paths(shard_dir, s)[1], keys[s])]
    for s in todo:
        _shard_paths(shard_dir, s)[1].unlink(missing_ok=True)
    if todo:
        _clear_final(shard_dir.parent)  # an index from before no longer matches the shards
    todo_set = set(todo)
    done_videos = sum(min(size, len(corpus) - s * size) for s in range(n_shards) if s not in todo_set)
    new = 0
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        bar = progress(total=len(corpus), desc=f"embed {dataset}", unit="video")
        bar.update(done_videos)
        for s in todo:
            if max_new_shards is not None and new >= max_new_shards:
                break
            vecs, kept, skipped = _embed_shard(cfg, dataset, corpus[s * size:(s + 1) * size], embedder, pool, bar)
            npy, meta = _shard_paths(shard_dir, s)
            with atomic_path(npy) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, vecs)
            atomic_write_json(meta, {"ids": kept, "skipped": skipped, "files": keys[s]})  # last: marks it done
            new += 1
        bar.close()
    vecs, ids = [], []
    for s in range(n_shards):
        npy, meta = _shard_paths(shard_dir, s)
        if not meta.is_file():
            continue
        m = json.loads(meta.read_text())
        summary.shards_done += 1
        summary.skipped += [tuple(x) for x in m["skipped"]]
        ids += m["ids"]
        vecs.append(np.load(npy))
    summary.embedded = len(ids)
    if summary.shards_done < n_shards:
        return None
    dim = int(embedder.dim)
    return (np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)), ids


# ----------------------------------------------------------------------------- hard negatives
def hard_negatives(engine: SearchEngine, queries, texts: list[str], k: int, batch_size: int) -> dict:
    """{qid: top-k video ids by the query vector, GT excluded}, in query order."""
    from videosearch_r1.utils import progress

    out = {}
    bar = progress(total=len(queries), desc="hard negatives", unit="query")
    for i in range(0, len(queries), batch_size):
        qs, tx = queries[i:i + batch_size], texts[i:i + batch_size]
        vecs = engine.embed_queries(tx)
        exclude = [{q.video_id} if q.video_id in engine.row else set() for q in qs]
        res = engine.search(vecs, k=k, exclude=exclude)
        out.update({q.qid: ids for q, ids in zip(qs, res.ids)})
        bar.update(len(qs))
    bar.close()
    return out


# ----------------------------------------------------------------------------- the command
def load_embedder(cfg, dataset: str):
    """The engine's Embedder (engine section; the dataset's video budget sets the processor bounds)."""
    from videosearch_r1.engine.embedder import Embedder

    return Embedder.from_config(cfg, dataset)


def build_index(cfg, dataset: str, split: str, embedder=None, max_new_shards: int | None = None) -> IndexSummary:
    """Steps 1-4 of the module doc; returns the summary (complete=False when stopped by max_new_shards)."""
    from videosearch_r1.data.fig import load_split
    from videosearch_r1.utils import atomic_write_json

    sp = load_split(cfg, dataset, split)
    corpus = sp.corpus_ids()
    out = cfg.index_dir(dataset) / split
    converted = _converted_from(out)
    if converted:  # the converter (data/convert.py) wrote this engine's index here: it is being replaced
        print(f"index: the index in {out} was converted from {converted}; replacing it with one embedded from "
              "the videos", file=sys.stderr)
    summary = IndexSummary(dataset=dataset, split=split, out_dir=str(out), corpus=len(corpus))
    embedder = embedder if embedder is not None else load_embedder(cfg, dataset)
    manifest = _manifest(cfg, dataset, corpus, embedder)
    _prepare_shard_dir(out / "shards", manifest)
    got = embed_corpus(cfg, dataset, corpus, embedder, out / "shards", summary, max_new_shards)
    if got is None:
        return summary
    vectors, ids = got
    if not ids:
        first = "; ".join(f"{v}: {why}" for v, why in summary.skipped[:3])
        raise EmptyIndexError(f"index {dataset}/{split}: none of the {len(corpus)} videos of the corpus could be "
                              f"decoded ({len(summary.skipped)} skipped, e.g. {first}); no index written. "
                              f"Check datasets.{dataset}.root and the videos")
    ix = cfg.index
    engine = SearchEngine.build(vectors, ids, factory=ix.factory, embedder=embedder, nprobe=ix.nprobe,
                                ef_search=ix.ef_search)
    meta = {"dataset": dataset, "split": split, "engine_model": cfg.engine_model(),
            **{k: v for k, v in manifest.items() if k != "batch_size"},
            "embedded": len(ids), "skipped": [{"id": v, "reason": r} for v, r in summary.skipped]}
    engine.save(out, extra_meta=meta)
    if split == "train" and ix.hard_negatives > 0 and ids:
        field_name = cfg.dataset_cfg(dataset).query_field
        texts = [getattr(q, field_name) for q in sp.queries]
        negs = hard_negatives(engine, sp.queries, texts, ix.hard_negatives, max(1, cfg.engine.batch_size))
        atomic_write_json(out / "hard_negatives.json", negs)
        summary.hard_negative_queries = len(negs)
    summary.complete = True
    return summary


def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.utils import command_parser, config_from_args, parse_command

    parser = command_parser("vsr1 index", __doc__)
    parser.add_argument("dataset", help="dataset name (an entry under `datasets` in the config)")
    parser.add_argument("--split", default=None, help="which split's corpus to index (default: config split)")
    parser.add_argument("--max-shards", type=int, default=None, help="stop after N newly embedded shards")
    args = parse_command(parser, argv)
    cfg = config_from_args(args, [f"dataset={args.dataset}"])
    split = args.split or cfg.split
    try:
        summary = build_index(cfg, args.dataset, split, max_new_shards=args.max_shards)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"vsr1 index: {e}", file=sys.stderr)
        if not Path(cfg.engine_model()).exists():
            print(f"(no engine at {cfg.engine_model()}: train one with `vsr1 engine train` or set engine.model)",
                  file=sys.stderr)
        return 2
    print(summary.format(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
