"""`vsr1 download` hardening (issue 16's review): converted frames apart from ours, content-keyed markers,
byte progress. Run: .venv/bin/python -m pytest -q tests/test_download_keys.py

Uses test_download's mirror (the tiny world's prepared "synth" data in the authors' layout, as tar shards).
"""
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
from test_download import BUCKET, _authors_synth_test, _npy, _tar, _ws_args, mirror  # noqa: F401 (fixture)

import _world
from videosearch_r1 import cli
from videosearch_r1.config import load_config
from videosearch_r1.data import download
from videosearch_r1.data.build import Ctx, _step_frames, _step_splits
from videosearch_r1.video.decode import load_clip
from videosearch_r1.video.framestore import FrameStore


def _ws_cfg(ws, *extra):
    w = _world.world()
    raw = w.workspace / "data" / "synth" / "raw"  # read only: the world's raw videos and FIG files
    over = [*_ws_args(ws), f"datasets.synth.root={raw}", "build.workers=1", *extra]
    return over, load_config(None, [*over, "dataset=synth"])


def _build_frames(cfg, ws):
    ctx = Ctx(cfg, "synth", ["test"], ws / "resolved.yaml")
    _step_splits(ctx)
    return _step_frames(ctx)


def test_converted_frames_live_apart_from_ours(mirror, tmp_path, capsys):  # noqa: F811
    """The authors' converted frames go to prepared/frames_authors: `vsr1 build` decodes its own into
    prepared/frames (never taking theirs for ours), and the front door prefers ours once built."""
    ws = tmp_path / "ws"
    over, cfg = _ws_cfg(ws)
    assert cli.main(["download", "data", "synth", "--mirror", str(mirror), *over]) == 0
    prepared = ws / "data" / "synth" / "prepared"
    authors = FrameStore(prepared / "frames_authors")
    vids = authors.ids()
    assert len(vids) == 6 and not FrameStore.exists(prepared / "frames")
    assert not load_clip(cfg, "synth", vids[0]).info.path.endswith(".mp4")  # the converted clip, before a build
    res = _build_frames(cfg, ws)
    assert res["summary"]["stored"] == 6
    ours = FrameStore(prepared / "frames")
    assert ours.ids() == vids and all(ours.get(v).info.path.endswith(f"{v}.mp4") for v in vids)
    assert not (prepared / "frames" / "converted_from.json").exists()
    assert load_clip(cfg, "synth", vids[0]).info.path.endswith(".mp4")  # ours first
    assert FrameStore(prepared / "frames_authors").ids() == vids  # theirs untouched

    # a workspace from before the split (their frames in prepared/frames) is moved aside, then built
    shutil.rmtree(prepared / "frames")
    (prepared / "frames_authors").replace(prepared / "frames")
    capsys.readouterr()
    res = _build_frames(cfg, ws)
    assert "moved the authors' converted frames" in capsys.readouterr().out
    assert res["summary"]["stored"] == 6 and (prepared / "frames_authors" / "converted_from.json").is_file()
    assert all(FrameStore(prepared / "frames").get(v).info.path.endswith(".mp4") for v in vids)


def _republish(root, frames: dict, emb: dict) -> None:
    """Write new shard contents (same sizes) and a manifest (same size) into a mirror copy."""
    ds = root.joinpath(*BUCKET)
    a, b = _tar(frames), _tar(emb)
    (ds / "shards" / "frames.tar.part0").write_bytes(a[: len(a) // 2])
    (ds / "shards" / "frames.tar.part1").write_bytes(a[len(a) // 2:])
    (ds / "shards" / "emb.tar").write_bytes(b)
    m = json.loads((ds / "manifest.json").read_text())
    m["shards"][1]["sha256"] = hashlib.sha256(b).hexdigest()
    (ds / "manifest.json").write_text(json.dumps(m))


def _downloaded(mirror, tmp_path):
    """A mirror copy (to republish into), a workspace, and the download args, run once: (src, ws, args)."""
    src = tmp_path / "mirror"
    shutil.copytree(mirror, src)
    ws = tmp_path / "ws"
    over, _ = _ws_cfg(ws, "download.keep_archives=true")
    args = ["download", "data", "synth", "--mirror", str(src), *over]
    assert cli.main(args) == 0
    return src, ws, args


def test_changed_remote_shards_are_fetched_and_converted_again(mirror, tmp_path, capsys):  # noqa: F811
    """A shard marked done is fetched again when its remote content changes, even at the same size and
    name (and the manifest too); its changed clip is converted again and its old-only files removed."""
    src, ws, args = _downloaded(mirror, tmp_path)
    prepared, staging = ws / "data" / "synth" / "prepared", ws / "data" / "synth" / "authors"
    vid = FrameStore(prepared / "frames_authors").ids()[0]
    before = FrameStore(prepared / "frames_authors").get(vid).frames.astype(int)

    frames, emb = _authors_synth_test(_world.world())
    npy_name = f"test/video_npy_with_meta/{vid}.npy"
    arr = np.load(io.BytesIO(frames[npy_name]))
    frames[npy_name] = _npy(255 - arr)  # same size, other pixels
    rows_name = "test/video_embedding_1fps/docid2row.json"
    rows = json.loads(emb[rows_name])
    ids = list(rows)
    rows[ids[0]], rows[ids[1]] = rows[ids[1]], rows[ids[0]]  # same length, other row order
    vecs = np.load(io.BytesIO(emb["test/video_embedding_1fps/segment_embeds.npy"]))
    vecs[[rows[ids[0]], rows[ids[1]]]] = vecs[[rows[ids[1]], rows[ids[0]]]]  # the same index in the end
    emb[rows_name] = json.dumps(rows).encode()
    emb["test/video_embedding_1fps/segment_embeds.npy"] = _npy(vecs)
    old_shards = {p.name: p.stat().st_size for p in src.joinpath(*BUCKET, "shards").iterdir()}
    old_manifest = src.joinpath(*BUCKET, "manifest.json").stat().st_size
    _republish(src, frames, emb)
    assert {p.name: p.stat().st_size for p in src.joinpath(*BUCKET, "shards").iterdir()} == old_shards
    assert src.joinpath(*BUCKET, "manifest.json").stat().st_size == old_manifest
    (staging / "test" / "stale.txt").write_text("x")  # a file only the old emb shard had
    marker = staging / ".vsr1_shards" / "emb.tar.done"
    m = json.loads(marker.read_text())
    marker.write_text(json.dumps({**m, "members": [*m["members"], "test/stale.txt"]}))
    capsys.readouterr()

    assert cli.main(args) == 0
    out = capsys.readouterr().out
    # every shard part, all the same sizes (and the manifest, same size too: else emb.tar's new sha would fail)
    assert "3 files fetched" in out, out
    assert json.loads((staging / rows_name).read_text()) == rows
    assert not (staging / "test" / "stale.txt").exists()
    assert "frames {'stored': 1, 'kept': 5}" in out and "indexes {'test': 6}" in out
    after = FrameStore(prepared / "frames_authors").get(vid).frames.astype(int)
    assert np.abs(after - (255 - before)).mean() < 8  # the new (inverted) clip, up to JPEG loss
    assert cli.main(args) == 0  # unchanged now: nothing fetched, extracted or converted
    out = capsys.readouterr().out
    assert "0 files fetched" in out and "frames {'stored': 0, 'kept': 6}" in out


def test_old_markers_and_parts_of_other_versions(mirror, tmp_path, capsys):  # noqa: F811
    """A marker from before content keys ("done") is kept and said so; a .part of another version of a
    file is dropped, not continued (continuing would splice two versions)."""
    ws = tmp_path / "ws"
    over, _ = _ws_cfg(ws)
    args = ["download", "data", "synth", "--mirror", str(mirror), *over]
    assert cli.main(args) == 0
    marker = ws / "data" / "synth" / "authors" / ".vsr1_shards" / "emb.tar.done"
    marker.write_text("done\n")
    capsys.readouterr()
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "emb.tar: extracted by an older vsr1" in out and str(marker) in out

    cfg = load_config(None, [f"workspace={tmp_path / 'ws2'}"])
    src = download.MirrorSource(mirror)
    rf = [f for f in src.list("model", "VideoSearchR1/didemo-stage2") if f.path == "config.json"][0]
    dest = tmp_path / "t"
    part = dest / "config.json.part"
    part.parent.mkdir()
    part.write_bytes(b"XXXX")  # bytes of some other version
    dest.joinpath(download.RECORD).write_text(json.dumps(
        {"files": {}, "partial": {"config.json": {**rf.identity(), "etag": "old"}}}))
    download.sync_files(src, "model", "VideoSearchR1/didemo-stage2", [rf], dest, cfg)
    want = (mirror / "VideoSearchR1" / "didemo-stage2" / "config.json").read_bytes()
    assert (dest / "config.json").read_bytes() == want


def test_progress_moves_in_bytes_within_a_file(tmp_path, monkeypatch):
    """A large file's transfer moves the bar chunk by chunk (resumed bytes first), not once at the end."""
    from tqdm import tqdm

    root = tmp_path / "mirror"
    f = root / "org" / "big" / "shard.bin"
    f.parent.mkdir(parents=True)
    data = np.random.default_rng(0).integers(0, 256, 3 * download.CHUNK + 123, dtype=np.uint8).tobytes()
    f.write_bytes(data)
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "shard.bin.part").write_bytes(data[:1000])  # a resumed transfer
    seen = []

    class Bar(tqdm):
        def update(self, n=1):
            seen.append(n)
            return super().update(n)

    monkeypatch.setattr(download, "_byte_bar", lambda total, desc: Bar(total=total, file=io.StringIO()))
    cfg = load_config(None, [f"workspace={tmp_path}"])
    src = download.MirrorSource(root)
    s = download.sync_files(src, "model", "org/big", src.list("model", "org/big"), dest, cfg)
    assert s.fetched == ["shard.bin"] and (dest / "shard.bin").read_bytes() == data
    assert seen[0] == 1000 and len([n for n in seen if n > 0]) >= 4 and sum(seen) == len(data)


def test_a_changed_clip_that_fails_to_convert_is_not_served_from_its_old_version(mirror, tmp_path, capsys):  # noqa: F811
    """A re-published npy that cannot be converted is a counted skip, and the clip of its previous version
    leaves the store: the summary and the frames agree (before: the old frames kept being served)."""
    src, ws, args = _downloaded(mirror, tmp_path)
    store_dir = ws / "data" / "synth" / "prepared" / "frames_authors"
    vid = FrameStore(store_dir).ids()[0]
    frames, emb = _authors_synth_test(_world.world())
    npy_name = f"test/video_npy_with_meta/{vid}.npy"
    arr = np.load(io.BytesIO(frames[npy_name]))
    bad = _npy(arr.reshape(arr.shape[0], arr.shape[1], -1, 1))  # same bytes, not [T, H, W, 3] frames
    assert len(bad) == len(frames[npy_name])
    frames[npy_name] = bad
    _republish(src, frames, emb)
    capsys.readouterr()
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert vid in out and "skipped" in out, out
    assert vid not in FrameStore(store_dir)


def test_a_file_moved_to_another_shard_survives_the_old_shards_re_extraction(tmp_path):
    """A new release moves x.npy from shard A to shard B and lists B first: B writes x, then A (extracted
    again, x no longer among its members) must not delete it; a file no shard lists any more is removed."""
    import tarfile

    from videosearch_r1.data.convert import extract_shards

    def shard(name: str, files: dict) -> Path:
        path = tmp_path / "parts" / name
        path.parent.mkdir(exist_ok=True)
        with tarfile.open(path, "w") as tar:
            for member, data in files.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    staging, done = tmp_path / "staging", tmp_path / "staging" / ".done"
    extract_shards([("A", [shard("A1", {"x.npy": b"x1", "old.npy": b"o"})], ["a1"]),
                    ("B", [shard("B1", {"y.npy": b"y1"})], ["b1"])], staging, done, keep=True)
    assert (staging / "x.npy").read_bytes() == b"x1" and (staging / "old.npy").is_file()
    extract_shards([("B", [shard("B2", {"y.npy": b"y2", "x.npy": b"x2"})], ["b2"]),
                    ("A", [shard("A2", {"z.npy": b"z"})], ["a2"])], staging, done, keep=True)
    assert (staging / "x.npy").read_bytes() == b"x2"  # moved to B: kept
    assert not (staging / "old.npy").exists()  # listed by no shard now: removed
    assert (staging / "z.npy").is_file() and (staging / "y.npy").read_bytes() == b"y2"
