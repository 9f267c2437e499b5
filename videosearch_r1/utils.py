"""Small shared helpers: config arguments for subcommands, atomic writes, progress, run dirs, devices."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from videosearch_r1.config import Config, ConfigError, load_config, save_config


# ----------------------------------------------------------------------------- CLI config args
def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Every subcommand: `--config FILE.yaml` plus trailing dotted overrides `key.path=value`."""
    parser.add_argument("--config", default=None, help="YAML config file (defaults: built-in tree)")
    parser.add_argument("overrides", nargs="*", default=[], help="dotted overrides, e.g. agent.max_turns=2")


def command_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of a `vsr1` subcommand, its module docstring as the help text."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Add `--config` + trailing overrides (after the command's own arguments) and parse; flags,
    positionals and overrides may be given in any order."""
    add_config_args(parser)
    return parser.parse_intermixed_args(argv)


def config_from_args(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    try:
        return load_config(args.config, list(extra or []) + list(args.overrides))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def make_run_dir(cfg: Config, command: str) -> Path:
    """<workspace>/runs/<run_name or command-timestamp>/ with the resolved config.yaml inside."""
    name = cfg.run_name or f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = cfg.runs_dir() / name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir)
    return run_dir


# ----------------------------------------------------------------------------- atomic writes
@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows and fsync, so a kill loses at most a partial last line (readers skip it)."""
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


class JSONLError(ValueError):
    """A line of a resumable jsonl that is not a JSON object and is not a torn last line."""


def read_jsonl_resumable(path: str | Path) -> list[dict]:
    """Rows of a jsonl being appended to (append_jsonl). Only the LAST line may be torn by a kill: when it
    has no trailing newline or does not decode, it is dropped and truncated away. Any other line that is
    not a JSON object raises JSONLError naming file and line, and the file is left untouched. Blank lines
    are not rows."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")  # the element after the final newline is b"" (or the torn tail)
    rows, good, torn = [], 0, False
    for lineno, raw in enumerate(lines, 1):
        last = lineno == len(lines) or (lineno == len(lines) - 1 and lines[-1] == b"")
        complete = lineno < len(lines)  # followed by a newline
        if not raw.strip():
            good += len(raw) + complete
            continue
        try:
            obj = json.loads(raw) if complete else None
        except ValueError as e:  # JSONDecodeError or bad UTF-8
            obj, err = None, e
        else:
            err = None if complete else "no trailing newline"
        if obj is not None and not isinstance(obj, dict):
            raise JSONLError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        if obj is None:
            if last:
                torn = True
                break
            raise JSONLError(f"{path}:{lineno}: unreadable line ({err}); only a torn last line is dropped "
                             f"automatically: repair or remove this line")
        rows.append(obj)
        good += len(raw) + 1
    if torn or good != len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


# ----------------------------------------------------------------------------- progress / device
def progress(iterable=None, total: int | None = None, desc: str = "", unit: str = "it"):
    """A tqdm progress bar on stderr (quiet when not a terminal except for periodic lines)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 10.0)


def decode_workers(cap: int = 16) -> int:
    """Threads for decoding a corpus's videos: the CPU cores this process may use, at least 2, at most `cap`.
    PyAV decodes and scales outside the GIL. Measured on the H200 host (16 cores), indexing 3,600 small videos:
    122 s with 2 threads, 135 s with 16 (LOG.md, session 9): that index is not bound by decode threads, so this
    is a ceiling for larger clips, not a measured speed-up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 2
    return max(2, min(cap, cores))


def resolve_device(name: str = "auto") -> str:
    import torch

    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
            "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}[name]
