"""`vsr1 download` from a local mirror laid out like the hub: checkpoint alias + prepared dataset, then infer.

The mirror holds the tiny world's policy as VideoSearchR1/didemo-stage2 and a prepared "synth" dataset
in the authors' format (raw_annotation JSONL, npy frames + meta.jsonl, segment_embeds.npy + docid2row),
as tar shards listed by a manifest (one shard split into two parts).
"""
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import _world
from videosearch_r1 import cli
from videosearch_r1.engine.search import SearchEngine
from videosearch_r1.video.decode import decode

BUCKET = ("buckets", "VideoSearchR1", "data", "datasets", "synth")


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _authors_synth_test(w) -> tuple[dict, dict]:
    """(frames + annotation members, embedding members) of the test split in the authors' layout."""
    cfg = w.cfg()
    raw = w.workspace / "data" / "synth" / "raw"
    frames = {"raw_annotation/test.jsonl": (raw / "annotations" / "synth_fig_test.jsonl").read_bytes()}
    metas = []
    engine = SearchEngine.load(cfg.index_dir("synth") / "test")
    for vid in engine.ids:
        clip = decode(raw / "videos" / f"{vid}.mp4", cfg.video_cfg("synth"))
        small = np.stack([np.asarray(Image.fromarray(f).resize((90, 60))) for f in clip.frames])  # not 32-multiples
        frames[f"test/video_npy_with_meta/{vid}.npy"] = _npy(small)
        metas.append({"video_id": vid, "sampled_timestamps_sec": clip.timestamps.tolist(),
                      "sampled_indices_src": clip.indices.tolist(), "source_duration_sec": clip.info.duration,
                      "raw_fps": clip.info.fps, "source_total_frames": clip.info.num_frames})
    frames["test/video_npy_with_meta/meta.jsonl"] = "".join(json.dumps(m) + "\n" for m in metas).encode()
    order = list(reversed(engine.ids))  # their row order differs from ours
    emb = {"test/video_embedding_1fps/segment_embeds.npy": _npy(engine.vectors[[engine.row[v] for v in order]]),
           "test/video_embedding_1fps/docid2row.json": json.dumps({v: i for i, v in enumerate(order)}).encode()}
    return frames, emb


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    w = _world.world()
    root = tmp_path_factory.mktemp("mirror")
    ckpt = root / "VideoSearchR1" / "didemo-stage2"
    for p in sorted(w.policy_path.rglob("*")):
        if p.is_file():
            (ckpt / p.relative_to(w.policy_path)).parent.mkdir(parents=True, exist_ok=True)
            (ckpt / p.relative_to(w.policy_path)).write_bytes(p.read_bytes())
    frames, emb = _authors_synth_test(w)
    ds = root.joinpath(*BUCKET)
    (ds / "shards").mkdir(parents=True)
    a, b = _tar(frames), _tar(emb)
    (ds / "shards" / "frames.tar.part0").write_bytes(a[: len(a) // 2])
    (ds / "shards" / "frames.tar.part1").write_bytes(a[len(a) // 2:])
    (ds / "shards" / "emb.tar").write_bytes(b)
    manifest = {"shards": [{"name": "frames.tar", "parts": ["shards/frames.tar.part0", "shards/frames.tar.part1"]},
                           {"name": "emb.tar", "sha256": hashlib.sha256(b).hexdigest()}]}
    (ds / "manifest.json").write_text(json.dumps(manifest))
    return root


def _ws_args(ws):
    w = _world.world()
    return [f"workspace={ws}", f"download.engine_model={w.workspace / 'models' / 'synth-engine'}"]


def test_download_checkpoint_and_prepared_data_then_infer(mirror, tmp_path, capsys):
    w = _world.world()
    ws = tmp_path / "ws"
    assert cli.main(["download", "checkpoint", "didemo-grpo", "--mirror", str(mirror), *_ws_args(ws)]) == 0
    ckpt = ws / "checkpoints" / "VideoSearchR1__didemo-stage2"
    for p in w.policy_path.rglob("*"):
        if p.is_file():
            assert (ckpt / p.relative_to(w.policy_path)).read_bytes() == p.read_bytes()
    assert cli.main(["download", "data", "synth", "--mirror", str(mirror), *_ws_args(ws)]) == 0
    out = capsys.readouterr().out
    assert "frames {'stored': 6, 'kept': 0}" in out and "indexes {'test': 6}" in out
    assert cli.main(["download", "data", "synth", "--mirror", str(mirror), *_ws_args(ws)]) == 0
    assert "indexes {'test': 'kept'}" in capsys.readouterr().out  # same vectors, rows and factory: kept
    assert cli.main(["download", "data", "synth", "--mirror", str(mirror), *_ws_args(ws), "index.factory=HNSW32"]) == 0
    assert "indexes {'test': 6}" in capsys.readouterr().out  # another index factory: rebuilt, not reused
    assert cli.main(["download", "data", "synth", "--mirror", str(mirror), *_ws_args(ws)]) == 0
    capsys.readouterr()
    # no raw videos here: inference runs on the converted frame store and index
    assert not (ws / "data" / "synth" / "raw" / "videos").exists()
    engine_model = f"engine.model={w.workspace / 'models' / 'synth-engine'}"
    assert cli.main(["infer", "synth", "--checkpoint", str(ckpt), "--limit", "3", f"workspace={ws}", engine_model,
                     "run_name=dl", "agent.max_turns=1", "agent.max_new_tokens=8"]) == 0
    summary = json.loads((ws / "runs" / "dl" / "summary.json").read_text())
    assert summary["finished"] == 3 and summary["complete"]
    # the converted clips keep the authors' frame times and come out at our frame size rule
    from videosearch_r1.video.framestore import FrameStore

    store = FrameStore(ws / "data" / "synth" / "prepared" / "frames_authors")  # apart from our own frames/
    vid = store.ids()[0]
    orig = decode(w.workspace / "data" / "synth" / "raw" / "videos" / f"{vid}.mp4", w.cfg().video_cfg("synth"))
    got = store.get(vid)
    assert np.array_equal(got.timestamps, orig.timestamps) and got.frames.shape[1] % 32 == 0
    # the converted index and one `vsr1 index` embeds share a directory (same engine): each says it replaces the other
    assert cli.main(["index", "synth", "--split", "test", f"workspace={ws}", engine_model]) == 0
    assert "was converted from authors' prepared data; replacing it" in capsys.readouterr().err
    assert cli.main(["download", "data", "synth", "--mirror", str(mirror), *_ws_args(ws), engine_model]) == 0
    assert "replaced the index embedded from the videos" in capsys.readouterr().out


def test_checkpoint_alias_resolves_to_the_download_or_the_hub(mirror, tmp_path, monkeypatch):
    from videosearch_r1.models.hub import CheckpointNotFoundError, resolve_checkpoint

    monkeypatch.setenv("VSR1_HOME", str(tmp_path))
    assert cli.main(["download", "checkpoint", "didemo-grpo", "--mirror", str(mirror), f"workspace={tmp_path}"]) == 0
    assert resolve_checkpoint("didemo-grpo") == tmp_path / "checkpoints" / "VideoSearchR1__didemo-stage2"
    with pytest.raises(CheckpointNotFoundError, match="'VideoSearchR1/charades-stage1'"):
        resolve_checkpoint("charades-sft", cache_dir=tmp_path / "hf", local_files_only=True)


def test_rerun_resumes_and_checks_integrity(mirror, tmp_path, capsys):
    ws = tmp_path / "ws"
    args = ["--mirror", str(mirror), *_ws_args(ws)]
    assert cli.main(["download", "checkpoint", "didemo-grpo", *args]) == 0
    ckpt = ws / "checkpoints" / "VideoSearchR1__didemo-stage2"
    files = sorted(p for p in ckpt.rglob("*") if p.is_file() and not p.name.startswith("."))
    big = max(files, key=lambda p: p.stat().st_size)
    good = big.read_bytes()
    big.write_bytes(good[: len(good) // 3])  # a truncated file is fetched again ...
    part = files[0].with_name(files[0].name + ".part")
    whole = files[0].read_bytes()
    files[0].unlink()
    part.write_bytes(whole[:5])  # ... and a partial one continues from its .part
    capsys.readouterr()
    assert cli.main(["download", "checkpoint", "didemo-grpo", *args]) == 0
    assert big.read_bytes() == good and files[0].read_bytes() == whole and not part.exists()
    assert "2 files fetched" in capsys.readouterr().out

    assert cli.main(["download", "data", "synth", *args]) == 0
    assert cli.main(["download", "data", "synth", *args]) == 0  # shards marked done: nothing fetched again
    out = capsys.readouterr().out.splitlines()
    assert [ln for ln in out if "files fetched" in ln][-1].endswith(": 0 files fetched (0.0 MiB), 0 already complete")
    assert not list((ws / "data" / "synth" / "download").glob("*.tar*"))  # archives removed once extracted


def test_integrity_space_and_unknown_names(mirror, tmp_path, capsys):
    ws = tmp_path / "ws"
    args = ["--mirror", str(mirror), *_ws_args(ws)]
    assert cli.main(["download", "checkpoint", "didemo-grpo", *args, "download.min_free_gb=1e9"]) == 2
    err = capsys.readouterr().err
    assert "not enough disk space for checkpoint VideoSearchR1/didemo-stage2" in err and "GiB are free" in err
    assert cli.main(["download", "checkpoint", "nonsense", *args]) == 2
    assert "unknown checkpoint 'nonsense'" in capsys.readouterr().err
    # a shard whose sha256 differs from the manifest's is refused and named
    bad = tmp_path / "badmirror"
    import shutil

    shutil.copytree(mirror, bad)
    ds = bad.joinpath(*BUCKET)
    m = json.loads((ds / "manifest.json").read_text())
    m["shards"][1]["sha256"] = "0" * 64
    (ds / "manifest.json").write_text(json.dumps(m))
    assert cli.main(["download", "data", "synth", "--mirror", str(bad), *_ws_args(ws)]) == 2
    err = capsys.readouterr().err
    assert "datasets/synth/shards/emb.tar: integrity check failed" in err


def test_hub_source_reads_huggingface_hub_listings(tmp_path):
    """HubSource on huggingface_hub's own listing objects (only the network calls are stood in for: no
    network here): LFS sha256 is kept, folders are dropped, a bucket file lands complete at its path."""
    from huggingface_hub._buckets import BucketFile, BucketFolder
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    from videosearch_r1.data.download import HubSource, RemoteFile

    sha = "ab" * 32

    class Network:
        def list_repo_tree(self, repo, path_in_repo=None, recursive=False, repo_type=None):
            assert (repo, recursive, repo_type) == ("VideoSearchR1/didemo-stage2", True, "model")
            return [RepoFolder(path="sub", oid="t"), RepoFile(path="config.json", size=5, oid="b"),
                    RepoFile(path="model.safetensors", size=10, oid="c", lfs={"size": 10, "oid": sha, "pointerSize": 9})]

        def list_bucket_tree(self, bucket, prefix=None, recursive=None):
            assert (bucket, prefix, recursive) == ("VideoSearchR1/data", "datasets/didemo", True)
            return [BucketFolder(type="directory", path="datasets/didemo/shards"),
                    BucketFile(type="file", path="datasets/didemo/manifest.json", size=3, xetHash="h")]

        def download_bucket_files(self, bucket, files, raise_on_missing_files=False):
            for _, local in files:
                Path(local).write_bytes(b"abc")

    src = HubSource()
    src.api = Network()
    assert src.list("model", "VideoSearchR1/didemo-stage2") == [  # the git blob id is the content's etag
        RemoteFile("config.json", 5, None, "b"), RemoteFile("model.safetensors", 10, sha, "c")]
    files = src.list("bucket", "VideoSearchR1/data", "datasets/didemo")
    assert files == [RemoteFile("datasets/didemo/manifest.json", 3, etag="h")]  # the xet hash
    dest = tmp_path / "manifest.json"
    src.fetch("bucket", "VideoSearchR1/data", files[0], dest)
    assert dest.read_bytes() == b"abc" and not (tmp_path / "manifest.json.part").exists()


def test_bad_prepared_data_is_a_clear_error(mirror, tmp_path, capsys):
    """The authors' files are checked on arrival: a row map pointing past the embeddings is an error naming
    the file (exit 2), not a traceback."""
    bad = tmp_path / "mirror"
    shutil.copytree(mirror, bad)
    ds = bad.joinpath(*BUCKET)
    _, emb = _authors_synth_test(_world.world())
    emb["test/video_embedding_1fps/docid2row.json"] = json.dumps({"v-missing": 10_000}).encode()
    b = _tar(emb)
    (ds / "shards" / "emb.tar").write_bytes(b)
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest["shards"][1]["sha256"] = hashlib.sha256(b).hexdigest()
    (ds / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli.main(["download", "data", "synth", "--mirror", str(bad), *_ws_args(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert "vsr1 download:" in err and "docid2row.json" in err, err
