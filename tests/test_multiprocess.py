"""Several processes train like one: 2 CPU processes (torch.distributed gloo, DDP through accelerate)
log the same SFT and GRPO losses as 1 process at the same global batch; a batch without video still
runs the vision tower.

    .venv/bin/python -m pytest -q tests/test_multiprocess.py
"""
import dataclasses
import json

import pytest
import torch

import _multiproc as M
import _world as W


def _sft_overrides(out):
    return ("train.batch_size=2", "train.global_batch=4", "train.steps=2", "train.lr=1e-3", "train.lr_sqr=1e-3",
            "train.lr_merger=1e-3", "train.schedule=constant", "train.log_every=1", "agent.n_latents=2",
            f"train.output={out}")


def _grpo_overrides(out):
    return ("grpo.split=test", "grpo.queries_per_step=2", "grpo.rollout_groups=1", "grpo.group_size=2",
            "grpo.max_new_tokens=48", "grpo.micro_batch=3", "grpo.latent_objective=both", "grpo.lr=1e-3",
            "grpo.lr_sqr=1e-2", "grpo.reward_weights.turn_cost=0.2", "agent.max_turns=2", "train.steps=2",
            "train.log_every=1", f"train.output={out}")


def _lines(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """1 process in this one, then 2 spawned processes; the run directories of each."""
    from videosearch_r1.train.sft_data import build_sft_rows

    built = W.world()
    rows, _ = build_sft_rows(built.cfg("sft.n_negatives=4"), "synth")
    rows = rows[:8]
    assert len(rows) == 8 and any(r.contrastive for r in rows)
    # an undecodable video in rank 1's first micro-batch: a counted skip that rank 0's summary must report
    from videosearch_r1.train.common import DataOrder, TrainState

    bad = DataOrder(8, 2, built.cfg().train.seed, world=2, rank=1).next(TrainState())[0]
    rows[bad] = dataclasses.replace(rows[bad], id="bad", video="no-such-video")
    root = tmp_path_factory.mktemp("multiproc")
    one, two = root / "one", root / "two"
    cfg = built.cfg(*_sft_overrides(one / "sft"))
    M.run_sft(cfg, rows, one / "sft")
    M.run_grpo(built.cfg(*_grpo_overrides(one / "grpo")))
    M.spawn(2, {"sft": (rows, _sft_overrides(two / "sft")), "grpo": _grpo_overrides(two / "grpo")}, built)
    return one, two


def test_two_processes_log_the_sft_losses_of_one(runs):
    one, two = runs
    a, b = _lines(one / "sft"), _lines(two / "sft")
    assert [x["step"] for x in a] == [x["step"] for x in b] == [1, 2]
    for k in ("rows", "tokens", "target_tokens"):  # the whole global batch is counted, not rank 0's share
        assert [x[k] for x in a] == [x[k] for x in b], k
    assert a[0]["rows"] + a[1]["rows"] == 7  # 8 rows, the bad one skipped
    for k in ("loss", "ce", "infonce", "grad_norm"):
        assert [x[k] for x in a] == pytest.approx([x[k] for x in b], rel=1e-4, abs=1e-6), k
    assert a[0]["loss"] != pytest.approx(a[1]["loss"], rel=1e-3)  # step 2 saw the (equal) step-1 update
    s1, s2 = (json.loads((d / "sft" / "summary.json").read_text()) for d in (one, two))
    assert s1["processes"] == 1 and s2["processes"] == 2 and s1["rows_seen"] == s2["rows_seen"] == 7
    assert s1["skipped"] == s2["skipped"] and s2["skipped"]["video"] == 1  # skipped on rank 1, reported by rank 0
    assert [r[0] for r in s2["skipped_rows"]] == ["bad"]
    from safetensors.torch import load_file

    w1, w2 = (load_file(str(d / "sft" / "final" / "sqr.safetensors")) for d in (one, two))
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-6)


def test_two_processes_log_the_grpo_losses_of_one(runs):
    one, two = runs
    a, b = _lines(one / "grpo"), _lines(two / "grpo")
    assert [x["step"] for x in a] == [x["step"] for x in b] == [1, 2]
    for k in ("turns", "completion_tokens", "forward_tokens", "refined_turns"):
        assert [x[k] for x in a] == [x[k] for x in b], k
    for k in ("reward/total", "reward/verification", "reward/retrieval", "reward/std_in_group", "loss", "kl",
              "entropy", "clip_frac", "latent_infonce", "latent_gaussian", "grad_norm"):
        assert [x[k] for x in a] == pytest.approx([x[k] for x in b], rel=1e-4, abs=1e-6), k
    assert a[0]["reward/std_in_group"] > 0 and a[1]["kl"] > 0  # real advantages; the policy moved
    s1, s2 = (json.loads((d / "grpo" / "summary.json").read_text()) for d in (one, two))
    assert s1["trajectories"] == s2["trajectories"] == 8


def test_a_batch_without_video_still_runs_the_vision_tower():
    """The vision tower gets (zero) gradients from a text-only micro-batch, and the loss is unchanged;
    without the guard its parameters have no gradient at all (ZeRO-3 / FSDP ranks would hang)."""
    from videosearch_r1.models.qwen3vl import vision_keepalive
    from videosearch_r1.train.trainer import PolicyModule

    pol = W.policy()
    tok = pol.processor.tokenizer
    ids = torch.tensor([tok("a red star spins on the left", add_special_tokens=False)["input_ids"]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": torch.zeros_like(ids)}
    labels = ids.clone()
    labels[:, :2] = -100
    mod = PolicyModule(pol, 2, True, True)
    ce, n, soft = mod(inputs, labels, torch.tensor([-1]), torch.tensor([False]))
    assert soft is None and int(n) == ids.shape[1] - 2
    ce.backward()
    vision = list(pol.model.model.visual.named_parameters())
    assert vision and all(p.grad is not None for _, p in vision), [k for k, p in vision if p.grad is None][:3]
    assert all(float(p.grad.abs().max()) == 0.0 for _, p in vision)
    keep = vision_keepalive(pol.model, inputs)
    assert float(keep.detach()) == 0.0 and keep.requires_grad
    with_video = {**inputs, "pixel_values_videos": torch.zeros(4, 8)}
    assert vision_keepalive(pol.model, with_video) is None  # real pixels: nothing added


def test_data_order_gives_every_step_the_same_rows_on_1_and_n_processes():
    from types import SimpleNamespace

    from videosearch_r1.train.common import DataOrder, TrainState, effective_grad_accum

    n, batch, seed = 24, 2, 7
    for world in (2, 3):
        tc = SimpleNamespace(global_batch=12, batch_size=batch, grad_accum=1)
        one_accum, accum = effective_grad_accum(tc, 1), effective_grad_accum(tc, world)
        assert (one_accum, accum) == (6, 6 // world)
        one, st1 = DataOrder(n, batch, seed), TrainState()
        ranks = [(DataOrder(n, batch, seed, world, r), TrainState()) for r in range(world)]
        for _ in range(5):  # five optimizer steps, across an epoch boundary
            rows1 = sorted(i for _ in range(one_accum) for i in one.next(st1))
            rows_n = sorted(i for order, st in ranks for _ in range(accum) for i in order.next(st))
            assert rows1 == rows_n
    with pytest.raises(ValueError, match="train.global_batch=10 is not a multiple"):
        effective_grad_accum(SimpleNamespace(global_batch=10, batch_size=2, grad_accum=1), 3)
