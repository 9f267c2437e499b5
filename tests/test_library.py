"""The video library (`vsr1 library|search|clip`): built from synthetic-world mp4s plus a corrupt file,
searched with the world's engine (the same vectors and rate as the engine's own index), incremental and
resumable, its store checked against brute-force numpy (FAISS and Milvus Lite)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import _world
from videosearch_r1 import cli
from videosearch_r1.library.store import ID_SHIFT, FileRecord, LibraryStore, StoreError, parse_uri


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """A folder of the test split's videos + one corrupt file, added in two runs (the first stopped
    after 3 files: the second resumes)."""
    w = _world.world()
    folder = tmp_path_factory.mktemp("myvideos")
    (folder / "sub").mkdir()
    for i, p in enumerate(sorted((w.workspace / "data" / "synth" / "raw" / "videos").glob("s0-test*.mp4"))):
        shutil.copy(p, folder / ("sub" if i % 2 else "") / p.name)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    (folder / "notes.txt").write_text("not a video")
    store_dir = tmp_path_factory.mktemp("store")
    argv = [f"workspace={w.workspace}", f"library.store=faiss+sqlite://{store_dir}"]
    return folder, store_dir, argv


def _status(argv, capsys) -> dict:
    capsys.readouterr()
    assert cli.main(["library", "status", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_add_resume_and_search_at_the_engines_rate(lib, capsys):
    folder, store_dir, argv = lib
    assert cli.main(["library", "add", str(folder), "--max-files", "3", *argv]) == 0
    out = capsys.readouterr().out
    assert "2 new" in out and "4 left (rerun to go on)" in out, out
    assert cli.main(["library", "add", str(folder), *argv]) == 0
    out = capsys.readouterr().out
    assert "7 videos found" in out and "unreadable" in out, out
    st = _status(argv, capsys)
    assert st["files"] == 6 and st["moments"] == st["indexed_vectors"] > 6
    assert [f["path"] for f in st["failed"]] == [str(folder / "broken.mp4")]

    from videosearch_r1.library.build import load_embedder
    from videosearch_r1.library.search import library_engine
    from videosearch_r1.library.store import open_store

    cfg = _world.world().cfg(argv[1])
    store = open_store(cfg)
    try:
        engine = _world.engine()  # the engine's own index of the same videos (`vsr1 index`)
        split = _world.split()
        texts = [q.fig_desc for q in split.queries]
        mine = library_engine(store, load_embedder(cfg))
        assert sorted(Path(p).stem for p in mine.ids) == sorted(engine.ids)
        q = engine.embed_queries(texts)
        ours, theirs = mine.search(q, k=6), engine.search(q, k=6)
        assert [[Path(p).stem for p in r] for r in ours.ids] == theirs.ids  # same ranking: same rate
        np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-5)
        # moments: the store's top-k is exact (brute force over the stored vectors), and a hit is a moment
        # of the right video whose window holds the query's moment centre
        ids, vecs = store.moment_vectors()
        hits = store.search_moments(q, k=5)
        brute = np.argsort(-(q @ vecs.T), axis=1, kind="stable")[:, :5]
        for b in range(len(texts)):
            assert [h.id for h in hits[b]] == ids[brute[b]].tolist()
        rate = np.mean([Path(h[0].path).stem == qq.video_id and h[0].start <= (qq.start + qq.end) / 2 <= h[0].end
                        for h, qq in zip(hits, split.queries)])
        exp = np.mean([any(store.moment(int(i)).path.endswith(qq.video_id + ".mp4")
                           and store.moment(int(i)).start <= (qq.start + qq.end) / 2 <= store.moment(int(i)).end
                           for i in ids[brute[b, :1]]) for b, qq in enumerate(split.queries)])
        assert rate == exp
        # windows carry real times: 8 s windows every 4 s, the last one ending at the video's end
        files = store.files()
        for path, rec in files.items():
            spans = sorted((h.start, h.end) for h in (store.moment(int(i)) for i in ids if store.moment(int(i)).path == path))
            assert spans[0][0] == 0 and abs(spans[-1][1] - rec.duration) < 1e-6
            assert all(abs(e - s - min(8.0, rec.duration)) < 1e-6 for s, e in spans)
    finally:
        store.close()


def test_second_add_changes_only_what_changed(lib, capsys):
    folder, store_dir, argv = lib
    from videosearch_r1.library.store import open_store

    cfg = _world.world().cfg(argv[1])
    store = open_store(cfg)
    before = {p: store.file_id(p) for p in store.files()}
    store.close()
    gone = sorted(before)[0]
    Path(gone).unlink()
    new = folder / "sub" / "new.mp4"
    shutil.copy(sorted((_world.world().workspace / "data" / "synth" / "raw" / "videos").glob("s0-val*.mp4"))[0], new)
    capsys.readouterr()
    assert cli.main(["library", "add", str(folder), *argv]) == 0
    out = capsys.readouterr().out
    assert "1 new, 0 changed, 5 unchanged, 1 removed" in out, out
    store = open_store(cfg)
    try:
        assert not store.index.rebuilt  # the snapshot was updated in place, not rebuilt
        after = {p: store.file_id(p) for p in store.files()}
        assert set(after) == set(before) - {gone} | {str(new)}
        assert all(after[p] == before[p] for p in after if p in before)  # untouched files keep their rows
        ids, _ = store.moment_vectors()
        assert store.index.count() == len(ids) and not (set(ids >> ID_SHIFT) - set(after.values()))
    finally:
        store.close()
    # the corrupt file stays listed, and is not retried while its bytes are the same
    assert _status(argv, capsys)["failed"][0]["path"].endswith("broken.mp4")


def test_search_json_and_clip(lib, capsys, tmp_path):
    folder, store_dir, argv = lib
    from videosearch_r1.video.decode import probe

    capsys.readouterr()
    assert cli.main(["search", "A small red circle jumps", "--json", "--k", "3", *argv]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2, 3] and rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]
    assert all(Path(r["file"]).is_relative_to(folder) and r["start"] < r["end"] for r in rows)
    out = tmp_path / "moment.mp4"
    assert cli.main(["clip", str(rows[0]["id"]), "--out", str(out), *argv]) == 0
    info = probe(out)
    assert abs(info.duration - (rows[0]["end"] - rows[0]["start"])) <= 0.5, (info, rows[0])
    out2 = tmp_path / "span.mp4"
    assert cli.main(["clip", f"{rows[0]['file']}@1-3", "--out", str(out2), *argv]) == 0
    assert abs(probe(out2).duration - 2.0) <= 0.3
    for bad in ("999999999", f"{folder}/notthere.mp4@0-1", f"{rows[0]['file']}@3-1", "nonsense"):
        assert cli.main(["clip", bad, "--out", str(tmp_path / "x.mp4"), *argv]) == 2
        assert not (tmp_path / "x.mp4").exists()
    assert cli.main(["search", "   ", *argv]) == 2


def test_vectors_of_another_engine_are_refused(lib, capsys, tmp_path):
    folder, store_dir, argv = lib
    from videosearch_r1.models.tiny import make_tiny_checkpoint

    cfg = _world.world().cfg()
    other = make_tiny_checkpoint(tmp_path / "other-engine", kind="embedder", video_cfg=cfg.video_cfg("synth"), seed=5)
    capsys.readouterr()
    assert cli.main(["library", "add", str(folder), *argv, f"engine.model={other}"]) == 2
    err = capsys.readouterr().err
    assert "other settings (engine" in err and str(store_dir) in err, err
    assert cli.main(["search", "a square", *argv, f"engine.model={other}"]) == 2  # queries too: never
    err = capsys.readouterr().err                                                 # another engine's space
    assert "other settings (engine" in err, err


def test_agent_over_the_library(lib):
    """The agent loop runs over the library's video vectors with real decoded videos (scripted answers)."""
    folder, store_dir, argv = lib
    from videosearch_r1.library.build import load_embedder
    from videosearch_r1.library.search import agent_search
    from videosearch_r1.library.store import open_store

    cfg = _world.world().cfg(argv[1], "agent.max_turns=2")
    store = open_store(cfg)
    try:
        emb = load_embedder(cfg)
        pol = _world.policy()
        shown = []

        def answer(q, video, k):
            shown.append(video)
            return _world.NOT_MATCH_NO_REFINE if k == 0 else _world.MATCH.format(s=1.0, e=3.5)
        _world.scripted(pol, answer)
        got = agent_search(cfg, store, emb, "A small red circle jumps", policy=pol)
        assert got["stop_reason"] == "matched" and len(got["turns"]) == 2
        assert Path(got["file"]).stem == shown[1] and (got["start"], got["end"]) == (1.0, 3.5)
        assert got["turns"][0]["file"] != got["turns"][1]["file"]
        cfg_e = _world.world().cfg(argv[1], "agent.method=engine")
        top = agent_search(cfg_e, store, emb, "A small red circle jumps")
        assert top["stop_reason"] == "engine_only" and top["end"] == store.files()[top["file"]].duration
    finally:
        store.close()


def test_nested_folder_leaves_files_to_their_folder(lib, capsys):
    folder, store_dir, argv = lib
    capsys.readouterr()
    assert cli.main(["library", "add", str(folder / "sub"), *argv]) == 0
    out = capsys.readouterr().out
    assert "0 videos found" in out and "4 skipped" in out and f"belongs to library folder {folder}" in out, out


def test_killed_add_resumes(tmp_path, capsys):
    """SIGKILL a real `vsr1 library add` after its first committed file; the rerun keeps what was
    committed, rebuilds the stale FAISS snapshot from the database and embeds only the rest."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    w = _world.world()
    folder = tmp_path / "videos"
    folder.mkdir()
    for p in sorted((w.workspace / "data" / "synth" / "raw" / "videos").glob("s0-train*.mp4"))[:4]:
        shutil.copy(p, folder / p.name)
    argv = [f"workspace={w.workspace}", f"library.store=faiss+sqlite://{tmp_path / 'store'}"]
    proc = subprocess.Popen([sys.executable, "-m", "videosearch_r1.cli", "library", "add", str(folder), *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    db, done, t0 = tmp_path / "store" / "library.sqlite", 0, time.time()
    while done == 0 and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.2)
        if db.exists():
            try:
                done = sqlite3.connect(db).execute("SELECT COUNT(*) FROM files").fetchone()[0]
            except sqlite3.OperationalError:  # tables not created yet
                pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if done in (0, 4):
        pytest.skip(f"could not kill the add mid-run ({done} of 4 files committed)")
    done = sqlite3.connect(db).execute("SELECT COUNT(*) FROM files").fetchone()[0]
    assert not (tmp_path / "store" / "moments.faiss").exists()  # killed before its end-of-add snapshot
    capsys.readouterr()
    assert cli.main(["library", "add", str(folder), *argv]) == 0
    out = capsys.readouterr().out
    assert f"{4 - done} new, 0 changed, {done} unchanged, 0 removed" in out, out
    st = _status(argv, capsys)
    assert st["files"] == 4 and st["moments"] == st["indexed_vectors"]


def test_remove_folder(lib, capsys, tmp_path):
    """Runs last of the library tests: `remove` drops the folder's files, vectors and failures."""
    folder, store_dir, argv = lib
    assert cli.main(["library", "remove", str(tmp_path), *argv]) == 2  # not a library folder
    assert cli.main(["library", "remove", str(folder), str(folder / "sub"), *argv]) == 0
    st = _status(argv, capsys)
    assert (st["files"], st["moments"], st["indexed_vectors"], st["failed"], st["roots"]) == (0, 0, 0, [], [])
    assert cli.main(["search", "anything", "--json", *argv]) == 0
    assert json.loads(capsys.readouterr().out) == []


# ----------------------------------------------------------------------------- the store alone
def _fill(store: LibraryStore, rng, n_files=12, dim=16):
    vecs = {}
    for f in range(n_files):
        m = int(rng.integers(1, 9))
        v = rng.standard_normal((m, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        rec = FileRecord(f"/lib/v{f}.mp4", "/lib", 100 + f, 1, "h", 10.0 + f, 96, 64, 4.0)
        spans = [(2.0 * j, 2.0 * j + 4) for j in range(m)]
        fid = store.put_file(rec, spans, [b"jpg"] * m, v[0], v)
        vecs.update({(fid << ID_SHIFT) + j: v[j] for j in range(m)})
    return vecs


@pytest.mark.parametrize("scheme", ["faiss+sqlite", "numpy", "milvus+sqlite"])
def test_store_matches_brute_force(tmp_path, scheme, monkeypatch):
    if scheme.startswith("milvus"):
        pytest.importorskip("pymilvus", reason="pymilvus / milvus-lite not installed")
    if scheme == "numpy":  # the faiss+sqlite store on a machine without faiss
        from videosearch_r1.library import store as store_mod

        monkeypatch.setattr(store_mod, "have_faiss", lambda: False)
        scheme, want = "faiss+sqlite", "NumpyFlatIndex"
    else:
        want = {"faiss+sqlite": "FaissIndex", "milvus+sqlite": "MilvusIndex"}[scheme]
    rng = np.random.default_rng(0)
    uri = parse_uri(f"{scheme}://{tmp_path}", tmp_path)
    store = LibraryStore(uri)
    store.check_settings({"dim": 16, "engine_model": "x"})
    vecs = _fill(store, rng)
    assert type(store.index).__name__ == want
    dropped = {store.file_id("/lib/v3.mp4"), store.file_id("/lib/v7.mp4")}
    assert store.drop_files(["/lib/v3.mp4", "/lib/v7.mp4", "/lib/never.mp4"]) == 2
    vecs = {i: v for i, v in vecs.items() if (i >> ID_SHIFT) not in dropped}
    ids = np.array(sorted(vecs))
    mat = np.stack([vecs[i] for i in ids])
    q = rng.standard_normal((5, 16)).astype(np.float32)

    def check(st):
        got = st.search_moments(q, k=6)
        want = np.argsort(-(q @ mat.T), axis=1, kind="stable")[:, :6]
        for b in range(5):
            assert [h.id for h in got[b]] == ids[want[b]].tolist()
            np.testing.assert_allclose([h.score for h in got[b]], (q[b] @ mat[want[b]].T), atol=1e-5)
    check(store)
    assert store.index.count() == len(ids)
    assert store.search_moments(q[:1], k=10_000)[0][-1].id == ids[np.argmin(q[0] @ mat.T)]  # k > N: all, in order
    if scheme == "faiss+sqlite":  # a kill before the snapshot: the index comes back from the database
        store.db.close()
        again = LibraryStore(uri)
        assert again.index.count() == len(ids) and again.index.rebuilt == store_mod_has_faiss()
        check(again)
        again.flush()
        again.close()
        third = LibraryStore(uri)
        assert not third.index.rebuilt and type(third.index) is type(store.index)
        check(third)
        with pytest.raises(StoreError, match="other settings"):
            third.check_settings({"dim": 16, "engine_model": "y"})
        third.close()
    else:
        store.close()


def store_mod_has_faiss() -> bool:
    from videosearch_r1.library import store as store_mod

    return store_mod.have_faiss()


def test_store_uri_errors(tmp_path):
    assert parse_uri("faiss+sqlite://", tmp_path).dir == tmp_path
    assert parse_uri("milvus+sqlite:///x/y?uri=http://h:19530", tmp_path).milvus_uri == "http://h:19530"
    for bad in ("sqlite:///x", "faiss+sqlite://host/x", "faiss+sqlite:///x?uri=1", "milvus+sqlite:///x?foo=1"):
        with pytest.raises(StoreError, match="library.store"):
            parse_uri(bad, tmp_path)
