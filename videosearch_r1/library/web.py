"""`vsr1 web`: a local page to search your library and play the moments (FastAPI, plain HTML/JS).

    vsr1 web [--host 127.0.0.1] [--port 8780] [library.store=faiss+sqlite:///data/lib ...]
    # then open http://127.0.0.1:8780/

Routes: `/` the page (library/static/index.html, no build step); `/api/status` the library status;
`/api/search?q=TEXT&k=N` ranked moments (file, start, end, score, thumbnail and media URLs);
`/api/thumb/{id}` a moment's JPEG; `/media?path=FILE` the video file with HTTP range requests (so the
player can seek). `/media` serves only files of the library that lie inside one of its folders after
resolving symlinks; anything else is 403, a missing file 404, a bad request 400/422. Bound to
loopback by default (library.host); the page plays a moment from its start and pauses at its end.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

STATIC = Path(__file__).parent / "static"


def create_app(cfg, store=None, embedder=None):
    """The FastAPI app over one library (the store and engine are opened here unless given)."""
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.responses import FileResponse, JSONResponse, Response

    from videosearch_r1.library.build import LibraryError
    from videosearch_r1.library.search import open_library, query_embedder, search

    store = store or open_library(cfg)
    embedder = embedder or query_embedder(cfg, store)
    lock = threading.Lock()  # one query at a time through the engine
    app = FastAPI(title="videosearch-r1 library", docs_url=None, redoc_url=None)

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/status")
    def status():
        return JSONResponse(store.status())

    @app.get("/api/search")
    def api_search(q: str = Query(..., max_length=2000), k: int = Query(0, ge=0, le=1000)):
        if not q.strip():
            raise HTTPException(400, "empty query")
        try:
            with lock:
                rows = search(store, embedder, q, k or cfg.library.top_k)
        except LibraryError as e:
            raise HTTPException(400, str(e)) from None
        for r in rows:
            r["thumb"] = f"/api/thumb/{r['id']}"
        return JSONResponse({"query": q, "results": rows})

    @app.get("/api/thumb/{mid}")
    def thumb(mid: int):
        data = store.thumbnail(mid)
        if data is None:
            raise HTTPException(404, f"no moment {mid}")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/media")
    def media(path: str = Query(..., min_length=1, max_length=4096)):
        real = allowed_file(store, path)
        return FileResponse(real, media_type=_mime(real))

    def allowed_file(store, path: str) -> Path:
        """The resolved file if it is a library file inside a library folder; else 403/404."""
        if "\x00" in path:
            raise HTTPException(400, "bad path")
        p = Path(path)
        if not p.is_absolute():
            raise HTTPException(400, "path must be absolute")
        real = p.resolve()
        roots = [Path(r) for r in store.roots()]
        if not any(real.is_relative_to(r) for r in roots) or store.file_id(str(real)) is None:
            raise HTTPException(403, "not a file of the library")
        if not real.is_file():
            raise HTTPException(404, "file missing from disk (run `vsr1 library add` to sync)")
        return real

    return app


def _mime(p: Path) -> str:
    return {".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm", ".mkv": "video/x-matroska",
            ".avi": "video/x-msvideo"}.get(p.suffix.lower(), "application/octet-stream")


def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.library.build import LibraryError
    from videosearch_r1.library.store import StoreError
    from videosearch_r1.utils import command_parser, config_from_args, parse_command

    p = command_parser("vsr1 web", __doc__)
    p.add_argument("--host", default=None, help="bind address (default library.host, loopback)")
    p.add_argument("--port", type=int, default=None, help="port (default library.port)")
    args = parse_command(p, argv)
    cfg = config_from_args(args)
    try:
        app = create_app(cfg)
    except (LibraryError, StoreError) as e:
        print(f"web: {e}", file=sys.stderr)
        return 2
    import uvicorn

    host, port = args.host or cfg.library.host, args.port or cfg.library.port
    print(f"library page: http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
