"""`vsr1 download`: released checkpoints by alias and the authors' prepared datasets, through huggingface_hub.

    vsr1 download checkpoint didemo-grpo                 # -> <workspace>/checkpoints/VideoSearchR1__didemo-stage2
    vsr1 download data charades                          # -> raw annotations, frame store, index (converted)
    vsr1 download data all --mirror /mnt/hub-mirror      # offline: a directory laid out like the hub

Checkpoint aliases (one table, ALIASES below; repos under download.hub_org, default VideoSearchR1):
  <dataset>-sft  -> <org>/<dataset>-stage1   (Stage 1: SFT + InfoNCE)
  <dataset>-grpo -> <org>/<dataset>-stage2   (Stage 2: GRPO)      for dataset in charades, didemo, activitynet
The authors' own names (`didemo-stage2`, ...) and any `org/name` repo id work too. The released
checkpoints are in the authors' layout: load them with `agent.reference_layout=true` (agent/reference_ckpt.py).

Prepared datasets (`charades`, `didemo`, `activitynet`, `all`) come from the storage bucket
download.bucket (hf://buckets/VideoSearchR1/data) under datasets/<key> (charades' key is `charades-sta`):
a manifest.json listing tar shards (`shards/<name>`, or `parts` joined in order), extracted into
<workspace>/data/<name>/authors/, then CONVERTED into our layout (convert.py):
  raw_annotation/<split>.jsonl                 -> <root>/annotations/<our split file> (validated FIG)
  <split>/video_npy_with_meta/<id>.npy + meta  -> <workspace>/data/<name>/prepared/frames (JPEG frame store)
  <split>/video_embedding_1fps/*.npy + docid2row -> index_dir(engine.model=download.engine_model)/<split>
  train/hard_negatives.json                    -> that index's train/hard_negatives.json
sft_data/ and grpo_data/ stay as downloaded under authors/ (our rows come from `vsr1 build sft|grpo`).

Sources: the network (HfApi list + hf_hub_download for repos, list_bucket_tree + download_bucket_files
for buckets) or `--mirror DIR` (download.mirror), a directory laid out like the hub:
  DIR/<org>/<repo>/<file>             model repos        DIR/datasets/<org>/<repo>/<file>   dataset repos
  DIR/buckets/<ns>/<bucket>/<path>    buckets            DIR/github/<owner>/<repo>/<path>   GitHub raw files
Every transfer resumes: a file already present with the listed size (and sha256, where the source
gives one) is kept; a partial file continues from its `.part`; a shard extracted once is marked done.
What is kept is keyed by content, not name: each target's .vsr1_files.json and each shard's
<name>.done marker record the remote identity (size, sha256, and the source's etag: bucket xet hash,
git blob id, or a mirror file's size-mtime), so a remote file that changed is fetched (and extracted,
converted) again. Progress is in bytes: per chunk for the mirror and GitHub files; buckets and repos
show huggingface_hub's own byte bars, and ours moves per file.
Before transferring, the free space of the target disk must cover what is left plus download.min_free_gb,
or the command stops with a message saying how much is needed and where.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from videosearch_r1.config import Config

DATASETS = ("charades", "didemo", "activitynet")
DEFAULT_ORG = "VideoSearchR1"  # download.hub_org's default (models/hub.py resolves aliases with it)
ALIASES: dict[str, str] = {f"{d}-{stage}": f"{d}-{repo}" for d in DATASETS
                           for stage, repo in (("sft", "stage1"), ("grpo", "stage2"))}
ALIASES.update({f"{d}-{s}": f"{d}-{s}" for d in DATASETS for s in ("stage1", "stage2")})
BUCKET_KEYS = {"charades": "charades-sta"}  # other datasets: the key is the name
KINDS = ("model", "dataset", "bucket", "github")
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that cannot go on: missing remote file, failed integrity check, no space; names the file."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the repo / bucket root
    size: int | None  # bytes, when the source lists it
    sha256: str | None = None  # hex, when the source gives one (LFS files on the hub)
    etag: str | None = None  # the source's content id: bucket xet hash, git blob id, mirror size-mtime

    def identity(self) -> dict:
        """What says this remote file's content: a local copy recorded under another identity is stale."""
        return {"size": self.size, "sha256": self.sha256, "etag": self.etag}


@dataclass
class SyncSummary:
    target: str
    fetched: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    bytes_fetched: int = 0

    def format(self) -> str:
        return (f"{self.target}: {len(self.fetched)} files fetched ({self.bytes_fetched / 2**20:.1f} MiB), "
                f"{len(self.kept)} already complete")


# ----------------------------------------------------------------------------- sources
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class MirrorSource:
    """A local directory laid out like the hub (module doc)."""

    def __init__(self, root):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DownloadError(f"mirror directory not found: {self.root}")

    def where(self, kind: str, repo: str) -> Path:
        sub = {"model": (), "dataset": ("datasets",), "bucket": ("buckets",), "github": ("github",)}[kind]
        return self.root.joinpath(*sub, *repo.split("/"))

    def describe(self, kind: str, repo: str) -> str:
        return str(self.where(kind, repo))

    def list(self, kind: str, repo: str, prefix: str = "") -> list[RemoteFile]:
        base = self.where(kind, repo)
        top = base / prefix if prefix else base
        if not top.exists():
            raise DownloadError(f"{kind} {repo!r}: {top} not found in the mirror {self.root}")
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        out = []
        for p in files:
            if not p.name.startswith("."):
                st = p.stat()  # a file rewritten in the mirror has a new mtime: its etag changes
                out.append(RemoteFile(p.relative_to(base).as_posix(), st.st_size,
                                      etag=f"{st.st_size}-{st.st_mtime_ns}"))
        return out

    def fetch(self, kind: str, repo: str, rf: RemoteFile, dest: Path, on_bytes=None) -> None:
        """Copy into dest's .part (resuming after the bytes already there), then rename; on_bytes(n) per chunk."""
        src = self.where(kind, repo) / rf.path
        if not src.is_file():
            raise DownloadError(f"{kind} {repo!r}: {rf.path} not found in the mirror ({src})")
        part = dest.with_name(dest.name + ".part")
        done = part.stat().st_size if part.exists() else 0
        if done > src.stat().st_size:
            part.unlink()
            done = 0
        if on_bytes and done:
            on_bytes(done)
        with open(src, "rb") as fi, open(part, "ab") as fo:
            fi.seek(done)
            for chunk in iter(lambda: fi.read(CHUNK), b""):
                fo.write(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
        part.replace(dest)


class HubSource:
    """The Hugging Face Hub through huggingface_hub (and GitHub raw files through its HTTP session)."""

    def __init__(self, revision: str = "main"):
        from huggingface_hub import HfApi

        self.api = HfApi()
        self.revision = revision

    def describe(self, kind: str, repo: str) -> str:
        return {"model": f"hf://{repo}", "dataset": f"hf://datasets/{repo}", "bucket": f"hf://buckets/{repo}",
                "github": f"https://github.com/{repo}"}[kind]

    def list(self, kind: str, repo: str, prefix: str = "") -> list[RemoteFile]:
        try:
            return self._list(kind, repo, prefix)
        except DownloadError:
            raise
        except Exception as e:  # no network, no such repo / bucket, no access: one line naming what was listed
            raise DownloadError(f"cannot list {self.describe(kind, repo)}{'/' + prefix if prefix else ''}: "
                                f"{type(e).__name__}: {e}") from e

    def _list(self, kind: str, repo: str, prefix: str = "") -> list[RemoteFile]:
        if kind == "bucket":
            items = self.api.list_bucket_tree(repo, prefix=prefix or None, recursive=True)
            return [RemoteFile(i.path, int(i.size), etag=getattr(i, "xet_hash", None))
                    for i in items if getattr(i, "type", "") == "file"]
        if kind in ("model", "dataset"):
            items = self.api.list_repo_tree(repo, path_in_repo=prefix or None, recursive=True, repo_type=kind)
            return [RemoteFile(i.path, int(i.size), i.lfs.sha256 if getattr(i, "lfs", None) else None,
                               getattr(i, "blob_id", None)) for i in items if hasattr(i, "size")]
        raise DownloadError(f"a {kind} source cannot be listed; name the files")

    def fetch(self, kind: str, repo: str, rf: RemoteFile, dest: Path, on_bytes=None) -> None:
        """Buckets and repos show huggingface_hub's own byte bars (xet / hf_hub_download); GitHub files
        report on_bytes(n) per chunk."""
        part = dest.with_name(dest.name + ".part")
        if kind == "bucket":
            self.api.download_bucket_files(repo, [(rf.path, str(part))], raise_on_missing_files=True)
        elif kind in ("model", "dataset"):
            from huggingface_hub import hf_hub_download

            root = dest
            for _ in Path(rf.path).parts:
                root = root.parent
            # writes <root>/<rf.path>; resumes its own partial files under <root>/.cache/huggingface
            hf_hub_download(repo, rf.path, repo_type=kind, local_dir=root,
                            revision=self.revision if kind == "dataset" else None)
            return
        else:
            self._fetch_url(f"https://raw.githubusercontent.com/{repo}/{self.revision}/{rf.path}", part, rf, on_bytes)
        part.replace(dest)

    @staticmethod
    def _fetch_url(url: str, part: Path, rf: RemoteFile, on_bytes=None) -> None:
        from huggingface_hub.utils import get_session

        done = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={done}-"} if done else {}
        with get_session().stream("GET", url, headers=headers, follow_redirects=True) as r:
            if r.status_code == 404:
                raise DownloadError(f"{url}: not found (404); {rf.path} is not published there")
            r.raise_for_status()
            mode = "ab" if done and r.status_code == 206 else "wb"
            if on_bytes and mode == "ab":
                on_bytes(done)
            with open(part, mode) as f:
                for chunk in r.iter_bytes(CHUNK):
                    f.write(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))


def make_source(cfg: Config):
    return MirrorSource(cfg.download.mirror) if cfg.download.mirror else HubSource(cfg.download.annotations_revision)


# ----------------------------------------------------------------------------- transfers
RECORD = ".vsr1_files.json"  # in each download target: {"files": {rel: identity}, "partial": {rel: identity}}


def is_complete(path: Path, rf: RemoteFile, verify: str, recorded: dict | None = None) -> bool:
    """Present, of the listed size (and sha256), and, where a record exists, fetched from the same remote
    content (size, sha256 and the source's etag: a changed remote file of any size is fetched again)."""
    if recorded is not None and recorded != rf.identity():
        return False
    if not path.is_file() or (rf.size is not None and path.stat().st_size != rf.size):
        return False
    return not (verify == "sha256" and rf.sha256) or sha256_file(path) == rf.sha256


def _load_record(local_root: Path) -> dict:
    from videosearch_r1.data.records import read_state

    rec = read_state(local_root / RECORD, None)  # missing or damaged: files are checked by size / sha256
    rec = rec if isinstance(rec, dict) else {}
    return {k: dict(rec[k]) if isinstance(rec.get(k), dict) else {} for k in ("files", "partial")}


def check_space(target: Path, need: int, min_free_gb: float, what: str) -> None:
    """Stop with a clear message when `need` bytes plus the headroom do not fit on target's disk."""
    probe = target
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    headroom = int(min_free_gb * 2**30)
    if need + headroom > free:
        raise DownloadError(
            f"not enough disk space for {what}: {need / 2**30:.2f} GiB still to write into {target} plus "
            f"download.min_free_gb={min_free_gb:g} GiB headroom, but only {free / 2**30:.2f} GiB are free on "
            f"that disk; free some space or point the workspace (VSR1_HOME / workspace=...) at a larger disk")


def _byte_bar(total: int, desc: str):
    """The transfer's bar, in bytes (moved per chunk; for hub transfers per file, beside huggingface_hub's own)."""
    from videosearch_r1.utils import progress

    return progress(total=total, desc=desc, unit="B")


def sync_files(source, kind: str, repo: str, files: list[RemoteFile], local_root: Path, cfg: Config,
               strip: str = "", what: str = "", reserve: int = 0) -> SyncSummary:
    """Bring every file to local_root/<path minus `strip`>: keep complete ones, fetch the rest, verify.
    local_root/.vsr1_files.json records each file's remote identity (RemoteFile.identity): a remote
    file that changed since is fetched again, and a .part left by an older version is dropped.
    The disk check counts what is left to fetch plus `reserve` bytes (e.g. room to extract archives)."""
    from videosearch_r1.utils import atomic_write_json

    verify = cfg.download.verify
    summary = SyncSummary(str(local_root))
    record = _load_record(local_root)
    todo = []
    for rf in files:
        rel = rf.path[len(strip):].lstrip("/") if strip and rf.path.startswith(strip) else rf.path
        dest = local_root / rel
        if is_complete(dest, rf, verify, record["files"].get(rel)):
            summary.kept.append(rel)
            record["files"][rel] = rf.identity()  # adopts a file fetched before records existed
            continue
        part = dest.with_name(dest.name + ".part")
        if part.exists() and record["partial"].get(rel, rf.identity()) != rf.identity():
            part.unlink()  # the bytes of another version of the file: start over
        record["files"].pop(rel, None)
        record["partial"][rel] = rf.identity()
        todo.append((rf, dest, rel))
    need = sum((rf.size or 0) - _part_size(dest) for rf, dest, _ in todo)
    check_space(local_root, max(0, need) + reserve, cfg.download.min_free_gb, what or f"{kind} {repo}")
    if todo or files:
        atomic_write_json(local_root / RECORD, record)
    bar = _byte_bar(sum(rf.size or 0 for rf, _, _ in todo), f"download {Path(repo).name}")
    lock = threading.Lock()

    def one(job) -> None:
        rf, dest, rel = job
        dest.parent.mkdir(parents=True, exist_ok=True)
        moved = [0]

        def on_bytes(n: int) -> None:
            with lock:
                moved[0] += n
                bar.update(n)

        try:
            source.fetch(kind, repo, rf, dest, on_bytes=on_bytes)
        except DownloadError:
            raise
        except Exception as e:  # network / hub errors (httpx, EntryNotFoundError, ...): name the file
            raise DownloadError(f"{source.describe(kind, repo)}/{rf.path}: transfer failed: {type(e).__name__}: "
                                f"{e} (run the command again: it resumes)") from e
        if not is_complete(dest, rf, verify):
            got = dest.stat().st_size
            bad = dest.with_name(dest.name + ".bad")
            dest.replace(bad)
            raise DownloadError(f"{source.describe(kind, repo)}/{rf.path}: integrity check failed (size {got}, "
                                f"expected {rf.size}{', sha256 ' + rf.sha256 if rf.sha256 else ''}); kept as {bad}")
        with lock:
            bar.update(max(0, (rf.size or 0) - moved[0]))  # sources that report no bytes: the whole file now
            record["files"][rel] = record["partial"].pop(rel, rf.identity())
            atomic_write_json(local_root / RECORD, record)

    with ThreadPoolExecutor(max(1, cfg.download.workers)) as pool:
        list(pool.map(one, todo))
    bar.close()
    summary.fetched = [rel for _, _, rel in todo]
    summary.bytes_fetched = sum(rf.size or 0 for rf, _, _ in todo)
    return summary


def _part_size(dest: Path) -> int:
    part = dest.with_name(dest.name + ".part")
    return part.stat().st_size if part.exists() else 0


# ----------------------------------------------------------------------------- checkpoints
def resolve_alias(cfg: Config, name: str) -> str:
    """An alias (`didemo-grpo`, `didemo-stage2`) -> `<hub_org>/<repo>`; an `org/name` id as is."""
    if name in ALIASES:
        return f"{cfg.download.hub_org}/{ALIASES[name]}"
    if name.count("/") == 1 and all(name.split("/")):
        return name
    raise DownloadError(f"unknown checkpoint {name!r}: use an alias ({', '.join(sorted(ALIASES))}) or an org/name "
                        f"repo id")


def checkpoints_dir(cfg: Config) -> Path:
    return Path(cfg.download.checkpoints_dir or Path(cfg.workspace) / "checkpoints").expanduser()


def download_checkpoint(cfg: Config, name: str, source=None) -> Path:
    """Every file of the alias' model repo into <checkpoints_dir>/<org>__<repo>; returns that directory."""
    source = source or make_source(cfg)
    repo = resolve_alias(cfg, name)
    files = source.list("model", repo)
    if not files:
        raise DownloadError(f"{source.describe('model', repo)}: the repo lists no files")
    dest = checkpoints_dir(cfg) / repo.replace("/", "__")
    summary = sync_files(source, "model", repo, files, dest, cfg, what=f"checkpoint {repo}")
    from videosearch_r1.utils import atomic_write_json

    atomic_write_json(dest / ".vsr1_download.json", {"repo": repo, "source": source.describe("model", repo),
                                                      "files": [vars(f) for f in files]})
    print(summary.format(), flush=True)
    return dest


# ----------------------------------------------------------------------------- prepared datasets
def bucket_location(cfg: Config, name: str) -> tuple[str, str]:
    """(bucket id, prefix of the dataset inside it) from download.bucket."""
    uri = cfg.download.bucket.rstrip("/")
    if not uri.startswith("hf://buckets/"):
        raise DownloadError(f"download.bucket must look like hf://buckets/<namespace>/<name>[/path], got {uri!r}")
    parts = uri[len("hf://buckets/"):].split("/")
    if len(parts) < 2:
        raise DownloadError(f"download.bucket {uri!r} names no bucket")
    return "/".join(parts[:2]), "/".join([*parts[2:], "datasets", BUCKET_KEYS.get(name, name)])


def _shard_files(manifest: dict, where: str) -> list[tuple[str, list[str], dict]]:
    """[(shard name, [paths relative to the dataset prefix, in join order], shard entry)]."""
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise DownloadError(f"{where}: manifest lists no shards")
    out = []
    for i, s in enumerate(shards):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not s["name"]:
            raise DownloadError(f"{where}: shards[{i}]: expected an object with a 'name'")
        parts = s.get("parts") or [f"shards/{s['name']}"]
        if not all(isinstance(p, str) and p and ".." not in p.split("/") for p in parts):
            raise DownloadError(f"{where}: shards[{i}] ({s['name']}): bad 'parts' {parts!r}")
        out.append((s["name"], list(parts), s))
    return out


def shard_key(parts: list[RemoteFile]) -> list:
    """A shard's content key: every part's path and remote identity (size, sha256, etag), in join order."""
    return [[rf.path, rf.identity()] for rf in parts]


def marker_state(marker: Path, key: list) -> str:
    """'done' (extracted from exactly this content), 'stale' (from other content: fetch and extract again),
    'legacy' (an older marker with no key), or 'missing'."""
    if not marker.is_file():
        return "missing"
    try:
        got = json.loads(marker.read_text())
    except ValueError:
        return "legacy" if marker.read_text().strip() == "done" else "stale"
    return "done" if isinstance(got, dict) and got.get("key") == key else "stale"


def download_dataset(cfg: Config, name: str, source=None) -> dict:
    """Fetch, extract and convert one prepared dataset; returns the conversion summary."""
    from videosearch_r1.data.convert import convert_prepared, extract_shards

    source = source or make_source(cfg)
    cfg.dataset_cfg(name)  # ConfigError on an unknown dataset
    bucket, prefix = bucket_location(cfg, name)
    ddir = Path(cfg.workspace).expanduser() / "data" / name
    cache, staging = ddir / "download", ddir / "authors"
    listing = {f.path: f for f in source.list("bucket", bucket, prefix)}
    mkey = f"{prefix}/manifest.json"
    if mkey not in listing:
        raise DownloadError(f"{source.describe('bucket', bucket)}/{mkey}: no manifest for dataset {name!r}")
    sync_files(source, "bucket", bucket, [listing[mkey]], cache, cfg, strip=prefix, what=f"{name} manifest")
    where = str(cache / "manifest.json")
    try:
        manifest = json.loads((cache / "manifest.json").read_text())
    except ValueError as e:
        raise DownloadError(f"{where}: not JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise DownloadError(f"{where}: expected a JSON object with 'shards', got {type(manifest).__name__}")
    shards = _shard_files(manifest, where)
    done_dir = staging / ".vsr1_shards"
    wanted, todo = [], []
    for sname, parts, entry in shards:
        rfs = []
        for p in parts:
            rf = listing.get(f"{prefix}/{p}")
            if rf is None:
                raise DownloadError(f"{source.describe('bucket', bucket)}/{prefix}/{p}: listed by the manifest "
                                    f"(shard {sname}) but not in the bucket")
            psha = entry.get("parts_sha256") or {}
            if not isinstance(psha, dict):
                raise DownloadError(f"{where}: shard {sname}: 'parts_sha256' must map part paths to sha256")
            sha = entry.get("sha256") if len(parts) == 1 else psha.get(p)
            rfs.append(RemoteFile(rf.path, rf.size, sha if isinstance(sha, str) else None, rf.etag))
        key = shard_key(rfs)
        state = marker_state(done_dir / f"{sname}.done", key)
        if state == "legacy":
            print(f"{sname}: extracted by an older vsr1 whose marker records no content key; kept (delete "
                  f"{done_dir / (sname + '.done')} to fetch it again)", flush=True)
        if state in ("done", "legacy"):
            continue
        wanted += rfs
        todo.append((sname, [cache / p for p in parts], key))
    # the shards are extracted next to their archives: room for both
    s = sync_files(source, "bucket", bucket, wanted, cache, cfg, strip=prefix, what=f"prepared {name}",
                   reserve=sum(f.size or 0 for f in wanted))
    print(s.format(), flush=True)
    extract_shards(todo, staging, done_dir, keep=cfg.download.keep_archives)
    return convert_prepared(cfg, name, staging)


# ----------------------------------------------------------------------------- the command
def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.config import ConfigError
    from videosearch_r1.data.convert import ConvertError
    from videosearch_r1.utils import command_parser, config_from_args, parse_command
    from videosearch_r1.video.decode import VideoError

    parser = command_parser("vsr1 download", __doc__)
    parser.add_argument("what", choices=("checkpoint", "data"), help="a checkpoint alias or a prepared dataset")
    parser.add_argument("name", help="checkpoint alias / repo id, or dataset (charades, didemo, activitynet, all)")
    parser.add_argument("--mirror", default=None, help="a local directory laid out like the hub (download.mirror)")
    args = parse_command(parser, argv)
    cfg = config_from_args(args, [f"download.mirror={args.mirror}"] if args.mirror else [])
    try:
        if args.what == "checkpoint":
            path = download_checkpoint(cfg, args.name)
            print(f"checkpoint {args.name}: {path}\n  run: vsr1 infer DATASET --checkpoint {path}"
                  + (" agent.reference_layout=true" if args.name in ALIASES else ""))
            return 0
        names = list(DATASETS) if args.name == "all" else [args.name]
        for n in names:
            summary = download_dataset(cfg, n)
            print(summary["text"], flush=True)
        return 0
    except (DownloadError, ConvertError, VideoError, ConfigError, OSError, ValueError) as e:  # ValueError:
        print(f"vsr1 download: {e}", file=sys.stderr)  # FIG rows, JSON of the authors' files
        return 2


if __name__ == "__main__":
    sys.exit(main())
