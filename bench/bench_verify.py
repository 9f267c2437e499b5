"""Bench: verification-turn throughput (issue 18), today's path and the new one side by side in one run.

    bash bench/device_setup.sh && python bench/bench_verify.py --device cuda --out bench/results/bench_verify_h200_2026-12-01.json
        # one H200, carry [".wheels"] (transformers 5.24: the new prefill passes mm_encoder_outputs); < 6 min
    python bench/bench_verify.py --smoke                                  # tiny shapes on CPU, < 60 s
    python bench/bench_verify.py --device cuda --paths new,blocks --budget-s 200   # issue 18: compiled blocks

A turn = prefill (vision tower + prompt) + 128 greedy tokens (ignore_eos), at Qwen3-VL-2B shapes with random
bf16 weights (bench_agent.build_policy), the reference's budget: 64 frames at 448x448 (32 temporal patches x
196 merged tokens) + ~280 text tokens = ~6.8k tokens per prompt. Both paths run through `Policy.generate_ids`
with the same decode step (`vsr1 infer`'s default: matmul + CUDA graph + torch.compile); they differ only in
the prefill:
- old: `decode.prefill`, one HF forward of the left-padded batch (agent.prefill_tokens=0);
- new: `prefill.bucketed_prefill` (agent.prefill_tokens=65536, agent.vision_cache_mb=2048): rows of equal
  length per forward, no compute on padding, the distinct videos through the vision tower once, together in
  one call (since 2026-12-01; before, one call per video). The cache is emptied before every timed run, so
  only repeats inside the batch hit (a cold cache per turn);
- blocks (`--paths new,blocks`, issue 18's next step): new + every RMSNorm and MLP torch.compile'd
  (agent.compile_blocks, models/qwen3vl.compile_blocks): the prefill's elementwise kernels fused.
`--paths` picks which run side by side (default old,new); each is compared with the first.
Scenarios (in this order; `--budget-s` stops starting new ones, so a short device slot still writes JSON):
- same: every row its own video, 64 frames (equal lengths): batches --batches (1, 8, 32, 64);
- grpo: batch 32 = 4 queries x 8 identical prompts (a GRPO group's first turn: same query, same top-1);
- mixed: batch 32 of unequal prompts, videos of 16/32/48/64 frames, distinct;
- shared: batch 32 = 32 distinct queries, 4 videos each the top-1 of 8 of them (the loop's shared top-1).
Order: same b <= 32, grpo, mixed, same b > 32, shared.
After the batch-1 rows: building a turn's inputs for --input-batch 4 decoded clips (uint8 frames), the CPU
processor + copy to the GPU vs `qwen3vl.fast_video_inputs` (pixels made on the GPU; Policy.build_inputs), and
whether they are equal; then those clips x --group rows (a GRPO group): pixels made per copy (the old cost) vs
per distinct clip (now), and hashing the clips' cache keys vs the per-clip-object memo.
Per row: turns/s, prefill s (and the vision tower's share), prefill MFU (useful FLOPs: real tokens only, each
distinct video once, over --peak 989 TFLOP/s, the H200's dense bf16 roof), decode ms/token = (turn - prefill) /
tokens, and its ratio to the weight-read floor (text weights + lm_head bytes / --hbm 4.8 TB/s) and to the full
floor (weights + the K/V every row's step must read: at batch 32 x 6.9k tokens that is 25 GB a step, 7x the
weights). Prints a table, writes JSON.
Needs torch + transformers and this package on the path (no PyAV/faiss): inputs are random ids and pixels
in the processor's canonical layout (`<t s><|vision_start|>pads<|vision_end|>` per 2-frame patch).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from videosearch_r1.utils import atomic_write_json  # noqa: E402

import videosearch_r1  # noqa: E402,F401  (torchvision shim before transformers)
from bench_agent import IDS_2B, IDS_SMOKE, build_policy, is_oom, timed  # noqa: E402
from videosearch_r1.config import AgentConfig  # noqa: E402


# ------------------------------------------------------------------------------------ inputs
def turn_inputs(policy, frames: list[int], video_of_row: list[int], side: int, text_tokens: int, seed: int = 0,
                text_of_row: list[int] | None = None):
    """A left-padded batch: row r shows video video_of_row[r] with frames[video] frames (random pixels, made on
    the device) after text_tokens + t % 5 random prompt ids (t = text_of_row[r], default r: rows with the same t
    have the same text) and before 12 more. -> (inputs, video keys)"""
    cfg = policy.model.config
    ids = IDS_SMOKE if cfg.text_config.vocab_size == 512 else IDS_2B
    vocab = min(cfg.text_config.vocab_size, 151000) - 20
    hw = side // 16
    per_patch = (hw // 2) ** 2
    rows, types = [], []
    for r, v in enumerate(video_of_row):
        t = r if text_of_row is None else text_of_row[r]
        g = torch.Generator().manual_seed(seed * 100003 + t)
        n = text_tokens + t % 5
        seq, ty = torch.randint(0, vocab, (n,), generator=g).tolist(), [0] * n
        for _ in range(frames[v] // 2):
            seq += torch.randint(0, vocab, (6,), generator=g).tolist() + [ids["vision_start"]] + \
                [ids["video"]] * per_patch + [ids["vision_end"]]
            ty += [0] * 7 + [2] * per_patch + [0]
        seq += torch.randint(0, vocab, (12,), generator=g).tolist()
        ty += [0] * 12
        rows.append(seq)
        types.append(ty)
    width = max(len(s) for s in rows)
    dev = policy.device
    pad = cfg.text_config.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in rows], device=dev)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in rows], device=dev)
    mm = torch.tensor([[0] * (width - len(t)) + t for t in types], device=dev)
    gd = torch.Generator(device=dev).manual_seed(seed)
    pix = {v: torch.randn(frames[v] // 2 * hw * hw, 3 * 2 * 16 * 16, generator=gd, device=dev).to(policy.dtype)
           for v in sorted(set(video_of_row))}
    inputs = {"input_ids": input_ids, "attention_mask": mask, "mm_token_type_ids": mm,
              "pixel_values_videos": torch.cat([pix[v] for v in video_of_row]),
              "video_grid_thw": torch.tensor([[frames[v] // 2, hw, hw] for v in video_of_row], device=dev)}
    return inputs, [f"video{v}" for v in video_of_row]


# ------------------------------------------------------------------------------------ model arithmetic
def prefill_flops(policy, inputs: dict, keys: list[str]) -> float:
    """Useful forward FLOPs of a prefill: text linears x real tokens + causal attention per row, and the vision
    tower (linears, per-chunk attention, mergers) once per distinct video. Embedding tables not counted."""
    m = policy.model
    lm, vis = m.model.language_model, m.model.visual
    n_lm = sum(p.numel() for n, p in lm.named_parameters() if "embed_tokens" not in n)
    merger = [vis.merger, *vis.deepstack_merger_list]
    n_merge = sum(p.numel() for mod in merger for p in mod.parameters())
    n_vit = sum(p.numel() for n, p in vis.named_parameters() if "pos_embed" not in n) - n_merge
    c, vc = lm.config, vis.config
    lengths = inputs["attention_mask"].sum(1).tolist()
    text = sum(2 * n_lm * n + 2 * 2 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * n * n / 2
               for n in lengths)
    vision, seen = 0.0, set()
    merge = vc.spatial_merge_size ** 2
    for key, (t, h, w) in zip(keys, inputs["video_grid_thw"].tolist()):
        if key in seen:
            continue
        seen.add(key)
        patches = t * h * w
        vision += 2 * n_vit * patches + 2 * 2 * vc.depth * patches * (h * w) * vc.hidden_size
        vision += 2 * n_merge * patches / merge
    return text + vision


def weight_bytes(policy) -> int:
    """Bytes a decode step must read at least: the text tower without its embedding table + lm_head."""
    lm = policy.model.model.language_model
    elem = policy.model.lm_head.weight.element_size()
    return (sum(p.numel() for n, p in lm.named_parameters() if "embed_tokens" not in n)
            + policy.model.lm_head.weight.numel()) * elem


def kv_bytes_per_token(policy) -> int:
    """K/V bytes one cached position holds over all text layers (what a decode step reads per column)."""
    c = policy.model.model.language_model.config
    return c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * policy.model.lm_head.weight.element_size()


# ------------------------------------------------------------------------------------ paths
PATHS = ("old", "new", "blocks")  # blocks: new + the norms and MLPs torch.compile'd (agent.compile_blocks)


def use_path(policy, path: str) -> None:
    from videosearch_r1.models.qwen3vl import compile_blocks

    a = AgentConfig()
    if path == "old":
        policy.set_prefill(0)
    else:
        policy.set_prefill(a.prefill_tokens, a.vision_cache_mb)
    compile_blocks(policy.model, on=path == "blocks")


def run_row(policy, args, scenario: str, path: str, inputs: dict, keys: list[str]) -> dict:
    """One (scenario, path) row: the prefill alone, then the whole turn, each from an empty vision cache."""
    from videosearch_r1.agent.decode import prefill
    from videosearch_r1.agent.prefill import PrefillPlan, bucketed_prefill, video_features

    use_path(policy, path)
    b, length = inputs["input_ids"].shape
    pos = policy.positions(inputs)
    cap = length + args.new_tokens

    def cold():
        if policy.vision_cache is not None:
            policy.vision_cache.clear()

    def pre():
        cold()
        if path == "old":
            return prefill(policy.model, inputs, pos, capacity=cap).post
        return bucketed_prefill(policy.model, inputs, pos, cap, policy._plan(keys)).post

    def turn():
        cold()
        return policy.generate_ids(inputs, args.new_tokens, ignore_eos=True, video_keys=keys)

    # the vision tower's share of the prefill: old = all videos in one call, new = the distinct videos in one call
    vis_plan = policy._plan(keys) if path != "old" else PrefillPlan()
    big = b >= 8 and args.device.startswith("cuda")
    reps = 1 if big else args.reps
    with torch.no_grad():
        t_turn, res = timed(turn, args.device, reps, args.warmup)  # warm-up compiles the step at this batch
        t_pre, _ = timed(pre, args.device, reps, 0 if big else args.warmup)
        t_vis, _ = timed(lambda: (cold(), video_features(policy.model, inputs, vis_plan)), args.device, reps, 0)
    stats = policy.vision_cache.stats() if policy.vision_cache is not None else {}
    steps = res.ids.shape[1]
    decode_ms = 1000 * max(t_turn - t_pre, 1e-9) / steps
    floor_ms = 1000 * weight_bytes(policy) / args.hbm
    flops = prefill_flops(policy, inputs, keys)
    real = int(inputs["attention_mask"].sum())
    # the full floor: weights + every row's cached K/V (real prompt tokens + half the generated ones on average)
    kv_floor_ms = 1000 * (weight_bytes(policy) + (real + b * steps / 2) * kv_bytes_per_token(policy)) / args.hbm
    row = dict(scenario=scenario, path=path, batch=b, distinct_videos=len(set(keys)), columns=length,
               real_tokens=real, padding_share=1 - real / (b * length), new_tokens=steps, prefill_s=t_pre,
               vision_s=t_vis,
               turn_s=t_turn, turns_per_s=b / t_turn, prefill_tflops=flops / t_pre / 1e12,
               prefill_mfu=flops / t_pre / args.peak, decode_ms_per_token=decode_ms, floor_ms=floor_ms,
               decode_vs_floor=decode_ms / floor_ms, kv_floor_ms=kv_floor_ms, decode_vs_kv_floor=decode_ms / kv_floor_ms,
               vision_cache=stats, ids=res.ids[:, :8].tolist())
    print(f"{scenario:<6} {path:<4} b{b:3d} ({len(set(keys)):2d} videos, {real:7d} tok, pad {100 * row['padding_share']:4.1f}%)"
          f": prefill {t_pre:7.3f} s (vision {t_vis:6.3f}; MFU {100 * row['prefill_mfu']:5.1f}%)  turn {t_turn:7.3f} s  "
          f"{row['turns_per_s']:6.2f} turns/s  decode {decode_ms:6.2f} ms/tok ({row['decode_vs_floor']:4.2f}x weight floor, "
          f"{row['decode_vs_kv_floor']:4.2f}x weights+KV floor)",
          flush=True)
    return row


def scenarios(args) -> list[tuple]:
    """(name, frames per video, video of each row, text of each row or None) in the order they run."""
    f = args.frames
    b, g = args.scenario_batch, args.group
    group = [r // g for r in range(b)]
    mix = [max(2, f // 4 * k) for k in (1, 2, 3, 4)]
    extra = [("grpo", [f] * (b // g), group, group),  # G identical prompts per query (a GRPO group's first turn)
             ("mixed", [mix[r % 4] for r in range(b)], list(range(b)), None),  # unequal prompts, distinct videos
             ("shared", [f] * (b // g), group, None)]  # distinct queries, the same top-1 video for g of them
    same = [("same", [f] * n, list(range(n)), None) for n in args.batches]
    small = [x for x in same if x[2] and len(x[2]) <= b]
    return small + extra[:2] + [x for x in same if x not in small] + extra[2:]


def bench_inputs(policy, args, batch: int) -> dict:
    """Building a turn's inputs from decoded clips (uint8 frames): the CPU processor (then a copy to the device)
    vs `qwen3vl.fast_video_inputs` (pixels made on the device; what Policy.build_inputs now runs); equal? Then
    a GRPO group's batch (each clip x --group): pixels per copy vs per distinct clip, hashing vs the key memo."""
    import numpy as np

    from dataclasses import replace

    from videosearch_r1.agent.prompts import build_messages
    from videosearch_r1.agent.vision_cache import clip_key, clip_keys
    from videosearch_r1.config import VideoConfig
    from videosearch_r1.models.qwen3vl import build_processor, fast_video_inputs, render_chat, video_kwargs
    from videosearch_r1.models.tiny import build_tokenizer
    from videosearch_r1.video.decode import Clip, VideoInfo

    side, t = args.side, args.frames
    processor = build_processor(build_tokenizer(), VideoConfig(max_frames=t, min_pixels=32 * 32,
                                                               max_pixels=max(side * side, 32 * 32)))
    processor.tokenizer.padding_side = "left"
    rng = np.random.default_rng(0)
    clips = [Clip(frames=rng.integers(0, 256, (t, side, side, 3), dtype=np.uint8), timestamps=np.arange(t) + 0.5,
                  indices=np.arange(t), info=VideoInfo("bench", float(t), 1.0, t, side, side)) for _ in range(batch)]
    texts = [render_chat(processor, build_messages(f"query {i} about a red circle", c)) for i, c in enumerate(clips)]
    dev = policy.device

    def cpu():
        out = processor(text=texts, **video_kwargs(clips), padding=True, return_tensors="pt")
        return {k: v.to(dev) for k, v in out.items()}

    t_cpu, ref = timed(cpu, args.device, 1, 1)
    t_fast, new = timed(lambda: fast_video_inputs(processor, texts, clips, dev), args.device, 2, 1)
    equal = new is not None and set(new) == set(ref) and all(torch.equal(new[k], ref[k]) for k in ref)
    del ref, new
    # a GRPO group: each clip shown to --group rows. Pixels per row (copied arrays: what every batch paid before
    # 2026-12-01) vs per distinct clip (the same objects: now); cache keys: the distinct clips hashed (each turn
    # before) vs the memo of clip objects seen before (now)
    rows = [c for c in clips for _ in range(args.group)]
    copies = [replace(c, frames=c.frames.copy()) for c in rows]
    group_texts = [x for x in texts for _ in range(args.group)]
    t_copies, a = timed(lambda: fast_video_inputs(processor, group_texts, copies, dev), args.device, 1, 1)
    t_shared, b = timed(lambda: fast_video_inputs(processor, group_texts, rows, dev), args.device, 1, 1)
    group_equal = set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    del a, b, copies
    t_hash, _ = timed(lambda: [clip_key(c) for c in clips], "cpu", 1, 0)
    clip_keys(rows)
    t_memo, _ = timed(lambda: clip_keys(rows), "cpu", 1, 0)
    row = dict(batch=batch, frames=t, side=side, processor_s=t_cpu, fast_s=t_fast, speedup=t_cpu / t_fast,
               equal=equal, group=args.group, group_per_copy_s=t_copies, group_per_clip_s=t_shared,
               group_equal=group_equal, hash_s=t_hash, hash_memo_s=t_memo)
    print(f"inputs b{batch} ({t} frames {side}x{side}): CPU processor {t_cpu:.3f} s, fast on {dev} {t_fast:.3f} s "
          f"({t_cpu / t_fast:.1f}x), outputs equal: {equal}", flush=True)
    print(f"inputs b{batch} x{args.group} copies (a GRPO group): pixels per copy {t_copies:.3f} s, per clip "
          f"{t_shared:.3f} s (equal: {group_equal}); keys: hashing {batch} clips {t_hash:.3f} s, memo {t_memo:.5f} s",
          flush=True)
    return row


def profile_prefill(policy, args, top: int = 15) -> list[dict]:
    """torch.profiler over one bucketed prefill at batch 1 on the last --paths path (new or blocks): the ops with
    the most device self time (where the prefill's time goes; the next step of issue 18 starts from this list)."""
    from torch.profiler import ProfilerActivity, profile

    from videosearch_r1.agent.prefill import bucketed_prefill

    use_path(policy, args.paths[-1] if args.paths[-1] != "old" else "new")
    inputs, keys = turn_inputs(policy, [args.frames], [0], args.side, args.text_tokens)
    pos = policy.positions(inputs)
    cuda = args.device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.no_grad():
        bucketed_prefill(policy.model, inputs, pos, None, policy._plan(keys))  # warm
        policy.vision_cache.clear()
        with profile(activities=acts) as prof:
            bucketed_prefill(policy.model, inputs, pos, None, policy._plan(keys))
            if cuda:
                torch.cuda.synchronize()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr, 0), reverse=True)
    total = sum(getattr(e, attr, 0) for e in events) or 1
    out = [dict(op=e.key, ms=getattr(e, attr, 0) / 1000, share=getattr(e, attr, 0) / total, calls=e.count)
           for e in events[:top]]
    print(f"\nprefill profile, batch 1, new path ({'device' if cuda else 'cpu'} self time, total {total / 1000:.1f} ms):")
    for r in out:
        print(f"  {r['ms']:8.2f} ms {100 * r['share']:5.1f}% x{r['calls']:<5d} {r['op'][:90]}")
    return out


# ------------------------------------------------------------------------------------ main
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (< 60 s)")
    ap.add_argument("--out", default="", help="JSON path (default bench/results/bench_verify_<device>.json)")
    ap.add_argument("--batches", default="1,8,32,64", help="batch sizes of the 'same' scenario")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--text-tokens", type=int, default=280)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2, help="timed runs of small batches (batch >= 8 on CUDA: 1)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--input-batch", type=int, default=4, help="clips in the input-building comparison")
    ap.add_argument("--scenario-batch", type=int, default=32, help="batch of the grpo / mixed / shared scenarios")
    ap.add_argument("--group", type=int, default=8, help="rows per query (grpo) / per video (shared)")
    ap.add_argument("--peak", type=float, default=989e12, help="dense bf16 FLOP/s roof (H100/H200 SXM: 989e12)")
    ap.add_argument("--hbm", type=float, default=4.8e12, help="memory bandwidth, bytes/s (H200: 4.8e12)")
    ap.add_argument("--budget-s", type=float, default=240.0, help="no new scenario starts after this many seconds")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="decode step not compiled")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the batch-1 prefill profile")
    ap.add_argument("--paths", default="old,new", help=f"prefill paths side by side, the first the baseline ({PATHS})")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device = "cpu" if not torch.cuda.is_available() else args.device
        args.frames, args.side, args.text_tokens, args.new_tokens = 4, 64, 24, 8
        args.batches, args.reps, args.warmup, args.input_batch = "1,4", 1, 1, 2
        args.scenario_batch, args.group = 4, 2
    args.batches = [int(x) for x in str(args.batches).split(",") if x]
    args.paths = [x for x in str(args.paths).split(",") if x]
    if len(args.paths) < 2 or not set(args.paths) <= set(PATHS):
        ap.error(f"--paths {','.join(args.paths)}: two or more of {', '.join(PATHS)}")
    if args.group < 1 or args.scenario_batch % args.group:
        ap.error(f"--scenario-batch {args.scenario_batch} must be a multiple of --group {args.group}")
    args.dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    return args


def best(rows: list[dict], path: str) -> dict | None:
    mine = [r for r in rows if r["path"] == path and r["scenario"] == "same"]
    return max(mine, key=lambda r: r["turns_per_s"]) if mine else None


def main(argv=None) -> int:
    import transformers

    args = parse_args(argv)
    t0 = time.perf_counter()
    policy = build_policy(args.smoke, args.device, args.dtype)
    a = AgentConfig()
    policy.set_decode(a.decode_attention, a.decode_compile and args.compile, a.cuda_graph)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{name}, {args.dtype}, decode {policy.decode_options.name}; weights read per step "
          f"{weight_bytes(policy) / 1e9:.2f} GB -> floor {1000 * weight_bytes(policy) / args.hbm:.2f} ms/token", flush=True)
    rows, skipped, inputs_row = [], [], []
    for scenario, frames, video_of_row, text_of_row in scenarios(args):
        if time.perf_counter() - t0 > args.budget_s:
            skipped.append(f"{scenario} b{len(video_of_row)}")
            continue
        inputs, keys = turn_inputs(policy, frames, video_of_row, args.side, args.text_tokens, text_of_row=text_of_row)
        for path in args.paths:
            try:
                rows.append(run_row(policy, args, scenario, path, inputs, keys))
            except Exception as e:  # noqa: BLE001  (one failed row never costs the run its table)
                what = "out of memory" if is_oom(e) else f"{type(e).__name__}: {str(e)[:300]}"
                print(f"{scenario} {path} b{len(video_of_row)}: FAILED {what}", flush=True)
                rows.append(dict(scenario=scenario, path=path, batch=len(video_of_row), failed=what,
                                 oom=is_oom(e)))
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
        del inputs
        if scenario == "same" and len(video_of_row) == 1 and not inputs_row:
            try:
                inputs_row.append(bench_inputs(policy, args, args.input_batch))
            except Exception as e:  # noqa: BLE001  (e.g. no torchvision for the CPU processor)
                print(f"inputs: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
                inputs_row.append(dict(failed=f"{type(e).__name__}: {str(e)[:300]}"))
    prof = []
    if args.profile and time.perf_counter() - t0 < args.budget_s + 60:
        try:
            prof = profile_prefill(policy, args)
        except Exception as e:  # noqa: BLE001  (the profile is a diagnostic: never lose the table for it)
            print(f"profile failed: {type(e).__name__}: {str(e)[:200]}")
    ok = [r for r in rows if not r.get("failed")]
    base = args.paths[0]
    for other in args.paths[1:]:  # each path against the first, row by row
        print(f"\n{'scenario':<8}{'batch':>6}{'videos':>7}{'pad %':>7} | {'turns/s ' + base:>14}{other:>8}{'x':>6} | "
              f"{'MFU ' + base:>10}{other:>8} | {'ms/tok ' + base:>13}{other:>8}{'floor':>7}{'+KV':>7}")
        for r in ok:
            n = next((x for x in ok if x["path"] == other and x["scenario"] == r["scenario"] and x["batch"] == r["batch"]),
                     None)
            if r["path"] != base or n is None:
                continue
            print(f"{r['scenario']:<8}{r['batch']:>6}{r['distinct_videos']:>7}{100 * r['padding_share']:>7.1f} | "
                  f"{r['turns_per_s']:>14.2f}{n['turns_per_s']:>8.2f}{n['turns_per_s'] / r['turns_per_s']:>6.2f} | "
                  f"{100 * r['prefill_mfu']:>9.1f}%{100 * n['prefill_mfu']:>7.1f}% | "
                  f"{r['decode_ms_per_token']:>13.2f}{n['decode_ms_per_token']:>8.2f}{r['floor_ms']:>7.2f}"
                  f"{n['kv_floor_ms']:>7.2f}")
    summary = {p: best(ok, p) for p in args.paths}
    for p, r in summary.items():
        if r:
            print(f"best batch, {p}: {r['batch']} -> {r['turns_per_s']:.2f} turns/s")
    if skipped:
        print(f"skipped (--budget-s {args.budget_s:.0f}): {', '.join(skipped)}")
    wall = time.perf_counter() - t0
    print(f"total wall time {wall:.0f} s")
    result = dict(bench="bench_verify", date=time.strftime("%Y-%m-%d %H:%M"), device=name, torch=torch.__version__,
                  transformers=transformers.__version__, smoke=args.smoke, dtype=str(args.dtype),
                  frames=args.frames, side=args.side, new_tokens=args.new_tokens, peak_flops=args.peak,
                  hbm_bytes_per_s=args.hbm, decode_path=policy.decode_options.name, rows=rows,
                  best_batch=summary, skipped=skipped, inputs=inputs_row[0] if inputs_row else None,
                  prefill_profile=prof, wall_s=wall)
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"bench_verify_{'smoke' if args.smoke else name.split()[-1].lower()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
