"""The SQR rollout's N-1 latent steps under grad (SFT / GRPO training), few kernels per step.

    z = grad_steps(policy, keys, values, valid, z1, pos_r, n_latents=8)    # Z [B, N, D], differentiable

Used by sqr.rollout_from_forward (a training forward's own K/V) and by sqr.rollout_latents(cached=True)
with grad (its prefill's K/V). Why a separate step: each latent step runs one position through all
decoder layers, so at batch 1 it is bound by kernel launches, not FLOPs. Measured on CPU at the 2B
layer count (28 layers, 7 steps): the eager step (decode.decode_step on a growing cache) added ~53k ATen
ops to the SFT step (about 270 per layer and step, forward + backward: HF's RMSNorm is ~8 ops, rotary
~10, the two-part attention ~15, and their backward twice that), against ~6.6k for the whole training
forward + backward; at ~20 us per launched op on the GPU that is the ~1 s the H200 showed (1,504 ms
with SQR vs 479 ms without). Here:
- the tail of latent K/V is a fixed [B, KVH, N-1, d] buffer per layer written functionally (torch.where on
  a one-hot column) and masked by a column mask, so every step has the same shapes;
- one step through all layers is a pure function (`_latent_stack` of `_latent_layer`: norm, q/k/v,
  q/k-norm, RoPE, attention over the prefix + tail in one softmax, o_proj, MLP), compiled once per
  process on CUDA when `train.rollout_compile` is on (off by default until measured on a GPU; one
  graph: the prefix length is dynamic, and the first step, whose tail holds no latent yet, runs
  eagerly): inductor fuses the elementwise work forward and backward. Run eagerly it is slower than
  decode_step on a growing cache (H200: 1.66 vs 1.43 s per SFT step), so uncompiled rollouts use that
  (sqr.latent_steps_grad). Eager on CPU, or if compiling fails (one printed message).
  CPU, 28 layers x 7 steps at tiny widths (bench/bench_sqr_grad.py --smoke --cpu-inductor): the
  rollout's ATen ops 58k -> 24k (the matmuls stay: 11 per layer and step forward, twice that backward);
  step 490 ms eager -> 220 ms (plain step without rollout ~90-120 ms). Compiling per layer instead
  (one small graph called 196 times) gave 413 ms: the compiled-call overhead per call counts too.
Numerics are those of decode.DecodeCache.attend (fp32 scores, one softmax over prefix and tail); equal
to the authors' uncached full forwards (tests/test_sqr.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from videosearch_r1.agent.policy import Policy

_COMPILED: dict = {}


def _latent_layer(layer, h, cos, sin, kp, vp, prefix_ok, tk, tv, col, tail_ok):
    """One decoder layer for one new position h [B, 1, H] -> (h, tail keys, tail values).

    kp/vp: the prefix K/V [B, G, L, d] (read only); prefix_ok [B, 1, 1, L] bool; tk/tv: the tail
    [B, G, T, d]; col [1, 1, T, 1] bool: the tail column this position writes; tail_ok [1, 1, 1, T] bool.
    """
    from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb

    attn = layer.self_attn
    b, d = h.shape[0], attn.head_dim
    y = layer.input_layernorm(h)
    q = attn.q_norm(attn.q_proj(y).view(b, 1, -1, d)).transpose(1, 2)  # [B, nh, 1, d]
    k = attn.k_norm(attn.k_proj(y).view(b, 1, -1, d)).transpose(1, 2)  # [B, G, 1, d]
    v = attn.v_proj(y).view(b, 1, -1, d).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    tk = torch.where(col, k.to(tk.dtype), tk)
    tv = torch.where(col, v.to(tv.dtype), tv)
    qg = q.reshape(b, k.shape[1], -1, d).to(kp.dtype)  # heads g * n_rep + r share KV head g (repeat_kv order)
    s_pre = torch.matmul(qg, kp.transpose(-1, -2)).float() * attn.scaling
    s_tail = torch.matmul(qg, tk.transpose(-1, -2)).float() * attn.scaling
    scores = torch.cat([s_pre.masked_fill(~prefix_ok, float("-inf")), s_tail.masked_fill(~tail_ok, float("-inf"))], -1)
    probs = scores.softmax(-1).to(vp.dtype)
    length = kp.shape[2]
    o = torch.matmul(probs[..., :length], vp) + torch.matmul(probs[..., length:], tv)  # [B, G, R, d]
    h = h + attn.o_proj(o.reshape(b, 1, -1).to(h.dtype))
    return h + layer.mlp(layer.post_attention_layernorm(h)), tk, tv


def _latent_stack(layers, h, cos, sin, keys, values, prefix_ok, tks, tvs, col, tail_ok):
    """One latent position through every layer: -> (h, tail keys per layer, tail values per layer)."""
    out_k, out_v = [], []
    for i, layer in enumerate(layers):
        h, tk, tv = _latent_layer(layer, h, cos, sin, keys[i], values[i], prefix_ok, tks[i], tvs[i], col, tail_ok)
        out_k.append(tk)
        out_v.append(tv)
    return h, out_k, out_v


def _stack_fn(backend: str | None):
    """The step through all layers: eager (None) or torch.compile'd with `backend` (one per process and
    backend; the prefix length is marked dynamic by the caller, so prompts of any length share it)."""
    if backend is None or _COMPILED.get("failed"):
        return _latent_stack
    if backend not in _COMPILED:
        _COMPILED[backend] = torch.compile(_latent_stack, backend=backend)
    return _COMPILED[backend]


def grad_backend(policy: "Policy", compile: bool = True) -> str | None:
    """"inductor" for a policy on CUDA when `compile` (the trainers' rollout_compile), else None (eager).
    Not the policy's decode_options: a trained policy is often built on the CPU and moved afterwards."""
    return "inductor" if compile and policy.device.type == "cuda" else None


def grad_steps(policy: "Policy", keys: list, values: list, valid: torch.Tensor, z1: torch.Tensor,
               pos_r: torch.Tensor, n_latents: int, backend: str | None = "auto") -> torch.Tensor:
    """Z [B, N, D]: z1 [B, D], then N-1 steps feeding to_policy(z_k) at position pos_r + k (all mRoPE axes)
    through every layer, attending to the prefix keys/values (per layer [B, G, L, d], columns `valid`
    [B, L]) and to the earlier latents. Differentiable in everything. backend: a torch.compile backend,
    None (eager) or "auto" (grad_backend(policy))."""
    lm = policy.model.model.language_model
    steps = n_latents - 1
    if steps <= 0:
        return z1[:, None]
    backend = grad_backend(policy) if backend == "auto" else backend
    compiled = _stack_fn(backend)
    if compiled is not _latent_stack:
        for t in list(keys) + list(values):
            torch._dynamo.maybe_mark_dynamic(t, 2)  # one graph for every prompt length
        torch._dynamo.maybe_mark_dynamic(valid, 1)
    b, dev = z1.shape[0], z1.device
    g, d = keys[0].shape[1], keys[0].shape[3]
    tks = [keys[0].new_zeros(b, g, steps, d) for _ in keys]
    tvs = [values[0].new_zeros(b, g, steps, d) for _ in keys]
    prefix_ok = valid.bool()[:, None, None, :]
    cols = torch.arange(steps, device=dev)
    layers = list(lm.layers)
    zs = [z1]
    for k in range(steps):
        x = policy.sqr.to_policy(zs[-1]).to(policy.dtype)[:, None]
        pos = (pos_r + k + 1).view(1, b, 1).expand(3, b, 1)
        cos, sin = lm.rotary_emb(x, pos)
        args = (layers, x, cos, sin, keys, values, prefix_ok, tks, tvs, (cols == k)[None, None, :, None],
                (cols <= k)[None, None, None, :])
        fn = _latent_stack if k == 0 else compiled  # step 1's tail holds no latent (no grad): eager, no 2nd graph
        try:
            h, tks, tvs = fn(*args)
        except Exception as e:  # noqa: BLE001  (a backend failure: the pure step reruns eagerly)
            if fn is _latent_stack or isinstance(e, torch.OutOfMemoryError):
                raise  # an OOM is the step's, not the compiler's: train.on_oom decides, compiling stays on
            _COMPILED["failed"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(f"[sqr] torch.compile of the latent step under grad failed, running it eagerly "
                  f"(rollout_compile=False skips the attempt): {_COMPILED['failed']}", flush=True)
            compiled = _latent_stack
            h, tks, tvs = compiled(*args)
        zs.append(policy.sqr(lm.norm(h)[:, 0]))
    return torch.stack(zs, dim=1)
