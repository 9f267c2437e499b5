"""Bench: the policy's verification turn and the SQR latent rollout at Qwen3-VL-2B shapes (random bf16 weights).

    python bench/bench_agent.py --device cuda --out bench_agent.json      # GPU: 2B shapes, 64 frames at 448x448
    python bench/bench_agent.py --smoke                                    # tiny shapes on CPU, under a minute
    python bench/bench_agent.py --device cpu --dtype bfloat16 --sections numerics --frames 4 --side 128 \
        --text-tokens 40                                                   # 2B numerics on CPU (~10 min)

Sections (--sections, all by default; each prints its wall-clock mark):
- turns: verification turn = prefill (vision tower + ~6.8k-token prompt) + 128 greedy tokens. First the
  path `vsr1 infer` runs: `Policy.generate_ids` with the decode options `AgentConfig()`'s defaults give on
  this device (Policy.set_decode; CUDA: matmul + CUDA graph + torch.compile), then the other decode
  variants at batch 1 for comparison (a warning if one beats the default), then batches 1, 4, 16, 32 on
  the default path (best queries/s wins). Every later section also runs the default path;
- hf: THE baseline: HF `generate`, batch 1, same prompt and token count as the turn rows, decode ms/token
  counted like ours ((turn - prefill) / tokens), and how many of its greedy ids ours reproduces;
- sqr: SQR rollout, N latents: uncached (the authors' 1 + (N-1) full VLM forwards), cached (prefill up
  to <REFINE> + N-1 single-vector steps on the model's pooled static cache and captured graph; also
  with a new cache + capture per call, and with eager steps), and from the generation's own cache;
- numerics: noise or bug. Latents of every rollout path and the decode loop's hidden states in the
  bench dtype against a float32 copy of the model, the float32 fast paths against float32 uncached
  (a bug shows there), and the kernel floor (HF eager attention instead of SDPA). One pass per
  --numerics-scales entry (text-tower weights scaled; 1 = the checkpoint's initializer_range 0.02,
  where the random rollout is chaotic: a latent's bf16 error roughly doubles per step).
Inputs are built directly in the processor's canonical layout (`<t seconds><|vision_start|>pads<|vision_end|>`
per 2-frame patch, random text ids, random pixel patches): this bench needs only torch + transformers
(the GPU image has no trl/PyAV/faiss) and our package on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from videosearch_r1.utils import atomic_write_json  # noqa: E402

import videosearch_r1  # noqa: E402,F401  (torchvision shim before transformers)
from videosearch_r1.config import AgentConfig  # noqa: E402
from agent_numerics import bench_numerics  # noqa: E402  (bench/ is on sys.path when run as a script)

IDS_2B = dict(image=151655, video=151656, vision_start=151652, vision_end=151653, eos=151645, pad=151643,
              refine=151669)
IDS_SMOKE = dict(image=500, video=501, vision_start=502, vision_end=503, eos=504, pad=505, refine=506)


# ------------------------------------------------------------------------------------ model + inputs
def model_config(smoke: bool):
    from transformers import Qwen3VLConfig

    ids = IDS_SMOKE if smoke else IDS_2B
    if smoke:
        text = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, mrope=[2, 3, 3])
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[0, 1], out_hidden_size=64)
    else:
        text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                    num_attention_heads=16, num_key_value_heads=8, head_dim=128, mrope=[24, 20, 20])
        vision = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, num_position_embeddings=2304,
                      deepstack_visual_indexes=[5, 11, 17], out_hidden_size=2048)
    mrope = text.pop("mrope")
    return Qwen3VLConfig(
        text_config=dict(**text, max_position_embeddings=262144, rms_norm_eps=1e-6, pad_token_id=ids["pad"],
                         eos_token_id=ids["eos"], rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                                                                   "mrope_section": mrope, "mrope_interleaved": True}),
        vision_config=dict(**vision, patch_size=16, temporal_patch_size=2, spatial_merge_size=2, in_channels=3),
        image_token_id=ids["image"], video_token_id=ids["video"], vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"], tie_word_embeddings=True, pad_token_id=ids["pad"],
        eos_token_id=ids["eos"])


def build_policy(smoke: bool, device: str, dtype: torch.dtype, seed: int = 0):
    from transformers import Qwen3VLForConditionalGeneration

    from videosearch_r1.agent.policy import Policy, SQRConfig, SQRModules

    cfg = model_config(smoke)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(cfg, attn_implementation="sdpa", dtype=dtype).eval()
    model.generation_config.eos_token_id = cfg.text_config.eos_token_id
    model.generation_config.pad_token_id = cfg.text_config.pad_token_id
    h = cfg.text_config.hidden_size
    sqr_cfg = SQRConfig(hidden_size=h, latent_dim=h, embedder_hidden=h, zero_init_readout=False)
    sqr = SQRModules(sqr_cfg, seed=seed).to(device)
    ids = IDS_SMOKE if smoke else IDS_2B
    return Policy(model, None, sqr, sqr_cfg, refine_token_id=ids["refine"])


def video_inputs(policy, batch: int, frames: int, side: int, text_tokens: int, tail: list[int], seed: int = 0) -> dict:
    """`batch` identical-layout rows: prompt text, per 2-frame patch `<t s>` (6 ids) + vision_start +
    pads + vision_end, more text, then `tail` ids; random text ids and pixel patches."""
    cfg = policy.model.config
    ids = IDS_SMOKE if cfg.text_config.vocab_size == 512 else IDS_2B
    g = torch.Generator().manual_seed(seed)
    grid_t, grid_hw = frames // 2, side // 16
    per_patch = (grid_hw // 2) ** 2
    vocab_text = min(cfg.text_config.vocab_size, 151000) - 20
    rows, types = [], []
    for _ in range(batch):
        seq, ty = torch.randint(0, vocab_text, (text_tokens,), generator=g).tolist(), [0] * text_tokens
        for _ in range(grid_t):
            stamp = torch.randint(0, vocab_text, (6,), generator=g).tolist()
            seq += stamp + [ids["vision_start"]] + [ids["video"]] * per_patch + [ids["vision_end"]]
            ty += [0] * 7 + [2] * per_patch + [0]
        seq += torch.randint(0, vocab_text, (12,), generator=g).tolist() + list(tail)
        ty += [0] * (12 + len(tail))
        rows.append(seq)
        types.append(ty)
    dev = policy.device
    patch_dim = 3 * 2 * 16 * 16
    pixels = torch.randn(batch * grid_t * grid_hw * grid_hw, patch_dim, generator=g).to(dev, policy.dtype)
    input_ids = torch.tensor(rows, device=dev)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": torch.tensor(types, device=dev), "pixel_values_videos": pixels,
            "video_grid_thw": torch.tensor([[grid_t, grid_hw, grid_hw]] * batch, device=dev)}


# ------------------------------------------------------------------------------------ timing
WARMUP = 1  # runs before timing (0 in --smoke)
SECTIONS = ("turns", "hf", "sqr", "numerics")


def timed(fn, device: str, reps: int, warmup: int | None = None):
    """(median seconds, last result) of fn() over `reps` runs after `warmup` runs."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = None
    for _ in range(WARMUP if warmup is None else warmup):
        out = fn()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


# ------------------------------------------------------------------------------------ benches
def variants(args, default) -> list:
    """Decode-step variants compared at batch 1 besides the default (CUDA graphs need a GPU; a second
    compiled variant would cost minutes of compile, so only the default is compiled)."""
    from videosearch_r1.agent.decode import DecodeOptions

    graph = args.device.startswith("cuda") and not args.no_graph
    out = [DecodeOptions(cuda_graph=False, attention="sdpa"), DecodeOptions(cuda_graph=False, attention="matmul")]
    if graph:
        out += [DecodeOptions(cuda_graph=True, attention="sdpa"), DecodeOptions(cuda_graph=True, attention="matmul")]
    return [o for o in out if o != default]


def _name(opt) -> str:
    return opt.name


def run_turn(policy, args, b, frames, side, text_tokens, opt=None, reps: int | None = None) -> dict:
    """One verification turn (prefill + args.new_tokens greedy tokens) at batch b: timings. opt=None: through
    the Policy API with the policy's own decode options (the `vsr1 infer` path); else generate_tokens(opt)."""
    from videosearch_r1.agent.decode import generate_tokens, prefill

    inputs = video_inputs(policy, b, frames, side, text_tokens, tail=[])
    pos = policy.positions(inputs)
    reps = args.reps if reps is None else reps
    if opt is None:
        label = f"{policy.decode_options.name} (Policy default)"
        run = lambda: policy.generate_ids(inputs, args.new_tokens, ignore_eos=True)  # noqa: E731
    else:
        label = opt.name
        run = lambda: generate_tokens(policy.model, inputs, pos, args.new_tokens, policy.eos_token_ids,  # noqa: E731
                                      policy.pad_token_id, options=opt, ignore_eos=True)
    with torch.no_grad():
        t_pre, _ = timed(lambda: prefill(policy.model, inputs, pos).post, args.device, reps)
        t_turn, res = timed(run, args.device, reps)
    steps = res.ids.shape[1]
    decode = max(t_turn - t_pre, 1e-9)
    gbps = step_bytes(policy, b, inputs["input_ids"].shape[1] + steps) * steps / decode / 1e9
    row = dict(batch=b, decode=label, policy_api=opt is None, prompt_tokens=inputs["input_ids"].shape[1], new_tokens=steps,
               prefill_s=t_pre, turn_s=t_turn, decode_ms_per_step=1000 * decode / steps,
               queries_per_s=b / t_turn, decode_tokens_per_s=b * steps / decode, decode_gb_per_s=gbps)
    print(f"turn  batch {b:3d} {label:<38}: prefill {t_pre:7.3f} s  turn {t_turn:7.3f} s  "
          f"decode {1000 * decode / steps:7.2f} ms/step ({gbps:6.0f} GB/s)  {b / t_turn:7.2f} queries/s", flush=True)
    return row


def step_bytes(policy, b: int, columns: int) -> int:
    """Bytes one decode step must read at least: text weights (lm_head once; embedding rows are
    negligible) + the K/V it attends over (the static buffer, `columns` rounded up to 64)."""
    lm = policy.model.model.language_model
    c = lm.config
    elem = policy.model.lm_head.weight.element_size()
    weights = sum(p.numel() for n, p in lm.named_parameters() if "embed_tokens" not in n) * elem
    weights += policy.model.lm_head.weight.numel() * elem
    cap = -(-columns // 64) * 64
    return weights + 2 * c.num_hidden_layers * b * c.num_key_value_heads * cap * c.head_dim * elem


def bench_turns(policy, args, frames, side, text_tokens) -> tuple[list[dict], list[dict]]:
    """The default path at batch 1 (through the Policy API), the other variants at batch 1 for comparison,
    then the batch sweep on the default path. The policy's decode options are never changed here."""
    default = policy.decode_options
    first = run_turn(policy, args, 1, frames, side, text_tokens)
    by_variant = [first]
    for opt in variants(args, default):
        try:
            slow = args.device.startswith("cuda") and not (opt.cuda_graph or opt.compile)
            reps = 1 if slow else None  # the ungraphed eager steps are ~10x slower: one timed run is enough
            by_variant.append(run_turn(policy, args, 1, frames, side, text_tokens, opt, reps))
        except Exception as e:  # a variant that fails is reported, not fatal
            print(f"variant {_name(opt)} failed: {type(e).__name__}: {str(e)[:300]}")
    best = min(by_variant, key=lambda r: r["turn_s"])
    if best is not first and best["turn_s"] < 0.95 * first["turn_s"]:
        print(f"WARNING: variant {best['decode']} beats the default path {first['decode']} "
              f"({best['turn_s']:.3f} vs {first['turn_s']:.3f} s per turn): revisit decode.decode_options_for")
    assert policy.decode_options == default
    rows = [first]
    for b in args.batches:
        if b == 1:
            continue
        try:
            reps = 1 if b >= 16 and args.device.startswith("cuda") else None  # seconds per run already
            rows.append(run_turn(policy, args, b, frames, side, text_tokens, None, reps))
        except RuntimeError as e:
            if not is_oom(e):
                raise
            print(f"batch {b}: out of memory, stopping the sweep")
            torch.cuda.empty_cache()
            break
    return by_variant, rows


def bench_hf(policy, args, frames, side, text_tokens) -> dict:
    """THE baseline: HF generate at batch 1 on the turn rows' prompt and token count (args.new_tokens),
    decode ms/token = (turn - prefill) / tokens as for our rows (prefill: one HF forward of the prompt, timed
    here); one warm-up call of 2 tokens first. Also how far its greedy ids agree with the default path's."""
    from videosearch_r1.agent.decode import prefill

    inputs = video_inputs(policy, 1, frames, side, text_tokens, tail=[])
    m = args.new_tokens
    gen = lambda k: policy.model.generate(**inputs, max_new_tokens=k, min_new_tokens=k, do_sample=False)  # noqa: E731
    with torch.no_grad():
        gen(2)
        t_pre, _ = timed(lambda: prefill(policy.model, inputs, policy.positions(inputs)).post, args.device, args.reps)
        t_hf, out = timed(lambda: gen(m), args.device, reps=1, warmup=0)
        ours = policy.generate_ids(inputs, m, ignore_eos=True).ids[0].tolist()
    hf = out[0, inputs["input_ids"].shape[1]:].tolist()
    agree = next((i for i, (a, c) in enumerate(zip(hf, ours)) if a != c), min(len(hf), len(ours)))
    ms = 1000 * max(t_hf - t_pre, 1e-9) / max(len(hf), 1)
    print(f"hf generate batch 1 (the baseline): turn {t_hf:.3f} s, prefill {t_pre:.3f} s, decode {ms:.2f} ms/token "
          f"over {len(hf)} tokens; greedy ids agree with {policy.decode_options.name} for {agree}/{len(hf)} "
          f"({len(set(hf))} distinct: random weights; tests/test_decode_path.py checks varied ids on CPU)")
    return dict(batch=1, turn_s=t_hf, prefill_s=t_pre, decode_ms_per_token=ms, greedy_prefix_agree=agree,
                new_tokens=len(hf), distinct_tokens=len(set(hf)))


def bench_sqr(policy, args, frames, side, text_tokens) -> list[dict]:
    from videosearch_r1.agent.decode import generate_tokens, release_pool
    from videosearch_r1.agent.policy import Generation
    from videosearch_r1.agent.sqr import rollout_from_state, rollout_latents

    n = args.n_latents
    out = []
    for b in args.sqr_batches:
        completion = torch.randint(0, 400, (24,), generator=torch.Generator().manual_seed(1)).tolist()
        inputs = video_inputs(policy, b, frames, side, text_tokens, tail=completion + [policy.refine_token_id])
        r = torch.full((b,), inputs["input_ids"].shape[1] - 1, device=policy.device)
        chosen = policy.decode_options
        with torch.no_grad():
            t_unc, z_unc = timed(lambda: rollout_latents(policy, inputs, r, n, cached=False), args.device, args.reps)
            # cached: the pooled static cache + captured step of the previous call (DecodeOptions.reuse)
            t_cac, z_cac = timed(lambda: rollout_latents(policy, inputs, r, n, cached=True), args.device, args.reps)
            try:
                policy.decode_options = replace(chosen, reuse=False)  # a new cache + graph capture per call
                t_fresh, _ = timed(lambda: rollout_latents(policy, inputs, r, n, cached=True), args.device, args.reps)
                policy.decode_options = replace(chosen, cuda_graph=False, compile=False)
                t_eager, _ = timed(lambda: rollout_latents(policy, inputs, r, n, cached=True), args.device, args.reps)
            finally:
                policy.decode_options = chosen
                release_pool(policy.model)
        # from the generation's cache: fresh state per run (the rollout consumes it); only the rollout is timed
        prompt = video_inputs(policy, b, frames, side, text_tokens, tail=[])
        pos = policy.positions(prompt)
        saved = policy.refine_token_id
        times = []
        for _ in range(args.reps + 1):
            res = generate_tokens(policy.model, prompt, pos, 32, policy.eos_token_ids, policy.pad_token_id,
                                  options=policy.decode_options, keep_state=True, reserve=n, ignore_eos=True)
            ids = res.ids.tolist()
            policy.refine_token_id = ids[0][20]  # let a generated id play <REFINE> (timing only)
            gen = Generation([], ids, res.n_text.tolist(), [True] * b, prompt["input_ids"].shape[1], res.state)
            t, _ = timed(lambda: rollout_from_state(policy, gen, n), args.device, reps=1, warmup=0)
            times.append(t)
        policy.refine_token_id = saved
        t_gen = statistics.median(times[1:])
        rel = ((z_cac - z_unc).norm() / z_unc.norm().clamp_min(1e-12)).item()
        row = dict(batch=b, n_latents=n, prompt_tokens=inputs["input_ids"].shape[1], uncached_s=t_unc,
                   cached_s=t_cac, cached_fresh_cache_s=t_fresh, cached_eager_steps_s=t_eager, from_generation_s=t_gen,
                   speedup_cached=t_unc / t_cac, speedup_from_generation=t_unc / t_gen,
                   rel_err_cached_vs_uncached=rel)
        print(f"sqr   batch {b:3d}, N={n}: uncached {t_unc:7.3f} s  cached {t_cac:7.3f} s ({t_unc / t_cac:5.1f}x; "
              f"new cache+capture per call {t_fresh:.3f} s, eager steps {t_eager:.3f} s)  from generation "
              f"{t_gen:7.4f} s ({t_unc / t_gen:6.1f}x)  rel err {rel:.2e} (see numerics)")
        out.append(row)
    return out


# ------------------------------------------------------------------------------------ numerics
def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (under a minute)")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                    help="model dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    ap.add_argument("--batches", default="1,4,16,32", help="verification-turn batch sizes to sweep")
    ap.add_argument("--sqr-batches", default="1", help="batch sizes for the SQR rollout comparison")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--numerics-tokens", type=int, default=16, help="greedy tokens before <REFINE> (numerics)")
    ap.add_argument("--numerics-scales", default="1,0.5",
                    help="numerics passes: text-tower weight scales (powers of 2; 1 = the checkpoint's init std)")
    ap.add_argument("--n-latents", type=int, default=8)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--side", type=int, default=448, help="frame side in pixels (448^2 = the reference's cap)")
    ap.add_argument("--text-tokens", type=int, default=280, help="system prompt + query tokens")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-graph", action="store_true", help="never capture CUDA graphs (as agent.cuda_graph=false)")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="no torch.compile'd decode step (as agent.decode_compile=false; its compile is not timed)")
    ap.add_argument("--no-hf", action="store_true", help="skip the HF generate baseline")
    args = ap.parse_args(argv)
    args.compile = args.compile and args.device.startswith("cuda")
    if args.smoke:
        global WARMUP
        WARMUP = 0
        args.device = "cpu" if args.device.startswith("cuda") and not torch.cuda.is_available() else args.device
        args.frames, args.side, args.text_tokens = 4, 64, 24
        args.new_tokens, args.reps = min(args.new_tokens, 16), 1
        args.batches = "1,2"
    args.batches = [int(x) for x in str(args.batches).split(",") if x]
    args.sqr_batches = [int(x) for x in str(args.sqr_batches).split(",") if x]
    args.numerics_scales = [float(x) for x in str(args.numerics_scales).split(",") if x]
    if any(x <= 0 or abs(math.log2(x) - round(math.log2(x))) > 1e-9 for x in args.numerics_scales):
        ap.error("--numerics-scales: powers of 2 only (scaling the weights must be exactly undoable)")
    args.sections = [x for x in args.sections.split(",") if x]
    if set(args.sections) - set(SECTIONS):
        ap.error(f"--sections: unknown {sorted(set(args.sections) - set(SECTIONS))}; known {SECTIONS}")
    args.dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(
        args.dtype, torch.float32 if args.device == "cpu" else torch.bfloat16)
    return args


def main(argv: list[str] | None = None) -> int:
    import transformers

    args = parse_args(argv)
    t0 = time.perf_counter()
    elapsed = {}

    def mark(name: str) -> None:
        elapsed[name] = round(time.perf_counter() - t0, 1)
        print(f"[{elapsed[name]:7.1f} s] {name} done", flush=True)

    policy = build_policy(args.smoke, args.device, args.dtype)
    a = AgentConfig()  # the decode path `vsr1 infer` runs by default (infer.load_policy makes the same call)
    policy.set_decode(a.decode_attention, a.decode_compile and args.compile, a.cuda_graph and not args.no_graph)
    n_params = sum(p.numel() for p in policy.model.parameters())
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"model: {n_params / 1e9:.3f} B params, {args.dtype}, {device_name}; decode path {policy.decode_options.name}")
    mark("build")
    geometry = (args.frames, args.side, args.text_tokens)
    decode_variants, turns, hf, sqr, numerics = [], [], None, [], []
    if "turns" in args.sections:
        decode_variants, turns = bench_turns(policy, args, *geometry)
        mark("turns")
    if "hf" in args.sections and not args.no_hf:
        hf = bench_hf(policy, args, *geometry)
        mark("hf")
    if "sqr" in args.sections:
        sqr = bench_sqr(policy, args, *geometry)
        mark("sqr")
    if "numerics" in args.sections:
        numerics = bench_numerics(policy, args, *geometry, video_inputs)
        mark("numerics")
    best = max(turns, key=lambda r: r["queries_per_s"]) if turns else None

    print(f"\n{'what':<44}{'value':>14}")
    if turns:
        print(f"{'prompt tokens':<44}{turns[0]['prompt_tokens']:>14d}")
        print(f"{'decode path (vsr1 infer default)':<44}{turns[0]['decode']:>34}")
        print(f"{'turn, batch 1 (s) / decode (ms/token)':<44}{turns[0]['turn_s']:>7.3f} /{turns[0]['decode_ms_per_step']:>5.2f}")
        print(f"{'best batch / queries per s':<44}{best['batch']:>7d} /{best['queries_per_s']:>5.2f}")
    if hf:
        print(f"{'HF generate, batch 1 (decode ms/token)':<44}{hf['decode_ms_per_token']:>14.2f}")
        if turns:
            print(f"{'  default path speed-up over HF (decode)':<44}"
                  f"{hf['decode_ms_per_token'] / turns[0]['decode_ms_per_step']:>13.1f}x")
    for row in sqr:
        print(f"{'SQR N=%d batch %d: uncached / cached (s)' % (row['n_latents'], row['batch']):<44}"
              f"{row['uncached_s']:>6.3f} /{row['cached_s']:>6.3f}")
        print(f"{'  speedup cached / from generation':<44}{row['speedup_cached']:>6.1f}x/{row['speedup_from_generation']:>5.0f}x")
    for row in numerics:
        print(f"numerics, text tower x{row['text_tower_scale']:g}: {row['verdict']}")
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
    result = dict(bench="bench_agent", date=time.strftime("%Y-%m-%d %H:%M"), device=device_name,
                  torch=torch.__version__, transformers=transformers.__version__, smoke=args.smoke,
                  dtype=str(args.dtype), params=n_params, frames=args.frames, side=args.side,
                  decode_path=policy.decode_options.name,
                  decode_variants=decode_variants, turns=turns, best_batch=best, hf_generate=hf, sqr=sqr,
                  numerics=numerics, elapsed_s=elapsed)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, result)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
