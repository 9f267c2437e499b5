"""`vsr1 build DATASET`: the from-scratch pipeline, step by step, each step skipped when already done.

    vsr1 build charades                                   # every step, skipping the finished ones
    vsr1 build charades --from-step index                 # redo index and everything after it (or a number)
    vsr1 build didemo --anno-root /data/fig --video-root /data/didemo/videos build.workers=8
    vsr1 build sft charades ...                           # one pluggable step's own command (its main)

Steps, in order (outputs under <workspace>/data/<name>/prepared unless said otherwise):
  1 splits   load and validate every split's FIG file (errors name file:line:field) -> splits/<split>.json
             (query count, corpus video ids, load summary)
  2 frames   decode every corpus video once into the JPEG frame store frames/ (video/framestore.py),
             build.workers processes in parallel; a missing or corrupt video is a counted skip, named
             (the authors' frames from `vsr1 download` live apart, in frames_authors/, and are never reused)
  3 index    per split: video embeddings in resumable shards + the FAISS index (`vsr1 index`, with
             hard negatives off) -> cfg.index_dir(name)/<split>
  4 hardneg  train split: top index.hard_negatives videos per query, GT excluded -> <index>/train/hard_negatives.json
  5 sft      pluggable: build.sft_module's main([DATASET, --config resolved.yaml]) (SFT rows)
  6 grpo     pluggable: build.grpo_module's main(...) (GRPO rows; empty by default: `vsr1 train grpo`
             rolls out on the train split and its index live, so there is nothing to build)
A pluggable step whose module is not installed is reported "not available" and the build goes on.

Skipping: each finished step writes build/<step>.json: the fingerprint of its inputs (the config it
reads, the sha256 of the annotation files, size + mtime of each raw video, the engine's weight files,
and the recorded outputs of the steps before it) and the size, mtime and sha256 of every output file. A
step is skipped when that fingerprint still matches and every output is still there, unchanged (same
size, and same mtime or else same sha256; build.verify=size checks sizes only). Anything else reruns the step, which resumes its own work:
the frame store keeps stored clips, the index keeps finished shards. So a killed build, run again,
ends with the same files as an uninterrupted one (tests/test_build.py). `--from-step S` forces S and
every later step to rerun (their resumable parts are still reused when valid). One build per dataset
runs at a time (build/.lock holds its pid; a killed build's lock is taken over).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from videosearch_r1.config import Config, to_dict
from videosearch_r1.data.records import read_state

STEP_VERSION = 1  # bump when a step's outputs change for the same inputs
_TMP = re.compile(r"^\..+\.tmp\d+$")  # utils.atomic_path's temp files, left behind by a kill


@dataclass
class Step:
    name: str
    run: Callable[["Ctx"], dict]  # -> {"outputs": [Path], "summary": {...}}
    config_keys: tuple[str, ...]  # dotted config sections its outputs depend on
    plugin: str = ""  # config field naming a pluggable module ("" for built-in steps)


@dataclass
class Ctx:
    cfg: Config
    dataset: str
    splits: list[str]
    config_path: Path  # the resolved config, for pluggable steps

    @property
    def prepared(self) -> Path:
        return self.cfg.prepared_dir(self.dataset)


class BuildError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- fingerprints
def sha256_file(path: Path) -> str:
    from videosearch_r1.data.download import sha256_file as sha

    return sha(path)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _pick(cfg: Config, dotted: str):
    node = to_dict(cfg)
    for part in dotted.format(dataset=cfg.dataset).split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _weights(model: str) -> dict:
    """The content digest of a local model directory (fingerprint.dir_digest); a hub id stands for itself."""
    from videosearch_r1.fingerprint import dir_digest

    d = Path(model).expanduser()
    return {"dir_digest": dir_digest(d)} if d.is_dir() else {"id": model}


def _sweep_tmp(root: Path) -> None:
    """Remove temp files a killed writer left (they never count as outputs)."""
    if root.is_dir():
        for p in root.rglob(".*.tmp*"):
            if _TMP.match(p.name) and p.is_file():
                p.unlink()


# ----------------------------------------------------------------------------- steps
def _step_splits(ctx: Ctx) -> dict:
    from videosearch_r1.data.fig import load_split
    from videosearch_r1.utils import atomic_write_json

    outputs, summary = [], {}
    for split in ctx.splits:
        sp = load_split(ctx.cfg, ctx.dataset, split)
        s = sp.summary
        out = ctx.prepared / "splits" / f"{split}.json"
        atomic_write_json(out, {"dataset": ctx.dataset, "split": split, "annotation_file": s.file,
                                "queries": len(sp.queries), "videos": sp.corpus_ids(),
                                "load_summary": {"rows": s.rows, "loaded": s.loaded, "clamped_end": s.clamped_end,
                                                 "skipped_past_end": s.skipped_past_end, "messages": s.messages}})
        outputs.append(out)
        summary[split] = {"queries": len(sp.queries), "videos": len(sp.videos)}
        print(f"  {s.format(max_messages=5)}", flush=True)
    return {"outputs": outputs, "summary": summary}


def corpus(ctx: Ctx) -> list[str]:
    ids: set[str] = set()
    for split in ctx.splits:
        ids.update(json.loads((ctx.prepared / "splits" / f"{split}.json").read_text())["videos"])
    return sorted(ids)


_WORKER: dict = {}


def _init_worker(cfg: Config, dataset: str) -> None:
    from videosearch_r1.video.decode import OURS
    from videosearch_r1.video.framestore import FrameStore

    _WORKER.update(cfg=cfg, dataset=dataset,
                   store=FrameStore(cfg.prepared_dir(dataset) / OURS, video_cfg=cfg.video_cfg(dataset)))


def _raw_path(cfg: Config, dataset: str, vid: str) -> Path:
    dcfg = cfg.dataset_cfg(dataset)
    return cfg.dataset_root(dataset) / dcfg.video_dir / f"{vid}{dcfg.video_ext}"


def _source_stat(path: Path) -> list[int] | None:
    """(size, mtime_ns) of a raw video, None when it is missing: what a stored clip was decoded from."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _store_one(item: tuple[str, bool]) -> tuple[str, str | None]:
    """Decode one raw video into the store (a worker process); (id, reason it was skipped or None).
    item = (id, redo): redo replaces a stored clip whose raw video changed since it was decoded."""
    from videosearch_r1.video.decode import VideoError, decode

    vid, redo = item
    cfg, dataset, store = _WORKER["cfg"], _WORKER["dataset"], _WORKER["store"]
    path = _raw_path(cfg, dataset, vid)
    if vid in store and not redo:
        return vid, None
    try:
        store.put(vid, decode(path, cfg.video_cfg(dataset)), overwrite=redo)
    except (VideoError, OSError, ValueError) as e:
        return vid, f"{type(e).__name__}: {e}"
    return vid, None


SOURCES = "sources.json"  # in the frame store: the raw video each clip was decoded from (size, mtime_ns)


def _step_frames(ctx: Ctx) -> dict:
    import multiprocessing as mp

    from videosearch_r1.utils import atomic_write_json, progress
    from videosearch_r1.video.decode import OURS, VideoError
    from videosearch_r1.video.framestore import SUFFIX, FrameStore, separate_converted

    root = ctx.prepared / OURS
    try:
        moved = separate_converted(ctx.prepared)  # the authors' converted frames are never taken for ours
        _sweep_tmp(root)
        store = FrameStore(root, video_cfg=ctx.cfg.video_cfg(ctx.dataset))  # another video config: refused
    except VideoError as e:
        raise BuildError(str(e)) from None
    if moved:
        print(f"  {moved}", flush=True)
    ids = corpus(ctx)
    # each stored clip's raw video (size, mtime): a raw video replaced since is decoded again, not kept
    sources_path = root / SOURCES
    sources = read_state(sources_path, None) or {}  # damaged: every stored clip is adopted again
    now = {v: _source_stat(_raw_path(ctx.cfg, ctx.dataset, v)) for v in ids}
    changed = {v for v in ids if v in store and v in sources and sources[v] != now[v] and now[v] is not None}
    for v in ids:  # clips stored before this record existed: adopt the raw video as it is now
        if v in store and v not in sources:
            sources[v] = now[v]
    todo = [v for v in ids if v not in store or v in changed]
    skipped: dict[str, str] = {}
    workers = ctx.cfg.build.workers or os.cpu_count() or 1
    print(f"  frame store {root}: {len(ids) - len(todo)} of {len(ids)} videos already stored, {len(todo)} to "
          f"decode on {workers} processes" + (f" ({len(changed)} whose raw video changed)" if changed else ""),
          flush=True)
    bar = progress(total=len(ids), desc=f"frames {ctx.dataset}", unit="video")
    bar.update(len(ids) - len(todo))
    if todo and workers == 1:  # in this process
        _init_worker(ctx.cfg, ctx.dataset)
        results = map(_store_one, [(v, v in changed) for v in todo])
    elif todo:
        pool = mp.get_context("spawn").Pool(min(workers, len(todo)), _init_worker, (ctx.cfg, ctx.dataset))
        results = pool.imap(_store_one, [(v, v in changed) for v in todo])
    for vid, why in results if todo else ():
        if why:
            skipped[vid] = why
        else:
            sources[vid] = now[vid]
        bar.update(1)
    if todo and workers > 1:
        pool.close()
        pool.join()
    bar.close()
    atomic_write_json(sources_path, dict(sorted(sources.items())))
    for vid, why in sorted(skipped.items()):
        print(f"  skipped {vid}: {why}", flush=True)
    outputs = [root / "store.json"] + [root / f"{v}{SUFFIX}" for v in ids if v not in skipped]
    return {"outputs": outputs, "summary": {"videos": len(ids), "stored": len(ids) - len(skipped),
                                            "skipped": dict(sorted(skipped.items()))}}


def _index_cfg(cfg: Config) -> Config:
    return replace(cfg, index=replace(cfg.index, hard_negatives=0))


def _index_files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.name != "hard_negatives.json")


def _step_index(ctx: Ctx) -> dict:
    from videosearch_r1.engine.index import build_index, load_embedder

    cfg = _index_cfg(ctx.cfg)
    embedder = load_embedder(cfg, ctx.dataset)
    outputs, summary = [], {}
    for split in ctx.splits:
        d = cfg.index_dir(ctx.dataset) / split
        _sweep_tmp(d)
        s = build_index(cfg, ctx.dataset, split, embedder=embedder)
        print("  " + s.format().replace("\n", "\n  "), flush=True)
        if not s.complete or s.embedded == 0:
            raise BuildError(f"index {ctx.dataset}/{split}: {s.embedded} of {s.corpus} videos embedded; "
                             f"nothing to index (see the skipped videos above)")
        outputs += _index_files(d)
        summary[split] = {"embedded": s.embedded, "corpus": s.corpus, "skipped": [list(x) for x in s.skipped]}
    return {"outputs": outputs, "summary": summary}


def _step_hardneg(ctx: Ctx) -> dict:
    from videosearch_r1.data.fig import load_split
    from videosearch_r1.engine.index import hard_negatives, load_embedder
    from videosearch_r1.engine.search import SearchEngine
    from videosearch_r1.utils import atomic_write_json

    cfg = ctx.cfg
    if "train" not in ctx.splits or cfg.index.hard_negatives <= 0:
        return {"outputs": [], "summary": {"note": "no train split or index.hard_negatives=0: nothing to do"}}
    d = cfg.index_dir(ctx.dataset) / "train"
    engine = SearchEngine.load(d, embedder=load_embedder(cfg, ctx.dataset))
    sp = load_split(cfg, ctx.dataset, "train")
    field_name = cfg.dataset_cfg(ctx.dataset).query_field
    negs = hard_negatives(engine, sp.queries, [getattr(q, field_name) for q in sp.queries],
                          cfg.index.hard_negatives, max(1, cfg.engine.batch_size))
    atomic_write_json(d / "hard_negatives.json", negs)
    return {"outputs": [d / "hard_negatives.json"], "summary": {"queries": len(negs)}}


def _plugin_runner(field_name: str, default_output: Callable[[Ctx], Path]) -> Callable[[Ctx], dict]:
    def run(ctx: Ctx) -> dict:
        if not getattr(ctx.cfg.build, field_name):
            return {"not_available": "", "why": f"build.{field_name} is empty: no data step needed"}
        module = load_plugin(getattr(ctx.cfg.build, field_name))
        if module is None:
            return {"not_available": getattr(ctx.cfg.build, field_name)}
        rc = int(module.main([ctx.dataset, "--config", str(ctx.config_path)]) or 0)
        if rc != 0:
            raise BuildError(f"{module.__name__}.main exited with {rc}")
        outs = module.outputs(ctx.cfg, ctx.dataset) if hasattr(module, "outputs") else [default_output(ctx)]
        return {"outputs": [Path(p) for p in outs], "summary": {"module": module.__name__}}

    return run


def load_plugin(name: str):
    """The module of a pluggable step, or None when it (not one of its imports) is not installed."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            return None
        raise


STEPS: list[Step] = [
    Step("splits", _step_splits, ("datasets.{dataset}",)),
    Step("frames", _step_frames, ("video", "datasets.{dataset}")),
    Step("index", _step_index, ("engine", "index.factory", "index.shard_size", "index.nprobe", "index.ef_search")),
    Step("hardneg", _step_hardneg, ("index.hard_negatives", "engine")),
    Step("sft", _plugin_runner("sft_module", lambda c: Path(c.cfg.sft.rows) if c.cfg.sft.rows
                               else c.prepared / "sft_train.jsonl"), ("sft", "agent", "engine"), "sft_module"),
    Step("grpo", _plugin_runner("grpo_module", lambda c: c.prepared / "grpo_train.jsonl"),
         ("agent", "engine"), "grpo_module"),
]
STEP_NAMES = [s.name for s in STEPS]


# ----------------------------------------------------------------------------- records
def _raw_inputs(ctx: Ctx, step: Step) -> dict:
    """What a step reads besides the config and earlier steps: annotation content, video files, weights."""
    cfg, name = ctx.cfg, ctx.dataset
    if step.name == "splits":
        dcfg = cfg.dataset_cfg(name)
        adir = cfg.dataset_root(name) / dcfg.annotation_dir
        return {s: sha256_file(adir / dcfg.splits[s]) if (adir / dcfg.splits[s]).is_file() else None
                for s in ctx.splits}
    if step.name == "frames":
        dcfg = cfg.dataset_cfg(name)
        vdir = cfg.dataset_root(name) / dcfg.video_dir
        stats = {}
        for v in corpus(ctx):
            p = vdir / f"{v}{dcfg.video_ext}"
            stats[v] = [p.stat().st_size, p.stat().st_mtime_ns] if p.is_file() else None
        return stats
    if step.name in ("index", "hardneg", "sft", "grpo"):
        return {"engine_weights": _weights(cfg.engine_model())}
    return {}


def _file_entry(path: Path, verify: str) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
            **({"sha256": sha256_file(path)} if verify == "sha256" else {})}


def _content(outputs: dict) -> str:
    """Digest of a step's outputs by content only (a rebuilt identical file keeps later steps valid)."""
    return _digest({k: {f: v[f] for f in ("size", "sha256") if f in v} for k, v in outputs.items()})


def _unchanged(p: Path, want: dict, verify: str) -> bool:
    """Same size, and same mtime (a file not touched since it was recorded) or else same sha256."""
    st = p.stat()
    if st.st_size != want["size"]:
        return False
    if verify != "sha256" or "sha256" not in want or st.st_mtime_ns == want.get("mtime_ns"):
        return True
    return sha256_file(p) == want["sha256"]


def _rel(cfg: Config, p: Path) -> str:
    ws = Path(cfg.workspace).expanduser()
    try:
        return Path(p).relative_to(ws).as_posix()
    except ValueError:
        return str(p)


def _abs(cfg: Config, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else Path(cfg.workspace).expanduser() / p


def outputs_valid(cfg: Config, record: dict, verify: str) -> str | None:
    """None when every recorded output is there unchanged, else why not."""
    for rel, want in record.get("outputs", {}).items():
        p = _abs(cfg, rel)
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != want["size"]:
            return f"{rel} changed size"
        if not _unchanged(p, want, verify):
            return f"{rel} changed content"
    return None


_SHARD = re.compile(r"^(shard_\d+)\.(npy|json)$")


def drop_changed(cfg: Config, record: dict) -> list[str]:
    """Delete recorded outputs that changed since they were written, so the step's resume rebuilds them
    (an index shard goes with its partner file: the pair is one unit of work). Returns what was deleted."""
    gone = []
    for rel, want in record.get("outputs", {}).items():
        p = _abs(cfg, rel)
        if not p.is_file():
            continue
        if _unchanged(p, want, "sha256"):
            continue
        m = _SHARD.match(p.name)
        for q in ([p.with_name(f"{m.group(1)}.npy"), p.with_name(f"{m.group(1)}.json")] if m else [p]):
            if q.is_file():
                q.unlink()
                gone.append(_rel(cfg, q))
    if gone:
        print(f"  removed changed outputs (rebuilt now): {', '.join(gone[:10])}"
              + (f" and {len(gone) - 10} more" if len(gone) > 10 else ""), flush=True)
    return gone


# ----------------------------------------------------------------------------- the pipeline
def parse_step(value: str | None) -> int:
    if value is None or value == "":
        return 0
    if value.isdigit() and 1 <= int(value) <= len(STEPS):
        return int(value) - 1
    if value in STEP_NAMES:
        return STEP_NAMES.index(value)
    raise BuildError(f"--from-step {value!r}: use a step name ({', '.join(STEP_NAMES)}) or 1..{len(STEPS)}")


def _lock(rec_dir: Path) -> Path:
    """One build per dataset at a time: <build>/.lock holds the pid; a dead owner's lock is taken over."""
    rec_dir.mkdir(parents=True, exist_ok=True)
    lock = rec_dir / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # its owner is gone (killed): take over
                continue
            except PermissionError:
                pass  # alive, another user's
            raise BuildError(f"another vsr1 build (pid {pid}) is running on {rec_dir.parent}; wait for it, or "
                             f"remove {lock} if it is stale") from None
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return lock
    raise BuildError(f"cannot take the build lock {lock}")


def run_build(cfg: Config, dataset: str, from_step: str | None = None) -> dict:
    """Run the pipeline (module doc); returns {step: status}: done / skipped / not available / not needed."""
    dcfg = cfg.dataset_cfg(dataset)
    splits = list(cfg.build.splits) or list(dcfg.splits)
    unknown = [s for s in splits if s not in dcfg.splits]
    if unknown:
        raise BuildError(f"build.splits: dataset {dataset!r} has no split(s) {unknown}; known: {list(dcfg.splits)}")
    if cfg.build.verify not in ("sha256", "size"):
        raise BuildError(f"build.verify must be 'sha256' or 'size', got {cfg.build.verify!r}")
    cfg = replace(cfg, dataset=dataset)
    rec_dir = cfg.prepared_dir(dataset) / "build"
    lock = _lock(rec_dir)
    try:
        return _run_steps(cfg, dataset, splits, rec_dir, from_step)
    finally:
        lock.unlink(missing_ok=True)


def _run_steps(cfg: Config, dataset: str, splits: list[str], rec_dir: Path, from_step: str | None) -> dict:
    from videosearch_r1.config import save_config
    from videosearch_r1.utils import atomic_write_json

    config_path = save_config(cfg, rec_dir)
    ctx = Ctx(cfg, dataset, splits, config_path)
    start = parse_step(from_step)
    status, upstream = {}, []
    for i, step in enumerate(STEPS):
        head = f"[build {dataset}] step {i + 1}/{len(STEPS)} {step.name}"
        rec_path = rec_dir / f"{step.name}.json"
        record = read_state(rec_path, None)  # missing or damaged: the step runs (and resumes its own work)
        inputs = _digest({"step": step.name, "version": STEP_VERSION, "splits": splits,
                          "config": {k: _pick(cfg, k) for k in step.config_keys}, "upstream": upstream,
                          "raw": _raw_inputs(ctx, step)})
        why = "forced by --from-step" if i >= start and from_step else None
        if why is None:
            if record is None:
                why = "not built yet"
            elif record.get("inputs") != inputs:
                why = "its inputs changed"
            else:
                why = outputs_valid(cfg, record, cfg.build.verify)
        if why is None:
            print(f"{head}: complete, skipped", flush=True)
            status[step.name] = "skipped"
            upstream.append(_content(record["outputs"]))
            continue
        if i < start:
            raise BuildError(f"{head} is not complete ({why}); run without --from-step first")
        if record is not None:
            drop_changed(cfg, record)
        print(f"{head}: running ({why})", flush=True)
        t0 = time.time()
        result = step.run(ctx)
        if "not_available" in result:
            print(f"{head}: " + (result.get("why") or f"not available (module {result['not_available']} is not "
                                 f"installed); going on"), flush=True)
            status[step.name] = "not needed" if result.get("why") else "not available"
            continue
        outputs = {_rel(cfg, p): _file_entry(Path(p), cfg.build.verify) for p in result["outputs"]}
        record = {"step": step.name, "version": STEP_VERSION, "inputs": inputs, "outputs": outputs,
                  "summary": result["summary"]}
        atomic_write_json(rec_path, record)
        upstream.append(_content(outputs))
        status[step.name] = "done"
        print(f"{head}: done in {time.time() - t0:.1f} s, {len(outputs)} output files", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.config import ConfigError
    from videosearch_r1.data.raw import root_overrides
    from videosearch_r1.data.records import FIGFormatError
    from videosearch_r1.utils import command_parser, config_from_args, parse_command

    argv = list(sys.argv[1:] if argv is None else argv)
    plugins = {s.name: s.plugin for s in STEPS if s.plugin}
    if argv and argv[0] in plugins:  # `vsr1 build sft DATASET ...`: the step's own command
        from videosearch_r1.config import load_config

        cfg = load_config()
        if not getattr(cfg.build, plugins[argv[0]]):
            print(f"vsr1 build {argv[0]}: nothing to build (build.{plugins[argv[0]]} is empty)")
            return 0
        module = load_plugin(getattr(cfg.build, plugins[argv[0]]))
        if module is None:
            print(f"vsr1 build {argv[0]}: not available (module {getattr(cfg.build, plugins[argv[0]])} is not "
                  f"installed)", file=sys.stderr)
            return 2
        return int(module.main(argv[1:]) or 0)
    parser = command_parser("vsr1 build", __doc__)
    parser.add_argument("dataset", help="dataset name (an entry under `datasets`)")
    parser.add_argument("--from-step", default=None, help=f"redo from this step: {', '.join(STEP_NAMES)} or 1..6")
    parser.add_argument("--anno-root", default=None, help="folder holding the FIG files (ANNO_ROOT)")
    parser.add_argument("--video-root", default=None, help="folder holding the raw videos (VIDEO_BASE)")
    args = parse_command(parser, argv)
    cfg = config_from_args(args, root_overrides(args.dataset, args.anno_root, args.video_root))
    try:
        status = run_build(cfg, args.dataset, args.from_step)
    except (BuildError, ConfigError, FIGFormatError, FileNotFoundError) as e:
        print(f"vsr1 build: {e}", file=sys.stderr)
        return 2
    print(f"[build {args.dataset}] " + ", ".join(f"{k}: {v}" for k, v in status.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
