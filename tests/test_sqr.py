"""The SQR latent rollout: KV-cached == the authors' uncached full forwards == continuing from the
generation's own cache, on a batched, left-padded tiny policy with videos; gradients; seeds; edge cases."""
import pytest
import torch


from videosearch_r1.agent.policy import Policy
from videosearch_r1.agent.sqr import find_refine_positions, refine_from_generation, rollout_from_state, rollout_latents
from videosearch_r1.config import VideoConfig
from videosearch_r1.models.tiny import make_tiny_checkpoint

VCFG = VideoConfig(fps=1.0, max_frames=8, min_pixels=32 * 32, max_pixels=64 * 64)
from _policy_inputs import CLIPS, QUERIES, liven, make_clip  # noqa: E402


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A lively tiny policy whose <REFINE> id is set to a token every row generates mid-way, the
    verification turn (with its cache kept), and the prompt+completion batch."""
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("sqr"), kind="policy", video_cfg=VCFG)
    policy = liven(Policy.from_pretrained(ckpt), seed=3)
    free = policy.generate(QUERIES, CLIPS, max_new_tokens=30, ignore_eos=True)
    common = set(free.ids[0][1:-1]) & set(free.ids[1][1:-1]) & set(free.ids[2][1:-1])
    assert common, "the lively model should share a mid-sequence token across rows"
    policy.refine_token_id = min(common)  # the rollout is token-agnostic: any id can play <REFINE>
    inputs = policy.build_inputs(QUERIES, CLIPS)
    full = policy.append_completions(inputs, free.ids)
    r = find_refine_positions(full["input_ids"], policy.refine_token_id, start=inputs["input_ids"].shape[1])
    assert (r >= 0).all() and len(set(r.tolist())) > 1  # different insertion points per row
    return policy, inputs, full, r


def test_cached_equals_uncached_equals_from_generation(setup):
    policy, inputs, full, r = setup
    n = 8
    with torch.no_grad():
        zc = rollout_latents(policy, full, r, n, cached=True)
        zu = rollout_latents(policy, full, r, n, cached=False)
    gen = policy.generate(QUERIES, CLIPS, max_new_tokens=30, ignore_eos=True, keep_state=True)
    zs, has = rollout_from_state(policy, gen, n)
    assert zc.shape == (3, n, policy.latent_dim) and zc.dtype == torch.float32 and has.all()
    assert rel(zc, zu) < 1e-3 and rel(zs, zu) < 1e-3
    # the latents really move from step to step (a constant rollout would pass trivially)
    assert (zu[:, 1:] - zu[:, :-1]).norm(dim=-1).min() > 1e-2
    # prefix consistency: an N-latent rollout starts with the shorter ones
    for k in (1, 3):
        with torch.no_grad():
            assert rel(rollout_latents(policy, full, r, k, cached=True), zu[:, :k]) < 1e-3


@pytest.mark.parametrize("eager_step", ["decode", "fixed_tail"])
def test_grad_rollout_growing_cache_equals_uncached_values_and_gradients(setup, eager_step, monkeypatch):
    """Under grad the cached rollout reads the prefill's K/V as they are; its uncompiled latent steps are
    decode_step on a growing cache (the default, sqr.EAGER_STEP="decode") or sqr_grad's fixed-size tail:
    with either, latents and the gradient reaching the policy equal the authors' full forwards. The
    fixed-tail step sees the same prefix and tail shapes at every layer step (no per-step copy, no new
    shapes)."""
    from videosearch_r1.agent import sqr, sqr_grad

    monkeypatch.setattr(sqr, "EAGER_STEP", eager_step)
    policy, _, full, r = setup
    w = policy.model.model.language_model.layers[0].mlp.up_proj.weight
    grads, zs = [], []
    for cached in (True, False):
        w.grad = None
        z = rollout_latents(policy, full, r, 5, cached=cached)
        z.square().sum().backward()
        grads.append(w.grad.clone())
        zs.append(z.detach())
    w.grad = None
    assert rel(zs[0], zs[1]) < 1e-3 and rel(grads[0], grads[1]) < 1e-3 and grads[0].abs().sum() > 0
    seen = []
    real = sqr_grad._latent_layer

    def spy(layer, h, cos, sin, kp, vp, prefix_ok, tk, tv, col, tail_ok):  # called by the (eager) step
        seen.append((kp.shape[2], tuple(tk.shape), int(col.sum()), int(tail_ok.sum())))
        return real(layer, h, cos, sin, kp, vp, prefix_ok, tk, tv, col, tail_ok)
    sqr_grad._latent_layer = spy
    try:
        rollout_latents(policy, full, r, 3, cached=True)
    finally:
        sqr_grad._latent_layer = real
    n_layers = len(policy.model.model.language_model.layers)
    if eager_step == "decode":
        assert seen == []  # the default eager step does not go through the fixed-tail layer step
        return
    assert len(seen) == 2 * n_layers  # N - 1 steps through every layer
    assert len({(lp, t) for lp, t, _, _ in seen}) == 1 and seen[0][1][2] == 2  # one prefix, a tail of N - 1 columns
    assert sorted({o for _, _, _, o in seen}) == [1, 2] and all(c == 1 for _, _, c, _ in seen)


def test_compiled_grad_step_equals_eager_without_recompiles(setup):
    """The latent layer step through torch.compile (aot_eager here: dynamo + AOTAutograd, what inductor
    compiles on CUDA) gives the eager values and gradients; one graph serves every step."""
    import torch._dynamo

    from videosearch_r1.agent import sqr_grad
    from videosearch_r1.agent.decode import prefill
    from videosearch_r1.agent.sqr import _prepare

    policy, _, full, r = setup
    cut, positions, r_eff, _ = _prepare(policy, full, r)
    params = [policy.sqr.to_policy[0].weight if isinstance(policy.sqr.to_policy, torch.nn.Sequential)
              else next(policy.sqr.to_policy.parameters()),
              policy.model.model.language_model.layers[1].self_attn.k_proj.weight]
    out = []
    torch._dynamo.reset()
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]  # process-wide (other tests compile too)
    for backend in (None, "aot_eager"):
        pf = prefill(policy.model, cut, positions, gather_at=r_eff)
        rows = torch.arange(r.shape[0])
        z = sqr_grad.grad_steps(policy, pf.cache.keys, pf.cache.values, pf.cache.valid, policy.sqr(pf.post),
                                positions[0, rows, r_eff], 5, backend=backend)
        out.append((z.detach(), torch.autograd.grad(z.square().sum(), params)))
        if backend is not None:
            frames = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
    assert rel(out[1][0], out[0][0]) < 1e-5
    for a, b in zip(out[1][1], out[0][1]):
        assert b.abs().sum() > 0 and rel(a, b) < 1e-4
    assert frames == 1  # steps 2-4 through every layer: one graph (step 1 runs eagerly)
    torch._dynamo.reset()


def test_rollout_depends_on_the_video(setup):
    policy, inputs, full, r = setup
    with torch.no_grad():
        z = rollout_latents(policy, full, r, 4)
        other = dict(full, pixel_values_videos=full["pixel_values_videos"].flip(0))
        z_video = rollout_latents(policy, other, r, 4)
    assert rel(z_video, z) > 1e-3


def test_pre_norm_seed_of_the_reference(setup):
    policy, _, full, r = setup
    cfg = policy.sqr_config
    with torch.no_grad():
        z_post = rollout_latents(policy, full, r, 2)
        policy.sqr_config = cfg.__class__(**{**cfg.__dict__, "seed_hidden": "pre_norm"})
        try:
            zc = rollout_latents(policy, full, r, 2, cached=True)
            zu = rollout_latents(policy, full, r, 2, cached=False)
            gen = policy.generate(QUERIES, CLIPS, max_new_tokens=30, ignore_eos=True, keep_state=True)
            zs, _ = rollout_from_state(policy, gen, 2)
        finally:
            policy.sqr_config = cfg
    assert rel(zc, zu) < 1e-3 and rel(zs, zu) < 1e-3
    assert rel(zc[:, 0], z_post[:, 0]) > 1e-2  # a different seed


def test_gradients_match_between_cached_and_uncached(setup):
    policy, _, full, r = setup
    params = [p for p in policy.sqr.parameters()] + [policy.model.model.language_model.layers[-1].mlp.down_proj.weight]
    grads = []
    for cached in (True, False):
        z = rollout_latents(policy, full, r, 3, cached=cached)
        grads.append(torch.autograd.grad(z.square().sum(), params, allow_unused=True))
    compared = 0
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert rel(a, b) < 1e-3
            compared += 1
    assert compared >= 9  # readout, to_policy and the policy's own weight all receive gradient


def test_rows_without_refine_and_bad_positions(setup):
    policy, _, full, r = setup
    r2 = r.clone()
    r2[1] = -1
    with torch.no_grad():
        z = rollout_latents(policy, full, r2, 3)
        z_ref = rollout_latents(policy, full, r, 3)
    assert z[1].abs().sum() == 0 and rel(z[[0, 2]], z_ref[[0, 2]]) < 1e-5
    with pytest.raises(ValueError, match="rows"):
        rollout_latents(policy, full, r - 1, 3)  # not a <REFINE> token
    with pytest.raises(ValueError):
        rollout_latents(policy, full, r[:2], 3)


def test_find_refine_positions_skips_the_prompt():
    ids = torch.tensor([[9, 5, 1, 5, 2, 5, 0], [0, 0, 5, 1, 2, 3, 4], [5, 1, 1, 1, 5, 5, 1]])
    mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    assert find_refine_positions(ids, 5).tolist() == [5, 2, 5]
    assert find_refine_positions(ids, 5, start=3).tolist() == [5, -1, 5]
    assert find_refine_positions(ids, 5, start=torch.tensor([0, 0, 0]), attention_mask=mask).tolist() == [5, 2, 4]


def test_refine_from_generation_soft_tokens(setup):
    policy, _, _, _ = setup
    gen = policy.generate(QUERIES, CLIPS, max_new_tokens=30, ignore_eos=True, keep_state=True)
    sq = refine_from_generation(policy, gen, n_latents=5)
    assert sq.soft.shape == (3, 5, policy.embedder_hidden) and sq.has_refine.all()
    assert torch.allclose(sq.soft, policy.soft_tokens(sq.latents), atol=1e-6)
    with pytest.raises(ValueError, match="keep_state"):
        rollout_from_state(policy, policy.generate(QUERIES, CLIPS, max_new_tokens=4), 3)
    small = policy.generate(QUERIES, CLIPS, max_new_tokens=4, ignore_eos=True, keep_state=True, reserve=0)
    free = small.state.cache.capacity - small.state.cache.length  # capacity is padded to 64 columns
    with pytest.raises(ValueError, match="reserve"):
        rollout_from_state(policy, small, free + 2)
    # a row that never generated the token: zeros, flagged
    saved = policy.refine_token_id
    policy.refine_token_id = gen.ids[0][0]
    try:
        gen2 = policy.generate(QUERIES, CLIPS, max_new_tokens=12, ignore_eos=True, keep_state=True)
        sq2 = refine_from_generation(policy, gen2, n_latents=3)
    finally:
        policy.refine_token_id = saved
    for row, has, z in zip(gen2.ids, sq2.has_refine.tolist(), sq2.latents):
        assert has == (gen.ids[0][0] in row)
        assert (z.abs().sum() > 0) == has


def test_pooled_cache_is_reused_without_stale_state(setup):
    """Rollouts without grad reuse the model's pooled static cache (and, on GPU, its captured graph):
    a different video, then a shorter prompt in the same (larger) cache, give the same latents as
    fresh caches and as the authors' uncached forwards."""
    from dataclasses import replace

    from videosearch_r1.agent.decode import DecodeCache, prefill, release_pool

    policy, inputs, full, r = setup
    plen = inputs["input_ids"].shape[1]
    completions = [row[plen:][m[plen:].bool()].tolist() for row, m in zip(full["input_ids"], full["attention_mask"])]
    short_clips = [make_clip(2, c.frames.shape[1], c.frames.shape[2], i) for i, c in enumerate(CLIPS)]
    short_in = policy.build_inputs(QUERIES, short_clips)
    short = policy.append_completions(short_in, completions)
    r_short = find_refine_positions(short["input_ids"], policy.refine_token_id, start=short_in["input_ids"].shape[1])
    assert r_short.max() < r.max()  # a narrower prefill than the first call's
    other = dict(full, pixel_values_videos=full["pixel_values_videos"].flip(0))
    opts = policy.decode_options
    release_pool(policy.model)
    with torch.no_grad():
        z_full = rollout_latents(policy, full, r, 5)  # creates the pooled cache
        runner = policy.model._vsr1_step_pool.runner
        z_other = rollout_latents(policy, other, r, 5)
        z_short = rollout_latents(policy, short, r_short, 5)
        assert policy.model._vsr1_step_pool.runner is runner  # reused all three times
        z_again = rollout_latents(policy, full, r, 5)
        policy.decode_options = replace(opts, reuse=False)
        try:
            fresh = [rollout_latents(policy, x, rr, 5) for x, rr in ((other, r), (short, r_short))]
        finally:
            policy.decode_options = opts
        uncached = [rollout_latents(policy, x, rr, 5, cached=False) for x, rr in ((full, r), (short, r_short))]
        with pytest.raises(ValueError, match="rows"):
            prefill(policy.model, full, policy.positions(full), into=DecodeCache.empty(policy.model, 2, 4096))
    assert rel(z_again, z_full) < 1e-6 and rel(z_other, z_full) > 1e-3
    assert rel(z_other, fresh[0]) < 1e-5 and rel(z_short, fresh[1]) < 1e-5
    assert rel(z_full, uncached[0]) < 1e-3 and rel(z_short, uncached[1]) < 1e-3
    release_pool(policy.model)
    assert policy.model._vsr1_step_pool.runner is None


def test_grpo_module_rollout_from_its_forward_equals_the_separate_rollout(setup):
    """GRPOModule continues the rollout from its log-prob forward's own KV cache (one prefill): the soft
    tokens, their gradients on the policy and all SQR projectors, and the log-probs equal the separate path
    (sampled_logprobs + sqr.rollout_latents on the latent rows), on left-padded rows with videos where one
    row is not a latent row. The shared forward is the one that ran (a spy counts the prefills)."""
    from videosearch_r1.agent import sqr as sqr_mod
    from videosearch_r1.train.grpo_step import GRPOModule, sampled_logprobs
    from videosearch_r1.train.trainer import _select_videos

    policy, inputs, full, r = setup
    plen = inputs["input_ids"].shape[1]
    loss_mask = full["attention_mask"].clone()
    loss_mask[:, :plen] = 0
    latent_rows = torch.tensor([True, False, True])
    lm = policy.model.model.language_model
    first = lambda mod: next(mod.parameters())  # noqa: E731
    params = {"readout": first(policy.sqr.readout), "to_policy": first(policy.sqr.to_policy),
              "to_embedder": first(policy.sqr.to_embedder), "q_proj0": lm.layers[0].self_attn.q_proj.weight,
              "v_proj_last": lm.layers[-1].self_attn.v_proj.weight, "embed": lm.embed_tokens.weight,
              "merger": policy.model.model.visual.merger.linear_fc2.weight}
    w = torch.randn(2, 4, policy.embedder_hidden, generator=torch.Generator().manual_seed(0))

    def run(shared: bool):
        calls = []
        real = sqr_mod.rollout_from_forward
        sqr_mod.rollout_from_forward = lambda *a, **k: calls.append(1) or real(*a, **k)
        try:
            if shared:
                logp, _, soft = GRPOModule(policy, n_latents=4)(full, loss_mask, r, latent_rows)
            else:  # the previous path: log-prob forward, then a second prefill for the latent rows
                logp, _ = sampled_logprobs(policy.model, full, loss_mask)
                rows = latent_rows.nonzero()[:, 0]
                sub = _select_videos({k: full[k][rows] for k in ("input_ids", "attention_mask", "mm_token_type_ids")},
                                     full, rows)
                soft = policy.soft_tokens(sqr_mod.rollout_latents(policy, sub, r[rows], 4, cached=True))
        finally:
            sqr_mod.rollout_from_forward = real
        assert len(calls) == int(shared)
        loss = (soft * w).sum() + logp.sum() * 1e-2
        grads = torch.autograd.grad(loss, list(params.values()))
        return logp.detach(), soft.detach(), dict(zip(params, grads))

    logp_a, soft_a, g_a = run(True)
    logp_b, soft_b, g_b = run(False)
    assert soft_a.shape == (2, 4, policy.embedder_hidden)
    torch.testing.assert_close(logp_a, logp_b, rtol=1e-5, atol=1e-5)
    assert rel(soft_a, soft_b) < 1e-4 and (soft_a[:, 1:] - soft_a[:, :-1]).norm(dim=-1).min() > 1e-3
    for name in params:
        assert g_b[name].abs().sum() > 0, name
        assert rel(g_a[name], g_b[name]) < 1e-3, name


def test_rollout_from_forward_ignores_non_finite_padding_keys_and_values(setup):
    """Left padding's K/V can be non-finite on some kernels; masked in the scores is not enough (dq = dS K
    and probs @ V give 0 * NaN): the rollout from a forward's cache zeroes both at padding, so latents and
    gradients stay finite and equal those from a cache with finite padding."""
    from videosearch_r1.agent.sqr import rollout_from_forward
    from videosearch_r1.models.qwen3vl import model_inputs

    policy, _, full, r = setup
    pad = ~full["attention_mask"].bool()
    assert bool(pad.any())  # the fixture's rows are left padded
    w = policy.model.model.language_model.layers[0].self_attn.q_proj.weight
    rows = torch.arange(r.shape[0])
    out_z, out_g = [], []
    for poison in (False, True):
        kw = model_inputs(policy.model, full)
        out = policy.model.model(**kw, use_cache=True)
        if poison:
            for layer in out.past_key_values.layers:
                layer.keys = layer.keys.masked_fill(pad[:, None, :, None], float("nan"))
                layer.values = layer.values.masked_fill(pad[:, None, :, None], float("nan"))
        pos = kw.get("position_ids")
        pos = pos if pos is not None else policy.positions(full)
        z = rollout_from_forward(policy, out, out.last_hidden_state, pos, full["attention_mask"], r, rows, 4)
        (g,) = torch.autograd.grad(z.square().sum(), [w])
        out_z.append(z.detach())
        out_g.append(g)
    assert torch.isfinite(out_z[1]).all() and torch.isfinite(out_g[1]).all()
    assert rel(out_z[1], out_z[0]) < 1e-6 and rel(out_g[1], out_g[0]) < 1e-6
