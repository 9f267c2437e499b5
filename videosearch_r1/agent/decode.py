"""Fast decoding for the Qwen3-VL policy: one HF prefill, then our own single-position decode step over
a static KV cache (CUDA-graph captured on GPU). Used by `Policy.generate` and the SQR latent rollout.

    state = prefill(model, inputs, positions, gather_at=None, capacity=L + 256)   # HF forward, KV copied
    out = generate_tokens(model, inputs, positions, max_new_tokens=256, eos_ids=[...], pad_id=0)

Why: HF `generate` costs ~96 ms/token at 2B shapes on an H100 (per-step Python, dynamic cache, mask
rebuilds; docs/benchmarks.md, the one baseline) against a ~1.4 ms memory floor. Here one decode step is:
embedding -> 28 x (RMSNorm, q/k/v, q/k-norm, 1-D RoPE, KV write at a device-side column index, attention
over the whole static buffer under a key mask) -> norm -> lm_head, with no host sync. `DecodeOptions`
picks how it runs: CUDA graph (captured once per call, replayed per token), the attention kernel (masked
SDPA, or two GEMMs + softmax), and optionally torch.compile (one compiled step per process; the cache
length is marked dynamic, so prompts of any length reuse it; if compiling fails, steps run eagerly).
`decode_options_for(device)` is the path Policy and `vsr1 infer` use: matmul + graph + compile on CUDA
(3.4 ms/token in the bench), eager SDPA on CPU. `pooled_prefill` keeps one static cache + its captured
graph on the model for the next call (the SQR rollout's N-1 steps then cost only graph replays, no
allocation or capture). `text_forward`, `static_cache` and `copy_prompt_kv` (the forward with its pre-norm
capture, the cache set-up, the K/V copy) are shared with the bucketed prefill (agent/prefill.py).
bench/bench_agent.py measures the variants and checks their numerics against a float32 copy;
tests/test_decode_path.py checks the default path's greedy ids equal HF generate's (varied ids),
tests/test_sqr.py the rollout paths.

Layout facts the step relies on (checked against transformers' Qwen3VLTextModel):
- Inputs are LEFT padded, so every row writes the same buffer column at each step; padding columns
  stay masked out through `valid` [B, capacity].
- After the prompt, every new position (text token or SQR latent) is text-like: the same position on
  all three mRoPE axes, so mRoPE reduces to 1-D RoPE at `pos`; positions continue from the prompt's
  max position + 1 (what HF's rope_deltas give).
- GQA without repeating K/V: the `n_rep` query heads of a KV head are laid out as the query-length
  axis of one SDPA call ([B, kv_heads, n_rep, d] against [B, kv_heads, L, d]); with one new position
  no causal mask is needed inside a group.
- Deepstack visual features only touch visual positions, all inside the prefill.
With grad enabled (SFT through the rollout) the cache grows by concatenation instead (autograd-safe).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

import videosearch_r1  # noqa: F401  (torchvision shim before transformers)


# ------------------------------------------------------------------------------------ KV cache
class DecodeCache:
    """Per-layer keys/values [B, KVH, capacity, d] + key mask `valid` [B, capacity].

    static (no grad): fixed buffers written in place at the device-side column `col` [1] (graph-safe).
    growing (grad): the prefill's keys/values stay as they are and each step's k, v go to a small per-layer
    tail (concatenated, so autograd sees no in-place writes); attention is one softmax over both parts
    (`attend`). Concatenating onto the prefix instead copied the whole prefix per step and layer and kept
    every copy for backward: at 2B shapes, 6.3 GB per 6.9k-token row for 8 latents (the GRPO bench ran out
    of 139 GB at 16 rows; the SFT step with SQR took 3.2x the step without).
    """

    def __init__(self, keys: list, values: list, valid: torch.Tensor, length: int, static: bool):
        self.keys, self.values, self.valid = keys, values, valid
        self.length = length  # host-side: columns written so far (prefill + steps)
        self.static = static
        self.col = torch.tensor([length], dtype=torch.long, device=valid.device)  # next column (device)
        self.tail_keys: list = [None] * len(keys)  # growing caches: the steps' k, v per layer [B, KVH, steps, d]
        self.tail_values: list = [None] * len(values)

    @classmethod
    def empty(cls, model, batch: int, capacity: int) -> "DecodeCache":
        """A static cache of zeros sized for `model`'s text tower (fill it with `prefill(..., into=)`)."""
        lm = model.model.language_model
        c, w = lm.config, lm.embed_tokens.weight
        shape = (batch, c.num_key_value_heads, capacity, c.head_dim)
        n = c.num_hidden_layers
        keys = [torch.zeros(shape, dtype=w.dtype, device=w.device) for _ in range(n)]
        values = [torch.zeros(shape, dtype=w.dtype, device=w.device) for _ in range(n)]
        return cls(keys, values, torch.zeros(batch, capacity, dtype=torch.bool, device=w.device), 0, True)

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Static caches: write one position's k, v [B, KVH, 1, d] at `col`; return the layer's full K, V."""
        if not self.static:
            raise RuntimeError("a growing cache appends through attend() (prefix + tail)")
        self.keys[layer].index_copy_(2, self.col, k)
        self.values[layer].index_copy_(2, self.col, v)
        return self.keys[layer], self.values[layer]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
               how: str) -> torch.Tensor:
        """Add this position's k, v to `layer` and attend q [B, G, R, d] to every open column -> [B, G, R, d]."""
        if self.static:
            keys, values = self.append(layer, k, v)
            return _attend(q, keys, values, self.valid[:, None, None, :], scale, how)
        tk, tv = self.tail_keys[layer], self.tail_values[layer]
        tk = k if tk is None else torch.cat([tk, k], dim=2)
        tv = v if tv is None else torch.cat([tv, v], dim=2)
        self.tail_keys[layer], self.tail_values[layer] = tk, tv
        kp, vp = self.keys[layer], self.values[layer]
        lp = kp.shape[2]
        prefix = (torch.matmul(q, kp.transpose(-1, -2)).float() * scale).masked_fill(
            ~self.valid[:, None, None, :lp], float("-inf"))
        scores = torch.cat([prefix, torch.matmul(q, tk.transpose(-1, -2)).float() * scale], dim=-1)
        probs = scores.softmax(-1).to(vp.dtype)
        return torch.matmul(probs[..., :lp], vp) + torch.matmul(probs[..., lp:], tv)

    def open_column(self) -> None:
        """Mark the column about to be written as attendable (before the step's attention)."""
        if self.static:
            self.valid.index_fill_(1, self.col, True)
        else:
            self.valid = torch.cat([self.valid, self.valid.new_ones(self.valid.shape[0], 1)], dim=1)

    def advance(self) -> None:
        """After a step: move to the next column (device add for static caches; no host sync)."""
        self.length += 1
        if self.static:
            if self.length > self.capacity:
                raise RuntimeError(f"decode cache full ({self.capacity} columns)")
            self.col.add_(1)


# ------------------------------------------------------------------------------------ HF prefill
def _forward_kwargs(model, inputs: dict) -> dict:
    """The processor outputs model.model.forward accepts (mm_token_type_ids is new in recent versions)."""
    names = set(inspect.signature(model.model.forward).parameters)
    keys = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "pixel_values",
            "image_grid_thw", "mm_token_type_ids", "inputs_embeds")
    return {k: inputs[k] for k in keys if k in names and inputs.get(k) is not None}


def _take_layer_kv(hf_cache, i: int):
    """Layer i's (keys, values) from an HF DynamicCache, dropping the cache's own references so each
    layer's memory is freed as soon as it is copied (peak: one extra layer, not a second cache)."""
    if hasattr(hf_cache, "layers"):
        layer = hf_cache.layers[i]
        kv = layer.keys, layer.values
        layer.keys = layer.values = None
        return kv
    return hf_cache.key_cache[i], hf_cache.value_cache[i]  # older transformers


class Prefill(NamedTuple):
    cache: DecodeCache
    post: torch.Tensor  # [B, H] final-norm hidden at `gather_at` (model dtype)
    pre: torch.Tensor | None  # [B, H] last decoder layer output before the final norm (if asked)


def text_forward(model, want_pre: bool, **kwargs):
    """model.model(**kwargs, use_cache=True) -> (output, its HF cache, the final norm's input or None).
    The pre-norm hidden states are caught by a hook on the final norm (only when asked)."""
    lm = model.model.language_model
    captured = {}
    hook = lm.norm.register_forward_hook(lambda mod, args, out: captured.__setitem__("pre", args[0])) \
        if want_pre else None
    try:
        out = model.model(**kwargs, use_cache=True)
    finally:
        if hook is not None:
            hook.remove()
    hf_cache = next(out[k] for k in ("cache", "past_key_values") if k in out.keys())  # 5.24 / 5.17 name
    return out, hf_cache, captured.get("pre")


def static_cache(model, mask: torch.Tensor, capacity: int | None = None,
                 into: DecodeCache | None = None) -> DecodeCache:
    """The static cache a prefill of `mask` [B, L] fills: a new one of >= `capacity` columns (rounded up),
    or `into` (same batch, >= L columns; its tensors keep their addresses, so a CUDA graph captured on it
    stays valid) cleared of an earlier use. Its key mask is `mask` and its length L."""
    b, length = mask.shape
    if into is None:
        into = DecodeCache.empty(model, b, round_capacity(max(int(capacity or length), length)))
    else:
        if not into.static or into.valid.shape[0] != b or into.capacity < length:
            raise ValueError(f"prefill into a cache of {into.valid.shape[0]} rows x {into.capacity} columns "
                             f"(static={into.static}): the batch needs {b} x {length}")
        for t in into.keys + into.values:
            t.zero_()  # stale columns of an earlier use
        into.valid.zero_()
    into.valid[:, :length] = mask.bool()
    into.length = length
    into.col.fill_(length)
    return into


def copy_prompt_kv(cache: DecodeCache, hf_cache, mask: torch.Tensor, rows: torch.Tensor | None = None,
                   lo: int = 0) -> None:
    """Layer by layer, an HF forward's K/V [R, KVH, W, d] into a static cache's rows `rows` (None: all) at
    columns lo .. lo + W, padding (mask [R, W] false) zeroed. Each HF layer is freed once copied."""
    pads = ~mask.bool()[:, None, :, None]
    padded = bool(pads.any())
    hi = lo + mask.shape[1]
    for i in range(len(cache.keys)):
        k, v = _take_layer_kv(hf_cache, i)
        for buf, src in ((cache.keys[i], k), (cache.values[i], v)):
            src = src.masked_fill(pads, 0) if padded else src
            if rows is None:
                buf[:, :, lo:hi] = src
            else:
                buf[rows, :, lo:hi] = src


def prefill(model, inputs: dict, positions: torch.Tensor, gather_at: torch.Tensor | None = None,
            capacity: int | None = None, want_pre: bool = False, into: DecodeCache | None = None) -> Prefill:
    """One full VLM forward (vision tower + text) with HF, its KV copied into a DecodeCache.

    inputs: processor batch (left padded; `inputs_embeds` may replace `input_ids`); positions:
    mRoPE ids [3, B, L]; gather_at: [B] column whose hidden state to return (default: the last).
    capacity: total cache columns (>= L) for a static cache; ignored when grad is enabled.
    into: an existing static cache (same batch, >= L columns) rewritten in place instead of a new one
    (pooled_prefill: its tensors keep their addresses, so a CUDA graph captured on it stays valid).
    """
    mask = inputs["attention_mask"].bool()
    b, length = mask.shape
    out, hf_cache, pre = text_forward(model, want_pre, **_forward_kwargs(model, inputs), position_ids=positions)
    rows = torch.arange(b, device=mask.device)
    idx = torch.full((b,), length - 1, device=mask.device) if gather_at is None else gather_at.to(mask.device)
    post = out.last_hidden_state[rows, idx]
    pre = pre[rows, idx] if want_pre else None
    if not torch.is_grad_enabled():  # static cache: fixed buffers written in place
        cache = static_cache(model, mask, capacity, into)
        copy_prompt_kv(cache, hf_cache, mask)
        del hf_cache, out
        return Prefill(cache, post, pre)
    keys, values = [], []  # grad: a growing cache (autograd-safe)
    for i in range(len(model.model.language_model.layers)):
        k, v = _take_layer_kv(hf_cache, i)
        keys.append(k.masked_fill(~mask[:, None, :, None], 0))
        values.append(v.masked_fill(~mask[:, None, :, None], 0))
    del hf_cache, out
    return Prefill(DecodeCache(keys, values, mask.clone(), length, False), post, pre)


def round_capacity(columns: int, multiple: int = 64) -> int:
    """Static cache columns: rounded up (aligned rows suit the SDPA kernels)."""
    return -(-int(columns) // multiple) * multiple


# ------------------------------------------------------------------------------------ one step
@dataclass(frozen=True)
class DecodeOptions:
    """How decode steps run (bench/bench_agent.py measures the combinations on the GPU)."""

    cuda_graph: bool = True  # capture the step once per call as a CUDA graph (static cache on CUDA only)
    attention: str = "sdpa"  # "sdpa" (masked scaled_dot_product_attention) | "matmul" (2 GEMMs + softmax)
    compile: bool = False  # torch.compile the step (fuses its ~60 small kernels per layer) before capture
    reuse: bool = True  # SQR rollouts keep their static cache + captured step on the model (see pooled_prefill)

    def __post_init__(self):
        if self.attention not in ATTENTION:
            raise ValueError(f"DecodeOptions.attention must be 'sdpa' or 'matmul', got {self.attention!r}")

    @property
    def name(self) -> str:
        """e.g. "matmul+graph+compile" (the label the benchmarks print)."""
        return f"{self.attention}{'+graph' if self.cuda_graph else ''}{'+compile' if self.compile else ''}"


ATTENTION = ("sdpa", "matmul")


def decode_options_for(device, attention: str = "auto", compile: bool = True, cuda_graph: bool = True,
                       reuse: bool = True) -> DecodeOptions:
    """The decode path for `device` (what Policy uses, and `vsr1 infer` through agent.decode_attention /
    agent.decode_compile / agent.cuda_graph). CUDA: matmul attention + CUDA graph + torch.compile, the
    fastest correct combination in bench/bench_agent.py; "auto" attention picks matmul there (inside a
    graph, masked SDPA for one query position was slower). CPU: eager steps with SDPA (graphs are CUDA-only;
    compile and graph flags are ignored off CUDA)."""
    cuda = torch.device(device).type == "cuda"
    if attention == "auto":
        attention = "matmul" if cuda else "sdpa"
    if attention not in ATTENTION:
        raise ValueError(f"decode attention must be 'auto', 'sdpa' or 'matmul', got {attention!r}")
    return DecodeOptions(cuda_graph=bool(cuda_graph) and cuda, attention=attention, compile=bool(compile) and cuda,
                         reuse=reuse)


def _attend(q, keys, values, key_mask, scale, how: str):
    """q [B, G, R, d] against keys/values [B, G, L, d] under key_mask [B, 1, 1, L] -> [B, G, R, d]."""
    if how == "sdpa":
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=key_mask, scale=scale)
    scores = torch.matmul(q, keys.transpose(-1, -2)).float() * scale
    probs = scores.masked_fill(~key_mask, float("-inf")).softmax(-1).to(values.dtype)
    return torch.matmul(probs, values)


def decode_step(model, cache: DecodeCache, x: torch.Tensor, pos: torch.Tensor,
                attention: str = "sdpa") -> tuple[torch.Tensor, torch.Tensor]:
    """Run one new position through the text tower; returns (pre-norm, post-norm) hidden [B, H].

    x: input embeddings [B, 1, H] (model dtype); pos: [B] long position (all mRoPE axes equal).
    Writes K/V at `cache.col` (static) or appends (growing). No host sync.
    """
    from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb

    lm = model.model.language_model
    b = x.shape[0]
    cos, sin = lm.rotary_emb(x, pos.view(1, b, 1).expand(3, b, 1))  # [B, 1, d]
    cache.open_column()
    h = x
    for i, layer in enumerate(lm.layers):
        attn = layer.self_attn
        d = attn.head_dim
        y = layer.input_layernorm(h)
        q = attn.q_norm(attn.q_proj(y).view(b, 1, -1, d)).transpose(1, 2)  # [B, nh, 1, d]
        k = attn.k_norm(attn.k_proj(y).view(b, 1, -1, d)).transpose(1, 2)  # [B, kvh, 1, d]
        v = attn.v_proj(y).view(b, 1, -1, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        qg = q.reshape(b, k.shape[1], -1, d)  # heads h = g * n_rep + r share KV head g (repeat_kv order)
        o = cache.attend(i, qg, k, v, attn.scaling, attention)
        h = h + attn.o_proj(o.reshape(b, 1, -1))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    pre = h[:, 0]
    return pre, lm.norm(h)[:, 0]


def _step_logits(model, cache: DecodeCache, x: torch.Tensor, pos: torch.Tensor, attention: str):
    pre, post = decode_step(model, cache, x, pos, attention)
    return pre, post, model.lm_head(post)


_COMPILED: dict = {}


def _compiled_step():
    """One torch.compile'd step per process: later calls (new caches, same shapes) reuse its code."""
    if "step" not in _COMPILED:
        _COMPILED["step"] = torch.compile(_step_logits)
    return _COMPILED["step"]


def _compiled_or_eager(model, cache: DecodeCache, attention: str):
    """The compiled step over `cache`. If torch.compile cannot build it (no working Triton / C++
    toolchain, an unsupported GPU), decoding goes on eagerly with one printed message, and later runners
    of this process skip compiling (`_COMPILED["failed"]` holds the reason). A compile failure raises
    before the step writes anything; an error the eager step also raises is a real one and propagates."""
    eager = lambda x, pos: _step_logits(model, cache, x, pos, attention)  # noqa: E731
    if "failed" in _COMPILED:
        return eager
    step = _compiled_step()

    def run(x, pos):
        if "failed" in _COMPILED:
            return eager(x, pos)
        try:
            return step(model, cache, x, pos, attention)
        except Exception as e:  # noqa: BLE001  (any backend error; the eager retry re-raises real bugs)
            if not cache.static:  # a growing cache may have been appended to: no safe retry
                raise
            _COMPILED["failed"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(f"[decode] torch.compile of the decode step failed, decoding without it "
                  f"(agent.decode_compile=false skips the attempt): {_COMPILED['failed']}", flush=True)
            return eager(x, pos)

    return run


class _StepRunner:
    """Runs decode steps eagerly, or through one captured CUDA graph (static cache on CUDA)."""

    def __init__(self, model, cache: DecodeCache, options: DecodeOptions = DecodeOptions()):
        self.model, self.cache, self.options = model, cache, options
        self.graph = None
        self.fn = lambda x, pos: _step_logits(model, cache, x, pos, options.attention)  # eager (no self: no cycle)
        if options.compile:
            self.fn = _compiled_or_eager(model, cache, options.attention)
            if cache.static:  # one compiled step for every cache length (no recompile per prompt length)
                for t in cache.keys + cache.values:
                    torch._dynamo.maybe_mark_dynamic(t, 2)
                torch._dynamo.maybe_mark_dynamic(cache.valid, 1)
        if options.cuda_graph and cache.static and cache.valid.is_cuda:
            lm = model.model.language_model
            b = cache.valid.shape[0]
            w = lm.embed_tokens.weight
            self.x = torch.zeros(b, 1, w.shape[1], dtype=w.dtype, device=w.device)
            self.pos = torch.zeros(b, dtype=torch.long, device=w.device)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up writes column `col`, which the first real step rewrites
                for _ in range(2 if options.compile else 1):
                    self.fn(self.x, self.pos)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self.out = self.fn(self.x, self.pos)
                self.graph = graph
            except RuntimeError as e:  # keep working (eagerly) if some kernel refuses capture
                print(f"[decode] CUDA graph capture failed, decoding without it: {e}")

    def __call__(self, x: torch.Tensor, pos: torch.Tensor):
        """(pre [B,H], post [B,H], logits [B,V]) for inputs x [B,1,H], pos [B]; then advances the cache."""
        if self.graph is None:
            out = self.fn(x, pos)
        else:
            self.x.copy_(x)
            self.pos.copy_(pos)
            self.graph.replay()
            out = self.out
        self.cache.advance()
        return out


# ------------------------------------------------------------------------------------ reusable runner
POOL_SLACK = 1024  # a pooled cache serves requests up to this many columns shorter than itself (masked out)


class _Pool:
    """The static cache + step runner of a model's last pooled rollout (one per model, so the memory
    held is bounded by one rollout's KV). Lives on the model; never deep-copied or pickled with it."""

    def __init__(self):
        self.key, self.runner = None, None

    def __deepcopy__(self, memo):
        return _Pool()

    def __reduce__(self):
        return (_Pool, ())


def pooled_prefill(model, inputs: dict, positions: torch.Tensor, columns: int, options: DecodeOptions,
                   gather_at: torch.Tensor | None = None, want_pre: bool = False) -> tuple[Prefill, _StepRunner]:
    """`prefill` + a step runner over a static cache of >= `columns` columns (grad disabled).

    Reuses the model's pooled cache and its captured CUDA graph when the batch, dtype, device and
    options match and its capacity fits (at most POOL_SLACK columns to spare): no allocation, no
    capture, no recompile, only the prefill. Otherwise a new cache (columns rounded up to 256)
    replaces the pooled one. The pool keeps that cache alive between calls: `release_pool(model)`.
    """
    if torch.is_grad_enabled():
        raise RuntimeError("pooled_prefill needs grad disabled (a static cache)")
    pool = getattr(model, "_vsr1_step_pool", None)
    if pool is None:
        pool = _Pool()
        setattr(model, "_vsr1_step_pool", pool)
    w = model.model.language_model.embed_tokens.weight
    key = (inputs["attention_mask"].shape[0], w.dtype, w.device, options)
    old = pool.runner
    if old is not None and pool.key == key and columns <= old.cache.capacity <= columns + POOL_SLACK:
        return prefill(model, inputs, positions, gather_at, want_pre=want_pre, into=old.cache), old
    pool.key = pool.runner = old = None  # free the old buffers and graph before allocating new ones
    pf = prefill(model, inputs, positions, gather_at, capacity=round_capacity(columns, 256), want_pre=want_pre)
    runner = _StepRunner(model, pf.cache, options)
    pool.key, pool.runner = key, runner
    return pf, runner


def release_pool(model) -> None:
    """Drop the model's pooled cache and graph (their memory is freed once nothing else holds them)."""
    pool = getattr(model, "_vsr1_step_pool", None)
    if pool is not None:
        pool.key = pool.runner = None


# ------------------------------------------------------------------------------------ generation
@dataclass
class DecodeState:
    """What a generation leaves for the SQR rollout to continue from (see sqr.rollout_from_state)."""

    cache: DecodeCache
    runner: _StepRunner
    post: torch.Tensor  # [B, T, H] post-norm hidden at each generated token (as the step's input)
    pre: torch.Tensor  # [B, T, H] pre-norm hidden, same positions
    first_pos: torch.Tensor  # [B] position of generated token 0
    prompt_len: int  # buffer column of generated token 0


class DecodeResult(NamedTuple):
    ids: torch.Tensor  # [B, T] generated ids; after a row's stop token: pad
    lengths: torch.Tensor  # [B] ids per row up to and including the first stop token (or T)
    n_text: torch.Tensor  # [B] generated tokens before the stop token (the stop token not counted)
    state: DecodeState | None


def _pick(logits: torch.Tensor, temperature: float, generator, top_p: float = 1.0,
          banned: torch.Tensor | None = None) -> torch.Tensor:
    """Next ids [B]: argmax (temperature <= 0), else a draw from softmax(logits / temperature) cut to
    its top-p nucleus (the smallest set of most likely ids whose mass reaches top_p; the top id always
    stays). Draws come from `generator` only, so a seeded generator repeats a run exactly. `banned` ids
    (the vision placeholders: text can never hold them) are never picked."""
    if banned is not None and banned.numel():
        logits = logits.index_fill_(-1, banned, float("-inf"))  # in place: the step's own output buffer
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=generator)[:, 0]
    sorted_p, order = probs.sort(dim=-1, descending=True)
    sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= top_p, 0.0)  # mass before it reached top_p
    return order.gather(-1, torch.multinomial(sorted_p, 1, generator=generator))[:, 0]


@torch.no_grad()
def generate_tokens(model, inputs: dict, positions: torch.Tensor, max_new_tokens: int, eos_ids: list[int],
                    pad_id: int, temperature: float = 0.0, generator: torch.Generator | None = None,
                    options: DecodeOptions = DecodeOptions(), keep_state: bool = False, reserve: int = 0,
                    ignore_eos: bool = False, check_every: int = 8, top_p: float = 1.0,
                    plan=None, banned_ids: list[int] | None = None) -> DecodeResult:
    """Greedy (temperature 0) or sampled decoding of a left-padded batch (temperature / top_p, drawn
    from `generator`: seeded, a run repeats exactly; greedy ignores both).

    Every generated token is also fed through the model once, so each one's hidden state is known
    (the SQR seed at a generated <REFINE> comes for free). `reserve` extra cache columns are kept
    for a latent rollout continuing from the returned state (keep_state=True). `plan` (a
    prefill.PrefillPlan): the bucketed prefill (no compute on padding, cached video features) instead
    of the one HF forward; the decode loop after it is the same. `banned_ids` are never generated (the
    policy bans its vision placeholders: a sampled <|video_pad|> cannot be fed back as text).
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    length = inputs["attention_mask"].shape[1]
    if plan is not None:
        from videosearch_r1.agent.prefill import bucketed_prefill, supports

        plan = plan if supports(inputs) else None
    if plan is None:
        pre_fill = prefill(model, inputs, positions, capacity=length + max_new_tokens + reserve)
    else:
        pre_fill = bucketed_prefill(model, inputs, positions, length + max_new_tokens + reserve, plan)
    cache = pre_fill.cache
    b = cache.valid.shape[0]
    dev = cache.valid.device
    embed = model.model.language_model.embed_tokens
    runner = _StepRunner(model, cache, options)
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=dev)
    ids = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    h = pre_fill.post.shape[-1]
    hist_post = pre_fill.post.new_zeros(b, max_new_tokens, h) if keep_state else None
    hist_pre = pre_fill.post.new_zeros(b, max_new_tokens, h) if keep_state else None
    first_pos = positions.amax(dim=(0, 2)) + 1
    pos = first_pos.clone()
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    stop_at = torch.full((b,), max_new_tokens, dtype=torch.long, device=dev)
    banned = torch.tensor(sorted(set(banned_ids or ())), dtype=torch.long, device=dev)
    tok = _pick(model.lm_head(pre_fill.post), temperature, generator, top_p, banned)
    steps = 0
    for i in range(max_new_tokens):
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        ids[:, i] = tok
        if not ignore_eos:
            hit = torch.isin(tok, eos) & ~done
            stop_at = torch.where(hit, torch.full_like(stop_at, i), stop_at)
            done = done | hit
        pre, post, logits = runner(embed(tok)[:, None], pos)
        steps += 1
        if keep_state:
            hist_post[:, i] = post
            hist_pre[:, i] = pre
        pos = pos + 1
        if not ignore_eos and (i + 1) % check_every == 0 and bool(done.all()):
            break
        tok = _pick(logits, temperature, generator, top_p, banned)
    ids = ids[:, :steps]
    lengths = torch.clamp(stop_at + 1, max=steps)
    n_text = torch.clamp(stop_at, max=steps)
    state = None
    if keep_state:
        state = DecodeState(cache, runner, hist_post[:, :steps], hist_pre[:, :steps], first_pos, length)
    return DecodeResult(ids, lengths, n_text, state)
