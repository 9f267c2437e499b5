"""Soft Query Refinement: the Coconut-style latent rollout of the policy, seeded at a generated <REFINE>.

    gen = policy.generate(queries, clips, keep_state=True)          # verification turn
    sq = refine_from_generation(policy, gen, n_latents=8)           # no second prefill
    qvec = engine.embed_refined(queries, sq.soft)                    # soft tokens [B, N, He]

    Z = rollout_latents(policy, inputs, refine_positions, n_latents=8, cached=True)   # any sequences
    out = model.model(**kw, use_cache=True)                          # a training forward (SFT, GRPO) ...
    Z = rollout_from_forward(policy, out, out.last_hidden_state, pos, mask, refine_pos, rows, 8)  # ... its own cache

Definition (reference.md §2.1): z1 = readout(h at the last <REFINE>); for k = 1..N-1 the policy reads
to_policy(z_k) as its next input embedding at position pos(<REFINE>) + k (all three mRoPE axes),
and z_{k+1} = readout(post-norm hidden of that latent). Tokens after <REFINE> never matter (causal
attention, the read is at the newest latent), so:
- cached (ours): one prefill up to and including <REFINE> (with the video), then N-1 single-vector
  decode steps on its KV cache (agent/decode.py). Without grad the static cache and its captured
  CUDA graph are pooled on the model and reused by the next call of the same batch
  (DecodeOptions.reuse; decode.release_pool frees them). With grad the steps are agent/sqr_grad.py's
  (the prefix K/V as they are, a fixed-size tail, one compiled layer step on CUDA: few kernels per step).
- uncached (the authors' design): for each k a full VLM forward (vision tower included) over
  [prompt ; z_1..z_k] with explicit position ids: 1 + (N-1) full passes.
- from a training forward (the trainers, under grad): the forward's own KV cache and hidden states seed
  the rollout; only the N-1 latent steps run (one set of prompt activations, not two).
- from a generation: the verification turn's cache already holds <REFINE> and its hidden state, so
  only the N-1 latent steps run (columns after <REFINE> are masked out; positions are explicit).
The seed reads the post-norm hidden state (ours), or the pre-norm one for the authors' checkpoints
(`sqr_config.seed_hidden == "pre_norm"`, reference §2.1 step 6); rollout steps always read post-norm.
Rows without a <REFINE> get all-zero latents and has_refine False.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from videosearch_r1.agent.decode import DecodeCache, _StepRunner, decode_step, pooled_prefill, prefill
from videosearch_r1.agent.sqr_grad import grad_backend, grad_steps

if TYPE_CHECKING:
    from videosearch_r1.agent.policy import Generation, Policy


class SoftQuery(NamedTuple):
    latents: torch.Tensor  # [B, N, D] fp32
    soft: torch.Tensor  # [B, N, He] fp32: to_embedder(latents), the embedder's soft tokens
    has_refine: torch.Tensor  # [B] bool (cpu)


def find_refine_positions(input_ids: torch.Tensor, refine_id: int, start: int | torch.Tensor = 0,
                          attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """[B] column of the LAST <REFINE> at or after `start` (int or [B]), -1 where there is none.

    Pass the completion's first column as `start` so the literal <REFINE> of the system prompt never
    counts (reference §9.4).
    """
    b, length = input_ids.shape
    cols = torch.arange(length, device=input_ids.device).expand(b, length)
    start = torch.as_tensor(start, device=input_ids.device).reshape(-1, 1)
    hit = (input_ids == refine_id) & (cols >= start)
    if attention_mask is not None:
        hit &= attention_mask.bool()
    return torch.where(hit.any(1), (cols * hit).amax(1), torch.full((b,), -1, device=input_ids.device))


def _seed_hidden(policy: "Policy", post: torch.Tensor, pre: torch.Tensor | None) -> torch.Tensor:
    return pre if policy.sqr_config.seed_hidden == "pre_norm" else post


def _prepare(policy: "Policy", inputs: dict, refine_positions: torch.Tensor):
    """Cut the batch after the last <REFINE> of any row and mask each row's tokens after its own."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    b, length = ids.shape
    r = torch.as_tensor(refine_positions, device=ids.device).long().reshape(-1)
    if r.shape[0] != b:
        raise ValueError(f"refine_positions has {r.shape[0]} rows, the batch {b}")
    has = r >= 0
    rows = torch.arange(b, device=ids.device)
    bad = has & ((r >= length) | (ids[rows, r.clamp(0, length - 1)] != policy.refine_token_id)
                 | ~mask[rows, r.clamp(0, length - 1)])
    if bool(bad.any()):
        raise ValueError(f"refine_positions do not point at a real <REFINE> token in rows "
                         f"{rows[bad].tolist()} (positions {r[bad].tolist()})")
    r_eff = torch.where(has, r, r[has].max() if bool(has.any()) else torch.full_like(r, length - 1))
    width = int(r_eff.max()) + 1
    cols = torch.arange(width, device=ids.device)
    cut = {k: v for k, v in inputs.items()}
    cut["input_ids"] = ids[:, :width]
    cut["attention_mask"] = (mask[:, :width] & (cols[None, :] <= r_eff[:, None])).long()
    if inputs.get("mm_token_type_ids") is not None:
        cut["mm_token_type_ids"] = inputs["mm_token_type_ids"][:, :width]
    video_id = policy.model.config.video_token_id
    if int((ids == video_id).sum()) != int((cut["input_ids"] == video_id).sum()):
        raise ValueError("a <REFINE> position lies before the video: the rollout prefix would cut it")
    positions = policy.positions(cut)
    return cut, positions, r_eff, has


def _steps(policy: "Policy", step, z1: torch.Tensor, pos_r: torch.Tensor, n_latents: int) -> torch.Tensor:
    """z1 [B, D] -> Z [B, N, D]: N-1 steps feeding to_policy(z_k) at position pos_r + k."""
    zs = [z1]
    for k in range(1, n_latents):
        x = policy.sqr.to_policy(zs[-1]).to(policy.dtype)[:, None]
        post = step(x, pos_r + k)
        zs.append(policy.sqr(post))
    return torch.stack(zs, dim=1)


def rollout_latents(policy: "Policy", inputs: dict, refine_positions: torch.Tensor, n_latents: int = 8,
                    cached: bool = True) -> torch.Tensor:
    """Latents Z [B, N, D] (fp32) for sequences holding a <REFINE> at `refine_positions` [B] (-1: none).

    inputs: a processor batch (prompt + completion, any padding). Differentiable when grad is enabled
    (both paths); `cached=False` runs the authors' 1 + (N-1) full forwards.
    """
    if n_latents < 1:
        raise ValueError("n_latents must be >= 1")
    cut, positions, r_eff, has = _prepare(policy, inputs, refine_positions)
    pos_r = positions[0, torch.arange(r_eff.shape[0], device=r_eff.device), r_eff]
    want_pre = policy.sqr_config.seed_hidden == "pre_norm"
    if cached and not torch.is_grad_enabled():  # a static cache, the policy's decode options (CUDA graph on GPU)
        opts, columns = policy.decode_options, cut["input_ids"].shape[1] + n_latents - 1
        if opts.reuse:  # the model's pooled cache + captured step: no allocation or capture per call
            pf, runner = pooled_prefill(policy.model, cut, positions, columns, opts, gather_at=r_eff,
                                        want_pre=want_pre)
        else:
            pf = prefill(policy.model, cut, positions, gather_at=r_eff, capacity=columns, want_pre=want_pre)
            runner = _StepRunner(policy.model, pf.cache, opts)
        z = _steps(policy, lambda x, pos: runner(x, pos)[1], policy.sqr(_seed_hidden(policy, pf.post, pf.pre)),
                   pos_r, n_latents)
    elif cached:  # grad: eager decode steps on a growing cache (or the compiled fixed-tail step, see below)
        pf = prefill(policy.model, cut, positions, gather_at=r_eff, want_pre=want_pre)
        z = latent_steps_grad(policy, pf.cache.keys, pf.cache.values, pf.cache.valid,
                              policy.sqr(_seed_hidden(policy, pf.post, pf.pre)), pos_r, n_latents)
    else:
        z = _uncached(policy, cut, positions, r_eff, pos_r, n_latents, want_pre)
    return z * has[:, None, None].to(z.dtype)


EAGER_STEP = "decode"  # the uncompiled latent step under grad: "decode" (decode_step on a growing cache) | "fixed_tail"


def latent_steps_grad(policy: "Policy", keys: list, values: list, valid: torch.Tensor, z1: torch.Tensor,
                      pos_r: torch.Tensor, n_latents: int, compile: bool = False) -> torch.Tensor:
    """Z [B, N, D] with grad from prefix keys/values (per layer [B, G, L, d], columns `valid` [B, L]).

    compile on CUDA: sqr_grad's fixed-tail step through torch.compile (one graph for all layers). Otherwise
    decode_step on a growing DecodeCache: measured on one H200 at 2B shapes (bench_sqr_grad, 2026-12-01)
    it is the faster eager step (SFT step with SQR 1.43 s vs 1.66 s for the fixed-tail step run eagerly).
    Both equal the authors' uncached forwards (tests/test_sqr.py)."""
    backend = grad_backend(policy, compile)
    if backend is not None or EAGER_STEP == "fixed_tail":
        return grad_steps(policy, keys, values, valid, z1, pos_r, n_latents, backend=backend)
    cache = DecodeCache(keys, values, valid, valid.shape[1], static=False)

    def step(x, pos):
        post = decode_step(policy.model, cache, x, pos)[1]
        cache.advance()
        return post
    return _steps(policy, step, z1, pos_r, n_latents)


def shares_forward_cache(policy, cached: bool = True) -> bool:
    """Whether a training forward can hand its own KV cache to the rollout (`rollout_from_forward`): the
    cached rollout, no gradient checkpointing (then HF's forward returns no cache), a post-norm seed (the
    forward exposes only the post-norm hidden states)."""
    ckpt = bool(getattr(policy.model.model.language_model, "gradient_checkpointing", False))
    return bool(cached) and not ckpt and policy.sqr_config.seed_hidden == "post_norm"


def rollout_from_forward(policy: "Policy", out, hidden: torch.Tensor, positions: torch.Tensor,
                         attention_mask: torch.Tensor, refine_pos: torch.Tensor, rows: torch.Tensor,
                         n_latents: int = 8, compile: bool = False) -> torch.Tensor:
    """Latents [R, N, D] of batch `rows` [R] continued from a training forward's own KV cache: no second prefill.

    out: `model.model(..., use_cache=True)` of the whole batch (its HF cache is consumed); hidden: its
    post-norm last_hidden_state [B, L, H]; positions: the forward's mRoPE ids [3, B, L]; refine_pos [B]:
    each row's <REFINE> column (rows in `rows` must have one). Keys after a row's <REFINE> (and padding)
    are masked out and latent k sits at pos(<REFINE>) + k, so this equals `rollout_latents(..., cached=True)`
    on those rows (tests/test_train_sft.py, tests/test_sqr.py). Differentiable. The forward's K/V are
    used as they are (no per-layer copy: the rollout runs over the whole batch and keeps `rows`); only
    keys and values at padding are zeroed, where the batch has padding. compile: the latent layer step through
    torch.compile on CUDA (agent/sqr_grad.py).
    """
    from videosearch_r1.agent.decode import _take_layer_kv

    if n_latents < 1:
        raise ValueError("n_latents must be >= 1")
    hf = next(out[k] for k in ("cache", "past_key_values") if k in out.keys())
    if hf is None:
        raise ValueError("rollout_from_forward needs the forward run with use_cache=True (and no gradient checkpointing)")
    b, length = attention_mask.shape
    dev = attention_mask.device
    mask = attention_mask.bool()
    rows = torch.as_tensor(rows, device=dev).long().reshape(-1)
    r = torch.full((b,), length - 1, dtype=torch.long, device=dev)  # rows not asked for: any valid column
    r[rows] = torch.as_tensor(refine_pos, device=dev).long().reshape(-1)[rows]
    if bool(((r < 0) | (r >= length)).any()):
        raise ValueError(f"rows {rows.tolist()} need a <REFINE> column in [0, {length}), got {r[rows].tolist()}")
    valid = mask & (torch.arange(length, device=dev)[None, :] <= r[:, None])
    padded = not bool(mask.all())
    keys, values = [], []
    for i in range(len(policy.model.model.language_model.layers)):
        k, v = _take_layer_kv(hf, i)
        pad = ~mask[:, None, :, None]  # padding K/V may be non-finite: 0 * NaN is NaN (values forward, keys in dq)
        keys.append(k.masked_fill(pad, 0) if padded else k)
        values.append(v.masked_fill(pad, 0) if padded else v)
    every = torch.arange(b, device=dev)
    z = latent_steps_grad(policy, keys, values, valid, policy.sqr(hidden[every, r]), positions[0, every, r],
                          n_latents, compile)
    return z[rows]


def _uncached(policy, cut, positions, r_eff, pos_r, n_latents, want_pre) -> torch.Tensor:
    from videosearch_r1.agent.decode import _forward_kwargs

    model = policy.model
    emb = model.get_input_embeddings()(cut["input_ids"])
    kw = _forward_kwargs(model, {k: v for k, v in cut.items() if k != "input_ids"})
    base_mask, base_types = kw.pop("attention_mask"), kw.pop("mm_token_type_ids", None)
    lm = model.model.language_model
    captured = {}
    hook = lm.norm.register_forward_hook(lambda m, a, o: captured.__setitem__("pre", a[0])) if want_pre else None
    try:
        out = model.model(inputs_embeds=emb, attention_mask=base_mask, position_ids=positions, **kw,
                          **({} if base_types is None else {"mm_token_type_ids": base_types}))
    finally:
        if hook is not None:
            hook.remove()
    rows = torch.arange(emb.shape[0], device=emb.device)
    seed = captured["pre"][rows, r_eff] if want_pre else out.last_hidden_state[rows, r_eff]
    zs = [policy.sqr(seed)]
    b = emb.shape[0]
    for k in range(1, n_latents):
        lat = policy.sqr.to_policy(torch.stack(zs, dim=1)).to(emb.dtype)  # [B, k, H]: all previous latents
        steps = torch.arange(1, k + 1, device=emb.device)
        lat_pos = (pos_r[:, None] + steps[None, :]).unsqueeze(0).expand(3, b, k)
        extra = {} if base_types is None else {"mm_token_type_ids": torch.cat(
            [base_types, base_types.new_zeros(b, k)], dim=1)}
        out = model.model(inputs_embeds=torch.cat([emb, lat], dim=1),
                          attention_mask=torch.cat([base_mask, base_mask.new_ones(b, k)], dim=1),
                          position_ids=torch.cat([positions, lat_pos], dim=2), **kw, **extra)
        zs.append(policy.sqr(out.last_hidden_state[:, -1]))
    return torch.stack(zs, dim=1)


@torch.no_grad()
def rollout_from_state(policy: "Policy", gen: "Generation", n_latents: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Continue from a `generate(..., keep_state=True)` turn: (Z [B, N, D], has_refine [B] bool).

    Consumes the state (its cache is rewritten). Seeds at each row's last generated <REFINE>.
    """
    state = gen.state
    if state is None:
        raise ValueError("rollout_from_state needs policy.generate(..., keep_state=True)")
    cache = state.cache
    b = cache.valid.shape[0]
    if cache.length + n_latents - 1 > cache.capacity:
        raise ValueError(f"cache has {cache.capacity - cache.length} free columns, the rollout needs "
                         f"{n_latents - 1}: raise generate(reserve=...)")
    j = []
    for row, n in zip(gen.ids, gen.n_tokens):
        hits = [i for i, t in enumerate(row[:n]) if t == policy.refine_token_id]
        j.append(hits[-1] if hits else -1)
    has = torch.tensor([x >= 0 for x in j])
    jj = torch.tensor([max(x, 0) for x in j], device=cache.valid.device)
    rows = torch.arange(b, device=jj.device)
    hidden = state.pre if policy.sqr_config.seed_hidden == "pre_norm" else state.post
    z1 = policy.sqr(hidden[rows, jj])
    cols = torch.arange(cache.capacity, device=jj.device)
    cache.valid &= cols[None, :] <= (state.prompt_len + jj)[:, None]  # forget everything after <REFINE>
    z = _steps(policy, lambda x, pos: state.runner(x, pos)[1], z1, state.first_pos + jj, n_latents)
    return z * has.to(z.device)[:, None, None].float(), has


def refine_from_generation(policy: "Policy", gen: "Generation", n_latents: int = 8) -> SoftQuery:
    """Latents and the embedder's soft tokens for a generated turn (rows without <REFINE>: zeros)."""
    z, has = rollout_from_state(policy, gen, n_latents)
    with torch.no_grad():
        soft = policy.soft_tokens(z) * has.to(z.device)[:, None, None].float()
    return SoftQuery(z, soft, has)
