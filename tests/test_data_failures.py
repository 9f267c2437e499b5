"""Bad input in data/ is a clear message naming the file (exit 2) or a counted skip, never a traceback
mid-run. Run: .venv/bin/python -m pytest -q tests/test_data_failures.py

Uses test_download's mirror (the tiny world's prepared "synth" data in the authors' layout, as tar shards).
"""
import hashlib
import json
import shutil
from pathlib import Path

import httpx
import pytest
from huggingface_hub.errors import EntryNotFoundError
from test_download import BUCKET, _authors_synth_test, _npy, _tar, _ws_args, mirror  # noqa: F401 (fixture)

import _world
from videosearch_r1 import cli
from videosearch_r1.config import load_config
from videosearch_r1.data import download
from videosearch_r1.data.build import Ctx, _step_frames, _step_splits


def _mirror_with(tmp_path, mirror, frames=None, emb=None, manifest=None) -> Path:  # noqa: F811
    """A copy of the mirror with other shard contents / manifest (the manifest's sha256 kept right)."""
    root = tmp_path / "mirror"
    shutil.copytree(mirror, root)
    ds = root.joinpath(*BUCKET)
    m = json.loads((ds / "manifest.json").read_text())
    if frames is not None:
        a = _tar(frames)
        (ds / "shards" / "frames.tar.part0").write_bytes(a[: len(a) // 2])
        (ds / "shards" / "frames.tar.part1").write_bytes(a[len(a) // 2:])
    if emb is not None:
        b = _tar(emb)
        (ds / "shards" / "emb.tar").write_bytes(b)
        m["shards"][1]["sha256"] = hashlib.sha256(b).hexdigest()
    (ds / "manifest.json").write_text(json.dumps(m if manifest is None else manifest))
    return root


def _download(root, ws, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(["download", "data", "synth", "--mirror", str(root), *_ws_args(ws)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("case", ["npy", "rows_type", "rows_json"])
def test_bad_embedding_files_are_named(mirror, tmp_path, capsys, case):  # noqa: F811
    frames, emb = _authors_synth_test(_world.world())
    d = "test/video_embedding_1fps/"
    if case == "npy":
        emb[d + "segment_embeds.npy"] = emb[d + "segment_embeds.npy"][:100]  # truncated
    elif case == "rows_type":
        rows = json.loads(emb[d + "docid2row.json"])
        emb[d + "docid2row.json"] = json.dumps({k: str(v) for k, v in rows.items()}).encode()  # "0", not 0
    else:
        emb[d + "docid2row.json"] = b"{not json"
    rc, _, err = _download(_mirror_with(tmp_path, mirror, emb=emb), tmp_path / "ws", capsys)
    name = "segment_embeds.npy" if case == "npy" else "docid2row.json"
    assert rc == 2 and "vsr1 download: " in err and name in err.split("vsr1 download: ")[1], err


def test_unreadable_npy_frames_are_counted_skips(mirror, tmp_path, capsys):  # noqa: F811
    frames, _ = _authors_synth_test(_world.world())
    npys = sorted(k for k in frames if k.endswith(".npy"))
    frames[npys[0]] = b""  # empty file: numpy raises EOFError
    frames[npys[1]] = frames[npys[1]][:200]  # truncated
    rc, out, err = _download(_mirror_with(tmp_path, mirror, frames=frames), tmp_path / "ws", capsys)
    assert rc == 0, err
    assert "frames {'stored': 4, 'kept': 0}" in out and "2 videos skipped" in out
    for k in npys[:2]:
        assert f"skipped {Path(k).stem}: " in out


def test_manifest_of_the_wrong_shape_is_named(mirror, tmp_path, capsys):  # noqa: F811
    for bad in ([1, 2], {"shards": [{"name": "emb.tar", "parts": ["shards/emb.tar"], "parts_sha256": ["x"]}]}):
        root = _mirror_with(tmp_path / str(len(str(bad))), mirror, manifest=bad)
        rc, _, err = _download(root, tmp_path / "ws", capsys)
        assert rc == 2 and "manifest.json" in err and "Traceback" not in err, err


def test_hub_errors_name_the_file(tmp_path):
    """huggingface_hub / httpx errors (not OSError) while listing or fetching are a DownloadError naming the
    remote file (the command prints it and exits 2); only the network calls are stood in for."""

    class Network:
        def list_bucket_tree(self, bucket, prefix=None, recursive=None):
            raise httpx.ConnectError("no route to host")

        def download_bucket_files(self, bucket, files, raise_on_missing_files=False):
            raise EntryNotFoundError("1 file(s) not found in bucket")

    src = download.HubSource()
    src.api = Network()
    with pytest.raises(download.DownloadError, match="cannot list hf://buckets/VideoSearchR1/data/datasets/x: "
                                                      "ConnectError"):
        src.list("bucket", "VideoSearchR1/data", "datasets/x")
    cfg = load_config(None, [f"workspace={tmp_path}"])
    rf = download.RemoteFile("datasets/x/manifest.json", 3, etag="h")
    with pytest.raises(download.DownloadError, match="data/datasets/x/manifest.json: transfer failed: "
                                                      "EntryNotFoundError.*resumes"):
        download.sync_files(src, "bucket", "VideoSearchR1/data", [rf], tmp_path / "dl", cfg, strip="datasets/x")


def test_damaged_bookkeeping_is_redone_not_a_crash(tmp_path):
    """Our own state files (the frame store's sources.json, build records) damaged: the work is checked
    again instead of a JSONDecodeError."""
    from videosearch_r1.data.records import read_state

    w = _world.world()
    ws = tmp_path / "ws"
    cfg = load_config(None, [f"workspace={ws}", f"datasets.synth.root={w.workspace / 'data' / 'synth' / 'raw'}",
                             "build.workers=1", "dataset=synth"])
    ctx = Ctx(cfg, "synth", ["test"], ws / "resolved.yaml")
    _step_splits(ctx)
    first = _step_frames(ctx)
    sources = ws / "data" / "synth" / "prepared" / "frames" / "sources.json"
    good = json.loads(sources.read_text())
    sources.write_text('{"v')  # cut short
    again = _step_frames(ctx)
    assert again["summary"] == first["summary"] and json.loads(sources.read_text()) == good
    assert read_state(sources.with_name("none.json"), "d") == "d"


def test_damaged_build_record_reruns_its_step(tmp_path, capsys):
    from test_build import _args

    ws = tmp_path / "ws"
    args = ["build", "synth", *_args(ws, "build.splits=[test]", "index.shard_size=64", "engine.batch_size=8")]
    assert cli.main(args) == 0
    rec = ws / "data" / "synth" / "prepared" / "build" / "hardneg.json"
    rec.write_text(rec.read_text()[:20])  # cut short
    capsys.readouterr()
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "index: complete, skipped" in out and "hardneg: running (not built yet)" in out, out
