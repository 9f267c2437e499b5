"""Numerics of the agent bench: the SQR rollout paths and the decode loop in bf16 against a float32
copy of the model, per latent, so rounding noise is told apart from bugs (see docs/benchmarks.md).
Used by bench/bench_agent.py (`--sections numerics`); not run on its own."""
from __future__ import annotations

import copy
import gc
from contextlib import contextmanager
from dataclasses import replace

import torch

import videosearch_r1  # noqa: F401  (torchvision shim before transformers)

def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float().to(a.device)
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def per_latent(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """rel err of each latent k of Z [B, N, D]."""
    return [float(f"{rel_err(a[:, k], b[:, k]):.3g}") for k in range(a.shape[1])]


@contextmanager
def attention_impl(model, impl: str):
    """Temporarily run the HF forward with another attention implementation (e.g. "eager")."""
    old = model.config._attn_implementation
    model.set_attn_implementation(impl)
    try:
        yield
    finally:
        model.set_attn_implementation(old)


def fp32_reference(policy):
    """A float32 copy of the policy's model (the bf16 weights upcast exactly), same SQR modules."""
    from videosearch_r1.agent.policy import Policy

    model32 = copy.deepcopy(policy.model).float()
    ref = Policy(model32, None, policy.sqr, policy.sqr_config, refine_token_id=policy.refine_token_id)
    ref.decode_options = replace(policy.decode_options, compile=False)  # a second compile would cost minutes
    return ref


def _turn(pol, inputs, g: int, n: int):
    """Our decode loop for g greedy tokens, keeping the state (cache + per-token hidden states)."""
    from videosearch_r1.agent.decode import generate_tokens

    return generate_tokens(pol.model, inputs, pol.positions(inputs), g, pol.eos_token_ids, pol.pad_token_id,
                           options=pol.decode_options, keep_state=True, reserve=n, ignore_eos=True)


def _hf_hidden(pol, inputs) -> torch.Tensor:
    """Post-norm hidden states [B, L, H] of one plain HF forward."""
    from videosearch_r1.agent.decode import _forward_kwargs

    return pol.model.model(**_forward_kwargs(pol.model, inputs), position_ids=pol.positions(inputs),
                           use_cache=False).last_hidden_state


def _with_tokens(inputs: dict, ids: list[int]) -> dict:
    """inputs (batch 1) + generated text ids appended."""
    out = dict(inputs)
    extra = torch.tensor([ids], device=inputs["input_ids"].device)
    out["input_ids"] = torch.cat([inputs["input_ids"], extra], 1)
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], 1)
    out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], 1)
    return out


def bench_numerics(policy, args, frames, side, text_tokens, video_inputs) -> list[dict]:
    """Noise or bug? SQR latents and decode hidden states of every path, bench dtype vs a float32 copy.

    Prompt: a batch-1 verification prompt plus g greedy tokens of our decode loop; the last one plays
    <REFINE>. A bug in a fast path shows in float32 (cached / from-generation vs uncached, against the
    float32 kernel floor: uncached with HF eager attention); bf16 noise shows equally in every path.
    One pass per --numerics-scales entry: the text tower's weight matrices scaled by it (powers of 2,
    so undoing it is exact). At the checkpoint's initializer_range (scale 1) the random rollout is
    chaotic (a latent's error grows ~2x per step: bf16 noise ends near 1); at 0.5 it is not.
    """
    prompt = video_inputs(policy, 1, frames, side, text_tokens, tail=[])
    passes = []
    for scale in args.numerics_scales:
        with scaled_text_tower(policy.model, scale):
            passes.append(_numerics_pass(policy, args, prompt, scale))
    return passes


@contextmanager
def scaled_text_tower(model, scale: float):
    """Multiply the text decoder layers' weight matrices by `scale` (a power of 2: exact) and undo it;
    float32 matmuls and convolutions without TF32 meanwhile (a true float32 reference)."""
    mats = [p for p in model.model.language_model.layers.parameters() if p.ndim == 2]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        torch._foreach_mul_(mats, scale)
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_mul_(mats, 1 / scale)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _numerics_pass(policy, args, prompt: dict, scale: float) -> dict:
    from videosearch_r1.agent.decode import release_pool

    n, g = args.n_latents, args.numerics_tokens
    prompt32 = {k: v.float() if v.is_floating_point() else v for k, v in prompt.items()}
    ref = fp32_reference(policy)
    saved = policy.refine_token_id
    init = policy.model.config.text_config.initializer_range
    out: dict = dict(text_tower_scale=scale, text_tower_std=scale * init, initializer_range=init,
                     prompt_tokens=prompt["input_ids"].shape[1], generated_tokens=g, n_latents=n,
                     dtype=str(policy.dtype).replace("torch.", ""))
    try:
        with torch.no_grad():
            out["decode"], res, res32 = _decode_numerics(policy, ref, prompt, prompt32, g, n)
            out["sqr"] = _sqr_numerics(policy, ref, prompt, prompt32, res, res32, n)
        out["verdict"] = numerics_verdict(out)
    finally:
        policy.refine_token_id = saved
        release_pool(policy.model)
        release_pool(ref.model)
        del ref
        gc.collect()  # the float32 copy is held in reference cycles (decode states); free it before the next pass
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print_numerics(out)
    return out


def _decode_numerics(policy, ref, prompt, prompt32, g: int, n: int):
    """Our decode loop (g greedy tokens, state kept) in both dtypes; its hidden states vs HF forwards."""
    from videosearch_r1.agent.decode import prefill

    res, res32 = _turn(policy, prompt, g, n), _turn(ref, prompt32, g, n)
    ids, ids32 = res.ids[0].tolist(), res32.ids[0].tolist()
    plen = prompt["input_ids"].shape[1]
    hf = _hf_hidden(policy, _with_tokens(prompt, ids))[0]
    hf32 = _hf_hidden(ref, _with_tokens(prompt32, ids))[0]
    own32 = hf32 if ids32 == ids else _hf_hidden(ref, _with_tokens(prompt32, ids32))[0]
    seed = prefill(policy.model, prompt, policy.positions(prompt)).post[0]
    cols = slice(plen, plen + g)
    stats = dict(greedy_ids_equal_fp32=ids32 == ids, distinct_generated_tokens=len(set(ids)),
                 prefill_hidden_vs_fp32=rel_err(seed, hf32[plen - 1]),
                 steps_hidden_vs_hf=rel_err(res.state.post[0], hf[cols]),
                 steps_hidden_vs_fp32=rel_err(res.state.post[0], hf32[cols]),
                 hf_hidden_vs_fp32=rel_err(hf[cols], hf32[cols]),
                 fp32_steps_hidden_vs_hf_fp32=rel_err(res32.state.post[0], own32[cols]))
    return stats, res, res32


def _eager_rollout(pol, inputs, r, n):
    """Uncached latents with HF eager attention (another kernel: the noise floor); None if unavailable."""
    from videosearch_r1.agent.sqr import rollout_latents

    try:
        with attention_impl(pol.model, "eager"):
            return rollout_latents(pol, inputs, r, n, cached=False)
    except Exception as e:  # an older transformers without set_attn_implementation
        print(f"numerics: eager attention unavailable ({type(e).__name__}: {str(e)[:200]})")
        return None


def _sqr_numerics(policy, ref, prompt, prompt32, res, res32, n: int) -> dict:
    """Latents of every rollout path in the bench dtype and in float32 (consumes both generation states)."""
    from videosearch_r1.agent.policy import Generation
    from videosearch_r1.agent.sqr import rollout_from_state, rollout_latents

    ids, ids32 = res.ids[0].tolist(), res32.ids[0].tolist()
    plen, g = prompt["input_ids"].shape[1], len(ids)
    full, full32 = _with_tokens(prompt, ids), _with_tokens(prompt32, ids)
    r = torch.tensor([plen + g - 1], device=policy.device)
    policy.refine_token_id = ref.refine_token_id = ids[-1]  # its last occurrence is the last column
    low = {"uncached": rollout_latents(policy, full, r, n, cached=False),
           "cached": rollout_latents(policy, full, r, n, cached=True),
           "from_generation": rollout_from_state(policy, Generation([], [ids], [g], [True], plen, res.state), n)[0]}
    chosen = policy.decode_options
    policy.decode_options = replace(chosen, cuda_graph=False, compile=False, attention="sdpa")
    try:
        low["cached_eager_sdpa_steps"] = rollout_latents(policy, full, r, n, cached=True)
    finally:
        policy.decode_options = chosen
    if (z := _eager_rollout(policy, full, r, n)) is not None:
        low["uncached_eager_attention"] = z
    d = rollout_latents(ref, full32, r, n, cached=False)
    hi = {"cached": rollout_latents(ref, full32, r, n, cached=True)}
    if (z := _eager_rollout(ref, full32, r, n)) is not None:
        hi["uncached_eager_attention"] = z
    d_gen = d
    if ids32 != ids:  # fp32 greedy took other tokens: compare its generation path on its own sequence
        ref.refine_token_id = ids32[-1]
        d_gen = rollout_latents(ref, _with_tokens(prompt32, ids32), r, n, cached=False)
    z_gen = rollout_from_state(ref, Generation([], [ids32], [g], [True], plen, res32.state), n)[0]
    fp32 = {k: rel_err(v, d) for k, v in hi.items()} | {"from_generation": rel_err(z_gen, d_gen)}
    fp32_per = {k: per_latent(v, d) for k, v in hi.items()} | {"from_generation": per_latent(z_gen, d_gen)}
    emb = policy.model.get_input_embeddings().weight
    return dict(
        vs_fp32={k: rel_err(v, d) for k, v in low.items()},
        vs_fp32_per_latent={k: per_latent(v, d) for k, v in low.items()},
        vs_uncached_same_dtype={k: rel_err(v, low["uncached"]) for k, v in low.items() if k != "uncached"},
        fp32_vs_uncached=fp32, fp32_vs_uncached_per_latent=fp32_per,
        error_growth_per_latent=growth(per_latent(low["uncached"], d)),
        latent_norms=[round(x, 4) for x in d[0].norm(dim=-1).tolist()],
        token_embedding_rms=emb.float().pow(2).mean().sqrt().item(),
        latent_input_rms=policy.sqr.to_policy(d[0]).float().pow(2).mean(-1).sqrt().mean().item())


def growth(errs: list[float]) -> float | None:
    """Geometric-mean factor by which a latent's error exceeds the previous one's (before saturation)."""
    pts = [e for e in errs if 0 < e < 0.3]
    if len(pts) < 2:
        return None
    return round((pts[-1] / pts[0]) ** (1 / (len(pts) - 1)), 3)


def numerics_verdict(out: dict) -> str:
    """BUG when a fast path disagrees in float32 beyond the float32 kernel floor; else how the bench
    dtype's errors of the fast paths compare with the uncached path's over the first half of the latents."""
    sq, dec = out["sqr"], out["decode"]
    floor32 = sq["fp32_vs_uncached"].get("uncached_eager_attention", 0.0)
    tol = max(10 * floor32, 1e-3)
    bugs = [f"{k} {v:.1e}" for k, v in sq["fp32_vs_uncached"].items() if k != "uncached_eager_attention" and v > tol]
    if dec["fp32_steps_hidden_vs_hf_fp32"] > 1e-3:
        bugs.append(f"decode steps vs HF {dec['fp32_steps_hidden_vs_hf_fp32']:.1e}")
    if bugs:
        return f"BUG: in float32, vs uncached (kernel floor {floor32:.1e}): " + "; ".join(bugs)
    per = sq["vs_fp32_per_latent"]
    half = max(1, len(per["uncached"]) // 2)
    early = {k: sum(v[:half]) / half for k, v in per.items()}
    ref = max(early["uncached"], early.get("uncached_eager_attention", 0.0))
    worse = [k for k in ("cached", "from_generation", "cached_eager_sdpa_steps") if early[k] > 2 * ref + 1e-3]
    fast32 = max(v for k, v in sq["fp32_vs_uncached"].items() if k != "uncached_eager_attention")
    head = f"float32: fast paths agree with uncached ({fast32:.1e}, kernel floor {floor32:.1e}); "
    if worse:
        return head + (f"{out['dtype']}: {', '.join(worse)} err vs fp32 over the first {half} latents exceeds 2x the "
                       f"uncached one ({ref:.2e}): suspect a kernel of the fast step (compile / graph / attention)")
    return head + (f"{out['dtype']}: every path is equally far from fp32 (noise; uncached {sq['vs_fp32']['uncached']:.2e}, "
                   f"error x{sq['error_growth_per_latent']} per latent)")


def print_numerics(out: dict) -> None:
    sq, dec = out["sqr"], out["decode"]
    print(f"numerics ({out['dtype']} vs a float32 copy; text tower weights x{out['text_tower_scale']} (std "
          f"{out['text_tower_std']:.3g}); prompt {out['prompt_tokens']} + {out['generated_tokens']} generated, "
          f"N={out['n_latents']}; rel err, per latent):")
    rows = [(f"decode {k}", v, []) for k, v in dec.items()]
    rows += [(f"sqr {k} vs fp32", sq["vs_fp32"][k], sq["vs_fp32_per_latent"][k]) for k in sq["vs_fp32"]]
    rows += [(f"sqr fp32 {k} vs uncached", v, sq["fp32_vs_uncached_per_latent"][k])
             for k, v in sq["fp32_vs_uncached"].items()]
    rows += [(f"sqr {k} vs uncached ({out['dtype']})", v, []) for k, v in sq["vs_uncached_same_dtype"].items()]
    for name, v, per in rows:
        v = str(v) if isinstance(v, (bool, int)) else f"{v:.2e}"
        print(f"  {name:<48}{v:>9}   {' '.join(f'{x:.1e}' for x in per)}")
    print(f"  latent norms {sq['latent_norms']}; latent input rms {sq['latent_input_rms']:.3f} vs token "
          f"embedding rms {sq['token_embedding_rms']:.4f}; error growth per latent x{sq['error_growth_per_latent']}")
    print(f"  verdict: {out['verdict']}")


# ------------------------------------------------------------------------------------ main
