"""The Embedder (engine/embedder.py) on a tiny same-architecture Qwen3-VL-Embedding checkpoint."""
import shutil

import numpy as np
import pytest
import torch

from videosearch_r1.config import VideoConfig
from videosearch_r1.engine.embedder import GEN_TAIL, Embedder
from videosearch_r1.models import tiny
from videosearch_r1.video.decode import Clip, VideoInfo

SYNTH_VIDEO = VideoConfig(fps=1.0, max_frames=32, min_pixels=32 * 32, max_pixels=96 * 64)
QUERIES = ["a red circle", "a small blue square jumps twice on a striped wall", "the green star leaves"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny.make_tiny_checkpoint(tmp_path_factory.mktemp("emb") / "tiny-emb", kind="embedder", seed=1,
                                     video_cfg=SYNTH_VIDEO)


@pytest.fixture(scope="module")
def emb(ckpt):
    return Embedder.from_pretrained(str(ckpt), video_cfg=SYNTH_VIDEO)


def make_clip(t, h=64, w=96, seed=0, start=0.0):
    rng = np.random.default_rng(seed)
    ts = start + np.arange(t, dtype=np.float64) * 1.5
    info = VideoInfo(path="mem", duration=float(ts[-1] + 1), fps=2.0, num_frames=3 * t, width=w, height=h)
    return Clip(frames=rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8), timestamps=ts,
                indices=np.arange(t, dtype=np.int64) * 3, info=info)


def test_prompt_and_unit_vectors(emb):
    prompt = emb.text_prompt("a red circle")
    assert prompt.startswith("<|im_start|>system\nRepresent the user's input.<|im_end|>\n<|im_start|>user\n")
    assert prompt.endswith("a red circle" + GEN_TAIL)
    v = emb.embed_texts(QUERIES)
    assert v.dtype == torch.float32 and v.shape == (3, emb.dim) and not v.requires_grad
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-6)
    assert (v[0] - v[1]).abs().max() > 1e-3  # different queries, different vectors
    assert emb.dim == emb.hidden_size == 64


def test_batch_equals_single_texts_and_videos(emb):
    batch = emb.embed_texts(QUERIES)
    single = torch.cat([emb.embed_texts([q]) for q in QUERIES])
    assert torch.allclose(batch, single, atol=ATOL)
    clips = [make_clip(4), make_clip(7, seed=1, start=3.0), make_clip(2, 32, 64, seed=2)]
    vb = emb.embed_videos(clips)
    vs = torch.cat([emb.embed_videos([c]) for c in clips])
    assert torch.allclose(vb.norm(dim=1), torch.ones(3), atol=1e-6)
    assert torch.allclose(vb, vs, atol=ATOL)
    assert (vb[0] - vb[1]).abs().max() > 1e-4
    # the true timestamps are part of the input: shifting the times changes the vector
    shifted = make_clip(4, start=40.0)
    assert (emb.embed_videos([shifted]) - vb[:1]).abs().max() > 1e-5


def test_soft_tokens_zero_equal_plain_and_nonzero_change(emb):
    plain = emb.embed_texts(QUERIES)
    none = emb.embed_soft(QUERIES, torch.zeros(3, 0, emb.hidden_size))
    assert torch.equal(none, plain)
    lat = torch.randn(3, 4, emb.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.05
    refined = emb.embed_soft(QUERIES, lat)
    assert torch.allclose(refined.norm(dim=1), torch.ones(3), atol=1e-6)
    assert ((refined - plain).abs().amax(dim=1) > 1e-4).all()
    # batch equals single with latents too (left padding + inserted columns)
    single = torch.cat([emb.embed_soft([q], lat[i: i + 1]) for i, q in enumerate(QUERIES)])
    assert torch.allclose(refined, single, atol=ATOL)
    refined_np = emb.embed_soft(QUERIES, lat.numpy(), grad=False)
    assert torch.allclose(refined_np, refined, atol=1e-6)


def test_gradients_reach_latents_not_frozen_weights(emb):
    lat = (torch.randn(2, 3, emb.hidden_size) * 0.05).requires_grad_(True)
    target = emb.embed_texts(["a large yellow ring spins"]).detach()
    out = emb.embed_soft(QUERIES[:2], lat)
    (out @ target.T).sum().backward()
    assert lat.grad is not None and (lat.grad.abs().sum(dim=(1, 2)) > 0).all()
    assert all(p.grad is None and not p.requires_grad for p in emb.model.parameters())
    with torch.no_grad():
        assert not emb.embed_soft(QUERIES[:2], lat).requires_grad


def _token_embeds(emb, text):
    ids = torch.tensor(emb.tokenizer.encode(text, add_special_tokens=False))
    return emb.model.get_input_embeddings()(ids).detach()


@pytest.mark.parametrize("mode,expected", [("before_tail", "a red circle jumps"),
                                           ("reference", "a red jumps circle")])
def test_soft_insert_positions(ckpt, mode, expected):
    """Latents equal to the embedding of ' jumps' must act like that token at the documented place."""
    emb = Embedder.from_pretrained(str(ckpt), video_cfg=SYNTH_VIDEO, soft_insert=mode)
    queries = ["a red circle", QUERIES[1]]  # the second is longer: the first row is left padded
    batch = emb.prepare_texts(queries)
    col = emb.insert_column(batch.input_ids)
    tail = emb.tokenizer.decode(batch.input_ids[0, col:])
    if mode == "before_tail":
        assert tail == GEN_TAIL
    else:
        assert batch.input_ids.shape[1] - col == 6 and tail == " circle" + GEN_TAIL
    jumps = _token_embeds(emb, " jumps")  # [1, He]
    lat = jumps.expand(2, 1, -1).clone()
    got = emb.embed_soft(queries, lat, grad=False)
    want = emb.embed_texts([expected, queries[1] + " jumps" if mode == "before_tail"
                            else "a small blue square jumps twice on a striped jumps wall"])
    assert torch.allclose(got, want, atol=ATOL)


def test_truncation_keeps_template_tail(ckpt):
    emb = Embedder.from_pretrained(str(ckpt), video_cfg=SYNTH_VIDEO, max_query_tokens=40)
    long_q = " ".join(["a small red circle jumps on a blue wall"] * 20)
    batch = emb.prepare_texts([long_q, "a red circle"])
    assert batch.truncated == 1 and emb.truncated_queries == 1
    assert batch.attention_mask.sum(1).max() <= 40
    assert emb.tokenizer.decode(batch.input_ids[0]).endswith(GEN_TAIL)
    assert emb.embed_texts([long_q]).shape == (1, emb.dim)


def test_trainable_video_and_text_forward_has_weight_grads(ckpt):
    emb = Embedder.from_pretrained(str(ckpt), video_cfg=SYNTH_VIDEO, trainable=True)
    v = emb.embed_videos([make_clip(4), make_clip(2, seed=3)], grad=True)
    t = emb.embed_texts(QUERIES[:2], grad=True)
    loss = torch.nn.functional.cross_entropy(t @ v.T / 0.05, torch.arange(2))
    loss.backward()
    visual = [p.grad for n, p in emb.model.named_parameters() if n.startswith("visual.")]
    text = emb.model.get_input_embeddings().weight.grad
    assert any(g is not None and g.abs().sum() > 0 for g in visual) and text.abs().sum() > 0


def test_layouts_dim_and_errors(ckpt, emb, tmp_path):
    # a saved Qwen3VLModel (no `model.` prefix) loads to the same vectors as the hub-style layout
    emb.save_pretrained(tmp_path / "saved")
    again = Embedder.from_pretrained(str(tmp_path / "saved"), video_cfg=SYNTH_VIDEO)
    assert torch.equal(again.embed_texts(QUERIES), emb.embed_texts(QUERIES))
    # a hub id resolved from an HF-cache mirror
    repo = tmp_path / "mirror" / "models--org--tiny-emb"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    shutil.copytree(ckpt, repo / "snapshots" / ("a" * 40))
    hub = Embedder.from_pretrained("org/tiny-emb", cache_dir=tmp_path / "mirror", local_files_only=True)
    assert torch.allclose(hub.embed_texts(QUERIES[:1]), emb.embed_texts(QUERIES[:1]), atol=ATOL)
    # from the config tree: engine.model + the dataset's video budget
    from videosearch_r1.config import load_config

    cfg = load_config(None, [f"engine.model={ckpt}", "engine.device=cpu", "engine.soft_insert=reference"])
    from_cfg = Embedder.from_config(cfg, "synth")
    assert from_cfg.soft_insert == "reference" and from_cfg.processor.video_processor.max_video_tokens == 8
    assert torch.equal(from_cfg.embed_texts(QUERIES), emb.embed_texts(QUERIES))
    # Matryoshka truncation: the first `dim` components, renormalised
    small = Embedder.from_pretrained(str(ckpt), dim=16)
    full = emb.embed_texts(QUERIES)
    assert small.dim == 16 and torch.allclose(small.embed_texts(QUERIES),
                                              torch.nn.functional.normalize(full[:, :16], dim=1), atol=ATOL)
    with pytest.raises(ValueError, match="query 1 is empty"):
        emb.embed_texts(["ok", "  "])
    with pytest.raises(ValueError, match="soft tokens must have shape"):
        emb.embed_soft(QUERIES, torch.zeros(3, 2, 7))
    with pytest.raises(ValueError, match="soft_insert"):
        Embedder.from_pretrained(str(ckpt), soft_insert="middle")
