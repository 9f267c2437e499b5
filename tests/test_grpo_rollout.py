"""GRPO rollouts through the real agent loop on the tiny synthetic world: seeded sampling repeats,
trajectories decode to the exact conversation, environment tokens are masked, recomputed log-probs
see what generation saw, scripted outputs give the expected rewards, and the latent objective's
gradient reaches the SQR modules."""
import numpy as np
import pytest
import torch

import _world as W
from videosearch_r1.agent.loop import AgentLoop
from videosearch_r1.agent.prompts import build_messages
from videosearch_r1.models.qwen3vl import render_chat
from videosearch_r1.train.grpo_loss import group_advantages
from videosearch_r1.train.grpo_rollout import RetrievalScorer, reward_columns, rollout
from videosearch_r1.train.grpo_step import (GRPOModule, Knobs, collate_turns, decode_row, micro_loss,
                                            sampled_logprobs)
from videosearch_r1.train.rewards import score


def _loop(pol, *overrides):
    cfg = W.world().cfg("agent.max_new_tokens=10", *overrides)
    sp = W.split()
    return AgentLoop(cfg.agent, W.engine(), pol, clip_fn=W.clip_fn(cfg),
                     durations={v: r.duration for v, r in sp.videos.items()})


def _scorer():
    eng = W.engine()
    return RetrievalScorer(eng.vectors, eng.ids, tau=0.1, n_negatives=4)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_sampled_rollouts_repeat_with_their_seed():
    pol = W.policy()
    qs = W.split().queries[:2]
    loop = _loop(pol, "agent.max_turns=1")
    runs = [rollout(loop, qs, group_size=2, generator=_gen(s), temperature=1.0)[0] for s in (7, 7, 8)]
    ids = [[[ts.completion_ids for ts in t.turns] for t in run] for run in runs]
    assert ids[0] == ids[1] and ids[0] != ids[2]
    assert ids[0][0] != ids[0][1]  # the copies of one group differ
    assert [t.group for t in runs[0]] == [0, 0, 1, 1]
    assert loop.acfg.temperature == 0.0 and loop.recorder is None and loop.sampling == {}  # restored
    # a vanishing nucleus keeps only the top id: the greedy rollout
    greedy = rollout(loop, qs, 1, generator=_gen(1), temperature=0.0)[0]
    nucleus = rollout(loop, qs, 1, generator=_gen(2), temperature=1.0, top_p=1e-6)[0]
    assert [[ts.completion_ids for ts in t.turns] for t in greedy] == [[ts.completion_ids for ts in t.turns]
                                                                      for t in nucleus]


def test_turns_decode_to_the_exact_conversation_masked_and_recomputed():
    """A greedy rollout over 2 turns: each row decodes to the prompt + the generated text, only the
    sampled ids carry loss, and at every sampled position the recomputed argmax is the sampled id (true
    only if the rebuilt row - prompt, video, positions - is the one generation ran on)."""
    from videosearch_r1.models.qwen3vl import model_inputs

    pol = W.policy()
    qs = W.split().queries[:2]
    trajs, clips = rollout(_loop(pol, "agent.max_turns=2"), qs, group_size=1, temperature=0.0)
    turns = [ts for t in trajs for ts in t.turns]
    batch = collate_turns(pol, turns, clips)
    tok = pol.processor.tokenizer
    for i, ts in enumerate(turns):
        prompt = render_chat(pol.processor, build_messages(ts.query, clips[ts.video]))
        completion = tok.decode(ts.completion_ids, skip_special_tokens=False)
        assert completion.startswith(ts.text)
        assert decode_row(pol, batch, i).endswith(prompt.split("<|video_pad|>")[-1] + completion)
        real = batch.inputs["attention_mask"][i].bool()
        ids, mask = batch.inputs["input_ids"][i][real], batch.loss_mask[i][real]
        assert mask.sum() == len(ts.completion_ids) and ids[mask.bool()].tolist() == ts.completion_ids
        assert not mask[: len(ids) - len(ts.completion_ids)].any()  # system, user message and video: no loss
        assert (ids[~mask.bool()] == pol.model.config.video_token_id).sum() > 0  # the video is in the row
        assert not (batch.loss_mask[i][~real]).any()
    with torch.no_grad():
        hidden = pol.model.model(**model_inputs(pol.model, batch.inputs)).last_hidden_state
        sel = batch.loss_mask[:, 1:].bool()
        top = pol.model.lm_head(hidden[:, :-1][sel]).argmax(-1)
        logp, ent = sampled_logprobs(pol.model, batch.inputs, batch.loss_mask)
    assert top.tolist() == batch.inputs["input_ids"][:, 1:][sel].tolist()
    assert logp.shape == (sum(len(t.completion_ids) for t in turns),) and bool((logp <= 0).all())
    assert bool((ent >= 0).all())


def _script(gt_of):
    def fn(q, v, k):
        return W.MATCH.format(s="1.0", e="3.0") if v == gt_of[q] else W.NOT_MATCH
    return fn


def test_scripted_rollout_rewards_and_latent_gradient():
    sp, eng = W.split(), W.engine()
    top1 = eng.search(eng.embed_queries([q.text for q in sp.queries]), k=1).ids
    qs = [next(q for q, t in zip(sp.queries, top1) if t[0] != q.video_id)]  # turn 1 refuses and refines
    pol = W.policy()
    head = pol.model.lm_head
    W.forced(pol, _script({q.text: q.video_id for q in qs}))
    scorer = _scorer()
    loop = _loop(pol, "agent.max_turns=2", "agent.max_new_tokens=64")
    trajs, clips = rollout(loop, qs, group_size=2, scorer=scorer, generator=_gen(0), temperature=1.0,
                           latent_sigma=0.1, noise_generator=_gen(5))
    pol.model.lm_head = head  # the real head for the loss
    completions, cols = reward_columns(trajs, durations=loop.durations)
    weights = {"format": 0.5, "verification": 1.0, "iou": 1.0, "retrieval": 1.0}
    total, parts = score(weights, completions, **cols)
    for t, c in zip(trajs, completions):
        rec = t.record
        assert len(c) == len(rec.turns) and [ts.video for ts in t.turns] == [tr.video for tr in rec.turns]
        found = rec.stop_reason == "matched"
        assert found == (rec.turns[-1].video == rec.gt_video)
        refined = [ts.refined for ts in t.turns]
        assert refined == [tr.refined for tr in rec.turns] == [True] * (len(c) - found) + [False] * found
        assert all(ts.soft_used is not None and not np.allclose(ts.soft_used, ts.soft_mean)
                   for ts in t.turns if ts.refined)  # the sampled latent action, not the mean
        assert len(t.negatives) == 4 and rec.gt_video not in t.negatives
        assert t.p_before[0] == pytest.approx(scorer.prob(W.engine().embed_queries([rec.query])[0], rec.gt_video,
                                                          t.negatives), rel=1e-4)
    assert parts["format"] == [1.0] * 2 and parts["verification"] == [1.0] * 2  # the script always verifies right
    iou = (min(3.0, qs[0].end) - max(1.0, qs[0].start)) / (max(3.0, qs[0].end) - min(1.0, qs[0].start))
    found0 = trajs[0].record.stop_reason == "matched"
    assert parts["iou"][0] == pytest.approx(max(iou, 0.0) if found0 else 0.0, abs=1e-6)
    exp_ret = [np.mean([a for a in t.p_after if a is not None]) if any(a is not None for a in t.p_after)
               else t.p_before[0] for t in trajs]
    assert parts["retrieval"] == pytest.approx(exp_ret)
    adv = group_advantages(torch.tensor(total), 2)

    # the loss on these turns: the latent objective's gradient reaches every SQR module
    turns = [ts for t in trajs for ts in t.turns if ts.refined][:2]
    assert turns
    batch = collate_turns(pol, turns, clips)
    module = GRPOModule(pol, n_latents=loop.acfg.n_latents)
    pol.model.train()
    adv_rows = adv[[ts.traj for ts in turns]]
    den = {"tokens": int(batch.loss_mask.sum()), "turns": len(turns), "refined": int((batch.refine_pos >= 0).sum())}
    for objective in ("infonce", "gaussian"):
        kn = Knobs(0.2, 0.0, 0.0, "token", objective, 1.0, 0.1, 0.1)
        pol.model.zero_grad()
        pol.sqr.zero_grad()
        loss, st = micro_loss(kn, module, batch, adv_rows, den, embedder=W.engine().embedder,
                              scorer=scorer, negatives={t.index: t.negatives for t in trajs},
                              gt={t.index: t.record.gt_video for t in trajs}, device="cpu", dtype=torch.float32)
        loss.backward()
        assert st["refined"] == den["refined"] and f"latent_{objective}" in st
        for name in ("readout", "to_policy", "to_embedder"):
            g = [p.grad for p in getattr(pol.sqr, name).parameters()]
            assert all(x is not None for x in g) and sum(float(x.abs().sum()) for x in g) > 0, (objective, name)


def test_grpo_loss_on_a_fixed_batch_of_real_turns_decreases():
    """Recorded turns of the real tiny policy, fixed advantages (+1 / -1) and pre-update log-probs: a few
    AdamW steps of the clipped objective (+ KL to the frozen start) lower the loss and move the log-probs
    of the +1 turn up and of the -1 turn down."""
    import copy

    from videosearch_r1.train.grpo_step import batch_logprobs

    pol = W.policy()
    qs = W.split().queries[:1]
    trajs, clips = rollout(_loop(pol, "agent.max_turns=1", "agent.max_new_tokens=6"), qs, group_size=2,
                           generator=_gen(3), temperature=1.0)
    turns = [ts for t in trajs for ts in t.turns]
    batch = collate_turns(pol, turns, clips)
    ref = copy.deepcopy(pol.model).eval()
    old = batch_logprobs(pol.model, batch, "cpu", torch.float32)
    module = GRPOModule(pol, n_latents=2)
    pol.model.train()
    opt = torch.optim.AdamW([p for p in pol.model.parameters() if p.requires_grad], lr=1e-4)  # inside the clip range
    kn = Knobs(0.2, 0.0, 0.01, "token", "none", 0.0, 0.1, 0.1)
    den = {"tokens": int(batch.loss_mask.sum()), "turns": len(turns), "refined": 0}
    adv = torch.tensor([1.0, -1.0])
    refl = batch_logprobs(ref, batch, "cpu", torch.float32)
    losses = []
    for _ in range(4):
        loss, _ = micro_loss(kn, module, batch, adv, den, ref_logp=refl, old_logp=old, device="cpu",
                             dtype=torch.float32)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    new = batch_logprobs(pol.model, batch, "cpu", torch.float32)
    n0 = len(turns[0].completion_ids)
    assert new[:n0].sum() > old[:n0].sum() and new[n0:].sum() < old[n0:].sum()
