"""`vsr1 index` on the tiny synthetic world: resume gives identical files, skips are reported, hard negatives."""
import json
import shutil

import numpy as np
import pytest

from videosearch_r1 import cli
from videosearch_r1.config import load_config
from videosearch_r1.engine import index as index_mod
from videosearch_r1.engine.search import SearchEngine

FILES = ("embeddings.npy", "ids.json", "meta.json", "index.faiss")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny world whose raw copy has one corrupt and one missing video, and a tiny engine checkpoint."""
    from videosearch_r1.models.tiny import make_tiny_checkpoint

    base = tmp_path_factory.mktemp("world")
    assert cli.main(["synth", "synth.preset=tiny", f"workspace={base}"]) == 0
    raw = base / "data" / "synth" / "raw"
    damaged = base / "damaged"
    shutil.copytree(raw, damaged)
    videos = sorted((damaged / "videos").glob("s0-test*.mp4"))
    videos[0].write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    videos[1].unlink()
    cfg = load_config(None, [f"workspace={base}"])
    engine = make_tiny_checkpoint(base / "engine", kind="embedder", size="tiny", video_cfg=cfg.video_cfg("synth"))
    return {"base": base, "raw": raw, "damaged": damaged, "engine": engine,
            "bad": (videos[0].stem, videos[1].stem)}


def _overrides(world, ws, root=None, extra=()):
    return [f"workspace={ws}", f"engine.model={world['engine']}", "index.shard_size=2", "engine.batch_size=2",
            *([f"datasets.synth.root={root}"] if root else []), *extra]


def test_resume_after_interruption_gives_identical_files(world, tmp_path):
    for split in ("test", "train"):
        cfg_a = load_config(None, _overrides(world, tmp_path / "a", world["raw"]))
        part = index_mod.build_index(cfg_a, "synth", split, max_new_shards=1)
        out_a = cfg_a.index_dir("synth") / split
        assert not part.complete and part.shards_done == 1 < part.shards_total
        assert not (out_a / "ids.json").exists()
        done = index_mod.build_index(cfg_a, "synth", split)  # resumes at shard 2
        assert done.complete and done.shards_done == done.shards_total
        cfg_b = load_config(None, _overrides(world, tmp_path / "b", world["raw"]))
        index_mod.build_index(cfg_b, "synth", split)  # one uninterrupted run
        out_b = cfg_b.index_dir("synth") / split
        names = FILES + (("hard_negatives.json",) if split == "train" else ())
        for name in names:
            assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), f"{split}/{name} differs"
        assert not list(out_a.glob(".*tmp*")), "temp files left behind"


def test_corrupt_and_missing_videos_are_counted_skips(world, tmp_path, capsys):
    argv = ["synth", "--split", "test", *_overrides(world, tmp_path, world["damaged"])]
    assert index_mod.main(argv) == 0
    text = capsys.readouterr().out
    corrupt, missing = world["bad"]
    assert "2 skipped" in text and corrupt in text and missing in text and "not found" in text
    cfg = load_config(None, _overrides(world, tmp_path, world["damaged"]))
    out = cfg.index_dir("synth") / "test"
    meta = json.loads((out / "meta.json").read_text())
    ids = json.loads((out / "ids.json").read_text())
    assert sorted(s["id"] for s in meta["skipped"]) == sorted(world["bad"])
    assert meta["corpus_size"] == len(ids) + 2 == meta["count"] + 2
    assert corrupt not in ids and missing not in ids
    assert meta["factory"] == "Flat" and meta["video_fingerprint"] and meta["engine_model"] == str(world["engine"])


def test_index_serves_queries_and_hard_negatives(world, tmp_path):
    from videosearch_r1.data.fig import load_split
    from videosearch_r1.engine.embedder import Embedder

    cfg = load_config(None, _overrides(world, tmp_path, world["raw"], ["index.hard_negatives=5"]))
    summary = index_mod.build_index(cfg, "synth", "train")
    out = cfg.index_dir("synth") / "train"
    emb = Embedder.from_config(cfg, "synth")
    engine = SearchEngine.load(out, embedder=emb)
    sp = load_split(cfg, "synth", "train")
    assert engine.ids == sp.corpus_ids() and summary.hard_negative_queries == len(sp.queries)
    # the stored vectors are what the Embedder gives for the same clips
    from videosearch_r1.video.decode import load_clip

    clips = [load_clip(cfg, "synth", v) for v in engine.ids[:3]]
    np.testing.assert_allclose(engine.vectors[:3], emb.embed_videos(clips).numpy(), atol=1e-5)
    negs = json.loads((out / "hard_negatives.json").read_text())
    assert set(negs) == {q.qid for q in sp.queries}
    q = engine.embed_queries([sp.queries[0].text])
    for query in sp.queries[:4]:
        got = negs[query.qid]
        assert len(got) == 5 and query.video_id not in got and len(set(got)) == 5
        qv = engine.embed_queries([query.text])
        s = engine.vectors @ qv[0]
        s[engine.row[query.video_id]] = -np.inf
        assert np.all(np.diff([s[engine.row[v]] for v in got]) <= 1e-6)  # best first
        assert s[engine.row[got[-1]]] >= np.sort(s)[-5] - 1e-6  # and they are the top 5
    top = engine.search(q, k=3)
    assert engine.rank_of(q, [top.ids[0][0]]) == [1]


def test_changed_settings_reembed(world, tmp_path, capsys):
    cfg = load_config(None, _overrides(world, tmp_path, world["raw"]))
    index_mod.build_index(cfg, "synth", "val", max_new_shards=1)
    cfg2 = load_config(None, _overrides(world, tmp_path, world["raw"], ["engine.instruction=Find the video."]))
    s = index_mod.build_index(cfg2, "synth", "val")
    assert "other settings (engine_fingerprint, instruction)" in capsys.readouterr().err and s.complete


def _small(world, ws, eng, root):
    return [f"workspace={ws}", f"engine.model={eng}", "index.shard_size=2", "engine.batch_size=2",
            f"datasets.synth.root={root}"]


def test_engine_retrained_in_place_is_reembedded_and_the_old_pairing_refused(world, tmp_path, capsys):
    """Same engine path, new weights: `vsr1 index` must not reuse the old shards, and an index opened with
    an engine that did not build it is refused, naming both fingerprints."""
    from videosearch_r1.engine.embedder import Embedder
    from videosearch_r1.engine.search import EngineMismatchError
    from videosearch_r1.models.tiny import make_tiny_checkpoint
    from videosearch_r1.video.decode import load_clip

    eng = tmp_path / "engine"
    over = _small(world, tmp_path, eng, world["raw"])
    cfg = load_config(None, over)
    make_tiny_checkpoint(eng, kind="embedder", video_cfg=cfg.video_cfg("synth"), seed=11)
    assert index_mod.main(["synth", "--split", "val", *over]) == 0
    out = cfg.index_dir("synth") / "val"
    old_vecs, old_emb = np.load(out / "embeddings.npy"), Embedder.from_config(cfg, "synth")
    capsys.readouterr()
    make_tiny_checkpoint(eng, kind="embedder", video_cfg=cfg.video_cfg("synth"), seed=12)  # retrained in place
    assert index_mod.main(["synth", "--split", "val", *over]) == 0
    assert "other settings (engine_fingerprint); re-embedding" in capsys.readouterr().err
    new_emb = Embedder.from_config(cfg, "synth")
    new_vecs, ids = np.load(out / "embeddings.npy"), json.loads((out / "ids.json").read_text())
    assert not np.allclose(new_vecs, old_vecs, atol=1e-3)
    clips = [load_clip(cfg, "synth", v) for v in ids]
    np.testing.assert_allclose(new_vecs, new_emb.embed_videos(clips).numpy(), atol=1e-5)
    assert json.loads((out / "meta.json").read_text())["engine_fingerprint"] == new_emb.fingerprint()
    SearchEngine.load(out, embedder=new_emb)  # the engine that built it: fine
    with pytest.raises(EngineMismatchError) as err:
        SearchEngine.load(out, embedder=old_emb)
    assert old_emb.fingerprint() in str(err.value) and new_emb.fingerprint() in str(err.value)
    assert old_emb.fingerprint() != new_emb.fingerprint()
    from videosearch_r1.engine.embedder import engine_fingerprint  # the same key without loading the model
    from videosearch_r1.fingerprint import dir_digest

    assert engine_fingerprint(dir_digest(eng), cfg.engine.instruction, new_emb.dim) == new_emb.fingerprint()


def test_no_video_decodes_is_an_error_and_a_repaired_video_is_reembedded(world, tmp_path, capsys):
    from videosearch_r1.models.tiny import make_tiny_checkpoint

    root = tmp_path / "raw"
    shutil.copytree(world["raw"], root)
    val = sorted((root / "videos").glob("s0-val*.mp4"))
    keep = {p.name: p.read_bytes() for p in val}
    for p in val:
        p.write_bytes(b"not a video at all")
    eng = tmp_path / "engine"
    over = _small(world, tmp_path, eng, root)
    cfg = load_config(None, over)
    make_tiny_checkpoint(eng, kind="embedder", video_cfg=cfg.video_cfg("synth"), seed=3)
    assert index_mod.main(["synth", "--split", "val", *over]) == 2
    err = capsys.readouterr().err
    assert f"none of the {len(val)} videos" in err and val[0].stem in err and "no index written" in err
    out = cfg.index_dir("synth") / "val"
    assert not any((out / name).exists() for name in FILES)
    (root / "videos" / val[0].name).write_bytes(keep[val[0].name])  # one video repaired
    assert index_mod.main(["synth", "--split", "val", *over]) == 0
    text = capsys.readouterr()
    assert "video files changed since it was embedded" in text.err
    assert f"1 of {len(val)} videos embedded, {len(val) - 1} skipped" in text.out
    assert json.loads((out / "ids.json").read_text()) == [val[0].stem]
