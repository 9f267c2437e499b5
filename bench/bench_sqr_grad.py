"""What the SQR rollout under grad costs inside an SFT step, at Qwen3-VL-2B shapes (random bf16 weights).

    bash bench/device_setup.sh && python bench/bench_sqr_grad.py --device cuda --out bench/results/bench_sqr_grad_h200.json
    python bench/bench_sqr_grad.py --smoke --device cpu            # tiny shapes (28 layers), CPU, a minute
    python bench/bench_sqr_grad.py --smoke --device cpu --cpu-inductor   # sqr_compiled compiled on the CPU too

bench_sft.py's row (64 frames at 448², ~6.9k tokens, one row, fused AdamW on LLM + merger + SQR, no
gradient checkpointing), one train.trainer.PolicyModule step per variant:
- plain:        no contrastive row (no rollout; the forward without a cache)
- cache:        the forward with use_cache=True + CE, no rollout (does the cache change the attention
                path? transformers' mask is None and SDPA runs is_causal either way; this row measures it)
- sqr_old:      8 latents with grad, decode.decode_step on a growing DecodeCache (~270 ATen ops per layer
                and step, forward + backward): the trainers' eager default (sqr.latent_steps_grad)
- sqr_eager:    agent/sqr_grad.py's step (fixed-size tail), eager
- sqr_compiled: the same step through torch.compile (inductor; the trainers with train.rollout_compile on CUDA)
Columns: median step time after warm-up (the compile happens in the warm-up), launched kernels of one
step (CUDA: cudaLaunchKernel-type calls; CPU: compute ATen ops), peak memory. The latents of every sqr
variant are checked equal to sqr_old's (same weights and row). Prints a table; --out writes JSON.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import videosearch_r1  # noqa: E402,F401  (torchvision shim)

import torch  # noqa: E402

from videosearch_r1.utils import atomic_write_json  # noqa: E402

import bench_sft as B  # noqa: E402  (the 2B config, the verification row, the training set-up)

VARIANTS = ("plain", "cache", "sqr_old", "sqr_eager", "sqr_compiled")
SMOKE = dict(B.SMOKE, text=dict(B.SMOKE["text"], num_hidden_layers=28))  # the real layer count: launches matter
CPU_OPS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::mul", "aten::add", "aten::add_", "aten::copy_", "aten::fill_",
           "aten::sum", "aten::pow", "aten::cat", "aten::where", "aten::masked_fill", "aten::_softmax", "aten::rsqrt",
           "aten::mean", "aten::neg", "aten::zero_", "aten::silu", "aten::silu_backward", "aten::index",
           "aten::_softmax_backward_data", "aten::_index_put_impl_", "aten::sub", "aten::div", "aten::clone"}


def make_step(policy, variant: str, batch: dict, opt, n_latents: int, cpu_inductor: bool = False):
    """-> run() doing one training step of `variant` and returning its latents (or None)."""
    from videosearch_r1.agent import sqr
    from videosearch_r1.models.qwen3vl import model_inputs
    from videosearch_r1.train.trainer import PolicyModule

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    labels = batch["labels"]
    b = labels.shape[0]
    refine = (batch["input_ids"] == B.IDS["refine"]).long().argmax(1)
    module = PolicyModule(policy, n_latents, rollout_cached=True, fast=True,
                          rollout_compile=variant == "sqr_compiled")

    def finish(loss):
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def run():
        if variant == "cache":
            hidden = policy.model.model(**model_inputs(policy.model, inputs), use_cache=True).last_hidden_state
            sel = labels[:, 1:] != -100
            logits = policy.model.lm_head(hidden[:, :-1][sel]).float()
            finish(torch.nn.functional.cross_entropy(logits, labels[:, 1:][sel]))
            return None
        contrastive = torch.full((b,), variant != "plain", dtype=torch.bool, device=refine.device)
        real_backend, real_eager = sqr.grad_backend, sqr.EAGER_STEP
        if variant == "sqr_eager":  # the fixed-tail step without compiling (the default eager step is sqr_old's)
            sqr.EAGER_STEP = "fixed_tail"
        if cpu_inductor:  # inductor's C++ kernels on the CPU (trainers compile on CUDA only)
            sqr.grad_backend = lambda policy, compile=True: "inductor" if compile else None
        try:
            ce, n, soft = module(inputs, labels, refine, contrastive)
        finally:
            sqr.grad_backend, sqr.EAGER_STEP = real_backend, real_eager
        finish(ce / n + (soft.float().pow(2).mean() if soft is not None else 0.0))
        return None if soft is None else soft.detach().float()
    return run


def launches(run, device: str) -> int:
    """Kernels launched by one call of `run` (CUDA), or compute ATen ops (CPU)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as p:
        run()
        if device == "cuda":
            torch.cuda.synchronize()
    ev = p.key_averages()
    if device == "cuda":
        return sum(e.count for e in ev if "LaunchKernel" in e.key or e.key == "cudaGraphLaunch")
    return sum(e.count for e in ev if e.key in CPU_OPS)


def measure(shapes: dict, variant: str, args) -> tuple[dict, torch.Tensor | None]:
    dev, dtype = args.device, (torch.bfloat16 if args.device == "cuda" else torch.float32)
    torch.manual_seed(0)
    policy = B.build_policy(shapes, dev, dtype)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random SQR weights too (to_embedder starts at zero: the soft tokens would all be 0)
        for p in policy.sqr.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    opt = B.train_setup(policy, False, cuda=dev == "cuda")
    for g in opt.param_groups:
        g["lr"] = 0.0  # every step sees the same weights (the latents are compared across variants)
    batch = B.make_batch(shapes, 1, dev, dtype)
    run = make_step(policy, variant, batch, opt, args.n_latents,
                    cpu_inductor=args.cpu_inductor and dev == "cpu" and variant == "sqr_compiled")
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    times, soft = [], None
    try:
        t0 = time.perf_counter()
        soft = run()  # the first step (compiles, for sqr_compiled)
        sync()
        first = time.perf_counter() - t0
        for _ in range(args.warmup - 1):
            run()
        if dev == "cuda":
            sync()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.steps):
            sync()
            t0 = time.perf_counter()
            run()
            sync()
            times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None
        n_launch = launches(run, dev)
    except torch.cuda.OutOfMemoryError:
        return {"variant": variant, "error": "CUDA out of memory"}, None
    row = {"variant": variant, "tokens": int(batch["input_ids"].numel()), "step_s": statistics.median(times),
           "first_step_s": first, "launches": n_launch, "peak_gib": peak}
    del policy, opt, batch, run
    if dev == "cuda":
        torch.cuda.empty_cache()
    return row, soft


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny widths at the real layer count (CPU)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--n-latents", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cpu-inductor", action="store_true",
                    help="on CPU, sqr_compiled compiles with inductor too (C++; about a minute to compile)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    shapes = SMOKE if args.smoke else B.REAL
    rows, ref = [], None
    for variant in [v for v in args.variants.split(",") if v]:
        if variant not in VARIANTS:
            raise SystemExit(f"--variants: unknown {variant!r} (known: {', '.join(VARIANTS)})")
        row, soft = measure(shapes, variant, args)
        if soft is not None:
            ref = soft if ref is None else ref
            row["soft_rel_diff"] = float((soft - ref).norm() / ref.norm().clamp(min=1e-12))
        rows.append(row)
        if "error" in row:
            print(f"{variant:13s} {row['error']}", flush=True)
            continue
        mem = f"{row['peak_gib']:.1f} GiB" if row["peak_gib"] is not None else "-"
        diff = f"  latents vs first sqr row {row['soft_rel_diff']:.1e}" if "soft_rel_diff" in row else ""
        print(f"{variant:13s} step {row['step_s'] * 1e3:8.1f} ms (first {row['first_step_s']:6.1f} s)  "
              f"{row['launches']:7d} {'kernels' if args.device == 'cuda' else 'ATen ops'}  peak {mem}{diff}", flush=True)
    info = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
            "shapes": "smoke-28-layers" if args.smoke else "qwen3-vl-2b", "n_latents": args.n_latents, "rows": rows}
    if args.out:
        atomic_write_json(args.out, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
