"""`vsr1 serve` app + SearchClient: a real uvicorn server on a free loopback port, in a thread."""
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
import uvicorn

from videosearch_r1.engine.client import SearchClient
from videosearch_r1.engine.search import SearchEngine, UnknownIdError
from videosearch_r1.engine.server import create_app


def _serve(app):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    t0 = time.time()
    while not server.started:
        assert time.time() - t0 < 20, "server did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    from videosearch_r1.engine.embedder import Embedder
    from videosearch_r1.models.tiny import make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path_factory.mktemp("emb") / "tiny-emb", kind="embedder", size="tiny")
    emb = Embedder.from_pretrained(str(path), device="cpu", dtype="fp32")
    emb.path = path
    return emb


@pytest.fixture(scope="module")
def served(embedder):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, embedder.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    engine = SearchEngine.build(x, [f"vid{i}" for i in range(120)], embedder=embedder)
    server, thread, url = _serve(create_app(engine, max_batch=16, max_k=50, max_soft_tokens=8, max_body_mb=1,
                                            max_text_chars=4096, max_text_tokens=1024))
    yield engine, url
    server.should_exit = True
    thread.join(timeout=10)


def test_client_matches_in_process(served):
    engine, url = served
    texts = ["a small red circle jumps", "a large blue square spins on a striped wall", "green"]
    with SearchClient(url) as client:
        assert client.ids == engine.ids and client.dim == engine.dim and client.health()["status"] == "ok"
        q = client.embed_queries(texts)
        assert np.array_equal(q, engine.embed_queries(texts))  # float32 survives JSON exactly
        soft = np.random.default_rng(1).standard_normal((3, 4, engine.embedder.hidden_size)).astype(np.float32)
        qr = client.embed_refined(texts, soft)
        assert np.array_equal(qr, engine.embed_refined(texts, torch.from_numpy(soft)))
        assert not np.allclose(qr, q)  # the soft tokens change the query
        ex = [{"vid1", "vid2"}, set(), {"vid0"}]
        a, b = client.search(q, k=10, exclude=ex), engine.search(q, k=10, exclude=ex)
        assert a.ids == b.ids and np.array_equal(a.scores, b.scores)
        targets = ["vid5", "vid77", "vid119"]
        assert client.rank_of(q, targets) == engine.rank_of(q, targets)
        short = client.search(q[:1], k=3, exclude=[set(engine.ids[1:])])  # corpus runs out: -inf pad
        assert short.ids == [["vid0"]] and np.isneginf(short.scores[0, 1:]).all()
        scope = [set(engine.ids[:20]), None, set(engine.ids[40:45])]  # grpo.corpus_size through `vsr1 serve`
        a, b = client.search(q, k=3, exclude=ex, scope=scope), engine.search(q, k=3, exclude=ex, scope=scope)
        assert a.ids == b.ids and np.array_equal(a.scores, b.scores) and set(a.ids[2]) <= scope[2]


def _post(url, path, payload=None, content=None):
    if content is not None:
        return httpx.post(url + path, content=content, headers={"content-type": "application/json"})
    return httpx.post(url + path, json=payload)


def test_bad_requests_get_clear_4xx(served):
    engine, url = served
    d, he = engine.dim, engine.embedder.hidden_size
    ok = [[0.1] * d]
    cases = [
        ("/search", {"qvecs": [[0.1] * (d - 1)], "k": 1}, 400, f"dimension {d - 1}"),
        ("/search", {"qvecs": ok, "k": 0}, 400, "k must be"),
        ("/search", {"qvecs": ok, "k": 51}, 400, "exceeds the limit of 50"),
        ("/search", {"qvecs": ok * 17, "k": 1}, 413, "max_batch=16"),
        ("/search", {"qvecs": [], "k": 1}, 400, "empty batch"),
        ("/search", {"qvecs": [[0.1] * d, [0.1]], "k": 1}, 400, "different lengths"),
        ("/search", {"qvecs": ok, "k": 1, "exclude": [["zzz"]]}, 404, "zzz"),
        ("/search", {"qvecs": ok, "k": 1, "exclude": [[], []]}, 400, "exclude has 2 entries"),
        ("/search", {"qvecs": ok, "k": 1, "scope": [["zzz"]]}, 404, "scope"),
        ("/search", {"qvecs": ok, "k": 1, "scope": [None, None]}, 400, "scope has 2 entries"),
        ("/search", {"qvecs": "hello", "k": 1}, 422, "qvecs"),
        ("/rank_of", {"qvecs": ok, "target_ids": ["nope"]}, 404, "nope"),
        ("/rank_of", {"qvecs": ok, "target_ids": []}, 400, "0 target ids"),
        ("/embed_queries", {"texts": ["x"] * 17}, 413, "max_batch"),
        ("/embed_refined", {"texts": ["x"], "soft": [[[0.0] * (he + 1)]]}, 400, f"He={he}"),
        ("/embed_refined", {"texts": ["x", "y"], "soft": [[[0.0] * he]]}, 400, "1 entries for 2 texts"),
        ("/embed_refined", {"texts": ["x"], "soft": [[[0.0] * he] * 9]}, 413, "9 soft"),
        ("/embed_refined", {"texts": ["x"], "soft": [[[0.0] * he, [0.0] * 2]]}, 400, "one N and He"),
    ]
    for path, payload, status, needle in cases:
        r = _post(url, path, payload)
        assert r.status_code == status, (path, payload if len(str(payload)) < 200 else "...", r.text)
        assert needle in r.text, (needle, r.text)
    nan = json.dumps({"qvecs": [[float("nan")] + [0.1] * (d - 1)], "k": 1})  # NaN literal, as json.dumps writes
    r = _post(url, "/search", content=nan)
    assert r.status_code == 400 and "non-finite" in r.text
    soft_inf = json.dumps({"texts": ["x"], "soft": [[[float("inf")] * he]]})
    r = _post(url, "/embed_refined", content=soft_inf)
    assert r.status_code == 400 and "non-finite" in r.text
    with SearchClient(url) as client:  # the client raises the in-process exception types
        with pytest.raises(UnknownIdError, match="nope"):
            client.rank_of(np.asarray(ok), ["nope"])
        with pytest.raises(ValueError, match="exceeds the limit"):
            client.search(np.asarray(ok), k=1000)


def test_bad_request_then_good_one_on_the_same_client(served):
    """Every kind of bad input costs one 4xx; the same SearchClient's next valid call works."""
    engine, url = served
    d = engine.dim
    ok = [[0.1] * d]
    cases = [  # (path, payload, status, needle in the message)
        ("/embed_queries", {"texts": [""]}, 400, "texts[0] is empty or blank"),
        ("/embed_queries", {"texts": ["fine", "  \t\n"]}, 400, "texts[1] is empty or blank"),
        ("/embed_queries", {"texts": ["a" * 4097]}, 413, "4097 characters, over serve.max_text_chars=4096"),
        ("/embed_queries", {"texts": ["x " * 2000]}, 413, "tokens, over serve.max_text_tokens=1024"),
        ("/embed_refined", {"texts": [" "], "soft": [[[0.0] * engine.embedder.hidden_size]]}, 400, "blank"),
        ("/search", {"qvecs": ok, "k": True}, 422, "valid integer"),          # strict: no bool -> int
        ("/search", {"qvecs": ok, "k": "2"}, 422, "valid integer"),           # nor str -> int
        ("/search", {"qvecs": ok, "k": 2.0}, 422, "valid integer"),
        ("/search", {"qvecs": [["0.1"] * d], "k": 1}, 422, "valid number"),  # nor str -> float
        ("/search", {"qvecs": [[True] * d], "k": 1}, 422, "valid number"),
        ("/search", {"qvecs": ok, "k": 1, "exlcude": [["vid1"]]}, 422, "exlcude"),  # a typo is not ignored
        ("/rank_of", {"qvecs": ok, "target_ids": [7]}, 422, "valid string"),
        ("/search", {"qvecs": ok * 10000, "k": 1}, 413, "serve.max_body_mb"),  # 1 MB cap, from Content-Length
    ]
    with SearchClient(url) as client:
        want = engine.search(np.asarray(ok, dtype=np.float32), k=3).ids
        for path, payload, status, needle in cases:
            with pytest.raises(ValueError) as ei:
                client._call("POST", path, payload)
            assert f"HTTP {status}" in str(ei.value) and needle in str(ei.value), (path, str(ei.value)[:300])
            assert client.search(np.asarray(ok), k=3).ids == want  # the same client, the next call
        assert client.embed_queries(["a red star spins"]).shape == (1, d)
    raw = [b"[" * 100_000 + b"]" * 100_000,                                 # nested 100,000 deep
           b'{"qvecs": [[1]], "k": ' + b"9" * 5000 + b"}",                 # a 5,000-digit integer
           b'{"qvecs": [[0.1]], "k": 1']                                    # torn
    with httpx.Client(base_url=url) as http:
        for body in raw:
            r = http.post("/search", content=body, headers={"content-type": "application/json"})
            assert r.status_code in (400, 422), (r.status_code, r.text[:200])
            assert http.post("/search", json={"qvecs": ok, "k": 3}).json()["ids"] == want

        def chunked():  # no Content-Length: refused as soon as the count passes the cap, not at the end
            for _ in range(200):
                yield b" " * 65536
        r = http.post("/search", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "max_body_mb" in r.text
    with httpx.Client(base_url=url) as http:
        assert http.post("/search", json={"qvecs": ok, "k": 3}).json()["ids"] == want
        assert http.get("/info").json()["max_body_bytes"] == 2**20


def test_unexpected_error_is_a_500_and_the_client_goes_on(served):
    """A bug behind an endpoint is one JSON 500 (the connection is kept); and a server that drops the
    connection after its 500 (a bare FastAPI app, a proxy) does not break the client's next call."""
    from fastapi import FastAPI

    engine, _ = served

    def boom():
        raise RuntimeError("a bug")

    guarded = create_app(SearchEngine(engine.vectors, engine.ids))
    bare = FastAPI()
    bare.get("/health")(lambda: {"status": "ok"})
    for app in (guarded, bare):
        app.get("/boom")(boom)
        server, thread, url = _serve(app)
        try:
            with SearchClient(url) as client:
                for _ in range(3):
                    with pytest.raises(RuntimeError, match="HTTP 500"):
                        client._call("GET", "/boom")
                    assert client.health()["status"] == "ok"
            if app is guarded:
                assert "RuntimeError: a bug" in httpx.get(url + "/boom").json()["detail"]
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def test_no_embedder_gives_503(served):
    engine, _ = served
    bare = SearchEngine(engine.vectors, engine.ids)
    server, thread, url = _serve(create_app(bare))
    try:
        r = _post(url, "/embed_queries", {"texts": ["x"]})
        assert r.status_code == 503 and "without an embedder" in r.text
        with SearchClient(url) as client:
            assert client.search(engine.vectors[:2], k=1).ids == [["vid0"], ["vid1"]]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_concurrent_clients_get_in_process_answers(served):
    """A bounded load test: 8 threads x 25 mixed requests, each answer equal to the in-process one."""
    engine, url = served
    rng = np.random.default_rng(2)
    texts = [f"a {c} {s} {a}" for c in ("red", "blue") for s in ("circle", "star") for a in ("jumps", "spins")]
    qtext = np.vstack([engine.embed_queries([t]) for t in texts])  # batch of one, as the workers ask
    qrand = rng.standard_normal((40, engine.dim)).astype(np.float32)
    qrand /= np.linalg.norm(qrand, axis=1, keepdims=True)

    def worker(w):
        r = np.random.default_rng(100 + w)
        with SearchClient(url) as client:
            for j in range(25):
                kind = (w + j) % 3
                if kind == 0:
                    i = int(r.integers(len(texts)))
                    assert np.array_equal(client.embed_queries([texts[i]])[0], qtext[i])
                elif kind == 1:
                    rows = r.integers(0, 40, 4)
                    ex = [set(r.choice(engine.ids, 3, replace=False).tolist()) for _ in rows]
                    a, b = client.search(qrand[rows], k=7, exclude=ex), engine.search(qrand[rows], k=7, exclude=ex)
                    assert a.ids == b.ids and np.array_equal(a.scores, b.scores)
                else:
                    rows = r.integers(0, 40, 5)
                    tg = r.choice(engine.ids, 5).tolist()
                    assert client.rank_of(qrand[rows], tg) == engine.rank_of(qrand[rows], tg)
        return w

    t0 = time.time()
    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(worker, range(8))) == list(range(8))
    assert time.time() - t0 < 60


def test_vsr1_serve_command(served, tmp_path):
    """`vsr1 serve synth` in a subprocess: loads the index + engine from the workspace, answers a client."""
    import subprocess
    import sys

    from videosearch_r1.config import load_config

    engine, _ = served
    overrides = [f"workspace={tmp_path}", f"engine.model={engine.embedder.path}"]
    cfg = load_config(None, overrides)
    SearchEngine(engine.vectors, engine.ids).save(cfg.index_dir("synth") / "test")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "videosearch_r1.cli", "serve", "synth", "--split", "test",
                             *overrides, f"serve.port={port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url, t0 = f"http://127.0.0.1:{port}", time.time()
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() - t0 < 120, "vsr1 serve did not come up"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with SearchClient(url) as client:
            q = client.embed_queries(["a red star spins"])
            assert np.array_equal(q, engine.embed_queries(["a red star spins"]))
            assert client.search(q, k=4).ids == engine.search(q, k=4).ids
            assert client.info()["meta"]["count"] == len(engine.ids)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
