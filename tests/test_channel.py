"""The channel check (engine/channel.py) on the tiny world: fitted latents lift VR@1 over the plain query.

    .venv/bin/python -m pytest -q tests/test_channel.py
"""
import json

import numpy as np
import torch

import _world
from videosearch_r1 import cli
from videosearch_r1.engine.channel import exact_ranks, nearest_other_cosine, run_channel


def test_exact_ranks_match_the_search_engine():
    from videosearch_r1.engine.search import SearchEngine

    g = np.random.default_rng(0)
    v = g.normal(size=(30, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[7] = v[3]  # a tie: the earlier row ranks ahead
    q = g.normal(size=(5, 8)).astype(np.float32)
    targets = [3, 7, 0, 29, 12]
    want = SearchEngine(v, [f"v{i}" for i in range(30)]).rank_of(q, [f"v{i}" for i in targets])
    got = exact_ranks(torch.from_numpy(q), torch.from_numpy(v), torch.tensor(targets)).tolist()
    assert got == want
    assert nearest_other_cosine(v) <= 1.0 and nearest_other_cosine(v[:1]) != nearest_other_cosine(v[:1])  # NaN


def test_fitted_latents_lift_vr1_on_the_tiny_engine():
    w = _world.world()
    cfg = w.cfg("channel.steps=40", "channel.eval_every=20", "channel.lr=0.3", "channel.queries=0")
    eng = _world.engine()
    res = run_channel(cfg, "synth", "test", embedder=eng.embedder, engine=eng)
    assert res["queries"] == len(_world.split().queries) and res["missing_gt"] == 0
    assert [c["step"] for c in res["curve"]] == [0, 20, 40]
    # a random tiny engine (video vectors nearly collapsed): deterministic, small but real lift
    before, after = res["plain"], res["final"]
    assert after["VR@1"] > before["VR@1"] and after["mean_rank"] < before["mean_rank"], (before, after)
    assert res["curve"][-1]["loss"] < res["curve"][1]["loss"]
    n = res["queries"]  # every wrong top-1 is explained: another family, or a sibling differing in named details
    for name, r in (("plain", before), ("final", after)):
        c = res["confusions"][name]
        assert c["wrong_top1"] == round(n * (1 - r["VR@1"] / 100))
        siblings = c["wrong_top1"] - c["other_family"]
        assert sum(v for k, v in c.items() if k not in ("wrong_top1", "other_family")) >= siblings


def test_cli_prints_the_table_and_writes_json(capsys):
    w = _world.world()
    args = ["engine", "channel", "synth", "--split", "test", f"workspace={w.workspace}", "channel.steps=2",
            "channel.eval_every=1", "channel.queries=4", "channel.scale=none", "run_name=channel-cli"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "plain query" in out and "ceiling: VR@1" in out
    res = json.loads((w.cfg().runs_dir() / "channel-cli" / "channel.json").read_text())
    assert res["queries"] == 4 and res["latent_scale"] == 1.0 and len(res["curve"]) == 3
    assert cli.main(["engine", "channel", "synth", f"workspace={w.workspace}", "channel.init=ones"]) == 2


def test_an_index_without_the_queries_videos_is_a_clear_error():
    import pytest

    from videosearch_r1.engine.search import SearchEngine

    eng = _world.engine()
    stranger = SearchEngine(eng.vectors[:2], ["not-a-test-video-0", "not-a-test-video-1"], embedder=eng.embedder)
    with pytest.raises(ValueError, match="none of the .* queries' videos is in the index"):
        run_channel(_world.world().cfg("channel.steps=2"), "synth", "test", embedder=eng.embedder, engine=stranger)
