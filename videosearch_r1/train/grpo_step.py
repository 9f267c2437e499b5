"""One GRPO update from recorded rollouts: the turn batch, log-probs on the sampled ids, the loss.

    batch = collate_turns(policy, turns, clips)                 # prompt (env, masked) + sampled ids (loss)
    logp, ent, soft = module(batch.inputs, batch.loss_mask, batch.refine_pos, latent_rows)
    loss, stats = micro_loss(knobs, module, batch, adv_rows, denominators, ref_logp=batch_logprobs(ref, batch, dev, dt))

A TurnBatch row is the real conversation of one assistant turn: the prompt rendered by the one prompt
builder (system, user = query text + the shown video) followed by the SAMPLED completion ids, left
padded, with mRoPE positions over the video. `loss_mask` is 1 exactly on the sampled ids (stop token
included): the system prompt, the user message and the video (the environment) carry no loss.
`decode_row(policy, batch, i)` gives back the exact conversation text.

Log-probs are computed from one forward of the whole row (video included) and the lm_head applied only
at the positions that predict a sampled id (no [S, L, V] logits). The latent objective re-runs the SQR
rollout with gradient from the turn's last generated <REFINE>, continued from that same forward's KV cache
(sqr.rollout_from_forward; a separate sqr.rollout_latents under gradient checkpointing) and
- "infonce": embeds [query ; soft tokens] through the frozen embedder with gradient and takes the
  InfoNCE against the GT and the query's negatives (gradient to latents, readout, both projectors and
  the policy's hidden states);
- "gaussian": the REINFORCE term of the sampled latent action around the recomputed mean (grpo_loss);
- "both": their sum. Weighted by grpo.latent_weight; averaged over the refined turns of the step.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import nn

from videosearch_r1.train.grpo_loss import gaussian_pg_loss, infonce_loss, policy_loss, token_logprobs
from videosearch_r1.train.grpo_rollout import RetrievalScorer, TurnSample

LATENT_OBJECTIVES = ("infonce", "gaussian", "both", "none")


# ------------------------------------------------------------------------------------ the batch
class TurnBatch(NamedTuple):
    inputs: dict  # input_ids / attention_mask / mm_token_type_ids [S, L] (left padded), pixel_values_videos
    #               [patches, C*T*P*P], video_grid_thw [S, 3], position_ids [3, S, L] (rope_positions)
    loss_mask: torch.Tensor  # [S, L] 1 on the sampled completion ids; 0 on system/user/video tokens and pads
    refine_pos: torch.Tensor  # [S] column of the turn's last generated <REFINE> when it was refined, else -1
    turns: list[TurnSample]  # the rows, in order
    n_tokens: int  # real tokens (prompt + completion)


def collate_turns(policy, turns: list[TurnSample], clips: dict) -> TurnBatch:
    """Turns + the clips shown (video id -> clip) -> a left-padded batch on the CPU. Nothing is
    re-tokenised: the completion is the sampled ids as they are."""
    from videosearch_r1.agent.prompts import build_messages
    from videosearch_r1.models.qwen3vl import render_chat, rope_positions, video_kwargs

    if not turns:
        raise ValueError("no turns to collate")
    proc = policy.processor
    vids = [clips[t.video] for t in turns]
    prompts = [render_chat(proc, build_messages(t.query, c)) for t, c in zip(turns, vids)]
    enc = proc(text=prompts, **video_kwargs(vids), padding=True, padding_side="left", return_tensors="pt")
    seqs, types, masks, refine = [], [], [], []
    for i, t in enumerate(turns):
        real = enc["attention_mask"][i].bool()
        p_ids, p_types = enc["input_ids"][i][real], enc["mm_token_type_ids"][i][real]
        c_ids = torch.tensor(t.completion_ids, dtype=torch.long)
        hits = [j for j, x in enumerate(t.completion_ids) if x == policy.refine_token_id]
        refine.append(len(p_ids) + hits[-1] if (t.refined and hits) else -1)
        seqs.append(torch.cat([p_ids, c_ids]))
        types.append(torch.cat([p_types, torch.zeros_like(c_ids)]))
        masks.append(torch.cat([torch.zeros_like(p_ids), torch.ones_like(c_ids)]))
    width = max(len(s) for s in seqs)
    b = len(seqs)
    ids = torch.full((b, width), policy.pad_token_id, dtype=torch.long)
    att, tt, lm = (torch.zeros(b, width, dtype=torch.long) for _ in range(3))
    for j, (s, ty, m) in enumerate(zip(seqs, types, masks)):
        ids[j, width - len(s):], att[j, width - len(s):] = s, 1
        tt[j, width - len(s):], lm[j, width - len(s):] = ty, m
    pad = torch.tensor([width - len(s) for s in seqs])
    rpos = torch.tensor(refine, dtype=torch.long)
    rpos = torch.where(rpos >= 0, rpos + pad, rpos)
    inputs = {"input_ids": ids, "attention_mask": att, "mm_token_type_ids": tt}
    if enc.get("video_grid_thw") is not None:
        inputs["pixel_values_videos"] = enc["pixel_values_videos"]
        inputs["video_grid_thw"] = enc["video_grid_thw"]
    inputs["position_ids"] = rope_positions(policy.model.config, inputs)
    return TurnBatch(inputs, lm, rpos, list(turns), int(att.sum()))


def decode_row(policy, batch: TurnBatch, i: int) -> str:
    """Row i as text (special tokens kept, padding dropped): the exact conversation of that turn."""
    ids = batch.inputs["input_ids"][i][batch.inputs["attention_mask"][i].bool()]
    return policy.processor.tokenizer.decode(ids.tolist(), skip_special_tokens=False)


def to_device(inputs: dict, device, dtype) -> dict:
    out = {k: v.to(device) for k, v in inputs.items()}
    if "pixel_values_videos" in out:
        out["pixel_values_videos"] = out["pixel_values_videos"].to(dtype)
    return out


# ------------------------------------------------------------------------------------ the forward
def sampled_logprobs(model, inputs: dict, loss_mask: torch.Tensor, fast: bool = True):
    """(log-prob [T], entropy [T]) of every loss token (row-major order), from one forward of the rows."""
    from videosearch_r1.models.qwen3vl import model_inputs

    hidden = model.model(**model_inputs(model, inputs, fast=fast)).last_hidden_state  # [S, L, H]
    return _logprobs_at(model, hidden, inputs, loss_mask)


def _logprobs_at(model, hidden: torch.Tensor, inputs: dict, loss_mask: torch.Tensor):
    sel = loss_mask[:, 1:].bool()  # column j's id is predicted at column j - 1
    logits = model.lm_head(hidden[:, :-1][sel])
    return token_logprobs(logits, inputs["input_ids"][:, 1:][sel])


class GRPOModule(nn.Module):
    """policy.model + policy.sqr as one module (what accelerate wraps): log-probs of the sampled ids
    and, for the latent rows, the soft tokens of a differentiable SQR rollout.

    When latent rows exist and the cache can be shared (sqr.shares_forward_cache: cached rollout, no
    gradient checkpointing, post-norm seed) the log-prob forward runs with use_cache=True and the rollout
    continues from its own KV cache (sqr.rollout_from_forward, as the SFT trainer): one prefill per row,
    not two sets of activations. Otherwise a separate rollout (sqr.rollout_latents) on the latent rows.
    rollout_cached=False: the authors' uncached full forwards (parameter-sharding wrappers: FSDP, ZeRO-3);
    rollout_compile: the shared rollout's latent layer step torch.compile'd on CUDA (agent/sqr_grad.py)."""

    def __init__(self, policy, n_latents: int, fast: bool = True, rollout_cached: bool = True,
                 rollout_compile: bool = False):
        super().__init__()
        self.model, self.sqr = policy.model, policy.sqr
        object.__setattr__(self, "policy", policy)
        self.n_latents, self.fast, self.rollout_cached = n_latents, fast, rollout_cached
        self.rollout_compile = rollout_compile

    def forward(self, inputs: dict, loss_mask: torch.Tensor, refine_pos: torch.Tensor, latent_rows: torch.Tensor):
        """-> (logp [T], entropy [T], soft tokens [R, N, He] of `latent_rows` (None if none))."""
        from videosearch_r1.agent.sqr import rollout_from_forward, rollout_latents, shares_forward_cache
        from videosearch_r1.models.qwen3vl import model_inputs, vision_keepalive
        from videosearch_r1.train.trainer import _select_videos

        want = bool(latent_rows.any())
        share = want and shares_forward_cache(self.policy, self.rollout_cached)
        kw = model_inputs(self.model, inputs, fast=self.fast)
        out = self.model.model(**kw, use_cache=share)
        logp, ent = _logprobs_at(self.model, out.last_hidden_state, inputs, loss_mask)
        keep = vision_keepalive(self.model, inputs)  # a batch without video still runs the vision tower
        if keep is not None:
            logp = logp + keep
        if not want:
            return logp, ent, None
        rows = latent_rows.nonzero()[:, 0]
        if share:  # continue from this forward's KV cache: no second prefill with grad
            pos = kw.get("position_ids")
            pos = pos if pos is not None else self.policy.positions(inputs)
            z = rollout_from_forward(self.policy, out, out.last_hidden_state, pos, inputs["attention_mask"],
                                     refine_pos, rows, self.n_latents, compile=self.rollout_compile)
        else:
            sub = {k: (v[rows] if k not in ("pixel_values_videos", "video_grid_thw", "position_ids") else v)
                   for k, v in inputs.items()}
            ckpt = getattr(self.model.model.language_model, "gradient_checkpointing", False)  # as SFT: then uncached
            z = rollout_latents(self.policy, _select_videos(sub, inputs, rows), refine_pos[rows], self.n_latents,
                                cached=self.rollout_cached and not ckpt)
        return logp, ent, self.policy.soft_tokens(z)


# ------------------------------------------------------------------------------------ the loss
class Knobs(NamedTuple):
    """The grpo section's loss knobs (config.GRPOConfig)."""

    clip_eps: float
    clip_eps_high: float
    kl_beta: float
    aggregation: str
    latent_objective: str
    latent_weight: float
    latent_sigma: float
    tau: float


def latent_loss(kn: Knobs, soft: torch.Tensor, turns: list[TurnSample], adv: torch.Tensor, embedder,
                scorer: Optional[RetrievalScorer], negatives: dict[int, list[str]], gt: dict[int, str]):
    """Summed (not averaged) latent objective over the refined turns `turns` (soft [R, N, He] with grad);
    -> (sum tensor, {"infonce": float sum, "gaussian": float sum})."""
    total = soft.new_zeros(())
    parts = {}
    if kn.latent_objective in ("infonce", "both"):
        prefixed = [soft[i] if t.soft_prefix is None else
                    torch.cat([torch.as_tensor(t.soft_prefix, device=soft.device), soft[i]])
                    for i, t in enumerate(turns)]
        by_len: dict[int, list[int]] = {}
        for i, x in enumerate(prefixed):
            by_len.setdefault(x.shape[0], []).append(i)
        nce = soft.new_zeros(())
        for _, idx in sorted(by_len.items()):
            q = embedder.embed_soft([turns[i].query for i in idx], torch.stack([prefixed[i] for i in idx]), grad=True)
            rows = [scorer.row[gt[turns[i].traj]] for i in idx]
            pos = torch.as_tensor(scorer.vectors[rows], device=q.device)
            negs = torch.as_tensor(np.stack([scorer.vectors[[scorer.row[v] for v in negatives[turns[i].traj]]]
                                             for i in idx]), device=q.device)
            nce = nce + infonce_loss(q, pos, negs, kn.tau).sum()
        total = total + nce
        parts["infonce"] = float(nce.detach())
    if kn.latent_objective in ("gaussian", "both"):
        action = torch.as_tensor(np.stack([t.soft_used for t in turns]), device=soft.device)
        g = gaussian_pg_loss(action, soft, kn.latent_sigma, adv) * len(turns)  # sum over rows
        total = total + g
        parts["gaussian"] = float(g.detach())
    return total, parts


@torch.no_grad()
def batch_logprobs(model, batch: TurnBatch, device, dtype, fast: bool = True) -> torch.Tensor:
    """Log-probs [T] of a batch's sampled ids under `model` (the frozen reference, or the policy before
    its first update when grpo.iterations > 1), no grad."""
    inputs = to_device(batch.inputs, device, dtype)
    return sampled_logprobs(model, inputs, batch.loss_mask.to(device), fast)[0]


def micro_loss(kn: Knobs, module, batch: TurnBatch, adv_rows: torch.Tensor, denominators: dict,
               ref_logp: Optional[torch.Tensor] = None, old_logp: Optional[torch.Tensor] = None, embedder=None,
               scorer=None, negatives=None, gt=None, device=None, dtype=None):
    """The loss of one micro-batch, scaled so micro-batches of a step add up to the step's loss
    (denominators: the step's loss tokens, turns and refined turns); ref_logp / old_logp: [T] from
    batch_logprobs (None: no KL term / ratio against the current policy, i.e. 1).
    -> (loss, stats of sums: tokens, logp, entropy, kl, clip, latent parts)."""
    inputs = to_device(batch.inputs, device, dtype)
    mask = batch.loss_mask.to(device)
    latent = kn.latent_objective != "none" and kn.latent_weight > 0
    latent_rows = (batch.refine_pos >= 0).to(device) & latent
    logp, ent, soft = module(inputs, mask, batch.refine_pos.to(device), latent_rows)
    sel = mask[:, 1:].bool()
    full = lambda x: torch.zeros(sel.shape, dtype=x.dtype, device=x.device).masked_scatter(sel, x)  # noqa: E731
    ref = None if ref_logp is None else full(ref_logp.to(device))
    old = full(logp.detach() if old_logp is None else old_logp.to(device))
    den = denominators["tokens"] if kn.aggregation == "token" else denominators["turns"]
    loss, st = policy_loss(full(logp), old, adv_rows.to(device), sel, clip_eps=kn.clip_eps,
                           clip_eps_high=kn.clip_eps_high or None, ref_logp=ref, beta=kn.kl_beta,
                           aggregation=kn.aggregation, denominator=den)
    n = int(sel.sum())
    stats = {"tokens": n, "entropy": float(ent.detach().sum()), "logp": float(logp.detach().sum()),
             "clip_frac": float(st["clip_frac"]) * n, "kl": float(st.get("kl", torch.zeros(()))) * n}
    if soft is not None:
        rows = latent_rows.nonzero()[:, 0].tolist()
        lat, parts = latent_loss(kn, soft, [batch.turns[i] for i in rows], adv_rows.to(device)[rows], embedder,
                                 scorer, negatives, gt)
        loss = loss + kn.latent_weight * lat / max(1, denominators["refined"])
        stats.update({f"latent_{k}": v for k, v in parts.items()})
        stats["refined"] = len(rows)
    return loss, stats
