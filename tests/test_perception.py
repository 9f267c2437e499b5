"""Perception pretraining: labelled stills of the synthetic world (synth/stills.py) and the tower's dense
attribute training (engine/perception.py)."""
import numpy as np
import pytest
import torch

from videosearch_r1.synth.stills import ATTRIBUTES, CLASSES, IGNORE, render_stills, sample_stills


def test_stills_repeat_and_split_into_chunks_alike():
    f1, l1 = sample_stills(seed=3, n=6, width=96, height=64, cell=32)
    f2, l2 = sample_stills(seed=3, n=6, width=96, height=64, cell=32)
    assert f1.shape == (6, 64, 96, 3) and f1.dtype == np.uint8 and l1.shape == (6, 2, 3, 3)
    assert np.array_equal(f1, f2) and np.array_equal(l1, l2)
    assert not np.array_equal(f1, sample_stills(seed=4, n=6, width=96, height=64, cell=32)[0])
    a, la = render_stills(seed=1, n=10, width=96, height=64, cell=32, workers=1, chunk=4)
    b, lb = render_stills(seed=1, n=10, width=96, height=64, cell=32, workers=2, chunk=4)
    assert a.shape[0] == 10 and np.array_equal(a, b) and np.array_equal(la, lb)
    with pytest.raises(ValueError, match="32-pixel cells"):
        sample_stills(seed=0, n=1, width=100, height=64, cell=32)


def test_labels_are_in_range_and_every_still_has_its_object():
    _, labels = sample_stills(seed=0, n=64, width=192, height=128, cell=32)
    for i, a in enumerate(ATTRIBUTES):
        vals = labels[..., i]
        assert vals.max() <= len(CLASSES[a])
        assert set(np.unique(vals)) <= {IGNORE, *range(len(CLASSES[a]) + 1)}
    # the main object's size is always labelled somewhere (the companion's never is)
    assert ((labels[..., 2] > 0).reshape(64, -1).any(1)).all()
    # where one attribute says "object", all do (shape and colour always; size IGNORE on the companion)
    assert np.array_equal(labels[..., 0] > 0, labels[..., 1] > 0)
    assert (labels[..., 2][labels[..., 0] == 0] == 0).all()


def test_labels_sit_where_the_pixels_differ_from_the_wall():
    frames, labels = sample_stills(seed=5, n=64, width=192, height=128, cell=32)
    f = frames.astype(np.float32)
    dev = np.abs(f - np.median(f, axis=(1, 2), keepdims=True)).mean(-1)  # [n, H, W]
    cells = dev.reshape(64, 4, 32, 6, 32).mean((2, 4))  # [n, gh, gw]
    top = cells.reshape(64, -1).argmax(1)
    on_object = (labels[..., 0] > 0).reshape(64, -1)[np.arange(64), top]
    assert on_object.mean() >= 0.8, on_object.mean()


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory):
    from videosearch_r1.engine.embedder import Embedder
    from videosearch_r1.models import qwen3vl
    from videosearch_r1.models.tiny import make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path_factory.mktemp("emb") / "init", kind="embedder", size="tiny")
    emb = Embedder.from_pretrained(str(path), device="cpu", dtype="fp32", trainable=True)
    qwen3vl.enable_linear_patch_embed(emb.model)
    return emb


def test_stills_pixels_equal_video_pixels_and_follow_the_label_grid(tiny_embedder):
    from videosearch_r1.engine.perception import stills_pixels
    from videosearch_r1.models.qwen3vl import video_pixels

    vp = tiny_embedder.processor.video_processor
    frames, _ = sample_stills(seed=2, n=3, width=192, height=128, cell=32)
    pix, grid = stills_pixels(vp, torch.from_numpy(frames))
    ref = torch.cat([video_pixels(vp, np.stack([f, f]), "cpu") for f in frames])
    assert torch.equal(pix, ref)
    assert grid.tolist() == [[1, 8, 12]] * 3
    # merged token k (4 consecutive patch rows) is cell (k // 6, k % 6) of the label grid: the sums agree
    mean, std = torch.tensor(vp.image_mean), torch.tensor(vp.image_std)
    norm = (torch.from_numpy(frames).float() / 255 - mean) / std  # [n, H, W, 3]
    cell_sums = 2 * norm.reshape(3, 4, 32, 6, 32, 3).sum((2, 4, 5))  # two identical frames per clip
    token_sums = pix.reshape(3, 4, 6, -1).sum(-1)
    assert torch.allclose(token_sums, cell_sums, atol=1e-2)


def test_pretraining_learns_colour_and_reports_before_after(tiny_embedder):
    from videosearch_r1.config import load_config
    from videosearch_r1.engine.perception import pretrain

    torch.manual_seed(0)
    cfg = load_config(None, ["engine_train.perception_steps=150", "engine_train.perception_frames=512",
                             "engine_train.perception_batch=32", "engine_train.perception_lr=3e-3", "synth.workers=1"])
    before_weights = {n: p.detach().clone() for n, p in tiny_embedder.model.visual.named_parameters()}
    summary, check = pretrain(cfg, tiny_embedder, "cpu", 96, 64)
    assert summary["steps"] == 150 and summary["frames"] == 512
    log = summary["log"]
    assert log[-1]["loss"] < 0.7 * log[0]["loss"], log
    # colour is the easy attribute (chance 1/8 of the colours): learned; the object/no-object call too
    assert summary["heldout_after"]["colour"] > summary["heldout_before"]["colour"] + 25, summary
    assert summary["heldout_after"]["object"] > 80, summary
    assert check() == summary["heldout_after"]  # the heads and held-out stills are kept for the later check
    after = dict(tiny_embedder.model.visual.named_parameters())
    blocks = [n for n in before_weights if n.startswith("blocks.")]
    assert blocks and all(not torch.equal(before_weights[n], after[n]) for n in blocks)  # the tower's blocks train


def test_bad_perception_settings_are_named(tiny_embedder):
    from videosearch_r1.config import load_config
    from videosearch_r1.engine.perception import pretrain

    cfg = load_config(None, ["engine_train.perception_steps=5", "engine_train.perception_frames=0"])
    with pytest.raises(ValueError, match="engine_train.perception_frames must be >= 1"):
        pretrain(cfg, tiny_embedder, "cpu", 96, 64)
