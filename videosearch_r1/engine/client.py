"""SearchClient: the SearchEngine interface over HTTP (a `vsr1 serve` server), via httpx.

    engine = SearchClient("http://127.0.0.1:8765")
    q = engine.embed_queries(["a small red square jumps"])
    res = engine.search(q, k=5, exclude=[{"vid3"}])      # same SearchResult as in-process
    engine.rank_of(q, ["vid7"])

Server errors come back as the same exception types the in-process engine raises: ValueError (400/413/
422), UnknownIdError (404), RuntimeError (503 and anything else), with the server's message. The client
stays usable after any error answer: a 5xx drops its pooled connections, and a request that meets a
connection the server closed (after an error, or idle) is sent once more on a fresh one (every endpoint
is a pure function of its input, so a repeat is safe).
"""
from __future__ import annotations

import numpy as np

from videosearch_r1.engine.search import SearchResult, UnknownIdError, check_qvecs


class SearchClient:
    embedder = None  # embedding happens on the server

    def __init__(self, url: str, timeout: float = 120.0):
        import httpx

        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._info: dict | None = None
        self._ids: list[str] | None = None

    # ---- plumbing
    def _reset(self) -> None:
        """Drop the pooled connections (the server may close them after an error answer)."""
        import httpx

        self._http.close()
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout)

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        import httpx

        try:
            r = self._http.request(method, path, json=payload)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            self._reset()  # a kept-alive connection the server had dropped: once more on a fresh one
            r = self._http.request(method, path, json=payload)
        if r.status_code >= 500:
            self._reset()
        if r.status_code < 400:
            return r.json()
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        msg = f"{self.url}{path}: HTTP {r.status_code}: {detail}"
        if r.status_code == 404:
            raise UnknownIdError(msg)
        if r.status_code in (400, 413, 422):
            raise ValueError(msg)
        raise RuntimeError(msg)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "SearchClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- attributes of SearchEngine
    def info(self) -> dict:
        if self._info is None:
            self._info = self._call("GET", "/info")
        return self._info

    def health(self) -> dict:
        return self._call("GET", "/health")

    @property
    def dim(self) -> int:
        return int(self.info()["dim"])

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = self._call("GET", "/ids")["ids"]
        return self._ids

    def __len__(self) -> int:
        return int(self.info()["count"])

    # ---- the SearchEngine methods
    def embed_queries(self, texts: list[str]) -> np.ndarray:
        out = self._call("POST", "/embed_queries", {"texts": list(texts)})
        return np.asarray(out["vectors"], dtype=np.float32)

    def embed_refined(self, texts: list[str], soft) -> np.ndarray:
        if hasattr(soft, "detach"):
            soft = soft.detach().float().cpu().numpy()
        soft = np.asarray(soft, dtype=np.float32)
        if not np.isfinite(soft).all():
            raise ValueError("soft tokens contain non-finite numbers")
        out = self._call("POST", "/embed_refined", {"texts": list(texts), "soft": soft.tolist()})
        return np.asarray(out["vectors"], dtype=np.float32)

    def search(self, qvecs, k: int = 1, exclude: list[set[str]] | None = None,
               scope: list[set[str] | None] | None = None) -> SearchResult:
        q = check_qvecs(qvecs, self.dim)  # JSON cannot carry NaN: refuse it here, with the server's message
        payload = {"qvecs": q.tolist(), "k": k,
                   "exclude": None if exclude is None else [sorted(e or ()) for e in exclude]}
        if scope is not None:  # only when given: a server from before scope existed still answers the rest
            payload["scope"] = [None if c is None else sorted(c) for c in scope]
        out = self._call("POST", "/search", payload)
        scores = np.array([[-np.inf if v is None else v for v in row] for row in out["scores"]],
                          dtype=np.float32).reshape(len(out["ids"]), -1)
        return SearchResult(out["ids"], scores)

    def rank_of(self, qvecs, target_ids: list[str]) -> list[int]:
        q = check_qvecs(qvecs, self.dim)
        return self._call("POST", "/rank_of", {"qvecs": q.tolist(), "target_ids": list(target_ids)})["ranks"]
