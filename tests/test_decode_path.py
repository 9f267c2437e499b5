"""The decode path users run is the benchmarked one: Policy / `vsr1 infer` pick it from agent.decode_* per
device (CUDA: matmul + graph + compile), its greedy ids equal HF generate's on a model that emits varied
tokens, the compiled step traces and equals eager, and a compile failure falls back to eager steps.

    .venv/bin/python -m pytest -q tests/test_decode_path.py
"""
import pytest
import torch

import _world as W
from videosearch_r1.agent import decode
from videosearch_r1.agent.decode import DecodeOptions, decode_options_for
from videosearch_r1.agent.infer import load_policy
from videosearch_r1.agent.loop import check_agent_config
from videosearch_r1.agent.policy import Policy
from videosearch_r1.config import AgentConfig, VideoConfig
from videosearch_r1.models.tiny import make_tiny_checkpoint

from _policy_inputs import CLIPS, QUERIES, liven  # noqa: E402

VCFG = VideoConfig(fps=1.0, max_frames=8, min_pixels=32 * 32, max_pixels=64 * 64)
NEW = 24


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("policy"), kind="policy", video_cfg=VCFG)
    return liven(Policy.from_pretrained(ckpt))


@pytest.fixture(scope="module")
def hf_ids(policy):
    """HF generate's greedy ids (no stop token), and a check that they are worth comparing against."""
    inputs = policy.build_inputs(QUERIES, CLIPS)
    out = policy.model.generate(**inputs, max_new_tokens=NEW, do_sample=False, eos_token_id=[])
    ids = out[:, inputs["input_ids"].shape[1]:].tolist()
    assert len({tuple(r) for r in ids}) == 3 and all(len(set(r)) >= 6 for r in ids), ids  # varied tokens
    return ids


def test_default_decode_path_per_device():
    a = AgentConfig()
    gpu = decode_options_for("cuda", a.decode_attention, a.decode_compile, a.cuda_graph)
    assert gpu == DecodeOptions(cuda_graph=True, attention="matmul", compile=True) and gpu.name == "matmul+graph+compile"
    cpu = decode_options_for("cpu", a.decode_attention, a.decode_compile, a.cuda_graph)
    assert cpu == DecodeOptions(cuda_graph=False, attention="sdpa", compile=False)
    assert decode_options_for(torch.device("cuda", 1), "sdpa", False, True).name == "sdpa+graph"
    assert decode_options_for("cuda", cuda_graph=False).name == "matmul+compile"
    with pytest.raises(ValueError, match="attention"):
        decode_options_for("cpu", "flash")
    with pytest.raises(ValueError, match="agent.decode_attention"):
        check_agent_config(AgentConfig(decode_attention="flash"))


def test_policy_default_path_equals_hf_generate(policy, hf_ids):
    assert policy.decode_options == decode_options_for("cpu")  # what from_pretrained leaves on CPU
    gen = policy.generate(QUERIES, CLIPS, max_new_tokens=NEW, ignore_eos=True)
    assert gen.ids == hf_ids
    res = policy.generate_ids(policy.build_inputs(QUERIES, CLIPS), NEW, ignore_eos=True)  # the bench's entry
    assert res.ids.tolist() == hf_ids


@pytest.mark.parametrize("blocks", [False, True])
def test_compiled_step_equals_hf_generate(policy, hf_ids, blocks):
    """The compiled step (a real dynamo trace of the step over the static cache; aot_eager backend, so no
    C++/Triton build on CPU) gives HF's ids, also with the norms and MLPs compiled on their own
    (agent.compile_blocks: compiled functions inside the compiled step)."""
    from videosearch_r1.models.qwen3vl import compile_blocks

    saved, opts = dict(decode._COMPILED), policy.decode_options
    decode._COMPILED.clear()
    decode._COMPILED["step"] = torch.compile(decode._step_logits, backend="aot_eager")
    policy.decode_options = DecodeOptions(cuda_graph=False, attention="matmul", compile=True)
    try:
        assert (compile_blocks(policy.model, on=blocks, backend="aot_eager") > 0) == blocks
        gen = policy.generate(QUERIES, CLIPS, max_new_tokens=NEW, ignore_eos=True)
        assert "failed" not in decode._COMPILED
    finally:
        compile_blocks(policy.model, on=False)
        decode._COMPILED.clear()
        decode._COMPILED.update(saved)
        policy.decode_options = opts
    assert gen.ids == hf_ids


def test_compile_failure_falls_back_to_eager(policy, hf_ids, capsys):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no working toolchain here")

    saved, opts = dict(decode._COMPILED), policy.decode_options
    decode._COMPILED.clear()
    decode._COMPILED["step"] = torch.compile(decode._step_logits, backend=broken_backend)
    policy.decode_options = DecodeOptions(cuda_graph=False, attention="sdpa", compile=True)
    try:
        gen = policy.generate(QUERIES, CLIPS, max_new_tokens=NEW, ignore_eos=True)
        failed = decode._COMPILED.get("failed", "")
    finally:
        decode._COMPILED.clear()
        decode._COMPILED.update(saved)
        policy.decode_options = opts
    assert gen.ids == hf_ids
    assert "no working toolchain" in failed
    assert capsys.readouterr().out.count("torch.compile of the decode step failed") == 1  # said once


def test_infer_reads_agent_decode_fields():
    engine = W.engine()
    ckpt = f"agent.checkpoint={W.world().policy_path}"
    assert load_policy(W.world().cfg(ckpt), engine).decode_options.name == "sdpa"  # CPU default
    pol = load_policy(W.world().cfg(ckpt, "agent.decode_attention=matmul", "agent.decode_compile=false"), engine)
    assert pol.decode_options == DecodeOptions(cuda_graph=False, attention="matmul", compile=False)


@pytest.mark.parametrize("field", ["latent_dim", "embedder_hidden"])
def test_unread_agent_fields_are_gone(field):
    """agent.latent_dim / agent.embedder_hidden were accepted and silently ignored (vsr1 infer sizes fresh
    SQR modules from the engine); setting one is now an error naming it."""
    from videosearch_r1.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=field):
        load_config(None, [f"agent.{field}=32"])


def test_compiled_blocks_equal_eager_and_switch_back(tmp_path):
    """agent.compile_blocks: the norms and MLPs run torch.compile'd (traced here with the aot_eager backend: the
    same dynamo graphs as inductor, no kernel codegen), with the same prefill logits and greedy ids as eager, at
    two prompt lengths (dynamic shapes); off puts every eager forward back; the policy only compiles on CUDA."""
    from videosearch_r1.models.qwen3vl import compile_blocks

    ckpt = make_tiny_checkpoint(tmp_path / "p", kind="policy", video_cfg=VCFG)
    pol = liven(Policy.from_pretrained(ckpt))
    mods = [m for m in pol.model.modules() if type(m).__name__.endswith(("RMSNorm", "MLP"))]
    assert {type(m).__name__ for m in mods} >= {"Qwen3VLTextRMSNorm", "Qwen3VLTextMLP", "Qwen3VLVisionMLP"}
    eager = {id(m): m.forward for m in mods}
    runs = {}
    for on in (False, True):
        assert compile_blocks(pol.model, on=on, backend="aot_eager") == (len(mods) if on else 0)
        for n in (2, 3):
            inputs = pol.build_inputs(QUERIES[:n], CLIPS[:n])
            with torch.no_grad():
                logits = pol.model(**inputs).logits
            runs[on, n] = (logits, pol.generate(QUERIES[:n], CLIPS[:n], max_new_tokens=8).ids)
    for n in (2, 3):
        torch.testing.assert_close(runs[True, n][0], runs[False, n][0], rtol=1e-4, atol=1e-4)
        assert runs[True, n][1] == runs[False, n][1]
    assert all(m.forward is not eager[id(m)] for m in mods)
    assert compile_blocks(pol.model, on=False) == 0 and all(m.forward == eager[id(m)] for m in mods)
    pol.set_decode(blocks=True)  # CPU: the eager forwards stay
    assert all(m.forward == eager[id(m)] for m in mods)
