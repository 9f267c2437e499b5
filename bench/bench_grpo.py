"""GRPO step cost at Qwen3-VL-2B shapes (random weights): rollout / log-prob / update split out, our fast
decode rollouts beside HF `generate` rollouts, in one run.

    bash bench/device_setup.sh && python bench/bench_grpo.py --device cuda --out bench/results/bench_grpo_h200.json
    python bench/bench_grpo.py --smoke --device cpu                 # tiny shapes on CPU, about a minute

One step = --queries queries x --group trajectories (rows), each a verification turn at the agent's
budget (64 frames at 448 x 448: 32 temporal patches x 196 merged tokens, ~6.7k prompt tokens; environment.md
§7) answered with --new-tokens sampled tokens (temperature 1, --top-p), then:
- rollout: ours = Policy.generate_ids (static KV cache, CUDA graph + torch.compile on CUDA; the decode
  options `vsr1 infer` uses) sampling from one seeded generator, plus the SQR latent rollout continued
  from the generation's cache for --refine-frac of the rows (as the agent loop runs it); HF = transformers
  `generate(do_sample=True)` on the same rows (no SQR: the HF row is the baseline for the text part only).
  With --rollout-dtype bf16 the rollout runs on a bf16 copy of the fp32 master weights, synced before it
  (the sync is timed inside the rollout);
- logprob: the frozen reference's log-probs of the sampled ids (one no-grad forward of the rows,
  lm_head on the sampled positions only; train/grpo_step.sampled_logprobs);
- update: train/grpo_step.GRPOModule forward (log-probs + the differentiable SQR rollout of the
  refined rows) + clipped GRPO loss with the k3 KL + the Gaussian latent policy-gradient term,
  backward and a fused AdamW step on the LLM + merger + SQR (ViT frozen), in micro-batches of
  --micro-batch rows under bf16 autocast (fp32 master weights: what `vsr1 train grpo` runs).
tokens/s/GPU counts every token the step processes once (prompt + sampled, per row) over the whole step
time: the EasyR1-style throughput (peer: ~1,800 tokens/s/GPU for a 3B VLM on an H100). Memory (CUDA):
the peak allocated in each phase (the counter reset at the phase's start; `<phase>_peak_gib`, the largest
over the timed steps), what is resident before the step (`resident_gib`: weights, optimizer state, the
rollout copy) and the run's peak (`peak_gib`). A CUDA OOM is reported with the phase it happened in
(`error`, `oom_phase`) and the run goes on with the next variant. Prints a table; --out writes JSON.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import videosearch_r1  # noqa: E402,F401  (torchvision shim before transformers)
from bench_agent import build_policy, video_inputs  # noqa: E402  (2B config, canonical-layout random inputs)
from videosearch_r1.utils import atomic_write_json  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rows_with_completion(policy, prompt: dict, completion: torch.Tensor, refine_rows: int) -> tuple[dict, torch.Tensor,
                                                                                                       torch.Tensor]:
    """[prompt ; sampled ids] rows, the loss mask on the sampled ids, and refine positions (the last sampled
    id of the first `refine_rows` rows plays the generated <REFINE>)."""
    from videosearch_r1.models.qwen3vl import rope_positions

    b, c = completion.shape
    comp = completion.clone()
    cfg = policy.model.config
    for special in (cfg.video_token_id, cfg.image_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id):
        comp[comp == special] = 7  # random weights sample placeholders; the trainer drops such turns (cost only)
    comp[:refine_rows, -1] = policy.refine_token_id
    ids = torch.cat([prompt["input_ids"], comp], dim=1)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "mm_token_type_ids": torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(comp)], dim=1),
              "pixel_values_videos": prompt["pixel_values_videos"], "video_grid_thw": prompt["video_grid_thw"]}
    inputs["position_ids"] = rope_positions(policy.model.config, inputs)
    mask = torch.zeros_like(ids)
    mask[:, -c:] = 1
    refine = torch.full((b,), -1, dtype=torch.long, device=ids.device)
    refine[:refine_rows] = ids.shape[1] - 1
    return inputs, mask, refine


def rollout_ours(policy, roll, prompt, args, gen):
    """Sync the rollout copy, sample, continue SQR from the generation's cache; -> sampled ids [B, T]."""
    from videosearch_r1.agent.policy import Generation
    from videosearch_r1.agent.sqr import rollout_from_state

    if roll is not policy:
        with torch.no_grad():
            for d, s in zip(roll.model.parameters(), policy.model.parameters()):
                d.copy_(s)
    p = {k: (v.to(roll.dtype) if k == "pixel_values_videos" else v) for k, v in prompt.items()}
    res = roll.generate_ids(p, args.new_tokens, temperature=1.0, top_p=args.top_p, generator=gen, ignore_eos=True,
                            keep_state=True, reserve=args.n_latents)
    n_ref = max(1, round(args.refine_frac * res.ids.shape[0])) if args.refine_frac > 0 else 0
    if n_ref:
        ids = res.ids.tolist()
        saved = roll.refine_token_id
        roll.refine_token_id = ids[0][-1]  # let a sampled id play <REFINE> (cost only)
        g = Generation([], ids, res.n_text.tolist(), [True] * len(ids), p["input_ids"].shape[1], res.state)
        rollout_from_state(roll, g, args.n_latents)
        roll.refine_token_id = saved
    return res.ids


def rollout_hf(policy, prompt, args):
    out = policy.model.generate(**prompt, do_sample=True, temperature=1.0, top_p=args.top_p, top_k=0,
                                max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    return out[:, prompt["input_ids"].shape[1]:]


class Phases:
    """Per-phase peak CUDA memory: `start(name)` resets the peak counter, `stop()` records the peak in GiB
    (None off CUDA); `current` names the running phase (reported when it runs out of memory)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.current, self.peaks = None, {}

    def start(self, name: str) -> None:
        self.current = name
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def stop(self) -> None:
        self.peaks[f"{self.current}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None
        self.current = None


def one_step(policy, roll, ref, module, opt, prompt, args, kind: str, gen, phases: Phases | None = None) -> dict:
    """One GRPO step; seconds and peak memory per phase."""
    from videosearch_r1.train.grpo_loss import gaussian_pg_loss, group_advantages, policy_loss
    from videosearch_r1.train.grpo_step import sampled_logprobs

    dev = args.device
    cuda = dev.startswith("cuda")
    auto = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    phases = phases if phases is not None else Phases(dev)
    sync(dev)
    resident = torch.cuda.memory_allocated() / 2**30 if cuda else None
    t0 = time.perf_counter()
    phases.start("rollout")
    policy.model.eval()
    with torch.no_grad():
        completion = rollout_ours(policy, roll, prompt, args, gen) if kind == "ours" else rollout_hf(roll, prompt, args)
    policy.model.train()
    sync(dev)
    t1 = time.perf_counter()
    phases.stop()
    b = completion.shape[0]
    n_ref = max(1, round(args.refine_frac * b)) if args.refine_frac > 0 else 0
    inputs, mask, refine = rows_with_completion(policy, prompt, completion, n_ref)
    mb = max(1, args.micro_batch)
    chunks = [slice(i, min(i + mb, b)) for i in range(0, b, mb)]
    grid = inputs["video_grid_thw"]
    per_row = int(grid[0].prod())

    def sub(s):
        out = {k: v[s] for k, v in inputs.items() if k not in ("pixel_values_videos", "video_grid_thw", "position_ids")}
        out["pixel_values_videos"] = inputs["pixel_values_videos"][s.start * per_row: s.stop * per_row]
        out["video_grid_thw"] = grid[s]
        out["position_ids"] = inputs["position_ids"][:, s]
        return out
    phases.start("logprob")
    with torch.no_grad(), auto:
        refs = [sampled_logprobs(ref, sub(s), mask[s])[0] for s in chunks]
    sync(dev)
    t2 = time.perf_counter()
    phases.stop()
    phases.start("update")
    adv = group_advantages(torch.randn(b, generator=torch.Generator().manual_seed(0)), args.group).to(dev)
    n_tok = int(mask[:, 1:].sum())
    for s, r in zip(chunks, refs):
        latent = (refine[s] >= 0)
        with auto:
            logp, _, soft = module(sub(s), mask[s], refine[s], latent)
            sel = mask[s][:, 1:].bool()
            full = lambda x: torch.zeros(sel.shape, dtype=x.dtype, device=dev).masked_scatter(sel, x)  # noqa: E731
            loss, _ = policy_loss(full(logp), full(logp.detach()), adv[s], sel, ref_logp=full(r), beta=0.01,
                                  denominator=n_tok)
            if soft is not None:
                action = soft.detach() + 0.05 * torch.randn_like(soft)
                loss = loss + 0.3 * gaussian_pg_loss(action, soft, 0.05, adv[s][latent]) * soft.shape[0] / max(1, n_ref)
        loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync(dev)
    t3 = time.perf_counter()
    phases.stop()
    tokens = int(inputs["attention_mask"].sum())
    return dict(rollout_s=t1 - t0, logprob_s=t2 - t1, update_s=t3 - t2, step_s=t3 - t0, rows=b, tokens=tokens,
                sampled_tokens=int(completion.numel()), tokens_per_s=tokens / (t3 - t0),
                rollout_tokens_per_s=int(completion.numel()) / (t1 - t0), resident_gib=resident, **phases.peaks)


def setup(args):
    from videosearch_r1.models.qwen3vl import prepare_model
    from videosearch_r1.train.grpo import bf16_copy, clone_model
    from videosearch_r1.train.grpo_step import GRPOModule

    dev = args.device
    policy = build_policy(args.smoke, dev, torch.float32)  # fp32 master weights
    prepare_model(policy.model)
    policy.model.model.visual.requires_grad_(False)
    for name, p in policy.model.model.visual.named_parameters():
        if "merger" in name:
            p.requires_grad_(True)
    if args.grad_ckpt:
        policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # copies are made by train/grpo.bf16_copy: a plain deepcopy would keep the fast-step forwards bound
    # to the original modules
    roll = policy if args.rollout_dtype == "fp32" else bf16_copy(policy)
    if hasattr(roll, "set_decode"):
        roll.set_decode()
    ref = clone_model(policy.model, torch.bfloat16 if dev.startswith("cuda") else None).requires_grad_(False).eval()
    module = GRPOModule(policy, args.n_latents, fast=True)
    params = [p for p in list(policy.model.parameters()) + list(policy.sqr.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6, fused=dev.startswith("cuda"))
    return policy, roll, ref, module, opt


def run_variant(policy, roll, ref, module, opt, prompt, args, kind: str) -> dict:
    """One warm-up + args.steps timed steps of `kind`: median seconds, largest per-phase peaks; a CUDA OOM
    gives {"error", "oom_phase"} (the optimizer's gradients dropped, the cache emptied)."""
    cuda = args.device.startswith("cuda")
    gen = torch.Generator(device=args.device).manual_seed(0)
    phases, runs = Phases(args.device), []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run_peak = 0.0
    try:
        for i in range(args.steps + 1):
            r = one_step(policy, roll, ref, module, opt, prompt, args, kind, gen, phases)
            run_peak = max([run_peak] + [v for k, v in r.items() if k.endswith("_peak_gib") and v is not None])
            if i > 0:
                runs.append(r)
    except torch.cuda.OutOfMemoryError:
        opt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return {"variant": kind, "error": "CUDA out of memory", "oom_phase": phases.current,
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    peaks = [k for k in runs[0] if k.endswith("_peak_gib") or k == "resident_gib"]
    med = {k: sorted(x[k] for x in runs)[len(runs) // 2] for k in runs[0] if k not in peaks}
    for k in peaks:  # the largest over the timed steps
        med[k] = max(x[k] for x in runs) if runs[0][k] is not None else None
    return dict(variant=kind, **med, peak_gib=run_peak if cuda else None, prompt_tokens=prompt["input_ids"].shape[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (CPU, about a minute)")
    ap.add_argument("--queries", type=int, default=2, help="queries per step")
    ap.add_argument("--group", type=int, default=8, help="trajectories per query (G)")
    ap.add_argument("--new-tokens", type=int, default=128, help="sampled tokens per turn")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--text-tokens", type=int, default=300, help="prompt text tokens besides the video")
    ap.add_argument("--n-latents", type=int, default=8)
    ap.add_argument("--refine-frac", type=float, default=0.5, help="share of rows that refine (SQR rollout)")
    ap.add_argument("--micro-batch", type=int, default=2, help="rows per forward/backward in the update")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing in the update")
    ap.add_argument("--rollout-dtype", default="auto", choices=["auto", "bf16", "fp32"],
                    help="rollout weights (auto: a synced bf16 copy on CUDA, the fp32 weights on CPU)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up step)")
    ap.add_argument("--variants", default="ours,hf")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda"):  # as every trainer runs: cuDNN attention off (qwen3vl.guard_sdpa_backward)
        from videosearch_r1.models.qwen3vl import guard_sdpa_backward

        guard_sdpa_backward()
    if args.smoke:
        args.frames, args.side, args.text_tokens, args.new_tokens, args.queries, args.group = 4, 64, 20, 8, 1, 4
        args.steps = min(args.steps, 2)
    if args.rollout_dtype == "auto":
        args.rollout_dtype = "bf16" if args.device.startswith("cuda") else "fp32"
    policy, roll, ref, module, opt = setup(args)
    b = args.queries * args.group
    prompt = video_inputs(policy, b, args.frames, args.side, args.text_tokens, tail=[])
    results = []
    for kind in [v for v in args.variants.split(",") if v]:
        row = run_variant(policy, roll, ref, module, opt, prompt, args, kind)
        results.append(row)
        if "error" in row:
            print(f"{kind:5s}: {row['error']} in the {row['oom_phase']} phase", flush=True)
            continue
        print(f"{kind:5s}: step {row['step_s']:8.3f} s = rollout {row['rollout_s']:7.3f} + "
              f"logprob {row['logprob_s']:7.3f}"
              f" + update {row['update_s']:7.3f}  | {row['tokens_per_s']:9.1f} tokens/s/GPU, rollout "
              f"{row['rollout_tokens_per_s']:8.1f} sampled tokens/s, {b} rows x {row['prompt_tokens']} prompt tokens",
              flush=True)
        if row["peak_gib"] is not None:
            print(f"{'':5s}  memory: resident {row['resident_gib']:6.1f} GiB, peak rollout "
                  f"{row['rollout_peak_gib']:6.1f} / logprob {row['logprob_peak_gib']:6.1f} / update "
                  f"{row['update_peak_gib']:6.1f} GiB (run {row['peak_gib']:.1f} GiB)", flush=True)
    if len(results) == 2 and not any("error" in r for r in results):
        print(f"ours vs hf rollouts: step {results[1]['step_s'] / results[0]['step_s']:.2f}x, rollout "
              f"{results[1]['rollout_s'] / results[0]['rollout_s']:.2f}x faster")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in vars(args).items() if k != "out"}
        meta["gpu"] = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        atomic_write_json(args.out, {"args": meta, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
