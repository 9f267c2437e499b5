"""GRPO rewards and objective as pure functions: scripted completions -> expected rewards and
advantages, the clipped/KL loss against hand-computed values, and a fixed batch whose loss decreases."""
import doctest
import math

import numpy as np
import pytest
import torch

from videosearch_r1.train import grpo_loss, grpo_report, rewards
from videosearch_r1.train.grpo_loss import (aggregate, gaussian_pg_loss, group_advantages, infonce_loss, k3_kl,
                                            policy_loss, token_logprobs)
from videosearch_r1.train.rewards import retrieval_prob, score

MATCH = "<think>It matches.</think> <answer>matched</answer> <start>{s}</start> <end>{e}</end> <REFINE>"
NOT = "<think>Wrong colour.</think> <answer>not_matched</answer> <REFINE>"


@pytest.mark.parametrize("module", [rewards, grpo_loss, grpo_report])
def test_docstring_examples(module):
    res = doctest.testmod(module)
    assert res.attempted >= 2 and res.failed == 0


def _group():
    """One query (GT v1, moment 2..6 s), a group of 4 scripted trajectories."""
    completions = [
        [MATCH.format(s="2.0", e="6.0")],                 # right video, exact span
        [NOT, MATCH.format(s="4.0", e="6.0")],            # refused v9, then matched v1 with half the span
        ["the circle is red"],                            # unparseable
        [MATCH.format(s="0.0", e="3.0")],                 # matched the wrong video
    ]
    cols = dict(shown=[["v1"], ["v9", "v1"], ["v1"], ["v9"]], gt_video=["v1"] * 4, gt_span=[(2.0, 6.0)] * 4,
                duration=[[10.0], [10.0, 10.0], [10.0], [10.0]],
                p_before=[[0.4], [0.1, 0.7], [0.4], [0.1]], p_after=[[None], [0.7, None], [None], [None]])
    return completions, cols


def test_scripted_trajectories_give_the_expected_rewards_and_advantages():
    completions, cols = _group()
    weights = {"format": 0.5, "verification": 1.0, "iou": 1.0, "retrieval": 1.0, "turn_cost": 0.1}
    total, parts = score(weights, completions, **cols)
    assert parts["format"] == [1.0, 1.0, 0.0, 1.0]
    assert parts["verification"] == [1.0, 1.0, -1.0, -1.0]
    assert parts["iou"] == [1.0, 0.5, 0.0, 0.0]
    assert parts["retrieval"] == [0.4, 0.7, 0.4, 0.1]
    assert parts["turn_cost"] == [0.0, -1.0, 0.0, 0.0]
    want = [0.5 + 1 + 1 + 0.4, 0.5 + 1 + 0.5 + 0.7 - 0.1, 0 - 1 + 0 + 0.4, 0.5 - 1 + 0 + 0.1]
    assert total == pytest.approx(want)
    adv = group_advantages(torch.tensor(total), group_size=4)
    r = np.array(want)
    assert adv.numpy() == pytest.approx((r - r.mean()) / (r.std(ddof=1) + 1e-4), rel=1e-5)
    assert adv[0] > adv[1] > adv[3] > adv[2]
    # the authors' retrieval reward: p_after - p_before on refinement turns, 0 without refinement
    delta = rewards.retrieval_reward(completions, cols["p_before"], cols["p_after"], mode="delta")
    assert delta == pytest.approx([0.0, 0.6, 0.0, 0.0])


def test_verification_reward_does_not_pay_for_giving_up():
    """A policy that always answers not_matched vs one that always accepts, on a group where the GT is the
    top-1 half the time: under the per-turn mean giving up scores higher (the drift the GPU run showed);
    under "all" (the default) accepting does, and only a right answer on every turn scores +1."""
    yes = MATCH.format(s="2.0", e="6.0")
    shown = [["v1", "v8", "v9"], ["v8", "v9", "v7"], ["v1", "v8", "v9"], ["v8", "v1", "v9"]]  # GT v1
    give_up = [[NOT, NOT, NOT]] * 4
    accept = [[yes], [yes], [yes], [yes]]
    gt = ["v1"] * 4
    for mode, giving_up_wins in (("mean", True), ("all", False)):
        r_give_up = rewards.verification_reward(give_up, shown=shown, gt_video=gt, verification_mode=mode)
        r_accept = rewards.verification_reward(accept, shown=[s[:1] for s in shown], gt_video=gt,
                                               verification_mode=mode)
        assert bool(np.mean(r_give_up) > np.mean(r_accept)) == giving_up_wins, (mode, r_give_up, r_accept)
    # "all": the one right trajectory (GT never shown, rejected throughout) scores +1, every other -1
    assert rewards.verification_reward(give_up, shown=shown, gt_video=gt) == [-1.0, 1.0, -1.0, -1.0]
    with pytest.raises(ValueError, match="verification reward mode"):
        rewards.verification_reward(accept, shown=[s[:1] for s in shown], gt_video=gt, verification_mode="max")


def test_reward_inputs_are_checked():
    completions, cols = _group()
    with pytest.raises(ValueError, match="unknown reward"):
        score({"fromat": 1.0}, completions, **cols)
    with pytest.raises(TypeError, match="list of a trajectory"):
        rewards.format_reward(["<think>a</think>"])
    with pytest.raises(ValueError, match="2 outputs but 1 shown"):
        rewards.verification_reward([[NOT, NOT]], shown=[["v1"]], gt_video=["v1"])
    # the span is clamped to the shown video's duration before the IoU
    assert rewards.iou_reward([[MATCH.format(s="4.0", e="99.0")]], shown=[["v1"]], gt_video=["v1"],
                              gt_span=[(4.0, 8.0)], duration=[[8.0]]) == [1.0]


def test_retrieval_prob_is_exp_of_minus_infonce():
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(1, 8, generator=g), dim=-1)
    loss = infonce_loss(q, v[:1], v[None, 1:], tau=0.1)
    assert math.exp(-loss.item()) == pytest.approx(retrieval_prob(q[0].numpy(), v[0].numpy(), v[1:].numpy(), 0.1),
                                                   rel=1e-5)
    masked = infonce_loss(q, v[:1], v[None, 1:], tau=0.1, neg_mask=torch.tensor([[True, True, False, False, False]]))
    assert masked.item() == pytest.approx(infonce_loss(q, v[:1], v[None, 1:3], tau=0.1).item(), rel=1e-6)


def test_policy_loss_matches_hand_computation():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -9.0]])
    old = torch.tensor([[-1.5, -2.0, -0.5], [-0.5, -1.0, -9.0]])
    ref = torch.tensor([[-1.0, -1.0, -0.5], [-1.0, -1.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    loss, st = policy_loss(logp, old, adv, mask, clip_eps=0.2, ref_logp=ref, beta=0.1)
    r = math.exp(0.5)  # first token of row 0: ratio e^0.5 clipped to 1.2 (A > 0)
    r2 = math.exp(-0.5)  # first token of row 1: ratio e^-0.5 = 0.61, A < 0: min(-0.61 * -1, ...) -> clipped 0.8
    per = [-1.2, -1.0, -1.0, 0.8, 1.0]
    kl = [0.0, math.e - 2, 0.0, 0.0, 0.0]
    want = sum(p + 0.1 * k for p, k in zip(per, kl)) / 5
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert st["clip_frac"].item() == pytest.approx(2 / 5)
    assert st["kl"].item() == pytest.approx((math.e - 2) / 5, rel=1e-6)
    assert r > 1.2 and r2 < 0.8
    # sequence aggregation: per-row mean, then mean over rows
    seq, _ = policy_loss(logp, old, adv, mask, clip_eps=0.2, aggregation="sequence")
    assert seq.item() == pytest.approx(((-1.2 - 1 - 1) / 3 + (0.8 + 1.0) / 2) / 2, rel=1e-6)


def test_micro_batches_add_up_to_the_full_batch():
    g = torch.Generator().manual_seed(1)
    vals = torch.randn(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).float()
    for agg in ("token", "sequence"):
        full = aggregate(vals, mask, agg)
        den = mask.sum().item() if agg == "token" else float((mask.sum(1) > 0).sum())
        parts = aggregate(vals[:2], mask[:2], agg, den) + aggregate(vals[2:], mask[2:], agg, den)
        assert parts.item() == pytest.approx(full.item(), rel=1e-6)


def test_k3_kl_is_nonnegative_and_estimates_kl():
    g = torch.Generator().manual_seed(2)
    p = torch.softmax(torch.randn(5, generator=g), 0)
    q = torch.softmax(torch.randn(5, generator=g), 0)
    draws = torch.multinomial(p, 200_000, replacement=True, generator=g)
    est = k3_kl(p.log()[draws], q.log()[draws])
    assert bool((est >= -1e-7).all())
    assert est.mean().item() == pytest.approx((p * (p.log() - q.log())).sum().item(), abs=5e-3)


def test_loss_on_a_fixed_batch_decreases():
    """A tiny softmax policy over 6 tokens: a few GRPO steps raise the good sequences' log-probs."""
    torch.manual_seed(0)
    logits = torch.zeros(4, 3, 6, requires_grad=True)  # [S, L, V]
    ref = torch.zeros(4, 3, 6)
    targets = torch.tensor([[1, 2, 3], [1, 2, 4], [5, 5, 5], [0, 0, 1]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]]).float()
    adv = group_advantages(torch.tensor([2.0, 1.5, -1.0, 0.0]), group_size=4)
    old, _ = token_logprobs(logits.detach(), targets)
    ref_lp, _ = token_logprobs(ref, targets)
    opt = torch.optim.SGD([logits], lr=0.5)
    losses = []
    for _ in range(5):
        logp, _ = token_logprobs(logits, targets)
        loss, st = policy_loss(logp, old, adv, mask, clip_eps=0.2, ref_logp=ref_lp, beta=0.01)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    logp, _ = token_logprobs(logits.detach(), targets)
    assert logp[0, 0] > old[0, 0] and logp[2, 0] < old[2, 0]  # good up, bad down


def test_gaussian_pg_gradient_points_to_rewarded_actions():
    mu = torch.zeros(2, 3, 4, requires_grad=True)
    a = torch.ones(2, 3, 4)
    a[1] = -1.0
    gaussian_pg_loss(a, mu, sigma=0.5, adv=torch.tensor([1.0, -1.0])).backward()
    # descent moves mu toward the rewarded action (+1) in row 0 and away from the punished (-1) in row 1
    assert bool((mu.grad[0] < 0).all()) and bool((mu.grad[1] < 0).all())
