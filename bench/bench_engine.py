"""Search-engine costs at Qwen3-VL-Embedding-2B shapes (random bf16 weights) and a 1 M x 2048 corpus.

    python bench/bench_engine.py --device cuda --out bench_engine.json      # the real shapes (GPU)
    python bench/bench_engine.py --smoke --device cpu                       # tiny shapes, seconds, CPU

Measures
1. text query embedding throughput (queries/s) per batch size: one Qwen3VLModel forward over
   --query-len tokens, last-token pooling, L2 normalisation (what Embedder.embed_texts does);
2. soft-token query throughput: the same with --soft-tokens vectors inserted into the input embeddings
   (inputs_embeds + explicit text mRoPE positions, what Embedder.embed_soft does);
3. exact search latency over --corpus x --dim vectors: one matmul + top-k in bf16 / fp16 on the device
   (faiss IndexFlatIP too when faiss is importable), for query batches 1..1024, against the memory-
   bandwidth floor = corpus bytes / device copy bandwidth (measured here: a device-to-device copy of a
   large buffer, counting bytes read + written).
Needs only torch + transformers (Qwen3-VL classes); faiss and our package are optional.
Prints a table and writes JSON (--out). Timings are medians after warm-up (CUDA synchronised).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
try:  # the project's torchvision shim (needed on the CPU machine); absent on a bare GPU image
    import videosearch_r1  # noqa: F401
except ImportError:
    pass

import torch
from videosearch_r1.utils import atomic_write_json  # noqa: E402

# Qwen3-VL-Embedding-2B shapes (environment.md §7) and a tiny twin for --smoke.
REAL = dict(vocab=151936, text=dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16,
                                    num_key_value_heads=8, head_dim=128, intermediate_size=6144,
                                    mrope_section=[24, 20, 20]),
            vision=dict(depth=24, hidden_size=1024, num_heads=16, intermediate_size=4096,
                        deepstack_visual_indexes=[5, 11, 17], num_position_embeddings=2304),
            corpus=1_000_000, dim=2048, query_batches=[1, 4, 16, 64, 256, 1024], text_batches=[1, 8, 32, 128, 256])
SMOKE = dict(vocab=1024, text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=16, intermediate_size=128, mrope_section=[2, 3, 3]),
             vision=dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=64, deepstack_visual_indexes=[0, 1],
                         num_position_embeddings=64),
             corpus=4096, dim=64, query_batches=[1, 4, 16, 64], text_batches=[1, 4])


def build_model(shapes: dict, device: str, dtype: torch.dtype):
    """A Qwen3VLModel with random weights at the given shapes (tied embeddings, interleaved mRoPE)."""
    from transformers import Qwen3VLConfig, Qwen3VLModel

    t, v, vocab = shapes["text"], shapes["vision"], shapes["vocab"]
    rope = {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": t["mrope_section"],
            "mrope_interleaved": True}
    text = {k: val for k, val in t.items() if k != "mrope_section"}
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=vocab, rope_parameters=rope, tie_word_embeddings=True, max_position_embeddings=262144,
                         **text),
        vision_config=dict(patch_size=16, temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=t["hidden_size"],
                           **v),
        image_token_id=vocab - 4, video_token_id=vocab - 3, vision_start_token_id=vocab - 2,
        vision_end_token_id=vocab - 1, tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3VLModel(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.to(device=device, dtype=dtype).eval(), cfg


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn, device: str, warmup: int, repeats: int) -> float:
    """Median wall seconds of fn() (device synchronised before and after each call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- query embedding
def bench_queries(args, shapes, device, dtype) -> list[dict]:
    model, cfg = build_model(shapes, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e9:.3f} B params, {dtype}, {device}", flush=True)
    emb = model.get_input_embeddings()
    rows = []
    for b in shapes["text_batches"]:
        ids = torch.randint(0, shapes["vocab"] - 8, (b, args.query_len), device=device)
        mask = torch.ones_like(ids)

        @torch.inference_mode()
        def text_pass():
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
            return torch.nn.functional.normalize(h.float(), dim=-1)

        n = args.soft_tokens
        soft = torch.randn(b, n, cfg.text_config.hidden_size, device=device, dtype=dtype)
        length = args.query_len + n
        pos = torch.arange(length, device=device).view(1, 1, -1).expand(3, b, -1)
        mask_s = torch.ones(b, length, dtype=torch.long, device=device)
        tail = 5  # "<|im_end|>\n<|im_start|>assistant\n": soft tokens go before the chat tail

        @torch.inference_mode()
        def soft_pass():
            e = emb(ids)
            x = torch.cat([e[:, :-tail], soft, e[:, -tail:]], dim=1)
            h = model(inputs_embeds=x, attention_mask=mask_s, position_ids=pos).last_hidden_state[:, -1]
            return torch.nn.functional.normalize(h.float(), dim=-1)

        for kind, fn, toks in (("text", text_pass, args.query_len), ("soft", soft_pass, length)):
            t = timeit(fn, device, args.warmup, args.repeats)
            rows.append({"bench": f"query_{kind}", "batch": b, "tokens": toks, "ms": t * 1e3, "qps": b / t})
            print(f"  {kind:5s} queries  batch {b:5d}  {toks:3d} tok  {t * 1e3:9.2f} ms  {b / t:10.1f} q/s", flush=True)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------- exact search
def copy_bandwidth(device: str, nbytes: int, args) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read + written."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device).normal_()
    dst = torch.empty_like(src)
    t = timeit(lambda: dst.copy_(src), device, args.warmup, max(args.repeats, 5))
    del src, dst
    return 2 * nbytes / t


def make_corpus(n: int, d: int, dtype: torch.dtype, device: str, chunk: int = 65536) -> torch.Tensor:
    x = torch.empty(n, d, dtype=dtype, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    for i in range(0, n, chunk):
        c = torch.randn(min(chunk, n - i), d, device=device, generator=g)
        x[i:i + chunk] = torch.nn.functional.normalize(c, dim=-1).to(dtype)
    return x


def bench_search(args, shapes, device) -> tuple[list[dict], dict]:
    n, d = args.corpus or shapes["corpus"], args.dim or shapes["dim"]
    bw = copy_bandwidth(device, min(2 << 30, max(64 << 20, n * d * 2)), args)
    info = {"corpus": n, "dim": d, "copy_bandwidth_GBps": bw / 1e9}
    print(f"search: {n} x {d}, copy bandwidth {bw / 1e9:.1f} GB/s (read + write)", flush=True)
    rows = []
    for dname in args.search_dtypes.split(","):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dname]
        x = make_corpus(n, d, dtype, device)
        floor = x.numel() * x.element_size() / bw
        for b in shapes["query_batches"]:
            q = torch.nn.functional.normalize(torch.randn(b, d, device=device), dim=-1).to(dtype)

            @torch.inference_mode()
            def search():
                return torch.topk(q @ x.T, args.k, dim=1)

            t = timeit(search, device, args.warmup, args.repeats)
            rows.append({"bench": f"search_torch_{dname}", "batch": b, "ms": t * 1e3, "floor_ms": floor * 1e3,
                         "x_floor": t / floor, "qps": b / t})
            print(f"  torch {dname}  batch {b:5d}  {t * 1e3:9.3f} ms  floor {floor * 1e3:7.3f} ms  "
                  f"({t / floor:5.1f}x)  {b / t:12.1f} q/s", flush=True)
        del x
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    rows += bench_faiss(args, shapes, n, d, bw)
    return rows, info


def bench_faiss(args, shapes, n: int, d: int, bw: float) -> list[dict]:
    try:
        import faiss
        import numpy as np
    except ImportError:
        print("  faiss: not installed, skipped", flush=True)
        return []
    rng = np.random.default_rng(0)
    index = faiss.IndexFlatIP(d)
    for i in range(0, n, 65536):
        c = rng.standard_normal((min(65536, n - i), d), dtype=np.float32)
        index.add(c / np.linalg.norm(c, axis=1, keepdims=True))
    gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 and args.device.startswith("cuda")
    if gpu:
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, 0, index)
    where = "gpu" if gpu else "cpu"
    floor = n * d * 4 / bw if gpu else None  # the device floor applies to the GPU index only
    rows = []
    for b in shapes["query_batches"]:
        q = rng.standard_normal((b, d), dtype=np.float32)
        t = timeit(lambda: index.search(q, args.k), "cpu", 1, max(1, args.repeats // 2))
        rows.append({"bench": f"search_faiss_{where}_fp32", "batch": b, "ms": t * 1e3, "qps": b / t,
                     **({"floor_ms": floor * 1e3, "x_floor": t / floor} if floor else {})})
        print(f"  faiss {where} fp32  batch {b:5d}  {t * 1e3:9.3f} ms  {b / t:12.1f} q/s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, runs on CPU in seconds")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"], help="model weights")
    p.add_argument("--search-dtypes", default="bf16,fp16", help="corpus dtypes for the torch search")
    p.add_argument("--corpus", type=int, default=0, help="corpus size (default 1 M; smoke 4096)")
    p.add_argument("--dim", type=int, default=0, help="vector width (default 2048; smoke 64)")
    p.add_argument("--query-len", type=int, default=32, help="tokens per text query (prompt included)")
    p.add_argument("--soft-tokens", type=int, default=8, help="soft tokens per refined query")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--skip", default="", help="comma list of parts to skip: queries,search")
    p.add_argument("--out", default=None, help="write results JSON here")
    args = p.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    args.device = device
    shapes = SMOKE if args.smoke else REAL
    if args.smoke:
        args.warmup, args.repeats = min(args.warmup, 1), min(args.repeats, 3)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    gpu_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    import transformers

    env = {"device": device, "gpu": gpu_name, "torch": torch.__version__, "transformers": transformers.__version__,
           "smoke": args.smoke, "dtype": args.dtype, "query_len": args.query_len, "soft_tokens": args.soft_tokens,
           "k": args.k}
    print(json.dumps(env), flush=True)
    skip = set(filter(None, args.skip.split(",")))
    rows, search_info = [], {}
    if "queries" not in skip:
        rows += bench_queries(args, shapes, device, dtype)
    if "search" not in skip:
        srows, search_info = bench_search(args, shapes, device)
        rows += srows
    print(f"\n{'bench':24s} {'batch':>6s} {'ms':>10s} {'floor ms':>9s} {'q/s':>12s}")
    for r in rows:
        fl = f"{r['floor_ms']:9.3f}" if "floor_ms" in r else " " * 9
        print(f"{r['bench']:24s} {r['batch']:6d} {r['ms']:10.3f} {fl} {r['qps']:12.1f}")
    if args.out:
        atomic_write_json(args.out, {"env": env, "search": search_info, "rows": rows})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
