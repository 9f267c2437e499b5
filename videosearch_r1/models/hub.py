"""Resolve a checkpoint argument to a local directory: a local path as is, else a Hugging Face Hub id
through huggingface_hub's own snapshot_download (its cache layout, revisions and offline mode).

    path = resolve_checkpoint("Qwen/Qwen3-VL-Embedding-2B")                      # downloads or uses the cache
    path = resolve_checkpoint("org/name", cache_dir=mirror, local_files_only=True)  # a pre-filled HF cache only
    path = resolve_checkpoint("didemo-grpo")   # a released-checkpoint alias (data/download.py ALIASES): the
                                               # `vsr1 download checkpoint` copy if there, else its hub repo
"""
from __future__ import annotations

from pathlib import Path


class CheckpointNotFoundError(FileNotFoundError):
    """Neither a local checkpoint directory nor a hub id that could be resolved; the message names it."""


def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", "./", "../", "~")) or s.count("/") > 1 or s.endswith("/")


def _alias(name: str) -> Path | str | None:
    """A released-checkpoint alias -> its `vsr1 download checkpoint` directory under the default workspace
    when present, else its hub repo id (default org); None for anything else."""
    from videosearch_r1.config import default_workspace
    from videosearch_r1.data.download import ALIASES, DEFAULT_ORG

    if name not in ALIASES:
        return None
    repo = f"{DEFAULT_ORG}/{ALIASES[name]}"
    local = Path(default_workspace()) / "checkpoints" / repo.replace("/", "__")
    return local if local.is_dir() else repo


def resolve_checkpoint(path_or_id: str, cache_dir=None, local_files_only: bool = False,
                       revision: str | None = None) -> Path:
    """A local directory -> itself; else `snapshot_download(path_or_id, ...)` -> the snapshot directory."""
    if not path_or_id:
        raise CheckpointNotFoundError("empty checkpoint path or hub id")
    path = Path(str(path_or_id)).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointNotFoundError(f"checkpoint {path_or_id!r} is a file, not a checkpoint directory")
    if _looks_like_path(str(path_or_id)):
        raise CheckpointNotFoundError(f"local checkpoint directory not found: {path_or_id}")
    alias = _alias(str(path_or_id))
    if isinstance(alias, Path):
        return alias
    path_or_id = alias or path_or_id

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = f"cache {cache_dir}" if cache_dir else "the default Hugging Face cache"
    try:
        snap = snapshot_download(repo_id=str(path_or_id), revision=revision, cache_dir=cache_dir,
                                 local_files_only=local_files_only)
    except (LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, HFValidationError,
            OSError) as e:
        mode = " (local_files_only)" if local_files_only else ""
        rev = f" at revision {revision!r}" if revision else ""
        raise CheckpointNotFoundError(
            f"checkpoint {path_or_id!r}{rev} is not a local directory and could not be resolved from the hub "
            f"or {where}{mode}: {type(e).__name__}: {e}") from e
    return Path(snap)
