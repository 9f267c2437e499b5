"""SearchEngine against brute-force numpy search (faiss contrib style: ties at the cut-off allowed)."""
import numpy as np
import pytest

from videosearch_r1.engine import search as search_mod
from videosearch_r1.engine.search import SearchEngine, UnknownIdError, chunk_scopes


def _corpus(n=300, d=32, seed=0, clusters=12):
    """Clustered, L2-normalised vectors (near-duplicates like the synthetic world's families)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = centres[rng.integers(0, clusters, 40)] + 0.3 * rng.standard_normal((40, d))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x.astype(np.float32), q.astype(np.float32), [f"v{i:04d}" for i in range(n)]


def _ref(x, q, k, exclude_rows=None):
    s = q.astype(np.float64) @ x.astype(np.float64).T
    if exclude_rows is not None:
        for b, rows in enumerate(exclude_rows):
            s[b, list(rows)] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def check_knn_with_draws(ref_d, ref_i, d, i, rtol=1e-5):
    """Same scores; same ids except where scores tie (as faiss.contrib's check_ref_knn_with_draws)."""
    np.testing.assert_allclose(d, ref_d, rtol=rtol, atol=1e-5)
    for b in range(ref_i.shape[0]):
        cut = ref_d[b, -1]
        strict_ref = {int(r) for r, v in zip(ref_i[b], ref_d[b]) if v > cut + 1e-5}
        strict_got = {int(r) for r, v in zip(i[b], d[b]) if v > cut + 1e-5}
        assert strict_ref == strict_got, f"query {b}: {sorted(strict_ref ^ strict_got)}"


def _rows(engine, res):
    return np.array([[engine.row[v] for v in row] for row in res.ids])


@pytest.mark.parametrize("factory,kw", [
    ("Flat", {}),
    ("IVF8,Flat", {"nprobe": 8}),        # every list probed: exact
    ("HNSW16", {"ef_search": 512}),      # generous efSearch on tiny data
])
def test_index_types_agree_with_brute_force(factory, kw):
    x, q, ids = _corpus()
    engine = SearchEngine.build(x, ids, factory=factory, **kw)
    res = engine.search(q, k=10)
    ref_d, ref_i = _ref(x, q, 10)
    assert res.scores.shape == (40, 10) and all(len(r) == 10 for r in res.ids)
    check_knn_with_draws(ref_d, ref_i, res.scores, _rows(engine, res))


def test_torch_flat_path_without_faiss(monkeypatch):
    x, q, ids = _corpus(seed=1)
    monkeypatch.setattr(search_mod, "faiss", None)
    engine = SearchEngine.build(x, ids, factory="Flat")
    assert type(engine.backend).__name__ == "_TorchFlat"
    res = engine.search(q, k=7)
    check_knn_with_draws(*_ref(x, q, 7), res.scores, _rows(engine, res))
    with pytest.raises(RuntimeError, match="faiss"):
        SearchEngine.build(x, ids, factory="HNSW16")


def test_exclude_returns_exactly_k_unseen():
    x, q, ids = _corpus(seed=2)
    engine = SearchEngine.build(x, ids)
    top = engine.search(q, k=5)
    exclude = [set(row[:3]) for row in top.ids]  # the three best are "already seen"
    res = engine.search(q, k=5, exclude=exclude)
    for b in range(len(q)):
        assert len(res.ids[b]) == 5 and not exclude[b] & set(res.ids[b])
    ref_d, ref_i = _ref(x, q, 5, [{engine.row[v] for v in e} for e in exclude])
    check_knn_with_draws(ref_d, ref_i, res.scores, _rows(engine, res))
    # top-1 after excluding the first three is the old 4th
    assert [r[0] for r in res.ids] == [r[3] for r in top.ids]


def test_exclude_almost_everything_and_short_ann():
    x, q, ids = _corpus(n=60, seed=3)
    engine = SearchEngine.build(x, ids)
    res = engine.search(q[:2], k=5, exclude=[set(ids[2:]), set()])
    assert sorted(res.ids[0]) == ids[:2] and np.isneginf(res.scores[0, 2:]).all()
    assert len(res.ids[1]) == 5
    # an IVF probing one list cannot fill k after a big exclude: the engine completes it exactly
    ivf = SearchEngine.build(x, ids, factory="IVF6,Flat", nprobe=1)
    ex = set(ivf.search(q[:1], k=30).ids[0])
    got = ivf.search(q[:1], k=20, exclude=[ex])
    assert len(got.ids[0]) == 20 and not ex & set(got.ids[0])
    with pytest.raises(UnknownIdError, match="nope"):
        engine.search(q[:1], k=1, exclude=[{"nope"}])


def test_scope_searches_only_the_sub_corpus_exactly():
    """search(scope=...) equals brute force over the scope's vectors (exclude still applied); None = all."""
    x, q, ids = _corpus(n=200, seed=5)
    engine = SearchEngine.build(x, ids, factory="HNSW8", ef_search=4)  # the ANN is not used for a scope
    rng = np.random.default_rng(0)
    scopes = [set(rng.choice(ids, 30, replace=False).tolist()) for _ in range(len(q) - 1)] + [None]
    exclude = [set(sorted(sc)[:2]) if sc else set() for sc in scopes]
    res = engine.search(q, k=5, exclude=exclude, scope=scopes)
    full = SearchEngine.build(x, ids).search(q[-1:], k=5)
    assert res.ids[-1] == full.ids[0]  # no scope: the whole corpus
    for b, sc in enumerate(scopes[:-1]):
        rows = sorted(engine.row[v] for v in sc - exclude[b])
        s = x[rows].astype(np.float64) @ q[b].astype(np.float64)
        best = [ids[rows[i]] for i in np.argsort(-s, kind="stable")[:5]]
        assert res.ids[b] == best and set(res.ids[b]) <= sc
        np.testing.assert_allclose(res.scores[b], np.sort(s)[::-1][:5], rtol=1e-5, atol=1e-5)
    small = engine.search(q[:1], k=5, scope=[{ids[0], ids[1]}])  # a scope smaller than k runs out
    assert sorted(small.ids[0]) == ids[:2] and np.isneginf(small.scores[0, 2:]).all()
    with pytest.raises(UnknownIdError, match="scope"):
        engine.search(q[:1], k=1, scope=[{"nope"}])
    with pytest.raises(ValueError, match="scope has 1 entries for 2"):
        engine.search(q[:2], k=1, scope=[None])


def test_chunk_scopes_cover_every_video_once():
    ids = [f"f{i // 4:03d}v{i % 4}" for i in range(130)]  # 32.5 families of 4
    sc = chunk_scopes(reversed(ids), 40)
    chunks = {c for c in sc.values()}
    assert sorted(v for c in chunks for v in c) == sorted(ids)  # a partition
    assert sorted(len(c) for c in chunks) == [40, 40, 50]  # the 10-video tail joins the last chunk
    assert all(v in sc[v] for v in ids) and sc["f000v0"] == frozenset(ids[:40])  # sorted: families together
    assert len(set(chunk_scopes(ids, 1000).values())) == 1


def test_rank_of_is_exact_including_ties():
    x, q, ids = _corpus(n=200, seed=4)
    x[7] = x[3]  # an exact twin: ties are broken by row order
    engine = SearchEngine.build(x, ids, factory="HNSW8", ef_search=4)  # a weak ANN must not matter
    rng = np.random.default_rng(0)
    targets = [ids[t] for t in rng.integers(0, 200, len(q))]
    ranks = engine.rank_of(q, targets)
    s = q @ x.T
    order = np.argsort(-s, axis=1, kind="stable")
    for b, t in enumerate(targets):
        assert ranks[b] == 1 + int(np.flatnonzero(order[b] == engine.row[t])[0])
    qt = x[3:4].copy()
    assert engine.rank_of(np.vstack([qt, qt]), ["v0003", "v0007"]) == [1, 2]
    with pytest.raises(UnknownIdError):
        engine.rank_of(q[:1], ["missing"])


def test_save_load_roundtrip(tmp_path, monkeypatch):
    x, q, ids = _corpus(seed=5)
    for factory in ("Flat", "IVF8,Flat"):
        engine = SearchEngine.build(x, ids, factory=factory, nprobe=8)
        engine.save(tmp_path / factory, extra_meta={"dataset": "toy"})
        back = SearchEngine.load(tmp_path / factory)
        assert back.ids == ids and back.factory == factory and back.meta["dataset"] == "toy"
        a, b = engine.search(q, k=10), back.search(q, k=10)
        assert a.ids == b.ids and np.array_equal(a.scores, b.scores)
    (tmp_path / "Flat" / "index.faiss").unlink()  # a Flat index rebuilds from embeddings.npy
    monkeypatch.setattr(search_mod, "faiss", None)
    flat = SearchEngine.load(tmp_path / "Flat")
    assert type(flat.backend).__name__ == "_TorchFlat"
    res = flat.search(q, k=3)
    check_knn_with_draws(*_ref(x, q, 3), res.scores, _rows(flat, res))
    with pytest.raises(FileNotFoundError, match="embeddings.npy missing"):
        SearchEngine.load(tmp_path / "nothing")


def test_validation_messages():
    x, q, ids = _corpus(n=50, seed=6)
    engine = SearchEngine.build(x, ids)
    with pytest.raises(ValueError, match="dimension 31"):
        engine.search(q[:, :31], k=1)
    bad = q[:3].copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*\[1\]"):
        engine.search(bad, k=1)
    with pytest.raises(ValueError, match="k must be"):
        engine.search(q, k=0)
    with pytest.raises(ValueError, match="shape"):
        engine.search(q[0], k=1)
    with pytest.raises(ValueError, match="exclude has 1 entries"):
        engine.search(q[:2], k=1, exclude=[set()])
    with pytest.raises(RuntimeError, match="no embedder"):
        engine.embed_queries(["hello"])
