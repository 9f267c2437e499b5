"""`vsr1 train grpo` on the tiny synthetic world: steps log every reward and KL/entropy, parameters
(policy and SQR) move, and a killed run resumes to exactly the uninterrupted run."""
import dataclasses
import json

import pytest
import torch

import _world as W
from videosearch_r1.train import grpo_report
from videosearch_r1.train.common import latest_checkpoint
from videosearch_r1.train.grpo import bf16_copy, check_grpo_config, clone_model, run_grpo, sync_rollout_weights

MATCH = W.MATCH.format(s="1.0", e="3.0")


def _cfg(out, *extra):
    return W.world().cfg("grpo.split=test", "grpo.queries_per_step=1", "grpo.group_size=2", "grpo.max_new_tokens=48",
                         "grpo.micro_batch=3", "grpo.latent_objective=both", "grpo.lr=1e-3", "grpo.lr_sqr=1e-2",
                         "grpo.reward_weights.turn_cost=0.2", "agent.max_turns=2", "train.steps=2",
                         f"train.output={out}", "train.log_every=1", *extra)


def _policy(scripted: bool):
    """A tiny policy; scripted: its generations follow a script (copy k of a query alternates between a
    wrong match and a refusal, so a group's rewards differ) while the loss sees the real head."""
    pol = W.policy()
    if not scripted:
        return pol
    real = pol.model.lm_head
    W.forced(pol, lambda q, v, k: MATCH if k % 2 == 0 else W.NOT_MATCH)
    forced, gen = pol.model.lm_head, pol.generate
    on = {"v": False}
    forced_forward = forced.forward
    forced.forward = lambda h: forced_forward(h) if on["v"] else real(h)

    def generate(*a, **kw):
        on["v"] = True
        try:
            return gen(*a, **kw)
        finally:
            on["v"] = False
    pol.generate = generate
    return pol


def _lines(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_grpo_steps_log_rewards_and_move_parameters(tmp_path):
    pol = _policy(scripted=True)
    before = {n: p.detach().clone() for n, p in [("lm", pol.model.model.language_model.layers[0].mlp.up_proj.weight),
                                                   ("readout", pol.sqr.readout[0].weight),
                                                   ("to_embedder", pol.sqr.to_embedder[1].weight)]}
    summary = run_grpo(_cfg(tmp_path), "synth", engine=W.engine(), policy=pol)
    assert summary["complete"] and summary["steps"] == 2 and summary["trajectories"] == 4
    lines = _lines(tmp_path)
    assert [x["step"] for x in lines] == [1, 2]
    for x in lines:
        for k in ("reward/format", "reward/verification", "reward/iou", "reward/retrieval", "reward/turn_cost",
                  "reward/total", "kl", "entropy", "clip_frac", "latent_infonce", "latent_gaussian", "rollout_s",
                  "logprob_s", "update_s", "tokens_per_s"):
            assert k in x and x[k] is not None, k
        assert x["reward/format"] == 1.0 and x["entropy"] > 0 and x["refined_turns"] > 0
        stages = x["rollout_stage_s"]  # where the rollout's time went, by loop stage
        assert stages["generate"] > 0 and stages["rollout"] > 0 and sum(stages.values()) <= x["rollout_s"]
        n = x["rollout_counts"]  # a turn per generated row; each call decodes at least one step
        assert n["generate_rows"] == x["turns"] and n["decode_steps"] >= n["generate_calls"] >= 1
        assert x["rollout_new_graphs"] == 0  # CPU: eager decode steps, nothing compiled
    assert lines[0]["kl"] == pytest.approx(0.0, abs=1e-6) and lines[1]["kl"] > 0  # the policy left the reference
    now = {"lm": pol.model.model.language_model.layers[0].mlp.up_proj.weight, "readout": pol.sqr.readout[0].weight,
           "to_embedder": pol.sqr.to_embedder[1].weight}
    for k, p in now.items():
        assert not torch.equal(p.detach().cpu(), before[k]), k
    assert latest_checkpoint(tmp_path).name == "final" and (tmp_path / "final" / "sqr.safetensors").is_file()
    assert (tmp_path / "grpo_curves.png").read_bytes()[:4] == b"\x89PNG"  # drawn at the end of the run
    (tmp_path / "grpo_curves.png").unlink()
    # finished: rerunning from the same starting weights reuses it; other starting weights are refused
    assert run_grpo(_cfg(tmp_path), "synth", engine=W.engine(), policy=_policy(scripted=True))["steps"] == 2
    with pytest.raises(ValueError, match="init_weights"):
        run_grpo(_cfg(tmp_path), "synth", engine=W.engine(), policy=pol)  # the trained policy = another start
    with pytest.raises(ValueError, match="grpo"):  # another reward weight: refused, not continued
        run_grpo(_cfg(tmp_path, "grpo.reward_weights.turn_cost=0.5"), "synth", engine=W.engine(),
                 policy=_policy(scripted=True))
    with pytest.raises(ValueError, match="queries_per_step"):
        run_grpo(_cfg(tmp_path, "grpo.queries_per_step=2"), "synth", engine=W.engine(), policy=_policy(scripted=True))
    assert grpo_report.main([str(tmp_path / "metrics.jsonl")]) == 0
    png = (tmp_path / "grpo_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_killed_run_resumes_to_the_uninterrupted_run(tmp_path):
    """Sampled rollouts (seeded per step) of the real tiny policy: kill after step 1, rerun, compare."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    overrides = ("grpo.latent_objective=none", "grpo.kl_beta=0.0", "grpo.max_new_tokens=4", "agent.max_turns=1")
    run_grpo(_cfg(full, *overrides), "synth", engine=W.engine(), policy=_policy(False))
    run_grpo(_cfg(cut, *overrides, "train.checkpoint_every=1"), "synth", engine=W.engine(), policy=_policy(False),
             stop_after=1)
    assert latest_checkpoint(cut).name == "checkpoint-000001" and len(_lines(cut)) == 1
    run_grpo(_cfg(cut, *overrides, "train.checkpoint_every=1"), "synth", engine=W.engine(), policy=_policy(False))
    a, b = _lines(full), _lines(cut)
    assert [x["step"] for x in b] == [1, 2]
    for k in ("entropy", "completion_tokens", "reward/total", "turns"):
        assert [x[k] for x in a] == pytest.approx([x[k] for x in b], rel=1e-4), k


def test_bad_grpo_settings_name_the_field():
    cfg = W.world().cfg("grpo.group_size=1")
    with pytest.raises(ValueError, match="grpo.group_size"):
        check_grpo_config(cfg.grpo)
    with pytest.raises(ValueError, match="grpo.reward_weights: unknown reward"):
        check_grpo_config(W.world().cfg("grpo.reward_weights.speed=1.0").grpo)
    with pytest.raises(ValueError, match="grpo.latent_objective"):
        check_grpo_config(W.world().cfg("grpo.latent_objective=ppo").grpo)
    with pytest.raises(ValueError, match="grpo.corpus_size: must be >= 0"):  # refused when the config loads
        W.world().cfg("grpo.corpus_size=-1")
    with pytest.raises(ValueError, match="grpo.corpus_size must be >= 0"):  # and by the trainer's own check
        check_grpo_config(dataclasses.replace(W.world().cfg().grpo, corpus_size=-1))


def test_corpus_size_confines_the_rollouts_to_the_gts_chunk(tmp_path):
    """grpo.corpus_size: every video a rollout is shown lies in its GT's chunk of the index; the key says so."""
    from videosearch_r1.engine.search import chunk_scopes
    from videosearch_r1.train.grpo import run_key, setup

    cfg = _cfg(tmp_path, "grpo.corpus_size=4", "grpo.latent_objective=none", "grpo.kl_beta=0.0",
               "grpo.max_new_tokens=4", "agent.max_turns=2")
    run, _ = setup(cfg, "synth", "", tmp_path, engine=W.engine(), policy=_policy(False))
    scopes = chunk_scopes(W.engine().ids, 4)
    assert max(len(c) for c in scopes.values()) < len(W.engine().ids)
    trajs = run.loop.run(run.queries[:4])
    for t in trajs:
        assert t.turns and {tr.video for tr in t.turns} <= scopes[t.gt_video]
    plain = W.world().cfg("grpo.corpus_size=0")
    assert run_key(cfg, [], 1, 2, "w")["grpo"] != run_key(plain, [], 1, 2, "w")["grpo"]
    assert run_key(plain, [], 1, 2, "w")["grpo"] == run_key(W.world().cfg(), [], 1, 2, "w")["grpo"]


def test_grpo_schedule_replaces_train_schedule_in_the_steps_and_the_run_key(tmp_path):
    """grpo.schedule sets the lr the steps run at (train's linear decay would halve it by step 2 of 2)."""
    from videosearch_r1.train.grpo import run_key, stage_train

    cheap = ("grpo.latent_objective=none", "grpo.kl_beta=0.0", "grpo.max_new_tokens=4", "agent.max_turns=1",
             "train.warmup=0", "train.schedule=linear")
    run_grpo(_cfg(tmp_path, *cheap, "grpo.schedule=constant"), "synth", engine=W.engine(), policy=_policy(False))
    assert [x["lr"] for x in _lines(tmp_path)] == [1e-3, 1e-3]  # grpo.lr, flat
    linear, flat = W.world().cfg(*cheap), W.world().cfg(*cheap, "grpo.schedule=constant")
    assert stage_train(linear).schedule == "linear" and stage_train(flat).schedule == "constant"
    assert run_key(linear, [], 1, 2, "w")["grpo"] != run_key(flat, [], 1, 2, "w")["grpo"]


def test_verification_reward_in_the_run_key_only_when_it_is_not_the_old_mean():
    """Runs from before grpo.verification_reward existed (per-turn mean) keep their key and resume with
    verification_reward=mean; the new default is another objective, so another key."""
    from videosearch_r1.fingerprint import digest, section
    from videosearch_r1.train.grpo import run_key

    mean, every = W.world().cfg("grpo.verification_reward=mean"), W.world().cfg()
    old = digest({k: v for k, v in section(mean, "grpo", drop=("engine_url", "schedule")).items()
                  if k not in ("verification_reward", "corpus_size")})  # the key as computed before these fields
    assert run_key(mean, [], 1, 2, "w")["grpo"] == old != run_key(every, [], 1, 2, "w")["grpo"]


def test_a_nonfinite_grpo_update_names_the_parts_it_came_from(tmp_path):
    cheap = ("grpo.latent_objective=none", "grpo.kl_beta=0.0", "grpo.max_new_tokens=4", "agent.max_turns=1",
             "train.max_nonfinite_steps=5")
    pol = _policy(False)
    pol.model.model.visual.merger.linear_fc1.weight.register_hook(lambda g: g * float("nan"))
    run_grpo(_cfg(tmp_path, *cheap), "synth", engine=W.engine(), policy=pol)
    lines = _lines(tmp_path)
    assert [x["nonfinite_updates"] for x in lines] == [1, 1]
    assert all(x["nonfinite_parts"] == {"merger": 1} for x in lines)  # the poisoned part alone, before clipping


def test_bf16_rollout_copy_is_its_own_model_and_follows_the_weights():
    from videosearch_r1.models.qwen3vl import prepare_model

    pol = W.policy()
    prepare_model(pol.model)
    roll = bf16_copy(pol)
    assert roll.model.dtype == torch.bfloat16 and roll.sqr is pol.sqr and roll.processor is pol.processor
    ref = clone_model(pol.model)
    patched = 0
    for model in (roll.model, ref):
        for m in model.modules():  # every patched forward runs on the copy's own weights
            f = m.__dict__.get("forward")
            assert f is None or f.__self__ is m
            patched += f is not None
    assert patched > 0 and ref.dtype == torch.float32
    w = pol.model.model.language_model.layers[0].mlp.up_proj.weight
    with torch.no_grad():
        w.add_(1.0)
    sync_rollout_weights(roll, pol)
    assert torch.equal(roll.model.model.language_model.layers[0].mlp.up_proj.weight, w.to(torch.bfloat16))
    qs = W.split().queries[:1]
    clip = W.clip_fn()(qs[0].video_id)
    assert len(roll.generate([qs[0].text], [clip], max_new_tokens=3).ids[0]) > 0
    assert roll.vision_cache.stats()["entries"] > 0
    sync_rollout_weights(roll, pol)  # the next step's rollouts encode with the new weights, never old features
    assert roll.vision_cache.stats()["entries"] == 0


@pytest.mark.slow
def test_rollouts_through_vsr1_serve_equal_in_process(tmp_path):
    """grpo.engine_url: the loop searches through a live `vsr1 serve` (SearchClient); same seed, same run."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_server import _serve

    from videosearch_r1.engine.server import create_app

    server, thread, url = _serve(create_app(W.engine()))
    try:
        overrides = ("grpo.latent_objective=none", "grpo.kl_beta=0.0", "grpo.max_new_tokens=4", "agent.max_turns=2",
                     "train.steps=1")
        run_grpo(_cfg(tmp_path / "local", *overrides), "synth", engine=W.engine(), policy=_policy(False))
        run_grpo(_cfg(tmp_path / "served", *overrides, f"grpo.engine_url={url}"), "synth", policy=_policy(False))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    a, b = _lines(tmp_path / "local"), _lines(tmp_path / "served")
    for k in ("entropy", "completion_tokens", "reward/total", "reward/retrieval", "turns"):
        assert a[0][k] == pytest.approx(b[0][k], rel=1e-4), k
