"""The GRPO objective as pure tensor functions: advantages, clipped ratio, k3 KL, aggregation, and the
two latent (SQR) objectives.

    adv = group_advantages(rewards, group_size=8)                       # [N] per trajectory
    logp, ent = token_logprobs(logits, targets)                          # [T], [T]
    loss, stats = policy_loss(logp, old_logp, adv_tok, mask, ref_logp=ref, beta=0.01)
    l_ret = infonce_loss(q, pos, negs, tau=0.1)                          # SQR: gradient on latents + projectors
    l_pg = gaussian_pg_loss(action, mean, sigma=0.05, adv=adv_seg)      # SQR: Gaussian latent policy gradient

Definitions (docs/grpo.md says why each):
- advantage A_i = (r_i - mean_group(r)) / (std_group(r) + eps), unbiased std, eps 1e-4 (the reference's);
  scale="none" keeps only the mean baseline (Dr. GRPO);
- per token t of a sampled completion: ratio rho = exp(logp - old_logp); the PPO-clipped surrogate
  -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A); plus beta * k3 KL to a frozen reference,
  k3 = exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased for KL(pi || ref));
- aggregation "token": sum over every loss token of the step / their number (long answers are not
  down-weighted per token); "sequence": mean per sequence, then mean over sequences (TRL's "grpo").
  `denominator` lets micro-batches of one step add up to exactly the full-batch loss.
Tensors are [S, L] (S sequences, L columns) with a 0/1 `mask` of the loss tokens (sampled ids only).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AGGREGATIONS = ("token", "sequence")
ADV_SCALES = ("group", "none")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Rewards [N] (N = groups x group_size, a group contiguous) -> advantages [N].

    >>> group_advantages(torch.tensor([1.0, 0.0, 2.0, 2.0]), group_size=2)
    tensor([ 0.7070, -0.7070,  0.0000,  0.0000])
    """
    if scale not in ADV_SCALES:
        raise ValueError(f"advantage scale must be one of {ADV_SCALES}, got {scale!r}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().view(-1, group_size)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale == "group":
        std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(r[:, :1])
        adv = adv / (std + eps)
    return adv.reshape(-1)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target and the entropy of each distribution: logits [..., V], targets [...].
    Computed in float32 (bf16 log-softmax over 150k classes loses the small differences GRPO needs).

    >>> lp, ent = token_logprobs(torch.zeros(1, 4), torch.tensor([2]))
    >>> round(lp.item(), 4), round(ent.item(), 4)          # log(1/4), log 4
    (-1.3863, 1.3863)
    """
    logp_all = F.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1 (>= 0, 0 iff equal).

    >>> k3_kl(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -1.0]))
    tensor([0.0000, 0.7183])
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: str = "token",
              denominator: float | None = None) -> torch.Tensor:
    """Reduce [S, L] per-token values over the loss tokens. denominator: the step's total tokens
    ("token") or sequences ("sequence"); None: this batch's own count.

    >>> v, m = torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    >>> aggregate(v, m, "token").item(), aggregate(v, m, "sequence").item()
    (2.0, 2.0)
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    mask = mask.to(per_token.dtype)
    if aggregation == "token":
        den = mask.sum() if denominator is None else torch.tensor(float(denominator), device=mask.device)
        return (per_token * mask).sum() / den.clamp(min=1.0)
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    has = (mask.sum(-1) > 0).to(per_token.dtype)
    den = has.sum() if denominator is None else torch.tensor(float(denominator), device=mask.device)
    return (per_seq * has).sum() / den.clamp(min=1.0)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_eps: float = 0.2, clip_eps_high: float | None = None, ref_logp: torch.Tensor | None = None,
                beta: float = 0.0, aggregation: str = "token", denominator: float | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped GRPO surrogate (+ beta k3 KL) over the loss tokens; advantages [S] (one per sequence).

    Returns (loss, stats) with stats = clip_frac, ratio, kl (masked means, detached).
    >>> m = torch.ones(2, 3); lp = torch.zeros(2, 3, requires_grad=True)
    >>> loss, st = policy_loss(lp, lp.detach(), torch.tensor([1.0, -1.0]), m)
    >>> loss.item(), st["clip_frac"].item()
    (0.0, 0.0)
    """
    high = clip_eps if clip_eps_high is None else clip_eps_high
    ratio = torch.exp(logp - old_logp)
    adv = advantages.to(logp.dtype)[:, None]
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    m = mask.to(logp.dtype)
    n = m.sum().clamp(min=1.0)
    stats = {"clip_frac": (((clipped < unclipped).to(m.dtype) * m).sum() / n).detach(),
             "ratio": ((ratio * m).sum() / n).detach()}
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)
        stats["kl"] = ((kl * m).sum() / n).detach()
        if beta:
            per_token = per_token + beta * kl
    return aggregate(per_token, mask, aggregation, denominator), stats


# ------------------------------------------------------------------------------------ latent objectives
def infonce_loss(q: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor, tau: float,
                 neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row InfoNCE [B]: cross-entropy of [q.pos, q.neg_k] / tau with the positive first.
    q [B, D] (carries the gradient), pos [B, D], negs [B, K, D]; neg_mask [B, K] (False: padding).
    exp(-loss) is the retrieval reward's p (rewards.retrieval_prob).

    >>> e = torch.eye(3)
    >>> round(infonce_loss(e[:1], e[:1], e[None, 1:], tau=1.0).item(), 4)   # -log(e / (e + 2))
    0.5514
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    pos_logit = (q * pos.to(q.dtype)).sum(-1, keepdim=True)
    neg_logits = torch.einsum("bd,bkd->bk", q, negs.to(q.dtype))
    if neg_mask is not None:
        neg_logits = neg_logits.masked_fill(~neg_mask.bool(), float("-inf"))
    logits = torch.cat([pos_logit, neg_logits], dim=1) / tau
    return -F.log_softmax(logits, dim=1)[:, 0]


def gaussian_logprob(action: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(action; mean, sigma^2 I) per row [B], summed over every other axis (action, mean [B, ...]).

    >>> round(gaussian_logprob(torch.zeros(1, 2), torch.zeros(1, 2), 1.0).item(), 4)   # -log(2 pi)
    -1.8379
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    z = (action.detach().float() - mean.float()) / sigma
    n = z[0].numel()
    return -0.5 * z.pow(2).flatten(1).sum(1) - n * math.log(sigma * math.sqrt(2 * math.pi))


def gaussian_pg_loss(action: torch.Tensor, mean: torch.Tensor, sigma: float, adv: torch.Tensor) -> torch.Tensor:
    """REINFORCE for a Gaussian latent action: -mean_b(A_b * log N(a_b; mu_theta,b, sigma^2)) / dims.

    `action` was sampled as mean + sigma * noise in the rollout and DID produce the reward (the refined
    query is embedded from it), which is what makes this a policy gradient (reference §9.9 sampled
    actions that never touched the reward). Dividing by the action's dimension count is a constant
    rescale (a step size), so the direction stays the exact policy gradient.
    >>> mu = torch.zeros(1, 2, requires_grad=True)
    >>> gaussian_pg_loss(torch.ones(1, 2), mu, 1.0, torch.tensor([1.0])).backward(); mu.grad
    tensor([[-0.5000, -0.5000]])
    """
    lp = gaussian_logprob(action, mean, sigma)
    return -(adv.to(lp.dtype) * lp).mean() / action[0].numel()
