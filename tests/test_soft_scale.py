"""agent.soft_scale: SQR modules created fresh can scale their soft tokens to the engine's token RMS.

    .venv/bin/python -m pytest -q tests/test_soft_scale.py
"""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from videosearch_r1.agent.policy import SQR_CONFIG, Policy
from videosearch_r1.config import load_config
from videosearch_r1.engine.channel import token_rms
from videosearch_r1.engine.embedder import Embedder
from videosearch_r1.models.tiny import make_tiny_checkpoint
from videosearch_r1.train import common


def test_soft_scale_embed_is_the_engine_token_rms_and_travels_with_the_policy(tmp_path):
    engine = make_tiny_checkpoint(tmp_path / "engine", kind="embedder", seed=1)
    cfg = load_config(None, [f"workspace={tmp_path}", f"engine.model={engine}"])
    assert common.soft_scale(cfg) == 1.0  # the default: the reference's soft tokens
    cfg = load_config(None, [f"workspace={tmp_path}", f"engine.model={engine}", "agent.soft_scale=embed"])
    emb = Embedder.from_pretrained(str(engine), device="cpu")
    rms = token_rms(emb)
    assert 0 < rms < 0.5
    assert common.soft_scale(cfg) == pytest.approx(rms, rel=1e-6)  # from the checkpoint file
    assert common.soft_scale(cfg, emb) == pytest.approx(rms, rel=1e-6)  # from a loaded embedder
    with pytest.raises(ValueError, match="soft_scale"):
        common.soft_scale(load_config(None, ["agent.soft_scale=huge"]))

    ckpt = make_tiny_checkpoint(tmp_path / "policy", kind="policy", seed=2)
    plain = Policy.from_pretrained(str(ckpt), device="cpu", dtype="fp32", embedder_hidden=emb.hidden_size)
    scaled = Policy.from_pretrained(str(ckpt), device="cpu", dtype="fp32", embedder_hidden=emb.hidden_size,
                                    soft_scale=rms)
    z = torch.randn(2, 8, plain.sqr_config.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = plain.soft_tokens(z), scaled.soft_tokens(z)
    torch.testing.assert_close(b, a * rms)
    assert a.pow(2).mean().sqrt() > 10 * rms  # why it matters: LayerNorm output sits far above a token's scale
    saved = scaled.save_pretrained(tmp_path / "saved")
    again = Policy.from_pretrained(str(saved), device="cpu", dtype="fp32", soft_scale=1.0)  # saved config wins
    assert again.sqr_config.soft_scale == pytest.approx(rms)
    with torch.no_grad():
        torch.testing.assert_close(again.soft_tokens(z), b)
    data = json.loads((saved / SQR_CONFIG).read_text())  # a config written before the field: the reference
    data.pop("soft_scale")
    (saved / SQR_CONFIG).write_text(json.dumps(data))
    assert Policy.from_pretrained(str(saved), device="cpu", dtype="fp32").sqr_config.soft_scale == 1.0


def test_sft_run_key_holds_a_non_default_soft_scale(tmp_path, monkeypatch):
    """A run whose SQR modules scale soft tokens records the scale in its run key, so a resume with modules
    of another scale is refused; the reference scale adds nothing (older runs stay resumable)."""
    import _world as W

    from videosearch_r1.synth.world import resolve, sample_world
    from videosearch_r1.train import trainer
    from videosearch_r1.train.base_data import task_rows

    w = W.world()
    cfg = w.cfg("synth.preset=tiny")
    rows = task_rows(sample_world(resolve(cfg.synth)), cfg.base, cfg.video_cfg("synth"), "synth")[0][:2]
    policy = Policy.from_pretrained(str(w.policy_path), device="cpu", dtype="fp32")
    keys = []

    def spy(ckpt, key, ignore=()):  # the resume check: record the key, stop before training
        keys.append(key)
        raise RuntimeError("stop")
    monkeypatch.setattr(common, "latest_checkpoint", lambda out_dir: Path(out_dir) / "checkpoint")
    monkeypatch.setattr(common, "check_run_key", spy)
    for scale in (1.0, 0.02):
        policy.sqr_config = dataclasses.replace(policy.sqr_config, soft_scale=scale)
        with pytest.raises(RuntimeError, match="stop"):
            trainer.train_policy(cfg, policy, rows, tmp_path / f"run{scale}", lambda v: None, section=cfg.base)
    assert "soft_scale" not in keys[0] and keys[1]["soft_scale"] == 0.02
