"""`vsr1 serve`: a thin HTTP service (FastAPI) around one SearchEngine; engine/client.py talks to it.

    vsr1 serve synth [--split test] [--no-embedder] [serve.port=8765 serve.host=127.0.0.1 ...]

Endpoints (JSON; vectors are nested float lists, float32 values survive the round trip exactly):
  GET  /health                                   {"status": "ok", "count": N}
  GET  /info                                     count, dim, hidden_size, factory, limits, index meta
  GET  /ids                                      the corpus ids, row order
  POST /embed_queries  {texts}                   {"vectors": [B][D]}
  POST /embed_refined  {texts, soft: [B][N][He]} {"vectors": [B][D]}
  POST /search         {qvecs: [B][D], k, exclude?: [B][ids], scope?: [B][ids] | [B] nulls}
                       -> {"ids": [B][<=k], "scores": [B][k] (null = none)}
  POST /rank_of        {qvecs: [B][D], target_ids: [B]}        {"ranks": [B]}
Bad input gets a 4xx with a message naming the problem: 400 (shapes, dims, k, non-finite numbers,
empty or blank texts, unparseable JSON), 413 (a body over serve.max_body_mb, refused from its
Content-Length before it is read; a batch over serve.max_batch; a text over serve.max_text_chars
or serve.max_text_tokens), 404 (unknown video ids), 503 (no embedder loaded), 422 (JSON types: the
schema is strict, so `k: true`, `"3"` or unknown fields are refused, never coerced). An unexpected
error is a JSON 500 that keeps the connection usable. Binds to loopback unless serve.host says otherwise.
"""
from __future__ import annotations

import logging
import sys
import threading
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict

from videosearch_r1.engine.search import SearchEngine, UnknownIdError, check_k, check_qvecs

log = logging.getLogger(__name__)


# request bodies (module level: FastAPI resolves the annotations by name); strict: no coercion
class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Texts(_Strict):
    texts: list[str]


class Refined(_Strict):
    texts: list[str]
    soft: list[list[list[float]]]  # [B, N, He]


class Search(_Strict):
    qvecs: list[list[float]]  # [B, D]
    k: int = 1
    exclude: Optional[list[list[str]]] = None
    scope: Optional[list[Optional[list[str]]]] = None  # per query: search only these videos (null: all)


class RankOf(_Strict):
    qvecs: list[list[float]]  # [B, D]
    target_ids: list[str]  # [B]


# ----------------------------------------------------------------------------- ASGI guard
async def _answer(send, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: caps the request body before anything parses it, and turns an unexpected error
    into a JSON 500 instead of a dropped connection (a client's next request must still work).

    A Content-Length over `max_bytes` is answered 413 at once, unread; a body without one (chunked) is
    counted as it arrives and refused as soon as it passes the cap. The server (uvicorn) then discards
    the rest of the body as it arrives, never buffered or parsed, and keeps the connection.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = f"request body exceeds serve.max_body_mb ({self.max_bytes} bytes)"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > self.max_bytes:
            return await _answer(send, 413, f"{too_big}: Content-Length {int(length)}")
        chunks, total, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client went away
            chunks.append(msg.get("body", b""))
            total += len(chunks[-1])
            more = msg.get("more_body", False)
            if total > self.max_bytes:
                return await _answer(send, 413, too_big)
        body, replayed, started = b"".join(chunks), False, False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def tracked(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, replay, tracked)
        except Exception as e:  # noqa: BLE001 - any bug is one 500 answer, logged, not a dropped connection
            log.exception("error answering %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _answer(send, 500, f"internal error: {type(e).__name__}: {str(e)[:500]}")


def soft_array(req: Refined, he: int, max_soft_tokens: int) -> np.ndarray:
    """The request's soft tokens as float32 [B, N, He], or an HTTPException saying what is wrong."""
    from fastapi import HTTPException

    if len(req.soft) != len(req.texts):
        raise HTTPException(400, f"soft has {len(req.soft)} entries for {len(req.texts)} texts")
    shapes = {(len(s), *{len(t) for t in s}) for s in req.soft}
    if len(shapes) != 1 or len(next(iter(shapes))) > 2:
        raise HTTPException(400, f"soft must be a [B, N, He={he}] array with one N and He for all rows")
    n, *rest = next(iter(shapes))
    if n > max_soft_tokens:
        raise HTTPException(413, f"{n} soft tokens exceed the limit of {max_soft_tokens}")
    if rest and rest[0] != he:
        raise HTTPException(400, f"soft tokens have width {rest[0]}, the embedder expects He={he}")
    soft = np.asarray(req.soft, dtype=np.float32).reshape(len(req.texts), n, he)
    if not np.isfinite(soft).all():
        raise HTTPException(400, "soft tokens contain non-finite numbers")
    return soft


def create_app(engine: SearchEngine, max_batch: int = 256, max_k: int = 1000, max_soft_tokens: int = 64,
               max_body_mb: float = 64.0, max_text_chars: int = 4096, max_text_tokens: int = 1024):
    """The FastAPI app: validation here, all work in `engine` (embedder calls serialised by a lock)."""
    from fastapi import FastAPI, HTTPException

    app = FastAPI(title="videosearch-r1 engine", version="1")
    max_body = int(max_body_mb * 2**20)
    app.add_middleware(Guard, max_bytes=max_body)
    lock = threading.Lock()  # one forward pass of the embedder at a time
    limits = {"max_batch": max_batch, "max_k": max_k, "max_soft_tokens": max_soft_tokens,
              "max_body_bytes": max_body, "max_text_chars": max_text_chars, "max_text_tokens": max_text_tokens}

    def check_batch(n: int) -> None:
        if n == 0:
            raise HTTPException(400, "empty batch")
        if n > max_batch:
            raise HTTPException(413, f"batch of {n} exceeds serve.max_batch={max_batch}")

    def vectors(rows: list[list[float]]) -> np.ndarray:
        check_batch(len(rows))
        if len({len(r) for r in rows}) != 1:
            raise HTTPException(400, "qvecs rows have different lengths")
        try:
            return check_qvecs(rows, engine.dim)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    def need_embedder(texts: list[str]) -> None:
        """The embedder exists and every text is a real query of bounded size (chars, then tokens)."""
        if engine.embedder is None:
            raise HTTPException(503, "this server was started without an embedder (--no-embedder)")
        check_batch(len(texts))
        for i, t in enumerate(texts):
            if not t.strip():
                raise HTTPException(400, f"texts[{i}] is empty or blank")
            if len(t) > max_text_chars:
                raise HTTPException(413, f"texts[{i}] has {len(t)} characters, over serve.max_text_chars="
                                         f"{max_text_chars}")
        with lock:  # the tokenizer is shared with the embedder's forward passes
            counts = [len(ids) for ids in engine.embedder.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        for i, n in enumerate(counts):
            if n > max_text_tokens:
                raise HTTPException(413, f"texts[{i}] has {n} tokens, over serve.max_text_tokens={max_text_tokens}")

    def embed(fn, *args):
        """One embedder call under the lock; a ValueError from the engine is the request's fault (400)."""
        try:
            with lock:
                return fn(*args)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    @app.get("/health")
    def health():
        return {"status": "ok", "count": len(engine.ids)}

    @app.get("/info")
    def info():
        return {**engine.info(), **limits}

    @app.get("/ids")
    def ids():
        return {"ids": engine.ids}

    @app.post("/embed_queries")
    def embed_queries(req: Texts):
        need_embedder(req.texts)
        return {"vectors": embed(engine.embed_queries, req.texts).tolist()}

    @app.post("/embed_refined")
    def embed_refined(req: Refined):
        need_embedder(req.texts)
        soft = soft_array(req, engine.embedder.hidden_size, max_soft_tokens)
        return {"vectors": embed(engine.embed_refined, req.texts, soft).tolist()}

    @app.post("/search")
    def search(req: Search):
        q = vectors(req.qvecs)
        try:
            k = check_k(req.k, max_k)
            res = engine.search(q, k=k, exclude=None if req.exclude is None else [set(e) for e in req.exclude],
                                scope=None if req.scope is None else [None if c is None else set(c) for c in req.scope])
        except UnknownIdError as e:
            raise HTTPException(404, str(e)) from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        scores = [[None if not np.isfinite(v) else float(v) for v in row] for row in res.scores.tolist()]
        return {"ids": res.ids, "scores": scores}

    @app.post("/rank_of")
    def rank_of(req: RankOf):
        q = vectors(req.qvecs)
        try:
            return {"ranks": engine.rank_of(q, req.target_ids)}
        except UnknownIdError as e:
            raise HTTPException(404, str(e)) from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    return app


def load_engine(cfg, dataset: str, split: str, with_embedder: bool = True) -> SearchEngine:
    """The SearchEngine of `vsr1 index DATASET --split SPLIT`, with the engine's embedder."""
    embedder = None
    if with_embedder:
        from videosearch_r1.engine.embedder import Embedder

        embedder = Embedder.from_config(cfg, dataset)
    return SearchEngine.load(cfg.index_dir(dataset) / split, embedder=embedder, use_gpu=cfg.index.use_gpu,
                             nprobe=cfg.index.nprobe, ef_search=cfg.index.ef_search)


def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.utils import command_parser, config_from_args, parse_command

    parser = command_parser("vsr1 serve", __doc__)
    parser.add_argument("dataset", help="dataset name (its index must exist: vsr1 index DATASET)")
    parser.add_argument("--split", default=None, help="which split's corpus (default: config split)")
    parser.add_argument("--no-embedder", action="store_true", help="serve search/rank_of only")
    args = parse_command(parser, argv)
    cfg = config_from_args(args, [f"dataset={args.dataset}"])
    split = args.split or cfg.split
    try:
        engine = load_engine(cfg, args.dataset, split, with_embedder=not args.no_embedder)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        print(f"vsr1 serve: {e}", file=sys.stderr)
        return 2
    s = cfg.serve
    app = create_app(engine, max_batch=s.max_batch, max_k=s.max_k, max_soft_tokens=s.max_soft_tokens,
                     max_body_mb=s.max_body_mb, max_text_chars=s.max_text_chars, max_text_tokens=s.max_text_tokens)
    import uvicorn

    print(f"serving {len(engine.ids)} videos of {args.dataset}/{split} on http://{s.host}:{s.port}", flush=True)
    uvicorn.run(app, host=s.host, port=s.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
