"""The search engine: a FAISS index over L2-normalised video embeddings, plus the query embedder.

    engine = SearchEngine.load(cfg.index_dir("synth") / "test", embedder=Embedder.from_pretrained(...))
    q = engine.embed_queries(["a small red square jumps on a blue wall"])   # [B, D] float32
    res = engine.search(q, k=5, exclude=[{"vid3"}])                          # ids [B][k], scores [B, k]
    res = engine.search(q, k=1, scope=[{"vid1", "vid2", "vid7"}])            # only within a sub-corpus (exact)
    ranks = engine.rank_of(q, ["vid7"])                                      # exact 1-based ranks

The index is described by a FAISS factory string ("Flat" = exact inner product; "IVF64,Flat" with
nprobe; "HNSW32" with efSearch). Row r of the index is video `ids[r]`. An exact "Flat" search can also
run as one torch matmul + top-k (on CUDA when `use_gpu` and no faiss GPU build; on CPU when faiss is
missing). `rank_of` never uses the ANN: it counts inner products exactly (ties broken by row order,
the same order a stable exact sort gives). An index directory holds embeddings.npy, ids.json,
meta.json and (when faiss is installed) index.faiss; `vsr1 index` writes it. meta.json names the engine that
built it (engine_fingerprint): `load` with an embedder refuses another engine (the index directory is
named after the engine folder, so a retrained or different engine of that name is caught here).
The HTTP client (engine/client.py) implements the same methods.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

try:  # optional at import time: the GPU image has no faiss, and a Flat index does not need it
    import faiss
except ImportError:  # pragma: no cover - exercised only where faiss is absent
    faiss = None


class SearchResult(NamedTuple):
    ids: list[list[str]]  # [B][<=k] video ids, best first (shorter only when the corpus runs out)
    scores: np.ndarray  # [B, k] float32 inner products; -inf where a row ran out of videos


class UnknownIdError(ValueError):
    """A video id that is not in the index (a target of rank_of, or an exclude entry)."""


class EngineMismatchError(ValueError):
    """An index opened with another engine (embedder fingerprint) than the one that built it."""


def check_engine(meta: dict, embedder, where) -> None:
    """Refuse an embedder whose fingerprint differs from the index's `engine_fingerprint` (meta.json);
    warn (stderr) when the index records none, as then nothing can be checked."""
    fingerprint = getattr(embedder, "fingerprint", None)
    if fingerprint is None:  # not an Embedder (e.g. a remote client): nothing to compare
        return
    built = meta.get("engine_fingerprint")
    if not built:
        print(f"warning: {where} records no engine fingerprint (built before fingerprints, or saved without "
              f"an embedder): cannot check that the loaded engine built it", file=sys.stderr)
        return
    now = fingerprint()
    if now != built:
        raise EngineMismatchError(
            f"{where} was built by engine {meta.get('engine_model', '?')} (fingerprint {built}), but the loaded "
            f"engine {getattr(embedder, 'source', None) or '(in memory)'} has fingerprint {now}: its vectors "
            f"would not match the queries; rebuild the index with `vsr1 index` or load the engine that built it")


# ----------------------------------------------------------------------------- validation
def check_qvecs(qvecs, dim: int, max_batch: int | None = None) -> np.ndarray:
    """[B, D] finite float vectors -> contiguous float32; ValueError naming what is wrong."""
    q = np.asarray(qvecs, dtype=np.float32)
    if q.ndim != 2:
        raise ValueError(f"query vectors must have shape [B, D], got shape {list(q.shape)}")
    if q.shape[1] != dim:
        raise ValueError(f"query vectors have dimension {q.shape[1]}, the index has dimension {dim}")
    if q.shape[0] == 0:
        raise ValueError("empty query batch")
    if max_batch is not None and q.shape[0] > max_batch:
        raise ValueError(f"query batch of {q.shape[0]} exceeds the limit of {max_batch}")
    bad = ~np.isfinite(q).all(axis=1)
    if bad.any():
        raise ValueError(f"query vectors contain non-finite numbers (rows {np.flatnonzero(bad)[:10].tolist()})")
    return np.ascontiguousarray(q)


def check_k(k: int, max_k: int | None = None) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if max_k is not None and k > max_k:
        raise ValueError(f"k={k} exceeds the limit of {max_k}")
    return int(k)


# ----------------------------------------------------------------------------- index backends
def _is_flat(factory: str) -> bool:
    return factory.replace(" ", "") in ("Flat", "IDMap,Flat")


def build_faiss_index(vectors: np.ndarray, factory: str):
    """Inner-product FAISS index from a factory string, trained (if needed) and filled with all rows."""
    if faiss is None:
        raise RuntimeError(f"faiss is not installed: index {factory!r} needs it (only 'Flat' runs without)")
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return index


def set_search_params(index, nprobe: int, ef_search: int) -> None:
    """nprobe for IVF indexes, efSearch for HNSW ones (wrappers included); a no-op where neither applies."""
    if faiss is None or index is None:
        return
    gpu = hasattr(faiss, "GpuParameterSpace") and "Gpu" in type(index).__name__
    space = faiss.GpuParameterSpace() if gpu else faiss.ParameterSpace()
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        try:
            space.set_index_parameter(index, name, int(value))
        except RuntimeError:  # this index type has no such parameter
            pass


class _TorchFlat:
    """Exact inner-product search as one matmul + top-k (CUDA or CPU); faiss-free."""

    def __init__(self, vectors: np.ndarray, device: str):
        import torch

        self.torch = torch
        self.device = device
        self.x = torch.from_numpy(vectors).to(device)  # [N, D] float32
        self.ntotal = vectors.shape[0]

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        k = min(k, self.ntotal)
        with torch.no_grad():
            s = torch.from_numpy(q).to(self.device) @ self.x.T  # [B, N]
            d, i = torch.topk(s, k, dim=1)
        return d.float().cpu().numpy(), i.cpu().numpy().astype(np.int64)


def chunk_scopes(ids, size: int) -> dict[str, frozenset]:
    """Sub-corpora for `search(scope=...)` (grpo.corpus_size): video id -> the chunk of `size` videos it
    belongs to (the ids sorted, cut in consecutive chunks; a last chunk shorter than size / 2 joins the one
    before, so no query searches a near-empty corpus)."""
    order = sorted(ids)
    cuts = list(range(0, len(order), size))
    if len(cuts) > 1 and len(order) - cuts[-1] < size / 2:
        cuts.pop()
    out = {}
    for j, start in enumerate(cuts):
        chunk = frozenset(order[start:cuts[j + 1] if j + 1 < len(cuts) else len(order)])
        out.update({v: chunk for v in chunk})
    return out


# ----------------------------------------------------------------------------- the engine
class SearchEngine:
    """Video search over one corpus: id map, FAISS (or torch) index, exact rank, query embedding."""

    def __init__(self, vectors: np.ndarray, ids: Sequence[str], factory: str = "Flat", embedder=None,
                 use_gpu: bool = False, nprobe: int = 16, ef_search: int = 256, index=None,
                 meta: dict | None = None):
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise ValueError(f"vectors {list(vectors.shape)} do not match {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate video ids in the index")
        self.vectors = vectors  # [N, D] float32, the exact copy used by rank_of
        self.ids: list[str] = list(ids)
        self.row = {v: r for r, v in enumerate(self.ids)}
        self.dim = int(vectors.shape[1])
        self.factory = factory
        self.embedder = embedder
        self.meta = dict(meta or {})
        self.nprobe, self.ef_search = nprobe, ef_search
        self.index = index  # CPU faiss index (what gets saved), or None
        self.backend = self._make_backend(use_gpu)

    def _make_backend(self, use_gpu: bool):
        """Pick the search path: faiss GPU > torch CUDA (Flat) > faiss CPU > torch CPU (Flat)."""
        if len(self.ids) == 0:
            return None
        flat = _is_flat(self.factory)
        cuda = False
        if use_gpu:
            import torch

            cuda = torch.cuda.is_available()
        if use_gpu and faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            self._ensure_faiss()
            self._gpu_res = faiss.StandardGpuResources()
            gpu = faiss.index_cpu_to_gpu(self._gpu_res, 0, self.index)
            set_search_params(gpu, self.nprobe, self.ef_search)
            return gpu
        if flat and (cuda or faiss is None):
            return _TorchFlat(self.vectors, "cuda" if cuda else "cpu")
        self._ensure_faiss()
        return self.index

    def _ensure_faiss(self) -> None:
        if self.index is None:
            self.index = build_faiss_index(self.vectors, self.factory)
        if self.index.ntotal != len(self.ids) or self.index.d != self.dim:
            raise ValueError(f"faiss index holds {self.index.ntotal} x {self.index.d}, "
                             f"expected {len(self.ids)} x {self.dim}")
        set_search_params(self.index, self.nprobe, self.ef_search)

    # ---- construction / persistence
    @classmethod
    def build(cls, vectors: np.ndarray, ids: Sequence[str], factory: str = "Flat", **kw) -> "SearchEngine":
        return cls(vectors, ids, factory=factory, **kw)

    @classmethod
    def load(cls, index_dir, embedder=None, use_gpu: bool = False, nprobe: int | None = None,
             ef_search: int | None = None) -> "SearchEngine":
        """Open an index directory written by `save` / `vsr1 index`; with an `embedder`, refuse one whose
        fingerprint differs from the engine that built the index (EngineMismatchError, check_engine)."""
        d = Path(index_dir)
        for name in ("embeddings.npy", "ids.json", "meta.json"):
            if not (d / name).is_file():
                raise FileNotFoundError(f"{d / name} missing: build the index with `vsr1 index`")
        meta = json.loads((d / "meta.json").read_text())
        if embedder is not None:
            check_engine(meta, embedder, d)
        ids = json.loads((d / "ids.json").read_text())
        vectors = np.load(d / "embeddings.npy")
        factory = meta.get("factory", "Flat")
        index = None
        if faiss is not None and (d / "index.faiss").is_file():
            index = faiss.read_index(str(d / "index.faiss"))
        elif not _is_flat(factory):
            raise RuntimeError(f"{d}: index {factory!r} needs faiss and index.faiss")
        return cls(vectors, ids, factory=factory, embedder=embedder, use_gpu=use_gpu, index=index, meta=meta,
                   nprobe=meta.get("nprobe", 16) if nprobe is None else nprobe,
                   ef_search=meta.get("ef_search", 256) if ef_search is None else ef_search)

    def save(self, index_dir, extra_meta: dict | None = None) -> Path:
        """Write embeddings.npy, ids.json, meta.json (+ index.faiss), each atomically; meta.json records
        the embedder's fingerprint (engine_fingerprint) when the engine has one."""
        from videosearch_r1.utils import atomic_path, atomic_write_json

        d = Path(index_dir)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / "embeddings.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, self.vectors)
        atomic_write_json(d / "ids.json", self.ids)
        if faiss is not None and len(self.ids):
            self._ensure_faiss()
            with atomic_path(d / "index.faiss") as tmp:
                faiss.write_index(self.index, str(tmp))
        meta = {**self.meta, **(extra_meta or {})}
        if self.embedder is not None and hasattr(self.embedder, "fingerprint"):
            meta.setdefault("engine_fingerprint", self.embedder.fingerprint())
        meta = {**meta, "factory": self.factory, "count": len(self.ids),
                "dim": self.dim, "nprobe": self.nprobe, "ef_search": self.ef_search}
        self.meta = meta
        atomic_write_json(d / "meta.json", meta)
        return d

    # ---- query embedding (delegates to the Embedder)
    def _need_embedder(self):
        if self.embedder is None:
            raise RuntimeError("this SearchEngine has no embedder: pass embedder= to SearchEngine.load")
        return self.embedder

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """[B] query texts -> [B, D] float32 L2-normalised vectors."""
        if not texts:
            raise ValueError("empty list of texts")
        out = self._need_embedder().embed_texts(list(texts))
        return out.detach().float().cpu().numpy()

    def embed_refined(self, texts: list[str], soft) -> np.ndarray:
        """Texts plus soft tokens [B, N, He] (numpy or torch) -> [B, D] refined query vectors."""
        import torch

        emb = self._need_embedder()
        soft_t = torch.as_tensor(np.asarray(soft, dtype=np.float32)) if not torch.is_tensor(soft) else soft
        if soft_t.ndim != 3 or soft_t.shape[0] != len(texts) or soft_t.shape[2] != emb.hidden_size:
            raise ValueError(f"soft tokens must have shape [B={len(texts)}, N, He={emb.hidden_size}], "
                             f"got {list(soft_t.shape)}")
        if not torch.isfinite(soft_t).all():
            raise ValueError("soft tokens contain non-finite numbers")
        with torch.no_grad():
            out = emb.embed_soft(list(texts), soft_t, grad=False)
        return out.detach().float().cpu().numpy()

    # ---- search
    def _exclude_rows(self, exclude, batch: int) -> list[set[int]]:
        if exclude is None:
            return [set() for _ in range(batch)]
        if len(exclude) != batch:
            raise ValueError(f"exclude has {len(exclude)} entries for {batch} queries")
        return [set(self._known_rows(ex or (), f"exclude[{i}]")) for i, ex in enumerate(exclude)]

    def _known_rows(self, ids, where: str) -> list[int]:
        """Index rows of `ids`; UnknownIdError naming `where` for an id the index does not hold."""
        unknown = [v for v in ids if v not in self.row]
        if unknown:
            raise UnknownIdError(f"{where}: unknown video id(s) {sorted(unknown)[:5]}")
        return [self.row[v] for v in ids]

    def _raw_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Backend top-k: scores [B, k'] and rows [B, k'] (k' = min(k, N); faiss may return -1 rows)."""
        return self.backend.search(q, min(k, len(self.ids)))

    def search(self, qvecs, k: int = 1, exclude: list[set[str]] | None = None,
               scope: list[set[str] | None] | None = None) -> SearchResult:
        """Top-k videos per query, skipping each query's `exclude` set (k + |exclude| searched, filtered).

        Exactly k results come back whenever the corpus holds k non-excluded videos: an ANN that
        returns too few after filtering is completed by an exact search for that query.
        `scope` (one entry per query, None = the whole corpus): search only those videos, exactly (every
        inner product; a sub-corpus is small), ties in row order, e.g. GRPO rollouts over a corpus the size of
        the evaluation's (grpo.corpus_size).
        """
        k = check_k(k)
        q = check_qvecs(qvecs, self.dim)
        ex_rows = self._exclude_rows(exclude, q.shape[0])
        sc_rows = self._scope_rows(scope, q.shape[0])
        n = len(self.ids)
        scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        ids: list[list[str]] = []
        if n == 0:
            return SearchResult([[] for _ in range(q.shape[0])], scores)
        kk = k + max(len(e) for e in ex_rows)
        free = [b for b in range(q.shape[0]) if sc_rows[b] is None]
        d = i = None
        if free:
            d, i = self._raw_search(q[free], kk)
        at = {b: j for j, b in enumerate(free)}
        for b in range(q.shape[0]):
            if sc_rows[b] is not None:
                rows, vals = self._scoped(q[b], sc_rows[b], ex_rows[b], k)
                ids.append([self.ids[r] for r in rows])
                scores[b, :len(vals)] = vals
                continue
            rows, vals = self._filter(i[at[b]], d[at[b]], ex_rows[b], k)
            want = min(k, n - len(ex_rows[b]))
            if len(rows) < want:  # ANN came up short: finish this query exactly
                ed, ei = self._exact_topk(q[b:b + 1], min(n, kk))
                rows, vals = self._filter(ei[0], ed[0], ex_rows[b], k)
            ids.append([self.ids[r] for r in rows])
            scores[b, :len(vals)] = vals
        return SearchResult(ids, scores)

    def _scope_rows(self, scope, batch: int) -> list[np.ndarray | None]:
        if scope is None:
            return [None] * batch
        if len(scope) != batch:
            raise ValueError(f"scope has {len(scope)} entries for {batch} queries")
        return [None if sc is None else np.array(sorted(self._known_rows(sc, f"scope[{i}]")), dtype=np.int64)
                for i, sc in enumerate(scope)]

    def _scoped(self, q: np.ndarray, rows: np.ndarray, ex: set[int], k: int) -> tuple[list[int], list[float]]:
        """Exact top-k of one query [D] over the index rows `rows` (sorted), `ex` skipped."""
        s = self.vectors[rows] @ q  # [|scope|]
        order = np.argsort(-s, kind="stable")
        return self._filter(rows[order], s[order], ex, k)

    @staticmethod
    def _filter(rows: np.ndarray, vals: np.ndarray, ex: set[int], k: int) -> tuple[list[int], list[float]]:
        out_r, out_v = [], []
        for r, v in zip(rows.tolist(), vals.tolist()):
            if r < 0 or r in ex:
                continue
            out_r.append(r)
            out_v.append(v)
            if len(out_r) == k:
                break
        return out_r, out_v

    def _exact_topk(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = q @ self.vectors.T  # [B, N]
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, order, axis=1), order

    def rank_of(self, qvecs, target_ids: list[str], chunk: int = 64) -> list[int]:
        """Exact 1-based rank of each target: 1 + #videos scoring higher (+ ties at earlier rows).

        Never the ANN: every inner product is computed (float32), `chunk` queries at a time.
        """
        q = check_qvecs(qvecs, self.dim)
        if len(target_ids) != q.shape[0]:
            raise ValueError(f"{len(target_ids)} target ids for {q.shape[0]} queries")
        unknown = [t for t in target_ids if t not in self.row]
        if unknown:
            raise UnknownIdError(f"unknown target video id(s) {unknown[:5]}")
        rows = np.array([self.row[t] for t in target_ids], dtype=np.int64)
        out: list[int] = []
        cols = np.arange(len(self.ids))
        for i in range(0, q.shape[0], chunk):
            s = q[i:i + chunk] @ self.vectors.T  # [b, N]
            r = rows[i:i + chunk]
            st = s[np.arange(len(r)), r][:, None]
            ahead = (s > st) | ((s == st) & (cols[None, :] < r[:, None]))
            out += (1 + ahead.sum(axis=1)).astype(int).tolist()
        return out

    def __len__(self) -> int:
        return len(self.ids)

    def info(self) -> dict:
        hidden = getattr(self.embedder, "hidden_size", None) if self.embedder is not None else None
        return {"count": len(self.ids), "dim": self.dim, "factory": self.factory, "nprobe": self.nprobe,
                "ef_search": self.ef_search, "backend": type(self.backend).__name__,
                "has_embedder": self.embedder is not None, "hidden_size": hidden,
                "meta": {k: v for k, v in self.meta.items() if k != "skipped"}}
