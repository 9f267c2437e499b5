"""SFT and GRPO steps at Qwen3-VL-2B shapes (random weights) on 1 vs N GPUs of one host, side by side:
step time, tokens/s/GPU and scaling efficiency (tokens/s/GPU at N over tokens/s/GPU at 1; weak scaling:
every rank keeps its per-GPU batch, so N GPUs do N times the work per step).

    bash bench/device_setup.sh && python bench/bench_multigpu.py --gpus 1,2 --out bench/results/bench_multigpu_h200x2.json
    python bench/bench_multigpu.py --smoke --device cpu --gpus 1,2     # tiny shapes, 2 gloo processes, CPU

Each world size runs in fresh processes (torch.multiprocessing spawn; NCCL on CUDA, gloo on CPU) through
the trainers' own distributed path: train/common.make_accelerator (DDP, find_unused_parameters as the
trainers run it), `accelerator.prepare` of the module the trainers wrap, fp32 master weights under bf16
autocast on CUDA, fused AdamW on the LLM + merger (+ SQR), ViT frozen.
- sft:  train/trainer.PolicyModule on bench_sft's verification row (64 frames at 448 x 448, ~6.8k tokens,
        target ending with <REFINE>, the 8-latent SQR rollout with grad when --sqr), --batch rows per GPU;
        gradient all-reduce once per step.
- grpo: bench_grpo.one_step (fast-decode rollout of --queries x --group rows per GPU, reference log-probs,
        GRPOModule update in micro-batches) with the DDP-wrapped module, gradients all-reduced once per
        step after the last micro-batch (as train/grpo.update_step: no_sync before it).
tokens/s/GPU = tokens one rank processes in a step / the step time (median after --warmup steps, the
slowest rank's time). Prints a table; --out writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import videosearch_r1  # noqa: E402,F401  (torchvision shim before transformers)
from videosearch_r1.utils import atomic_write_json  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accelerator(device: str):
    from videosearch_r1.train.common import make_accelerator

    return make_accelerator(SimpleNamespace(mixed_precision="auto" if device == "cuda" else "no"))


def _timed(acc, device: str, step, warmup: int, steps: int) -> list[float]:
    """Per-step seconds, each the slowest rank's (a barrier closes every step)."""
    times = []
    for i in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        acc.wait_for_everyone()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        dt = torch.tensor([time.perf_counter() - t0], device=acc.device)
        if i >= warmup:
            times.append(float(_max(acc, dt)))
    return times


def _max(acc, t: torch.Tensor) -> torch.Tensor:
    if acc.num_processes == 1:
        return t
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def sft_worker(args, acc) -> dict:
    from bench_sft import IDS, REAL, SMOKE, build_policy, make_batch, train_setup

    from videosearch_r1.models.qwen3vl import prepare_model
    from videosearch_r1.train.trainer import PolicyModule

    shapes, dev = (SMOKE if args.smoke else REAL), acc.device
    torch.manual_seed(0)
    policy = build_policy(shapes, str(dev), torch.float32)  # fp32 master weights, as train_policy
    prepare_model(policy.model)
    opt = train_setup(policy, args.grad_ckpt, cuda=dev.type == "cuda")
    module, opt = acc.prepare(PolicyModule(policy, n_latents=8, rollout_cached=not args.grad_ckpt, fast=True), opt)
    batch = make_batch(shapes, args.batch, str(dev), torch.float32, seed=acc.process_index)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    refine = (batch["input_ids"] == IDS["refine"]).long().argmax(1)
    contrastive = torch.full((args.batch,), args.sqr, dtype=torch.bool, device=dev)

    def step():
        with acc.autocast():
            ce, n, soft = module(inputs, batch["labels"], refine, contrastive)
            loss = ce / n + (soft.float().pow(2).mean() if soft is not None else 0.0)
        acc.backward(loss)
        acc.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    times = _timed(acc, dev.type, step, args.warmup, args.steps)
    return {"tokens_per_gpu": int(batch["input_ids"].numel()), "step_s": statistics.median(times)}


def grpo_worker(args, acc) -> dict:
    import bench_grpo
    from bench_agent import video_inputs

    dev = acc.device
    g = SimpleNamespace(device=str(dev), smoke=args.smoke, queries=args.queries, group=args.group,
                        new_tokens=args.new_tokens, top_p=1.0, frames=args.frames, side=args.side, text_tokens=300,
                        n_latents=8, refine_frac=0.5, micro_batch=args.micro_batch, grad_ckpt=args.grad_ckpt,
                        rollout_dtype="bf16" if dev.type == "cuda" else "fp32")
    if args.smoke:
        g.frames, g.side, g.text_tokens, g.new_tokens, g.queries, g.group = 4, 64, 20, 8, 1, 4
    torch.manual_seed(0)
    policy, roll, ref, module, opt = bench_grpo.setup(g)
    module, opt = acc.prepare(module, opt)
    module = _SyncOnLast(module, -(-g.queries * g.group // max(1, g.micro_batch)))
    prompt = video_inputs(policy, g.queries * g.group, g.frames, g.side, g.text_tokens, tail=[])
    gen = torch.Generator(device=dev).manual_seed(acc.process_index)
    out = {}

    def step():
        out.update(bench_grpo.one_step(policy, roll, ref, module, opt, prompt, g, "ours", gen))
    times = _timed(acc, dev.type, step, args.warmup, args.steps)
    return {"tokens_per_gpu": out["tokens"], "step_s": statistics.median(times), "rows_per_gpu": out["rows"],
            "rollout_s": out["rollout_s"], "update_s": out["update_s"]}


class _SyncOnLast:
    """Calls the DDP module with gradient sync only on the last micro-batch of each step (what no_sync
    around the others does in the trainer; bench_grpo.one_step calls the module once per micro-batch)."""

    def __init__(self, ddp, per_step: int):
        self.ddp, self.per_step, self.calls = ddp, per_step, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        if hasattr(self.ddp, "require_backward_grad_sync"):
            self.ddp.require_backward_grad_sync = self.calls % self.per_step == 0
        return self.ddp(*a, **kw)


def _entry(rank: int, world: int, port: int, stage: str, args, result: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if args.fsdp and stage == "sft":  # what `accelerate launch --config_file configs/accelerate/fsdp2.yaml` sets
        os.environ.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2", FSDP_AUTO_WRAP_POLICY="TRANSFORMER_BASED_WRAP",
                          FSDP_TRANSFORMER_CLS_TO_WRAP="Qwen3VLTextDecoderLayer,Qwen3VLVisionBlock",
                          FSDP_RESHARD_AFTER_FORWARD="true", FSDP_STATE_DICT_TYPE="SHARDED_STATE_DICT")
    if args.device == "cpu":
        os.environ.update(ACCELERATE_USE_CPU="yes", GLOO_SOCKET_IFNAME="lo")
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    else:
        torch.cuda.set_device(rank)
    acc = _accelerator(args.device)
    row = (sft_worker if stage == "sft" else grpo_worker)(args, acc)
    if acc.device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if acc.is_main_process:
        Path(result).write_text(json.dumps(row))
    acc.wait_for_everyone()
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def run(stage: str, world: int, args) -> dict:
    from torch.multiprocessing import start_processes

    with tempfile.TemporaryDirectory() as tmp:
        result = str(Path(tmp) / "row.json")
        start_processes(_entry, args=(world, _free_port(), stage, args, result), nprocs=world, start_method="spawn")
        row = json.loads(Path(result).read_text())
    row.update(stage=stage, gpus=world, launch="fsdp2" if args.fsdp and stage == "sft" else "ddp", tokens_per_s_per_gpu=row["tokens_per_gpu"] / row["step_s"])
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (CPU test of the script)")
    ap.add_argument("--gpus", default="1,2", help="world sizes to compare (processes; one GPU each)")
    ap.add_argument("--stages", default="sft,grpo")
    ap.add_argument("--batch", type=int, default=1, help="SFT rows per GPU")
    ap.add_argument("--sqr", action="store_true", help="SFT also runs the 8-latent SQR rollout with grad")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing")
    ap.add_argument("--fsdp", action="store_true", help="SFT under FSDP2 (configs/accelerate/fsdp2.yaml), not DDP")
    ap.add_argument("--queries", type=int, default=1, help="GRPO queries per GPU per step")
    ap.add_argument("--group", type=int, default=8, help="GRPO trajectories per query")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--micro-batch", type=int, default=2, help="GRPO rows per forward/backward")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup = min(args.steps, 2), 1
    worlds = [int(x) for x in args.gpus.split(",") if x]
    if args.device == "cuda" and max(worlds) > torch.cuda.device_count():
        raise SystemExit(f"--gpus {args.gpus}: only {torch.cuda.device_count()} GPU(s) here")
    rows = []
    for stage in [s for s in args.stages.split(",") if s]:
        base = None
        for w in worlds:
            r = run(stage, w, args)
            base = base or r["tokens_per_s_per_gpu"]
            r["scaling_efficiency"] = r["tokens_per_s_per_gpu"] / base
            rows.append(r)
            print(f"{stage:4s} {r['launch']:5s} {w} GPU(s): step {r['step_s']:8.3f} s | {r['tokens_per_gpu']:6d} tokens/GPU/step | "
                  f"{r['tokens_per_s_per_gpu']:9.1f} tokens/s/GPU | scaling efficiency {100 * r['scaling_efficiency']:5.1f} %"
                  + (f" | peak {r['peak_gib']:.1f} GiB" if r.get("peak_gib") else ""), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in vars(args).items() if k != "out"}
        meta["gpu"] = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        atomic_write_json(args.out, {"args": meta, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
