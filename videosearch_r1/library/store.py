"""Library storage: SQLite metadata (the commit point) + a vector index for the moments, chosen by URI.

    store = open_store(cfg)                     # library.store, e.g. "faiss+sqlite:///data/mylib"
    store.put_file(rec, moments, video_vec, moment_vecs)   # one transaction per file (resume point)
    hits = store.search_moments(qvecs, k=10)    # [B][k] MomentHit, best first
    store.flush(); store.close()

URIs (`library.store`): `faiss+sqlite:///DIR` (the default, embedded, no server: FAISS IndexIDMap2 over
IndexFlatIP in memory, snapshotted to DIR/moments.faiss; numpy's exact search where faiss is missing) or `milvus+sqlite:///DIR` (Milvus Lite in
DIR/milvus.db; add `?uri=http://HOST:19530` for a Milvus server). No DIR: <workspace>/library.
docs/library.md compares the two. Either way DIR/library.sqlite holds roots, files (path, size, mtime,
content-hash prefix, duration, the whole-video vector), moments (start, end, JPEG thumbnail, vector),
failed files, and the settings the vectors were made with. SQLite is the truth: a moment's vector is
kept there too, so a FAISS snapshot older than the database (a killed `add`) is rebuilt from it, and a
Milvus hit whose id the database does not know (a kill between the two writes) is dropped.
Moment ids: file_id * 2**20 + window number.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional, Protocol
from urllib.parse import parse_qs, urlparse

import numpy as np

ID_SHIFT = 20  # moment id = file_id << ID_SHIFT | window number (up to 1,048,576 windows per file)
SCHEMES = ("faiss+sqlite", "milvus+sqlite")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY, added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS files (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, root TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, hash TEXT NOT NULL, duration REAL NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, fps REAL NOT NULL, vector BLOB NOT NULL,
    added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS moments (id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, start REAL NOT NULL,
    "end" REAL NOT NULL, thumb BLOB NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS moments_file ON moments (file_id);
CREATE TABLE IF NOT EXISTS failed (path TEXT PRIMARY KEY, root TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, hash TEXT NOT NULL, reason TEXT NOT NULL);
"""


class StoreError(ValueError):
    """A bad store URI, a library made with other settings, or an unusable store directory."""


@dataclass(frozen=True)
class StoreURI:
    scheme: str  # one of SCHEMES
    dir: Path  # the library directory (SQLite, FAISS snapshot, Milvus Lite file)
    milvus_uri: str = ""  # a Milvus server; empty: Milvus Lite in <dir>/milvus.db


def parse_uri(uri: str, default_dir: Path) -> StoreURI:
    """`faiss+sqlite:///DIR` | `milvus+sqlite:///DIR[?uri=...]`; an empty DIR means `default_dir`."""
    u = urlparse(uri)
    if u.scheme not in SCHEMES:
        raise StoreError(f"library.store={uri!r}: scheme must be one of {SCHEMES} (e.g. faiss+sqlite:///path)")
    if u.netloc:
        raise StoreError(f"library.store={uri!r}: put the directory after three slashes (faiss+sqlite:///path)")
    d = Path(u.path).expanduser() if u.path not in ("", "/") else Path(default_dir).expanduser()
    q = parse_qs(u.query)
    extra = set(q) - {"uri"}
    if extra or (u.scheme == "faiss+sqlite" and q):
        raise StoreError(f"library.store={uri!r}: unknown query parameter(s) {sorted(set(q))}")
    return StoreURI(u.scheme, d, q.get("uri", [""])[0])


class FileRecord(NamedTuple):
    path: str  # absolute, resolved
    root: str  # the library folder it was found under
    size: int
    mtime_ns: int
    hash: str  # sha1 of the first library.hash_bytes bytes
    duration: float = 0.0
    width: int = 0
    height: int = 0
    fps: float = 0.0


class MomentHit(NamedTuple):
    id: int
    file_id: int
    path: str
    start: float
    end: float
    score: float


def _blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


def _vec(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.float32)


# ----------------------------------------------------------------------------- vector indexes
class VectorIndex(Protocol):
    """The seam between the library and a vector engine: moment ids (int64) -> unit vectors, inner product."""

    rebuilt: bool  # the index was rebuilt from the database on open (its snapshot was stale)

    def load(self, version: int, rows) -> None: ...  # open for the database at `version`; rows: (id, blob)
    def add(self, ids: np.ndarray, vecs: np.ndarray, file_id: Optional[int]) -> None: ...
    def remove_files(self, file_ids: list[int]) -> None: ...  # every moment of these files (their id blocks)
    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...  # scores, ids [B, k]; id -1: none
    def count(self) -> int: ...
    def flush(self, version: int) -> None: ...  # persist (the snapshot records the database version)
    def close(self) -> None: ...


class FaissIndex:
    """IndexIDMap2(IndexFlatIP) in memory: add/remove by id, exact inner product; snapshot on flush."""

    def __init__(self, dir: Path, dim: int):
        import faiss

        self.faiss, self.dim = faiss, dim
        self.path = dir / "moments.faiss"
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.rebuilt = False  # True when the snapshot was stale and the index came from the database

    def load(self, version: int, rows) -> None:
        """The snapshot if it matches the database's version, else rebuild from (id, vector blob) rows."""
        stamp = self.path.with_suffix(".json")
        if self.path.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("version") == version:
            index = self.faiss.read_index(str(self.path))
            if index.d == self.dim:
                self.index = index
                return
        self.rebuilt = self.path.is_file() or version > 0
        ids, vecs = [], []
        for mid, blob in rows:
            ids.append(mid)
            vecs.append(_vec(blob))
            if len(ids) >= 65536:
                self.add(np.asarray(ids, np.int64), np.stack(vecs), None)
                ids, vecs = [], []
        if ids:
            self.add(np.asarray(ids, np.int64), np.stack(vecs), None)

    def add(self, ids: np.ndarray, vecs: np.ndarray, file_id: Optional[int]) -> None:
        self.index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), np.asarray(ids, np.int64))

    def remove_files(self, file_ids: list[int]) -> None:
        """One remove_ids call (a flat index compacts all its rows per call: O(N), so batch)."""
        if len(file_ids) == 1:
            lo = int(file_ids[0]) << ID_SHIFT
            self.index.remove_ids(self.faiss.IDSelectorRange(lo, lo + (1 << ID_SHIFT)))
        elif file_ids:
            ids = self.faiss.vector_to_array(self.index.id_map)
            gone = ids[np.isin(ids >> ID_SHIFT, np.asarray(file_ids, np.int64))]
            self.index.remove_ids(self.faiss.IDSelectorBatch(gone))

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.index.ntotal)
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        return self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)

    def count(self) -> int:
        return int(self.index.ntotal)

    def flush(self, version: int) -> None:
        from videosearch_r1.utils import atomic_path, atomic_write_json

        with atomic_path(self.path) as tmp:
            self.faiss.write_index(self.index, str(tmp))
        atomic_write_json(self.path.with_suffix(".json"), {"version": version, "count": self.count()})

    def close(self) -> None:
        pass


class NumpyFlatIndex:
    """Exact inner product in numpy: the faiss+sqlite store where faiss is not installed (the GPU image
    has none). No snapshot: it is filled from the database on open."""

    def __init__(self, dir: Path, dim: int):
        self.dim, self.rebuilt = dim, False
        self.ids = np.zeros(0, np.int64)
        self.vecs = np.zeros((0, dim), np.float32)
        self._new: list[tuple[np.ndarray, np.ndarray]] = []

    def load(self, version: int, rows) -> None:
        got = [(mid, _vec(blob)) for mid, blob in rows]
        if got:
            self.add(np.asarray([m for m, _ in got], np.int64), np.stack([v for _, v in got]), None)

    def _merge(self) -> None:
        if self._new:
            self.ids = np.concatenate([self.ids] + [i for i, _ in self._new])
            self.vecs = np.concatenate([self.vecs] + [v for _, v in self._new])
            self._new = []

    def add(self, ids: np.ndarray, vecs: np.ndarray, file_id: Optional[int]) -> None:
        self._new.append((np.asarray(ids, np.int64), np.asarray(vecs, np.float32).reshape(-1, self.dim)))

    def remove_files(self, file_ids: list[int]) -> None:
        self._merge()
        keep = ~np.isin(self.ids >> ID_SHIFT, np.asarray(file_ids, np.int64))
        self.ids, self.vecs = self.ids[keep], self.vecs[keep]

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._merge()
        k = min(k, len(self.ids))
        s = q @ self.vecs.T  # [B, N]
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if 0 < k < s.shape[1] else np.tile(np.arange(k), (len(q), 1))
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        rows = np.take_along_axis(top, order, axis=1)
        return np.take_along_axis(s, rows, axis=1).astype(np.float32), self.ids[rows]

    def count(self) -> int:
        self._merge()
        return int(len(self.ids))

    def flush(self, version: int) -> None:
        pass

    def close(self) -> None:
        pass


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def flat_index(dir: Path, dim: int) -> VectorIndex:
    """The faiss+sqlite store's index: FAISS when installed, else the numpy twin."""
    return FaissIndex(dir, dim) if have_faiss() else NumpyFlatIndex(dir, dim)


class MilvusIndex:
    """A Milvus collection (Milvus Lite file or server): id, file_id, vector; FLAT index, inner product."""

    COLLECTION = "moments"

    def __init__(self, dir: Path, dim: int, uri: str = ""):
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError:
            raise StoreError("library.store=milvus+sqlite needs pymilvus (and milvus-lite for a local file): "
                             "pip install -e '.[library]'") from None
        self.dim, self.rebuilt = dim, False
        self.client = MilvusClient(uri or str(dir / "milvus.db"))
        if not self.client.has_collection(self.COLLECTION):
            schema = self.client.create_schema(auto_id=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("file_id", DataType.INT64)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
            params = self.client.prepare_index_params()
            params.add_index("vec", index_type="FLAT", metric_type="IP")
            self.client.create_collection(self.COLLECTION, schema=schema, index_params=params)
        self.client.load_collection(self.COLLECTION)

    def load(self, version: int, rows) -> None:
        pass  # Milvus persists its own data; unknown ids are dropped at search time

    def add(self, ids: np.ndarray, vecs: np.ndarray, file_id: Optional[int]) -> None:
        if file_id is not None:  # ids of a file whose earlier write was cut off may linger: clear them
            self.remove_files([file_id])
        rows = [{"id": int(i), "file_id": int(i) >> ID_SHIFT, "vec": v.astype(np.float32).tolist()}
                for i, v in zip(ids.tolist(), vecs)]
        for i in range(0, len(rows), 1000):
            self.client.insert(self.COLLECTION, rows[i:i + 1000])

    def remove_files(self, file_ids: list[int]) -> None:
        for i in range(0, len(file_ids), 1000):
            self.client.delete(self.COLLECTION, filter=f"file_id in {[int(f) for f in file_ids[i:i + 1000]]}")

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        res = self.client.search(self.COLLECTION, data=[x.astype(np.float32).tolist() for x in q], limit=k,
                                 search_params={"metric_type": "IP"})
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for b, hits in enumerate(res):
            for j, h in enumerate(hits[:k]):
                scores[b, j], ids[b, j] = h["distance"], h["id"]
        return scores, ids

    def count(self) -> int:
        got = self.client.query(self.COLLECTION, filter="id >= 0", output_fields=["count(*)"])
        return int(got[0]["count(*)"])

    def flush(self, version: int) -> None:
        self.client.flush(self.COLLECTION)

    def close(self) -> None:
        self.client.close()


# ----------------------------------------------------------------------------- the store
class LibraryStore:
    """Metadata in SQLite + the moment vector index; thread-safe (one lock) for the web server."""

    def __init__(self, uri: StoreURI):
        self.uri = uri
        uri.dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(uri.dir / "library.sqlite"), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.lock = threading.RLock()
        self.index: Optional[VectorIndex] = None  # opened once the dimension is known (check_settings)
        dim = self.meta("dim")
        if dim:
            self._open_index(int(dim))

    # ---- settings the vectors were made with
    def meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def _set_meta(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def check_settings(self, settings: dict) -> None:
        """Record the engine/video/window settings on first use; refuse a library made with others."""
        with self.lock:
            old = self.meta("settings")
            if old is None:
                self._set_meta("settings", settings)
                self._set_meta("dim", int(settings["dim"]))
                self._open_index(int(settings["dim"]))
                return
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            if diff:
                raise StoreError(f"the library in {self.uri.dir} was built with other settings ({', '.join(diff)}: "
                                 f"{[old.get(k) for k in diff]} here, now {[settings.get(k) for k in diff]}); "
                                 "use another library.store directory, or the settings it was built with")

    def _open_index(self, dim: int) -> None:
        if self.uri.scheme == "faiss+sqlite":
            self.index: VectorIndex = flat_index(self.uri.dir, dim)
        else:
            self.index = MilvusIndex(self.uri.dir, dim, self.uri.milvus_uri)
        self.index.load(self.version(), self.db.execute("SELECT id, vector FROM moments ORDER BY id"))

    def version(self) -> int:
        return int(self.meta("version", 0))

    # ---- roots and files
    def roots(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT path FROM roots ORDER BY path")]

    def add_root(self, path: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR IGNORE INTO roots VALUES (?, ?)", (path, time.time()))

    def remove_root(self, path: str) -> int:
        """Drop a root and every file found under it (vectors included); returns the files dropped."""
        with self.lock:
            paths = [r[0] for r in self.db.execute("SELECT path FROM files WHERE root=?", (path,))]
            self.drop_files(paths)
            self.db.execute("DELETE FROM failed WHERE root=?", (path,))
            self.db.execute("DELETE FROM roots WHERE path=?", (path,))
            return len(paths)

    def files(self, root: str | None = None) -> dict[str, FileRecord]:
        sql = "SELECT path, root, size, mtime_ns, hash, duration, width, height, fps FROM files"
        rows = self.db.execute(sql + (" WHERE root=?" if root else ""), (root,) if root else ())
        return {r[0]: FileRecord(*r) for r in rows}

    def failed(self, root: str | None = None) -> dict[str, tuple[FileRecord, str]]:
        sql = "SELECT path, root, size, mtime_ns, hash, reason FROM failed"
        rows = self.db.execute(sql + (" WHERE root=?" if root else ""), (root,) if root else ())
        return {r[0]: (FileRecord(*r[:5]), r[5]) for r in rows}

    def file_id(self, path: str) -> Optional[int]:
        row = self.db.execute("SELECT id FROM files WHERE path=?", (path,)).fetchone()
        return int(row[0]) if row else None

    def put_file(self, rec: FileRecord, spans: list[tuple[float, float]], thumbs: list[bytes],
                 video_vec: np.ndarray, moment_vecs: np.ndarray) -> int:
        """Replace `rec.path`'s rows with this file's video vector and moments, in ONE transaction."""
        if not (len(spans) == len(thumbs) == len(moment_vecs)) or len(spans) >= (1 << ID_SHIFT):
            raise ValueError(f"{rec.path}: {len(spans)} spans, {len(thumbs)} thumbnails, {len(moment_vecs)} vectors")
        with self.lock:
            old = self.file_id(rec.path)
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if old is not None:
                    self._delete_rows(old)
                cur = self.db.execute(
                    "INSERT INTO files (path, root, size, mtime_ns, hash, duration, width, height, fps, vector, added)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?)", (*rec, _blob(video_vec), time.time()))
                fid = int(cur.lastrowid)
                ids = np.arange(len(spans), dtype=np.int64) + (fid << ID_SHIFT)
                self.db.executemany('INSERT INTO moments (id, file_id, start, "end", thumb, vector) VALUES (?,?,?,?,?,?)',
                                    [(int(i), fid, float(s), float(e), t, _blob(v))
                                     for i, (s, e), t, v in zip(ids.tolist(), spans, thumbs, moment_vecs)])
                self.db.execute("DELETE FROM failed WHERE path=?", (rec.path,))
                self._set_meta("version", self.version() + 1)
                if isinstance(self.index, MilvusIndex):  # server side first; a cut-off write is cleared on retry
                    if old is not None:
                        self.index.remove_files([old])
                    self.index.add(ids, moment_vecs, fid)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            if not isinstance(self.index, MilvusIndex):
                if old is not None:
                    self.index.remove_files([old])
                if len(ids):
                    self.index.add(ids, moment_vecs, fid)
            return fid

    def _delete_rows(self, fid: int) -> None:
        self.db.execute("DELETE FROM moments WHERE file_id=?", (fid,))
        self.db.execute("DELETE FROM files WHERE id=?", (fid,))

    def drop_files(self, paths: list[str]) -> int:
        """Remove files (rows and vectors) in one transaction and one index call; returns how many."""
        with self.lock:
            fids = [f for f in (self.file_id(p) for p in paths) if f is not None]
            if not fids:
                return 0
            self.db.execute("BEGIN IMMEDIATE")
            for fid in fids:
                self._delete_rows(fid)
            self._set_meta("version", self.version() + 1)
            self.db.execute("COMMIT")
            self.index.remove_files(fids)
            return len(fids)

    def put_failed(self, rec: FileRecord, reason: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO failed VALUES (?,?,?,?,?,?)", (*rec[:5], reason))

    def forget_failed(self, paths: list[str]) -> None:
        with self.lock:
            self.db.executemany("DELETE FROM failed WHERE path=?", [(p,) for p in paths])

    # ---- reading
    def search_moments(self, qvecs: np.ndarray, k: int) -> list[list[MomentHit]]:
        """Top-k moments per query vector, best first (ids unknown to the database are dropped)."""
        q = np.atleast_2d(np.asarray(qvecs, dtype=np.float32))
        with self.lock:
            if self.index is None:
                return [[] for _ in q]
            scores, ids = self.index.search(q, k)
            out = []
            for b in range(len(q)):
                keep = [(int(i), float(s)) for i, s in zip(ids[b].tolist(), scores[b].tolist()) if i >= 0]
                rows = self._moment_rows([i for i, _ in keep])
                out.append([MomentHit(i, *rows[i], s) for i, s in keep if i in rows])
            return out

    def _moment_rows(self, ids: list[int]) -> dict[int, tuple]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        got = self.db.execute(f'SELECT m.id, m.file_id, f.path, m.start, m."end" FROM moments m '
                              f"JOIN files f ON f.id = m.file_id WHERE m.id IN ({marks})", ids)
        return {r[0]: tuple(r[1:]) for r in got}

    def moment(self, mid: int) -> Optional[MomentHit]:
        rows = self._moment_rows([int(mid)])
        return MomentHit(int(mid), *rows[int(mid)], float("nan")) if int(mid) in rows else None

    def thumbnail(self, mid: int) -> Optional[bytes]:
        row = self.db.execute("SELECT thumb FROM moments WHERE id=?", (int(mid),)).fetchone()
        return bytes(row[0]) if row else None

    def moment_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All moment ids [N] and vectors [N, D] from the database (the brute-force reference)."""
        rows = self.db.execute("SELECT id, vector FROM moments ORDER BY id").fetchall()
        dim = int(self.meta("dim", 0))
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        return np.asarray([r[0] for r in rows], np.int64), np.stack([_vec(r[1]) for r in rows])

    def video_vectors(self) -> tuple[list[str], np.ndarray]:
        """Paths [N] and whole-video vectors [N, D], in file-id order."""
        rows = self.db.execute("SELECT path, vector FROM files ORDER BY id").fetchall()
        dim = int(self.meta("dim", 0))
        return [r[0] for r in rows], (np.stack([_vec(r[1]) for r in rows]) if rows else np.zeros((0, dim), np.float32))

    def status(self) -> dict:
        one = lambda sql: self.db.execute(sql).fetchone()[0]  # noqa: E731
        return {"store": f"{self.uri.scheme}://{self.uri.dir}" + (f"?uri={self.uri.milvus_uri}" if self.uri.milvus_uri else ""),
                "roots": self.roots(), "files": one("SELECT COUNT(*) FROM files"),
                "moments": one("SELECT COUNT(*) FROM moments"),
                "hours": round(one("SELECT COALESCE(SUM(duration), 0) FROM files") / 3600, 3),
                "failed": [{"path": p, "reason": r} for p, (_, r) in sorted(self.failed().items())],
                "indexed_vectors": self.index.count() if self.index is not None else 0,
                "settings": self.meta("settings")}

    def flush(self) -> None:
        with self.lock:
            if self.index is not None:
                self.index.flush(self.version())

    def close(self) -> None:
        with self.lock:
            if self.index is not None:
                self.index.close()
            self.db.close()


def open_store(cfg) -> LibraryStore:
    """The store named by `library.store` (no directory: <workspace>/library)."""
    return LibraryStore(parse_uri(cfg.library.store, Path(cfg.workspace).expanduser() / "library"))
