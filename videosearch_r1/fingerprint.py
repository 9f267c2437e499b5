"""Content fingerprints for reusable artifacts: key a cache by WHAT produced it, not by its name.

    python -m videosearch_r1.fingerprint PATH [PATH ...]     # print the fingerprint of files / checkpoint dirs

    from videosearch_r1 import fingerprint as fp
    fp.digest({"engine": w, "video": vcfg_dict})   # 16 hex chars: sha256 of canonical JSON of any plain data
    fp.file_digest(path)                           # sha256 of a file's bytes (stat-cached, see below)
    fp.dir_digest(ckpt_dir)                        # every relevant file of a checkpoint dir: names + contents
    fp.section(cfg, "engine_train", drop=("log_every",))   # a config section as plain data, fields dropped
    fp.changed(old, new)                           # sorted top-level keys whose values differ (for messages)

The rule for an artifact that is reused across runs (index shards, trained checkpoints, run dirs):
store `digest()` of its inputs next to it when writing, recompute on reuse, and on a mismatch either
rebuild saying why (`changed(...)` names the keys) or refuse naming both sides. Never reuse by name only.

- `digest(obj)`: `obj` is JSON-able data (dicts, lists, str, numbers, bool, None; tuples become lists,
  dataclasses become dicts). Keys are sorted, floats written by repr, so equal data gives equal digests
  on every machine.
- `file_digest(path)`: the full sha256 hex of the file's bytes. A file inside a Hugging Face hub cache
  (a symlink to `blobs/<sha256 or git sha1>`) is keyed by its blob name, which already is a content hash.
  Other files are hashed once and the result cached in <VSR1_HOME>/cache/file_digests.json keyed by
  (real path, size, mtime_ns, inode): an in-place rewrite changes mtime (and usually inode), so the hash
  is recomputed; `cache=False` always hashes.
- `dir_digest(path)`: 16 hex chars over (relative path, file_digest) of every regular file under `path`,
  except hidden entries and files that describe rather than define a model (IGNORED_SUFFIXES /
  IGNORED_NAMES: logs, summaries, READMEs, images). A single file is accepted as well.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

SHORT = 16  # hex chars of a short digest (64 bits: collisions are not a practical concern here)
IGNORED_SUFFIXES = (".md", ".jsonl", ".log", ".png", ".jpg")
IGNORED_NAMES = ("train_summary.json", "training_args.bin")
_CHUNK = 1 << 22


def _plain(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"fingerprint: cannot digest a {type(obj).__name__} ({obj!r:.80})")


def canonical(obj) -> str:
    """The canonical JSON text that `digest` hashes."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), allow_nan=True)


def digest(obj, length: int = SHORT) -> str:
    """sha256 of the canonical JSON of `obj`, first `length` hex chars."""
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:length]


def section(cfg, dotted: str, drop: tuple[str, ...] = ()) -> dict:
    """Config section `dotted` (e.g. "engine_train", "datasets.synth") as plain data minus `drop` fields."""
    node = cfg
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    data = _plain(node)
    return {k: v for k, v in data.items() if k not in drop} if isinstance(data, dict) else data


def changed(old: dict, new: dict) -> list[str]:
    """Sorted keys present in either dict whose values differ."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


# ----------------------------------------------------------------------------- files
def _cache_path() -> Path:
    from videosearch_r1.config import default_workspace

    return Path(default_workspace()) / "cache" / "file_digests.json"


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a missing or damaged cache only costs re-hashing


def _hub_blob_digest(path: Path) -> str | None:
    """A hub-cache file is a symlink to blobs/<content hash>: use that name (no read needed)."""
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    name = target.name
    if target.parent.name == "blobs" and len(name) in (40, 64) and all(c in "0123456789abcdef" for c in name):
        return f"blob:{name}"
    return None


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | Path, cache: bool = True) -> str:
    """Content hash of one file (see the module docstring for the hub shortcut and the stat cache)."""
    path = Path(path)
    blob = _hub_blob_digest(path)
    if blob:
        return blob
    if not cache:
        return _hash_file(path)
    st = path.stat()
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    cpath = _cache_path()
    table = _load_cache(cpath)
    if key in table:
        return table[key]
    value = _hash_file(path)
    table = {k: v for k, v in _load_cache(cpath).items() if not k.startswith(f"{os.path.realpath(path)}|")}
    table[key] = value
    try:
        from videosearch_r1.utils import atomic_write_text

        atomic_write_text(cpath, json.dumps(table, sort_keys=True))
    except OSError:
        pass  # a read-only workspace: no cache, same answer
    return value


def model_files(path: str | Path) -> list[Path]:
    """The files `dir_digest` covers, sorted by relative path."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"fingerprint: {root} is neither a file nor a directory")
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or name in IGNORED_NAMES or name.endswith(IGNORED_SUFFIXES):
                continue
            out.append(Path(dirpath) / name)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def dir_digest(path: str | Path, cache: bool = True) -> str:
    """Short digest of a checkpoint directory (or one file): relative names and contents."""
    root = Path(path)
    files = model_files(root)
    if not files:
        raise FileNotFoundError(f"fingerprint: no model files under {root}")
    base = root if root.is_dir() else root.parent
    return digest([[p.relative_to(base).as_posix(), file_digest(p, cache)] for p in files])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__)
        return 2
    for a in args:
        print(f"{dir_digest(a)}  {a}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
