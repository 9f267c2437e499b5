"""Base-policy pretraining (train/base.py, train/base_data.py) on the tiny synthetic world: task rows
checked against the world's specs and pixels, the engine-initialised backbone, a short run that lowers
the loss and exports a checkpoint inference loads with no flags.

    .venv/bin/python -m pytest -q tests/test_train_base.py
"""
import json
import re

import numpy as np
import pytest
import torch

import _world as W
from videosearch_r1 import cli
from videosearch_r1.config import SynthConfig, load_config
from videosearch_r1.synth.world import COLOURS, fine_desc, phrase, resolve, sample_world
from videosearch_r1.train.base_data import TASKS, task_rows


@pytest.fixture(scope="module")
def tiny_rows():
    cfg = load_config(None, ["synth.preset=tiny"])
    world = sample_world(resolve(SynthConfig(preset="tiny", seed=3)))
    rows, counts = task_rows(world, cfg.base, cfg.video_cfg("synth"), "synth")
    specs = {v.video_id: (v, f.style) for f in world.families for v in f.videos}
    return rows, counts, specs


def test_rows_cover_every_task_with_answers_from_the_timeline(tiny_rows):
    rows, counts, specs = tiny_rows
    assert {r.meta["task"] for r in rows} == set(TASKS) and all(r.kind == "task" for r in rows)
    assert not any("REFINE" in r.target or "<answer>" in r.target for r in rows)  # never verify / refine
    assert len({r.id for r in rows}) == len(rows)
    assert counts["videos"] == sum(1 for v, _ in specs.values() if v.split == "train")
    for r in rows:
        v, style = specs[r.video]
        task = r.meta["task"]
        if task == "describe":
            for s in v.segments:  # every event, with its times, in order
                assert f"s: it {phrase(s)}." in r.target
                assert re.search(rf"\b{s.start:.1f} - {s.end:.1f} s: it", r.target), r.target
            assert r.target.startswith(("A ", "An ")) and v.thing.shape in r.target
        elif task == "caption":
            s = v.segments[r.meta["segment"]]
            assert f"from {s.start:.1f} to {s.end:.1f} s" in r.query
            assert r.target == fine_desc(style, v.thing, v.wall, v.companion, v.segments, r.meta["segment"], "none")
        elif task == "ground":
            s = v.segments[r.meta["segment"]]
            assert r.target == f"<start>{s.start:.1f}</start> <end>{s.end:.1f}</end>"
            others = [fine_desc(style, v.thing, v.wall, v.companion, v.segments, j, "none")
                      for j in range(len(v.segments)) if j != r.meta["segment"]]
            assert r.query.split('"')[1] not in others  # the description names one moment only
        elif task == "attribute":
            assert r.meta["attribute"] in ("colour", "shape", "size")
            want = {"shape": v.thing.shape, "size": v.thing.size}.get(r.meta["attribute"])
            if want is not None:
                assert r.target == want
        else:
            _check_confirm(r, v)


def _check_confirm(r, v):
    """A confirm row: the answer states the truth at its time; Yes iff the question states it too; a No
    names the asked phrase that is wrong, which differs from the truth in exactly the detail changed."""
    from videosearch_r1.synth.world import wall_phrase
    from videosearch_r1.train.base_data import steady_attributes

    a = steady_attributes(v, r.meta["time"])
    assert a is not None
    truth = f"{a['size']} {a['colour']} {a['shape']} in front of an? {re.escape(wall_phrase(v.wall))}"
    m = re.fullmatch(rf"Is the main object at {r.meta['time']:.1f} s an? (\w+) (\w+) (\w+) in front of an? (.+)\?", r.query)
    assert m, r.query
    asked = dict(zip(("size", "colour", "shape", "wall"), m.groups()))
    truth_d = {**a, "wall": wall_phrase(v.wall)}
    changed = [k for k in asked if asked[k] != truth_d[k]]
    if r.meta["answer"] == "yes":
        assert changed == [] and r.meta["detail"] == "none"
        assert re.fullmatch(rf"Yes: it is an? {truth}\.", r.target), r.target
    else:
        assert changed == [r.meta["detail"]], (r.query, r.target)
        wrong = asked["wall"] if changed == ["wall"] else f"{asked['size']} {asked['colour']} {asked['shape']}"
        assert re.fullmatch(rf"No: it is an? {truth}, not an? {re.escape(wrong)}\.", r.target), r.target


def test_confirm_questions_are_balanced_and_change_every_detail():
    """Half the confirm rows are true; the false ones change each of size / colour / shape / wall."""
    from collections import Counter

    cfg = load_config(None, ["synth.preset=tiny", "base.tasks.confirm=8"])
    world = sample_world(resolve(SynthConfig(preset="tiny", seed=5)))
    rows, _ = task_rows(world, cfg.base, cfg.video_cfg("synth"), "synth")
    rows = [r for r in rows if r.meta["task"] == "confirm"]
    answers = Counter(r.meta["answer"] for r in rows)
    assert len(rows) >= 40 and abs(answers["yes"] - answers["no"]) <= 0.25 * len(rows), answers
    assert {r.meta["detail"] for r in rows if r.meta["answer"] == "no"} == {"size", "colour", "shape", "wall"}


def test_colour_answers_are_on_screen(tiny_rows):
    """The colour asked at t is the object's colour in the rendered frame at t (pixels, not the spec)."""
    from videosearch_r1.synth.render import render_frames

    rows, _, specs = tiny_rows
    asked = [r for r in rows if r.meta["task"] == "attribute" and r.meta["attribute"] == "colour"]
    assert asked
    for r in asked[:6]:
        v, _ = specs[r.video]
        frame = list(render_frames(v, noise=4.0))[round(r.meta["time"] * v.fps)].astype(np.float32)
        dist = {c: np.linalg.norm(frame - np.array(rgb, np.float32), axis=-1) for c, rgb in COLOURS.items()}
        assert (dist[r.target] < 30).sum() >= 20, (r.id, r.target)  # the object's pixels (radius >= 7 px)


def test_engine_initialised_backbone_equals_the_engine(tmp_path):
    from videosearch_r1.agent.policy import Policy
    from videosearch_r1.train.base import policy_from_engine

    cfg = W.world().cfg()
    engine = W.engine().embedder.model
    path = policy_from_engine(cfg.engine_model(), tmp_path / "p")
    he = engine.config.text_config.hidden_size
    pol = Policy.from_pretrained(str(path), device="cpu", dtype="fp32", embedder_hidden=he)
    mine, theirs = pol.model.model.state_dict(), engine.state_dict()
    assert set(mine) == set(theirs)
    for k, t in theirs.items():
        m = mine[k]
        if k.endswith("embed_tokens.weight"):
            assert m.shape[0] == t.shape[0] + 1  # + <REFINE>
            m = m[: t.shape[0]]
        assert torch.equal(m, t), k
    assert pol.model.lm_head.weight.data_ptr() == pol.model.model.language_model.embed_tokens.weight.data_ptr()
    assert pol.refine_token_id == theirs["language_model.embed_tokens.weight"].shape[0]


def test_extra_layers_start_as_the_identity(tmp_path):
    """base.extra_layers: the added decoder layers change nothing until they train (same logits as the
    engine-sized policy), and they do train (their zeroed projections get a gradient)."""
    from transformers import Qwen3VLForConditionalGeneration

    from videosearch_r1.train.base import policy_from_engine

    cfg = W.world().cfg()
    plain = Qwen3VLForConditionalGeneration.from_pretrained(policy_from_engine(cfg.engine_model(), tmp_path / "a"))
    deep = Qwen3VLForConditionalGeneration.from_pretrained(
        policy_from_engine(cfg.engine_model(), tmp_path / "b", extra_layers=2))
    n = len(plain.model.language_model.layers)
    assert len(deep.model.language_model.layers) == n + 2
    ids = torch.tensor([[5, 17, 33, 9, 21, 40]])
    a, b = plain(input_ids=ids).logits, deep(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    b.logsumexp(-1).sum().backward()
    top = deep.model.language_model.layers[n + 1]
    assert top.mlp.down_proj.weight.grad.abs().sum() > 0 and top.self_attn.o_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="base.extra_layers"):
        policy_from_engine(cfg.engine_model(), tmp_path / "c", extra_layers=-1)


def test_a_short_base_run_lowers_the_loss_and_exports_a_zs_checkpoint(tmp_path, capsys):
    """...and a held-out video that cannot be decoded is a counted skip in the summary, not a crash."""
    from videosearch_r1.agent.infer import load_engine, load_policy

    w = W.world()
    world = sample_world(resolve(load_config(None, ["synth.preset=tiny"]).synth))
    bad = next(v.video_id for f in world.families if f.split == "val" for v in f.videos)  # the first held-out one
    args = ["train", "base", f"workspace={w.workspace}", "synth.preset=tiny", "base.world_families=1",
            "base.tasks.caption=0", "base.tasks.attribute=0", "base.tasks.ground=1", "base.tasks.confirm=1",
            "base.batch_size=6", "base.steps=6", "base.lr=3e-3", "base.lr_vision=3e-3", "base.warmup=0", "base.eval_videos=3",
            "train.schedule=constant", f"datasets.synth.root={W.damaged_root(tmp_path, truncate={bad})}",
            f"train.output={tmp_path / 'run'}"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "ZS policy" in out and "held-out rows skipped" in out
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["complete"] and s["rows"]["rows"] == {"describe": 3, "ground": 3, "confirm": 3}
    losses = s["losses"]
    assert len(losses) == 6 and all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.85 * losses[0], losses
    assert s["policy_mb"] < 10 and not (tmp_path / "run" / "policy" / "trainer_state.pt").exists()
    assert set(s["heldout_after"]) == {"describe", "ground", "confirm"}
    confirm = s["heldout_confirm"]  # by answer; "first" = the yes / no decision right
    assert set(confirm) <= {"yes", "no"} and sum(r["rows"] for r in confirm.values()) == s["heldout_after"]["confirm"]["rows"]
    assert all(0 <= r["first"] <= 100 for r in confirm.values()) and "first token" in out
    skipped = s["heldout_skipped"]
    assert skipped["video_unreadable"] >= 1 and [e.split(":")[0] for e in skipped["examples"]] == [bad], skipped
    # 3 videos x (1 describe + 1 ground + 4 confirm: base.HELDOUT_ROWS)
    assert sum(r["rows"] for r in s["heldout_after"].values()) + skipped["video_unreadable"] == 18
    # what `vsr1 infer synth --checkpoint DIR` does, with no other flag
    cfg = w.cfg(f"agent.checkpoint={s['policy']}")
    pol = load_policy(cfg, load_engine(cfg, "synth", "test"))
    assert pol.sqr_config.embedder_hidden == W.engine().embedder.hidden_size


def test_heldout_scores_split_attribute_rows_by_the_detail_asked():
    """task_scores groups by row.meta[key]: by task (the default) and, for the attribute rows, by the detail
    asked (colour / shape / size): which detail the policy cannot see. Every row is counted once."""
    from videosearch_r1.agent.policy import Policy
    from videosearch_r1.train.base import task_scores
    from videosearch_r1.video.decode import load_clip

    w = W.world()
    cfg = load_config(None, ["synth.preset=tiny"])
    world = sample_world(resolve(cfg.synth))
    rows, _ = task_rows(world, cfg.base, cfg.video_cfg("synth"), "synth")
    attr = [r for r in rows if r.meta["task"] == "attribute"][:6]
    ground = [r for r in rows if r.meta["task"] == "ground"][:2]
    assert {r.meta["attribute"] for r in attr} == {"colour", "shape", "size"}
    policy = Policy.from_pretrained(str(w.policy_path), device="cpu", dtype="fp32")
    clip = lambda v: load_clip(w.cfg(), "synth", v)  # noqa: E731
    by_task = task_scores(policy, attr + ground, clip, batch_size=4)
    by_detail = task_scores(policy, attr, clip, batch_size=4, key="attribute")
    assert set(by_task) == {"attribute", "ground"} and by_task["attribute"]["rows"] == 6
    assert all(r["first"] >= r["exact"] for r in by_task.values())  # a row all right has its first token right
    assert set(by_detail) == {"colour", "shape", "size"} and sum(r["rows"] for r in by_detail.values()) == 6
    assert all(0 <= r["token_acc"] <= 100 and r["ce"] > 0 for r in by_detail.values())
