"""The policy: our decode loop equals HF generate (greedy, batched, left padded, with video), loading and
saving with the SQR modules beside the checkpoint, <REFINE> handling, and the authors' layout."""
import json

import pytest
import torch

from videosearch_r1.agent.decode import DecodeOptions
from videosearch_r1.agent.policy import SQR_CONFIG, SQR_WEIGHTS, Policy, PolicyLoadError, SQRConfig, SQRModules
from videosearch_r1.agent.prompts import REFINE_TOKEN
from videosearch_r1.agent.reference_ckpt import save_reference_layout
from videosearch_r1.config import VideoConfig
from videosearch_r1.models.tiny import make_tiny_checkpoint

VCFG = VideoConfig(fps=1.0, max_frames=8, min_pixels=32 * 32, max_pixels=64 * 64)
from _policy_inputs import CLIPS, QUERIES, liven  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("policy"), kind="policy", video_cfg=VCFG)


@pytest.fixture(scope="module")
def policy(ckpt):
    return liven(Policy.from_pretrained(ckpt))


def hf_greedy(policy, max_new, eos=None):
    inputs = policy.build_inputs(QUERIES, CLIPS)
    kw = {} if eos is None else {"eos_token_id": eos}
    out = policy.model.generate(**inputs, max_new_tokens=max_new, do_sample=False, **kw)
    return out[:, inputs["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("attention", ["sdpa", "matmul"])
def test_generate_equals_hf_generate_greedy(policy, attention):
    policy.decode_options = DecodeOptions(attention=attention)
    try:
        gen = policy.generate(QUERIES, CLIPS, max_new_tokens=24, ignore_eos=True)
    finally:
        policy.decode_options = DecodeOptions()
    ref = hf_greedy(policy, 24, eos=[])
    assert gen.ids == ref
    assert len({tuple(r) for r in ref}) == 3 and all(len(set(r)) > 3 for r in ref)  # a non-degenerate check
    assert gen.prompt_len == policy.build_inputs(QUERIES, CLIPS)["input_ids"].shape[1]


def test_stop_tokens_counts_and_text(policy):
    free = policy.generate(QUERIES, CLIPS, max_new_tokens=24, ignore_eos=True)
    stop = free.ids[0][5]  # make a token row 0 emits mid-way a stop token
    saved = policy.eos_token_ids
    policy.eos_token_ids = sorted(set(saved + [stop]))
    try:
        gen = policy.generate(QUERIES, CLIPS, max_new_tokens=24)
        ref = hf_greedy(policy, 24, eos=policy.eos_token_ids)
    finally:
        policy.eos_token_ids = saved
    for row, ids, n, r in zip(free.ids, gen.ids, gen.n_tokens, ref):
        first = next((i for i, t in enumerate(row) if t == stop or t in saved), None)
        if first is None:
            assert n == 24 and ids == row
        else:
            assert n == first and ids == row[:first + 1]  # the stop token is returned, not counted
        assert r[:len(ids)] == ids
    assert gen.n_tokens[0] <= 5
    tok = policy.processor.tokenizer
    assert gen.texts[0] == tok.decode(gen.ids[0][:gen.n_tokens[0]], skip_special_tokens=False)


def test_sampling_is_seeded(policy):
    a = policy.generate(QUERIES, CLIPS, max_new_tokens=12, temperature=1.0, seed=3, ignore_eos=True)
    b = policy.generate(QUERIES, CLIPS, max_new_tokens=12, temperature=1.0, seed=3, ignore_eos=True)
    c = policy.generate(QUERIES, CLIPS, max_new_tokens=12, temperature=1.0, seed=4, ignore_eos=True)
    assert a.ids == b.ids and a.ids != c.ids


def test_save_and_reload_with_sqr_beside(policy, tmp_path):
    out = policy.save_pretrained(tmp_path / "saved")
    cfg = json.loads((out / SQR_CONFIG).read_text())
    assert (out / SQR_WEIGHTS).exists() and cfg["seed_hidden"] == "post_norm" and cfg["latent_dim"] == 64
    again = Policy.from_pretrained(out)  # no flags
    for (k, a), (_, b) in zip(policy.sqr.state_dict().items(), again.sqr.state_dict().items()):
        assert torch.equal(a, b), k
    g1 = policy.generate(QUERIES[:2], CLIPS[:2], max_new_tokens=10, ignore_eos=True)
    g2 = again.generate(QUERIES[:2], CLIPS[:2], max_new_tokens=10, ignore_eos=True)
    assert g1.ids == g2.ids
    with pytest.raises(PolicyLoadError, match="latent_dim"):
        Policy.from_pretrained(out, latent_dim=32)
    (out / SQR_CONFIG).write_text(json.dumps({**cfg, "mystery": 1}))
    with pytest.raises(PolicyLoadError, match="mystery"):
        Policy.from_pretrained(out)


def test_fresh_modules_follow_the_reference_init(ckpt):
    p = Policy.from_pretrained(ckpt, latent_dim=48, embedder_hidden=80)
    assert (p.latent_dim, p.embedder_hidden, p.hidden_size) == (48, 80, 64)
    assert p.sqr.readout[3].weight.abs().sum() == 0 and p.sqr.readout[3].bias.abs().sum() == 0
    for lin, (o, i) in ((p.sqr.to_policy[1], (64, 48)), (p.sqr.to_embedder[1], (80, 48))):
        assert lin.weight.shape == (o, i) and lin.weight.dtype == torch.float32
        assert torch.equal(lin.weight, torch.eye(o, i)) and lin.bias.abs().sum() == 0
    z = torch.randn(2, 3, 48)
    assert p.soft_tokens(z).shape == (2, 3, 80)
    with pytest.raises(ValueError):
        SQRConfig(hidden_size=64, latent_dim=0, embedder_hidden=64)
    with pytest.raises(ValueError):
        SQRConfig(hidden_size=64, latent_dim=8, embedder_hidden=8, seed_hidden="mid")
    with pytest.raises(ValueError):
        DecodeOptions(attention="flash")


def test_refine_token_is_added_when_missing(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "emb", kind="embedder", video_cfg=VCFG)  # tokenizer lacks <REFINE>
    rows_before = json.loads((path / "config.json").read_text())["text_config"]["vocab_size"]
    p = Policy.from_pretrained(path)
    tok = p.processor.tokenizer
    assert tok.convert_tokens_to_ids(REFINE_TOKEN) == p.refine_token_id == rows_before
    assert p.model.get_input_embeddings().weight.shape[0] == rows_before + 1
    assert tok(REFINE_TOKEN, add_special_tokens=False)["input_ids"] == [p.refine_token_id]
    p.save_pretrained(tmp_path / "saved")
    assert Policy.from_pretrained(tmp_path / "saved").refine_token_id == p.refine_token_id


def _authors_checkpoint(policy, path, d=48, he=96, max_shard_size=None):
    """A checkpoint in the authors' layout, built from reference.md section 1 alone (not from our mapping
    or writer): their SQR modules are plain attributes of the Qwen3VLForConditionalGeneration, saved by
    HF save_pretrained inside the model weights (bf16 here, as their bf16 training saves them):
      refine_projector               Linear(H->D) -> LayerNorm(D) -> GELU -> Linear(D->D)
      refine_gate                    Linear(H->1) (zero-init, unused)
      refine_latent_input_projector  LayerNorm(D) -> Linear(D->H)
      refine_append_input_projector  LayerNorm(D) -> Linear(D->He)
      query_embedder_head            Identity (He == D in the released 2B: no tensors)"""
    import copy

    from torch import nn

    h = policy.model.config.text_config.hidden_size
    model = copy.deepcopy(policy.model)
    g = torch.Generator().manual_seed(11)
    mods = {"refine_projector": nn.Sequential(nn.Linear(h, d), nn.LayerNorm(d), nn.GELU(), nn.Linear(d, d)),
            "refine_gate": nn.Linear(h, 1),
            "refine_latent_input_projector": nn.Sequential(nn.LayerNorm(d), nn.Linear(d, h)),
            "refine_append_input_projector": nn.Sequential(nn.LayerNorm(d), nn.Linear(d, he)),
            "query_embedder_head": nn.Identity()}
    with torch.no_grad():
        for name, mod in mods.items():
            for prm in mod.parameters():
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.3 + (1.0 if prm.ndim == 1 else 0.0))
            setattr(model, name, mod.to(torch.bfloat16))
    kw = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, **kw)
    policy.processor.save_pretrained(path)
    return {k: v.float() for k, v in mods.items()}


@pytest.mark.parametrize("shards", [None, "200KB"])
def test_reference_layout_checkpoint(policy, tmp_path, shards):
    path = tmp_path / "ref"
    theirs = _authors_checkpoint(policy, path, max_shard_size=shards)
    assert (path / "model.safetensors.index.json").exists() == (shards is not None)
    with pytest.raises(PolicyLoadError, match="reference_layout"):
        Policy.from_pretrained(path)
    p = Policy.from_pretrained(path, reference_layout=True)
    assert p.sqr_config.seed_hidden == "pre_norm" and p.sqr_config.soft_insert == "reference"
    assert (p.hidden_size, p.latent_dim, p.embedder_hidden) == (64, 48, 96)
    x, z = torch.randn(5, 64), torch.randn(5, 48)  # the converted modules compute what theirs compute
    with torch.no_grad():
        torch.testing.assert_close(p.sqr(x), theirs["refine_projector"](x), rtol=0, atol=1e-6)
        torch.testing.assert_close(p.sqr.to_policy(z), theirs["refine_latent_input_projector"](z), rtol=0, atol=1e-6)
        torch.testing.assert_close(p.sqr.to_embedder(z), theirs["refine_append_input_projector"](z), rtol=0, atol=1e-6)
    for k, v in policy.model.state_dict().items():  # the main weights load untouched
        assert torch.equal(p.model.state_dict()[k], v), k
    saved = p.save_pretrained(tmp_path / "ours")
    again = Policy.from_pretrained(saved)  # our layout now: the quirks travel in sqr_config.json
    assert again.sqr_config.seed_hidden == "pre_norm" and again.sqr_config.source == "reference"
    with torch.no_grad():
        torch.testing.assert_close(again.sqr(x), theirs["refine_projector"](x), rtol=0, atol=1e-6)
    with pytest.raises(FileNotFoundError):
        Policy.from_pretrained(str(path.parent / "missing-dir"))


def test_reference_writer_matches_the_authors_layout(policy, tmp_path):
    """save_reference_layout (conversions back) writes the keys and shapes of the authors' checkpoint."""
    from safetensors import safe_open

    _authors_checkpoint(policy, tmp_path / "theirs")
    p = Policy.from_pretrained(tmp_path / "theirs", reference_layout=True)
    save_reference_layout(p.model, p.processor, p.sqr.state_dict(), tmp_path / "back")

    def refine_shapes(path):
        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith(("refine_", "query_"))}

    assert refine_shapes(tmp_path / "back") == refine_shapes(tmp_path / "theirs")
    again = Policy.from_pretrained(tmp_path / "back", reference_layout=True)
    for k, v in p.sqr.state_dict().items():
        assert torch.equal(again.sqr.state_dict()[k], v), k


def test_vision_placeholders_are_never_generated(ckpt):
    """A policy whose head prefers <|video_pad|> (and the other placeholders) above every text id still
    generates none of them, greedy or sampled: such a token cannot be fed back as text (the forward
    would expect video features there)."""
    pol = Policy.from_pretrained(ckpt)  # its own copy: the head is changed below
    bad = sorted(pol.placeholder_ids)
    assert pol.model.config.video_token_id in bad and len(bad) >= 3
    head, boost = pol.model.lm_head, torch.zeros(pol.model.lm_head.out_features)
    boost[bad] = 1e4  # a head whose placeholder logits dominate every text id
    real = head.forward
    head.forward = lambda h: real(h) + boost.to(h.dtype)
    with torch.no_grad():
        inputs = pol.build_inputs(QUERIES, CLIPS)
        logits = pol.model(**inputs).logits[:, -1]
    assert set(logits.argmax(-1).tolist()) <= set(bad)  # unbanned, greedy would pick a placeholder
    for temperature in (0.0, 1.0):
        res = pol.generate_ids(inputs, max_new_tokens=6, temperature=temperature, seed=0, ignore_eos=True)
        assert not set(res.ids.flatten().tolist()) & set(bad), temperature
