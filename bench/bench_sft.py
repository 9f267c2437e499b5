"""SFT step cost at Qwen3-VL-2B shapes (random bf16 weights): our training step beside transformers' default.

    bash bench/device_setup.sh && python bench/bench_sft.py --device cuda --out bench/results/bench_sft_h200.json
    python bench/bench_sft.py --smoke --device cpu                 # tiny shapes, seconds, CPU

One verification row: 64 frames at the reference's per-frame budget (448 x 448 = 256 * 28 * 28 pixels:
32 temporal patches x 196 merged tokens), ~300 prompt tokens, --target assistant tokens ending with
<REFINE> (~6.8k tokens, as environment.md §7). Each variant runs forward + backward + fused AdamW on
the LLM + merger (ViT frozen, as the reference's SFT), batch --batch:
- hf:   `model(**inputs, labels=labels)`: get_rope_index (per-sample loop), per-chunk vision attention,
        Conv3d patch embedding, logits + CE over every position
- ours: train.trainer.PolicyModule (what `vsr1 train sft` runs): qwen3vl.prepare_model (one SDPA call
        per chunk length in the ViT, the patch embedding as a matmul), rope_positions, lm_head + CE on the
        assistant positions only; with --sqr also the 8-latent SQR rollout with grad (KV-cached)
- blocks: ours with every RMSNorm and MLP torch.compile'd (qwen3vl.compile_blocks; `--variants ours,blocks`)
each with and without gradient checkpointing. Reports step time (median after warm-up), tokens/s,
peak memory, and MFU = model FLOPs / (time x peak): LLM 6·N·T + causal attention, merger 6·N·T_vis,
frozen ViT forward 2·N·P (+ its attention); "LLM-only vs 800 TF/s" is environment.md §7's definition
(~11 % for the HF step on an H100). Prints a table and writes JSON (--out).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import videosearch_r1  # noqa: E402,F401  (torchvision shim)

import torch  # noqa: E402

from videosearch_r1.utils import atomic_write_json  # noqa: E402

REAL = dict(vocab=151936, text=dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                                    head_dim=128, intermediate_size=6144, mrope_section=[24, 20, 20]),
            vision=dict(depth=24, hidden_size=1024, num_heads=16, intermediate_size=4096,
                        deepstack_visual_indexes=[5, 11, 17], num_position_embeddings=2304),
            frames=64, side=448, prompt=300, target=128)
SMOKE = dict(vocab=1024, text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=16, intermediate_size=128, mrope_section=[2, 3, 3]),
             vision=dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=64, deepstack_visual_indexes=[0, 1],
                         num_position_embeddings=64),
             frames=8, side=64, prompt=40, target=16)
IDS = dict(pad=0, image=1, video=2, vstart=3, vend=4, refine=5, eos=6)  # reserved low ids of the random vocab


def build_policy(shapes: dict, device: str, dtype: torch.dtype):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from videosearch_r1.agent.policy import Policy, SQRConfig, SQRModules

    t, v = shapes["text"], shapes["vision"]
    rope = {"rope_type": "default", "rope_theta": 5e6, "mrope_section": t["mrope_section"], "mrope_interleaved": True}
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=shapes["vocab"], rope_parameters=rope, max_position_embeddings=262144,
                         pad_token_id=IDS["pad"], eos_token_id=IDS["eos"],
                         **{k: x for k, x in t.items() if k != "mrope_section"}),
        vision_config=dict(patch_size=16, temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=t["hidden_size"],
                           **v),
        image_token_id=IDS["image"], video_token_id=IDS["video"], vision_start_token_id=IDS["vstart"],
        vision_end_token_id=IDS["vend"], tie_word_embeddings=True, pad_token_id=IDS["pad"], eos_token_id=IDS["eos"])
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration(cfg).to(dtype)
    h = t["hidden_size"]
    sqr = SQRModules(SQRConfig(hidden_size=h, latent_dim=h, embedder_hidden=h)).to(device)
    return Policy(model, None, sqr, SQRConfig(hidden_size=h, latent_dim=h, embedder_hidden=h), refine_token_id=IDS["refine"])


def make_batch(shapes: dict, batch: int, device: str, dtype: torch.dtype, seed: int = 0) -> dict:
    """A verification row's layout: prompt text, per temporal patch `<t s>` text + vision run, target."""
    g = torch.Generator().manual_seed(seed)
    frames, side, vocab = shapes["frames"], shapes["side"], shapes["vocab"]
    t, hw = frames // 2, side // 16
    merged = (hw // 2) ** 2
    rand = lambda n: torch.randint(16, vocab, (n,), generator=g)  # noqa: E731
    parts, types = [rand(shapes["prompt"] // 2)], [torch.zeros(shapes["prompt"] // 2, dtype=torch.long)]
    for _ in range(t):
        ts = rand(5)
        run = torch.cat([torch.tensor([IDS["vstart"]]), torch.full((merged,), IDS["video"]), torch.tensor([IDS["vend"]])])
        parts += [ts, run]
        types += [torch.zeros(5, dtype=torch.long), (run == IDS["video"]).long() * 2]
    tail = rand(shapes["prompt"] - shapes["prompt"] // 2)
    target = torch.cat([rand(shapes["target"] - 2), torch.tensor([IDS["refine"], IDS["eos"]])])
    parts += [tail, target]
    types += [torch.zeros(len(tail), dtype=torch.long), torch.zeros(len(target), dtype=torch.long)]
    ids, tt = torch.cat(parts), torch.cat(types)
    labels = torch.full_like(ids, -100)
    labels[-len(target):] = target
    n_patch = t * 2 // 2 * hw * hw  # temporal patches x h x w patches (temporal patch 2 folded in C)
    pix = torch.randn(batch * n_patch, 3 * 2 * 16 * 16, generator=g)
    out = {"input_ids": ids.repeat(batch, 1), "attention_mask": torch.ones(batch, len(ids), dtype=torch.long),
           "mm_token_type_ids": tt.repeat(batch, 1), "pixel_values_videos": pix.to(dtype),
           "video_grid_thw": torch.tensor([[t, hw, hw]] * batch), "labels": labels.repeat(batch, 1)}
    return {k: x.to(device) for k, x in out.items()}


def flops(policy, batch: dict) -> tuple[float, float]:
    """(all model FLOPs of one training step, LLM-only FLOPs) for the trained parts + frozen ViT forward."""
    m = policy.model
    lm, vis = m.model.language_model, m.model.visual
    n_lm = sum(p.numel() for n, p in lm.named_parameters() if "embed_tokens" not in n)
    merger = [vis.merger, *vis.deepstack_merger_list]
    n_merge = sum(p.numel() for mod in merger for p in mod.parameters())
    n_vit = sum(p.numel() for p in vis.parameters()) - n_merge
    b, length = batch["input_ids"].shape
    c = lm.config
    attn_lm = 6 * 2 * c.num_hidden_layers * length * length / 2 * c.num_attention_heads * c.head_dim  # causal
    llm = b * (6 * n_lm * length + attn_lm)
    patches = batch["pixel_values_videos"].shape[0]
    vc = vis.config
    chunk = int(batch["video_grid_thw"][0, 1] * batch["video_grid_thw"][0, 2])
    attn_vit = 2 * 2 * vc.depth * patches * chunk * vc.hidden_size
    vis_tokens = int((batch["mm_token_type_ids"] == 2).sum())
    return llm + 6 * n_merge * vis_tokens + 2 * n_vit * patches + attn_vit, llm


def step_fn(policy, variant: str, batch: dict, opt, sqr: bool):
    from videosearch_r1.train.trainer import PolicyModule

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if variant == "hf":
        def run():
            loss = policy.model(**inputs, labels=batch["labels"]).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run
    module = PolicyModule(policy, n_latents=8, rollout_cached=True, fast=True)
    b = batch["input_ids"].shape[0]
    refine = (batch["input_ids"] == IDS["refine"]).long().argmax(1)
    contrastive = torch.full((b,), sqr, dtype=torch.bool, device=refine.device)

    def run():
        ce, n, soft = module(inputs, batch["labels"], refine, contrastive)
        loss = ce / n + (soft.float().pow(2).mean() if soft is not None else 0.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return run


def train_setup(policy, grad_ckpt: bool, cuda: bool):
    """The measured training set-up (the trainer's defaults): LLM + mergers + SQR train, the ViT is frozen;
    optional grad checkpointing; fused AdamW on CUDA. Returns the optimizer."""
    model = policy.model
    if grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    model.model.visual.requires_grad_(False)
    for mod in (model.model.visual.merger, *model.model.visual.deepstack_merger_list):
        mod.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad] + list(policy.sqr.parameters())
    return torch.optim.AdamW(params, lr=1e-5, fused=cuda)


def measure(shapes, variant: str, ckpt: bool, args) -> dict:
    from videosearch_r1.agent.policy import Policy  # noqa: F401  (import cost outside the timing)
    from videosearch_r1.models.qwen3vl import prepare_model

    dev, dtype = args.device, (torch.bfloat16 if args.device == "cuda" else torch.float32)
    torch.manual_seed(0)
    policy = build_policy(shapes, dev, dtype)
    model = policy.model
    if variant == "hf":  # transformers' own vision attention and Conv3d patch embedding (Policy patches both)
        for mod in model.modules():
            mod.__dict__.pop("forward", None)
    else:
        prepare_model(model)
    if variant == "blocks":  # ours + every RMSNorm and MLP torch.compile'd (issue 14's MFU; not yet a train knob)
        from videosearch_r1.models.qwen3vl import compile_blocks

        compile_blocks(model)
    opt = train_setup(policy, ckpt, cuda=dev == "cuda")
    batch = make_batch(shapes, args.batch, dev, dtype)
    run = step_fn(policy, variant, batch, opt, args.sqr and variant != "hf")
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    try:
        for i in range(args.warmup + args.steps):
            sync()
            t0 = time.perf_counter()
            run()
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    except torch.cuda.OutOfMemoryError:
        return {"variant": variant, "grad_ckpt": ckpt, "error": "CUDA out of memory"}
    sec = statistics.median(times)
    total, llm = flops(policy, batch)
    tokens = batch["input_ids"].numel()
    out = {"variant": variant, "grad_ckpt": ckpt, "sqr": bool(args.sqr and variant != "hf"), "batch": args.batch,
           "tokens": tokens, "step_s": sec, "tokens_per_s": tokens / sec, "tflops": total / sec / 1e12,
           "mfu": total / sec / args.peak, "mfu_llm_800": llm / sec / 800e12,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None}
    del policy, model, opt, batch
    if dev == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (CPU test of the script)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--sqr", action="store_true", help="ours also runs the 8-latent SQR rollout with grad")
    ap.add_argument("--peak", type=float, default=989e12, help="dense bf16 peak FLOP/s (H100/H200 SXM: 989e12)")
    ap.add_argument("--variants", default="hf,ours", help="comma list of hf, ours, blocks (ours + compiled norms/MLPs)")
    ap.add_argument("--ckpt", default="1,0", help="grad checkpointing settings to run, e.g. 1,0")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda"):  # as every trainer runs: cuDNN attention off (qwen3vl.guard_sdpa_backward)
        from videosearch_r1.models.qwen3vl import guard_sdpa_backward

        guard_sdpa_backward()
    shapes = SMOKE if args.smoke else REAL
    rows = []
    for ckpt in [bool(int(x)) for x in args.ckpt.split(",")]:
        for variant in args.variants.split(","):
            rows.append(measure(shapes, variant, ckpt, args))
            r = rows[-1]
            if "error" in r:
                print(f"{variant:5s} ckpt={int(ckpt)}  {r['error']}", flush=True)
                continue
            mem = f"{r['peak_gib']:.1f} GiB" if r["peak_gib"] is not None else "-"
            print(f"{variant:5s} ckpt={int(ckpt)} sqr={int(r['sqr'])}  {r['tokens']} tok  step {r['step_s'] * 1e3:8.1f} ms  "
                  f"{r['tokens_per_s']:9.0f} tok/s  {r['tflops']:7.1f} TFLOP/s  MFU {100 * r['mfu']:5.1f} %  "
                  f"(LLM vs 800 TF/s {100 * r['mfu_llm_800']:5.1f} %)  peak {mem}", flush=True)
    info = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
            "shapes": "smoke" if args.smoke else "qwen3-vl-2b", "rows": rows}
    if args.out:
        atomic_write_json(args.out, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
