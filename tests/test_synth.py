"""The synthetic world (`vsr1 synth`) on the tiny preset: determinism, FIG schema, moments inside the real
mp4s, family structure, pixels that match the timeline, contact sheet, resume."""
import hashlib
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videosearch_r1.config import load_config
from videosearch_r1.data.fig import load_fig_jsonl
from videosearch_r1.synth import build as synth_build
from videosearch_r1.synth.render import draw, object_state
from videosearch_r1.synth.world import COLOURS, VideoSpec, resolve, sample_world

FIELDS = {"video", "time", "desc_id", "duration", "cog_desc", "fig_desc", "fig_desc_score"}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _cfg(workspace: Path, *extra: str):
    return load_config(None, [f"workspace={workspace}", "synth.preset=tiny", *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One tiny world built through the CLI entry point with 2 worker processes."""
    ws = tmp_path_factory.mktemp("synth_a")
    assert synth_build.main([f"workspace={ws}", "synth.preset=tiny", "synth.workers=2"]) == 0
    cfg = _cfg(ws)
    return cfg, cfg.dataset_root("synth")


def _world(root: Path) -> dict:
    return json.loads((root / "world.json").read_text())


def _probe_duration(path: Path) -> float:
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        frames = [f for f in c.decode(st)]
        return float(frames[-1].time + 1 / float(st.average_rate))


def test_build_twice_gives_identical_files(built, tmp_path):
    cfg_a, root_a = built
    cfg_b = _cfg(tmp_path, "synth.workers=1")  # in-process this time: the worker count must not matter
    summary = synth_build.build(cfg_b)
    assert summary.rendered == summary.videos > 0
    ha, hb = _hashes(root_a), _hashes(cfg_b.dataset_root("synth"))
    assert any(k.endswith(".mp4") for k in ha)
    assert ha == hb


def test_rows_follow_schema_and_moments_lie_inside_the_real_videos(built):
    cfg, root = built
    dcfg = cfg.dataset_cfg("synth")
    long_videos, seen_videos = 0, {}
    for split, name in dcfg.splits.items():
        path = root / dcfg.annotation_dir / name
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows, split
        assert all(set(r) == FIELDS for r in rows)
        assert len({r["desc_id"] for r in rows}) == len(rows)
        assert len({r["fig_desc"] for r in rows}) == len(rows)  # no two queries of a split read alike
        queries, summary = load_fig_jsonl(path)  # the project's loader accepts every row untouched
        assert summary.loaded == len(rows) and summary.clamped_end == summary.skipped_past_end == 0
        for r in rows:
            vid = r["video"]
            if vid not in seen_videos:
                seen_videos[vid] = _probe_duration(root / dcfg.video_dir / f"{vid}{dcfg.video_ext}")
                long_videos += seen_videos[vid] > 64.0
            real = seen_videos[vid]
            start, end = r["time"]
            assert 0.0 <= start < end <= real + 1e-6, (vid, r["time"], real)
            assert abs(r["duration"] - real) < 1e-6
            assert r["fig_desc"][0].isupper() and r["cog_desc"][0].islower()
    assert long_videos >= 1  # the tiny preset asks for long families
    assert len(list((root / dcfg.video_dir).glob("*.mp4"))) == len(seen_videos)


def test_families_share_coarse_captions_and_differ_in_fine_details(built):
    _, root = built
    world = _world(root)
    split_of = {}
    for fam in world["families"]:
        videos = [world["videos"][v] for v in fam["videos"]]
        mains = [next(q for q in v["queries"] if q["main"]) for v in videos]
        assert len({q["cog_desc"] for q in mains}) == 1
        assert len({q["fig_desc"] for q in mains}) == len(mains) >= 2
        assert not videos[0]["differs"] and all(v["differs"] for v in videos[1:])
        for v, q in zip(videos, mains):
            thing, wall = v["thing"], v["wall"]
            for word in (thing["size"], thing["shape"], wall["colour"], wall["texture"]):
                assert word in q["fig_desc"], (word, q["fig_desc"])
            for vid in fam["videos"]:
                assert split_of.setdefault(vid, fam["split"]) == fam["split"]
    fam_ids = {}
    for fam in world["families"]:
        fam_ids.setdefault(fam["split"], set()).update(fam["videos"])
    splits = list(fam_ids)
    assert len(splits) == 3
    assert all(not (fam_ids[a] & fam_ids[b]) for a in splits for b in splits if a < b)


def test_frames_show_the_object_of_the_timeline(built):
    """Decoded mp4 pixels inside the object's mask, mid-moment, have the object's colour."""
    cfg, root = built
    world = sample_world(resolve(cfg.synth))
    checked = 0
    for spec in world.videos():
        seg = spec.segments[spec.main]
        t = (seg.start + seg.end) / 2
        with av.open(str(root / "videos" / f"{spec.video_id}.mp4")) as c:
            frame = next(f for f in c.decode(video=0) if f.time >= t - 1e-6)
            pix, t = frame.to_ndarray(format="rgb24").astype(float), float(frame.time)
        s = object_state(spec, t)
        canvas = np.zeros((spec.height, spec.width, 3), np.float32)
        draw(canvas, spec.thing.shape, s.x, s.y, s.radius, s.angle, np.ones(3, np.float32))
        inner = canvas[..., 0] > 0.999
        if inner.sum() < 6:  # entering/leaving object half off screen, or a shrunk ring
            continue
        err = np.abs(pix[inner].mean(0) - s.rgb).max()
        assert err < 40, (spec.video_id, pix[inner].mean(0), s.rgb)
        checked += 1
    assert checked >= len(world.videos()) // 2


def test_object_state_follows_actions():
    s = resolve(load_config(None, ["synth.preset=tiny"]).synth)
    specs: list[VideoSpec] = sample_world(s).videos()
    kinds = set()
    for spec in specs:
        for seg in spec.segments:
            a, b = object_state(spec, seg.start), object_state(spec, seg.end)
            mid = object_state(spec, (seg.start + seg.end) / 2)
            kinds.add(seg.action.split("_")[0])
            if seg.action in ("enter_left", "move_right", "leave_right"):
                assert b.x > a.x
            if seg.action in ("enter_right", "move_left", "leave_left"):
                assert b.x < a.x
            if seg.action.startswith("enter"):
                assert not 0 <= a.x <= spec.width and 0 <= b.x <= spec.width
            if seg.action == "grow":
                assert mid.radius > a.radius * 1.3
            if seg.action == "shrink":
                assert mid.radius < a.radius * 0.8
            if seg.action == "recolour":
                assert np.allclose(b.rgb, COLOURS[seg.arg])
    assert len(kinds) >= 4


def test_contact_sheet_is_a_png(built):
    _, root = built
    path = root / "contact_sheet.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.width > 800 and img.height > 400
        assert len(img.convert("RGB").getcolors(1 << 20) or []) > 50  # frames, not a blank page


def test_resume_rebuilds_only_missing_or_broken_videos(built, tmp_path):
    cfg_a, root_a = built
    ws = tmp_path / "ws"
    shutil.copytree(Path(cfg_a.workspace), ws)
    cfg = _cfg(ws, "synth.workers=1")
    root = cfg.dataset_root("synth")
    videos = sorted((root / "videos").glob("*.mp4"))
    gone, broken = videos[0], videos[1]
    gone.unlink()
    broken.write_bytes(b"not an mp4")
    before = {p.name: p.stat().st_mtime_ns for p in videos[2:]}
    summary = synth_build.build(cfg)
    assert (summary.rendered, summary.kept) == (2, len(videos) - 2)
    assert {p.name: p.stat().st_mtime_ns for p in videos[2:]} == before
    assert _hashes(root) == _hashes(root_a)
    # a changed content parameter invalidates every video
    assert synth_build.build(_cfg(ws, "synth.workers=1", "synth.noise=2.0")).rendered == len(videos)


def test_presets_and_overrides():
    s = resolve(load_config(None, ["synth.preset=tiny", "synth.families={train: 1}",
                                   "synth.variants_per_family=2"]).synth)
    assert s.families == {"train": 1, "val": 1, "test": 2} and s.variants_per_family == 2
    assert resolve(load_config(None, []).synth).families["train"] >= 50  # default preset
    with pytest.raises(ValueError, match="unknown preset"):
        resolve(load_config(None, ["synth.preset=huge"]).synth)
    assert synth_build.main(["synth.preset=huge"]) == 2


def test_video_and_query_ids_do_not_repeat_across_seeds():
    """Two worlds (e.g. the benchmark and the engine's training world) never share an id."""
    worlds = [sample_world(resolve(load_config(None, ["synth.preset=tiny", f"synth.seed={seed}"]).synth))
              for seed in (0, 1, 7919)]
    vids = [{v.video_id for v in w.videos()} for w in worlds]
    qids = [{r["desc_id"] for split in ("train", "val", "test") for r in synth_build.annotation_rows(w, split)}
            for w in worlds]
    for i in range(3):
        assert vids[i] and qids[i]
        for j in range(i):
            assert not vids[i] & vids[j] and not qids[i] & qids[j]
    assert all(v.startswith("s7919-") for v in vids[2])
