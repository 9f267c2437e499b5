"""Bucketed prefill: a batch of unequal prompts prefilled with no compute on padding, into one static cache.

    plan = PrefillPlan(max_tokens=65536, cache=VisionCache(2 << 30), video_keys=clip_keys(clips, processor))
    pf = bucketed_prefill(model, inputs, positions, capacity=L + 256, plan=plan)   # same Prefill as decode.prefill

What it does (Policy.generate / `vsr1 infer` with agent.prefill_tokens > 0; decode.prefill is the one-forward
HF path it replaces for the verification turn):
1. the batch's videos go through the vision tower once each (VisionCache: a video repeated in the batch or
   seen earlier in the run is a hit; the misses in one call) or, without keys, all in one call as HF does;
2. rows are sorted by real length and cut into buckets of rows of EQUAL length (`pad_slack` > 0 lets a
   bucket take rows up to that fraction shorter than its longest) with at most `max_tokens` tokens
   (rows x bucket length; a longer row is its own bucket);
   Identical rows (same token ids and video keys: a GRPO group's first turn) are prefilled once and
   their hidden states and K/V copied (`dedup_rows`; `duplicate_rows` finds them with torch ops);
3. each bucket is one HF text forward over only its own columns (the left padding common to the batch is
   cut off; no mask when its rows are equal, so SDPA runs its causal kernel), with the precomputed video
   features passed as `mm_encoder_outputs`, and the mRoPE positions of the whole batch sliced;
4. its K/V land in the static cache at the same columns the one-forward path writes (left padded to the
   batch's length L), so decoding after it is unchanged (decode.generate_tokens, sqr.rollout_from_state).
   The forward, the cache set-up and the K/V copy are decode.py's own (text_forward, static_cache,
   copy_prompt_kv): one implementation for both prefills.
Equal to decode.prefill within float tolerance (tests/test_prefill.py: hidden states, logits, K/V and
greedy ids on a batch of unequal prompts with videos).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import videosearch_r1  # noqa: F401  (torchvision shim before transformers)
from videosearch_r1.agent.decode import Prefill, copy_prompt_kv, static_cache, text_forward


@dataclass
class PrefillPlan:
    """How Policy prefills a verification turn (agent.prefill_tokens / agent.vision_cache_mb)."""

    max_tokens: int = 65536  # tokens (rows x bucket length) per text forward
    pad_slack: float = 0.0  # a bucket may take rows up to this fraction shorter than its longest (then masked)
    cache: Any = None  # a VisionCache (None: the batch's videos encoded in one call, no reuse)
    video_keys: list | None = None  # one key per video of the batch (vision_cache.clip_keys); None: no caching
    dedup_rows: bool = True  # identical rows (same ids, same video keys) prefilled once, their K/V copied


def buckets(lengths: list[int], max_tokens: int, pad_slack: float = 0.0) -> list[list[int]]:
    """Row indices grouped for prefill: longest first, equal lengths (or within pad_slack) together,
    at most max_tokens (rows x the bucket's longest) per bucket, at least one row each."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out: list[list[int]] = []
    for i in order:
        if out:
            top = lengths[out[-1][0]]
            if lengths[i] >= top * (1 - pad_slack) and (len(out[-1]) + 1) * top <= max_tokens:
                out[-1].append(i)
                continue
        out.append([i])
    return out


def video_rows(model, inputs: dict) -> list[int]:
    """The batch row of each video (videos are in row order; a row may hold several or none)."""
    from videosearch_r1.models.qwen3vl import video_token_counts

    grid = inputs.get("video_grid_thw")
    if grid is None or len(grid) == 0:
        return []
    per_video = video_token_counts(model, grid)
    mask = inputs["attention_mask"].bool()
    per_row = ((inputs["input_ids"] == model.config.video_token_id) & mask).sum(1).tolist()
    rows, v = [], 0
    for r, need in enumerate(per_row):
        while need > 0 and v < len(per_video):
            rows.append(r)
            need -= per_video[v]
            v += 1
        if need != 0:
            break
    if v != len(per_video) or len(rows) != len(per_video) or need != 0:
        raise ValueError(f"video placeholders per row {per_row} do not match the grids' token counts {per_video}")
    return rows


def duplicate_rows(inputs: dict, owner: list[int], keys: list | None, gather) -> dict[int, int]:
    """{row: earlier identical row}: same real token ids, same gather column and the same video keys (rows
    with videos are only compared when keys are given). A GRPO group's first turn is G identical prompts.
    Vectorised: each row's signature (its real ids packed to the right, its videos' key numbers, its gather
    column) is one tensor row; torch.unique groups equal signatures, the first row of a group computes."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    b, dev = ids.shape[0], ids.device
    if b < 2:
        return {}
    # real ids, order kept, right-aligned (a stable sort puts the masked-out columns first, as -1)
    packed = ids.masked_fill(~mask, -1).gather(1, mask.int().sort(dim=1, stable=True).indices)
    per_row: dict[int, list[int]] = {}
    number: dict = {}
    for v, r in enumerate(owner):  # one entry per video of the batch (not per token)
        key = None if keys is None else keys[v]
        per_row.setdefault(r, []).append(-2 if key is None else number.setdefault(key, len(number)))
    width = max([len(x) for x in per_row.values()] + [0])
    vids = torch.full((b, width + 2), -1, dtype=torch.long)
    for r, nums in per_row.items():
        vids[r, :len(nums)] = torch.tensor(nums)
        if -2 in nums:  # a video without a key: this row matches no other
            vids[r, width + 1] = r
    vids[:, width] = torch.as_tensor(gather, dtype=torch.long).cpu()
    sig = torch.cat([packed.long(), vids.to(dev)], dim=1)
    _, group = torch.unique(sig, dim=0, return_inverse=True)
    first = torch.full((b,), b, dtype=torch.long, device=dev).scatter_reduce_(
        0, group, torch.arange(b, device=dev), reduce="amin")
    src = first[group].tolist()
    return {r: s for r, s in enumerate(src) if s != r}


def video_features(model, inputs: dict, plan: PrefillPlan) -> list:
    """Per-video features of the batch: through the plan's cache (each distinct key once), else one call."""
    from videosearch_r1.models.qwen3vl import encode_videos

    pix, grid = inputs.get("pixel_values_videos"), inputs.get("video_grid_thw")
    if pix is None or grid is None or len(grid) == 0:
        return []
    if plan.cache is not None and plan.video_keys is not None:
        return plan.cache.features(model, pix, grid, list(plan.video_keys))
    return encode_videos(model, pix, grid)


def supports(inputs: dict) -> bool:
    """Whether a batch can take the bucketed path (token ids and videos; images and embeds go the HF way)."""
    return (inputs.get("inputs_embeds") is None and inputs.get("pixel_values") is None
            and not torch.is_grad_enabled())


def bucketed_prefill(model, inputs: dict, positions: torch.Tensor, capacity: int | None, plan: PrefillPlan,
                     gather_at: torch.Tensor | None = None, want_pre: bool = False) -> Prefill:
    """decode.prefill's result (static cache, hidden at `gather_at`) with no compute on padding (see module doc)."""
    from videosearch_r1.models.qwen3vl import video_encoder_outputs

    if not supports(inputs):
        raise ValueError("bucketed_prefill takes token ids + videos with grad disabled (use decode.prefill)")
    lm = model.model.language_model
    mask = inputs["attention_mask"].bool()
    b, length = mask.shape
    dev = mask.device
    lengths = mask.sum(1).tolist()
    feats = video_features(model, inputs, plan)
    owner = video_rows(model, inputs)
    cache = static_cache(model, mask, capacity)
    gather = torch.full((b,), length - 1, device=dev) if gather_at is None else gather_at.to(dev).long()
    post = torch.empty(b, lm.config.hidden_size, dtype=lm.embed_tokens.weight.dtype, device=dev)
    pre = torch.empty_like(post) if want_pre else None
    dups = duplicate_rows(inputs, owner, plan.video_keys, gather) if plan.dedup_rows else {}
    todo = [r for r in range(b) if r not in dups]
    for part in buckets([lengths[r] for r in todo], max(int(plan.max_tokens), 1), plan.pad_slack):
        rows = [todo[i] for i in part]
        lo = length - max(lengths[r] for r in rows)
        idx = torch.tensor(rows, device=dev)
        sub_mask = inputs["attention_mask"][idx, lo:]
        mm = video_encoder_outputs([f for r in rows for f, o in zip(feats, owner) if o == r])
        out, hf_cache, hidden_pre = text_forward(model, want_pre, input_ids=inputs["input_ids"][idx, lo:],
                                                 attention_mask=sub_mask, position_ids=positions[:, idx, lo:],
                                                 mm_encoder_outputs=mm)
        at = gather[idx] - lo
        if bool((at < 0).any()):
            raise ValueError(f"gather_at {gather[idx].tolist()} falls in the left padding of rows {rows}")
        sel = torch.arange(len(rows), device=dev)
        post[idx] = out.last_hidden_state[sel, at]
        if want_pre:
            pre[idx] = hidden_pre[sel, at]
        copy_prompt_kv(cache, hf_cache, sub_mask, rows=idx, lo=lo)
        del out, hf_cache, hidden_pre
    if dups:  # identical rows: the computed row's hidden states and K/V, copied
        dst = torch.tensor(list(dups), device=dev)
        src = torch.tensor(list(dups.values()), device=dev)
        for t in [post] + ([pre] if want_pre else []) + cache.keys + cache.values:
            t.index_copy_(0, dst, t.index_select(0, src))
    return Prefill(cache, post, pre)
