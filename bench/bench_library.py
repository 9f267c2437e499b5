"""Library costs: indexing throughput (videos/s, moments/s) of `vsr1 library add`, and search latency of
the chosen store (FAISS IndexIDMap2 over IndexFlatIP) at 1 M moments.

    python bench/bench_library.py                                   # CPU: tiny engine, 1 M x 256 search
    python bench/bench_library.py --engine 2b --device cuda --search-dim 2048 --tag h200   # GPU host
    python bench/bench_library.py --smoke                           # seconds: a few videos, 20 k vectors

1. indexing: a synthetic world (`vsr1 synth`, preset --preset) is written to a temp workspace and its
   first --videos mp4s are added to a fresh library (library/build.py add_folder: probe + decode + embed
   the whole video + its 8 s / 4 s moment windows + thumbnails + one SQLite transaction per file).
   --engine tiny: the tiny random embedder on the synthetic budget (96x64 frames, 1 fps);
   --engine 2b: random weights at Qwen3-VL-Embedding-2B shapes (bench_engine.REAL) on the global video
   budget (1 fps, <= 64 frames, 128-256 merged tokens per frame), bf16 on CUDA.
2. search: --search-n random unit vectors of --search-dim in the FAISS store (ids as the library makes
   them: 2**20 per file, --per-file moments a file); add time, median k=10 latency for batch 1 and 16,
   the time to delete one file's moments (IDSelectorRange), memory; results checked against numpy.
   --milvus-n > 0 runs the same on Milvus Lite (smaller N: its inserts go through gRPC; flushed before
   timing searches), --search-n 0 skips FAISS.
Prints a table and writes JSON to bench/results/bench_library_<tag>.json.
"""
from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import videosearch_r1  # noqa: E402,F401  (torchvision shim)
from videosearch_r1.utils import atomic_write_json  # noqa: E402


def _embedder_2b(cfg, device: str, smoke: bool = False):
    """An Embedder over a random Qwen3VLModel at the 2B shapes (bench_engine.SMOKE's when smoke), with the
    tiny tokenizer's token ids."""
    import torch
    from transformers import Qwen3VLModel

    from bench_engine import REAL, SMOKE
    from videosearch_r1.engine.embedder import Embedder
    from videosearch_r1.models.qwen3vl import build_processor
    from videosearch_r1.models.tiny import build_tokenizer, tiny_config

    shapes = SMOKE if smoke else REAL
    tok = build_tokenizer()
    conf = tiny_config(tok, "tiny")
    for k, v in shapes["text"].items():
        if k != "mrope_section":
            setattr(conf.text_config, k, v)
    conf.text_config.rope_parameters["mrope_section"] = shapes["text"]["mrope_section"]
    for k, v in shapes["vision"].items():
        setattr(conf.vision_config, k, v)
    conf.vision_config.out_hidden_size = shapes["text"]["hidden_size"]
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3VLModel(conf).eval()
    finally:
        torch.set_default_dtype(old)
    return Embedder(model, build_processor(tok, cfg.video), device=device, dtype=dtype, batch_size=cfg.engine.batch_size)


def bench_indexing(args) -> dict:
    from videosearch_r1 import cli
    from videosearch_r1.config import load_config
    from videosearch_r1.library.build import add_folder
    from videosearch_r1.library.store import open_store
    from videosearch_r1.models.tiny import make_tiny_checkpoint

    ws = Path(tempfile.mkdtemp(prefix="bench-library-"))
    common = [f"workspace={ws}", f"synth.preset={args.preset}"]
    assert cli.main(["synth", *common]) == 0
    videos = sorted((ws / "data" / "synth" / "raw" / "videos").glob("*.mp4"))[:args.videos]
    folder = ws / "folder"
    folder.mkdir()
    for p in videos:
        shutil.copy(p, folder / p.name)
    over = common + [f"engine.batch_size={args.batch_size}"]
    if args.engine.startswith("2b"):
        over.append("library.video_budget=")
    cfg = load_config(None, over)
    if args.engine == "tiny":
        make_tiny_checkpoint(cfg.engine_model(), kind="embedder", video_cfg=cfg.video_cfg("synth"), seed=1)
        from videosearch_r1.library.build import load_embedder

        emb = load_embedder(load_config(None, over + [f"engine.device={args.device}"]))
    else:
        emb = _embedder_2b(cfg, args.device, smoke=args.engine == "2b-smoke")
    store = open_store(cfg)
    t, c = time.perf_counter(), time.process_time()
    s = add_folder(cfg, folder, store, emb)
    dt, cpu = time.perf_counter() - t, time.process_time() - c
    hours = store.status()["hours"]
    store.close()
    out = {"engine": args.engine, "device": args.device, "videos": s.new, "moments": s.moments, "seconds": dt,
           "videos_per_s": s.new / dt, "moments_per_s": s.moments / dt, "video_hours": hours,
           "video_hours_per_hour": hours * 3600 / dt, "failed": len(s.failed), "cpu_seconds": cpu,
           "videos_per_cpu_s": s.new / cpu, "moments_per_cpu_s": s.moments / cpu}
    print(f"indexing ({args.engine}, {args.device}): {s.new} videos, {s.moments} moments, {hours:.3f} h of video "
          f"in {dt:.1f} s ({cpu:.1f} CPU s) -> {out['videos_per_s']:.2f} videos/s, {out['moments_per_s']:.1f} moments/s "
          f"(per CPU second: {out['videos_per_cpu_s']:.2f} videos, {out['moments_per_cpu_s']:.1f} moments)")
    return out


def bench_store(scheme: str, n: int, dim: int, per_file: int, seed: int = 0) -> dict:
    from videosearch_r1.library.store import ID_SHIFT, MilvusIndex, flat_index

    rng = np.random.default_rng(seed)
    d = Path(tempfile.mkdtemp(prefix="bench-store-"))
    index = flat_index(d, dim) if scheme == "faiss" else MilvusIndex(d, dim)  # numpy where faiss is missing
    chunk, add_s, keep = 100_000 if scheme == "faiss" else 5_000, 0.0, []
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        x = rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        row = np.arange(lo, lo + m)
        ids = ((row // per_file) << ID_SHIFT) + row % per_file
        t = time.perf_counter()
        index.add(ids, x, None)
        add_s += time.perf_counter() - t
        keep.append((ids[:2000], x[:2000]))
    if scheme == "milvus":  # seal the segments (what the library's end-of-add flush does): searches get faster
        t = time.perf_counter()
        index.flush(0)
        add_s += time.perf_counter() - t
    ref_ids = np.concatenate([a for a, _ in keep])
    ref = np.concatenate([b for _, b in keep])
    q = rng.standard_normal((64, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    lat, cpu = {}, {}
    for b in (1, 16):
        index.search(q[:b], 10)
        times, cpus = [], []
        for i in range(20 if n >= 500_000 or scheme == "milvus" else 50):
            t, c = time.perf_counter(), time.process_time()
            index.search(q[(i % 4) * b % 64:(i % 4) * b % 64 + b], 10)
            times.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        lat[b], cpu[b] = statistics.median(times) * 1e3, statistics.median(cpus) * 1e3
    # exactness: the planted copies of a sample are found first with their exact inner product
    probe = ref[:8]
    s, i = index.search(probe, 1)
    exact = bool((i[:, 0] == ref_ids[:8]).all() and np.allclose(s[:, 0], 1.0, atol=1e-4))
    t = time.perf_counter()
    index.remove_files([int(ref_ids[0] >> ID_SHIFT)])
    delete_ms = (time.perf_counter() - t) * 1e3
    out = {"store": scheme, "backend": type(index).__name__, "n": n, "dim": dim, "add_s": add_s, "search_b1_ms": lat[1], "search_b16_ms": lat[16],
           "search_b1_cpu_ms": cpu[1], "search_b16_cpu_ms": cpu[16],
           "delete_one_file_ms": delete_ms, "vector_bytes": n * dim * 4, "exact": exact, "count": index.count()}
    index.close()
    print(f"search {scheme} ({type(index).__name__}): {n:,} x {dim}: add {add_s:.1f} s; k=10 latency b1 {lat[1]:.1f} ms (CPU {cpu[1]:.1f}), "
          f"b16 {lat[16]:.1f} ms (CPU {cpu[16]:.1f}); "
          f"delete one file {delete_ms:.1f} ms; vectors {n * dim * 4 / 2**30:.2f} GiB; exact {exact}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=("tiny", "2b", "2b-smoke"), default="tiny",
                   help="2b-smoke: the 2b path at bench_engine.SMOKE shapes (CPU check of the GPU command)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="tiny", help="synth preset of the indexed videos")
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32, help="engine.batch_size (windows per forward)")
    p.add_argument("--search-n", type=int, default=1_000_000)
    p.add_argument("--search-dim", type=int, default=256)
    p.add_argument("--per-file", type=int, default=100, help="moments per file in the search part")
    p.add_argument("--milvus-n", type=int, default=0, help="also time Milvus Lite at this many vectors")
    p.add_argument("--skip-indexing", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    p.add_argument("--tag", default="cpu")
    args = p.parse_args()
    if args.smoke:
        args.videos, args.search_n, args.milvus_n = 2, 20_000, min(args.milvus_n, 2_000)
    res = {"date": time.strftime("%Y-%m-%d"), "machine": platform.node(), "processor": platform.processor(),
           "args": vars(args)}
    if not args.skip_indexing:
        res["indexing"] = bench_indexing(args)
    res["search"] = [bench_store("faiss", args.search_n, args.search_dim, args.per_file)] if args.search_n else []
    if args.milvus_n:
        res["search"].append(bench_store("milvus", args.milvus_n, args.search_dim, args.per_file))
    out = Path(__file__).parent / "results" / f"bench_library_{args.tag}{'_smoke' if args.smoke else ''}.json"
    out.parent.mkdir(exist_ok=True)
    atomic_write_json(out, res)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
