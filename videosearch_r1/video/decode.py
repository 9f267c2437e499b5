"""The video front door: PyAV probe and decode of mp4 files into sampled, resized frames with TRUE timestamps.

    clip = decode("videos/v1.mp4", cfg.video_cfg("charades"))   # Clip: frames [T,H,W,3] uint8, timestamps [T] s
    clip = load_clip(cfg, "charades", "v1")                      # frame store if prepared, else the raw mp4
    # stores (store_roots): prepared/frames (ours, `vsr1 build`), then prepared/frames_authors (`vsr1 download`)
    clip = decode_times("videos/v1.mp4", [0.5, 1.5, 2.5], vcfg)  # the frames on screen at given times

Sampling (`sample_times`): T = clamp(floor(duration * fps), min_frames, max_frames) target times at the centres
of T equal slices of the whole video, (j + 0.5) * duration / T. When the cap does not bind that is one frame
per 1/fps s; when it binds the T frames spread uniformly over the whole video. Each target takes the frame
on screen at that moment (the last frame with pts <= target), and the clip reports that frame's own
presentation time, pts * time_base - stream start, in real seconds for every video length. (The reference
reports fps=1 and indices 0..T-1 for its npy frames, which compresses time by duration/64 beyond 64 s; we
don't.)

Frame size (`frame_size`), Qwen3-VL's per-frame rule with factor 32 (patch 16 x spatial merge 2): round
each side to a multiple of 32 (aspect kept); if H*W > max_pixels scale both sides down by
sqrt(HW/max_pixels) and floor to multiples of 32; if H*W < min_pixels scale up by sqrt(min_pixels/HW) and
ceil; sides are at least 32. Where that misses the bounds (narrow [min, max] bands, extreme aspect ratios)
the size is instead the 32-multiple (H, W) inside the bounds closest in aspect ratio; H*W <= max_pixels
always, min_pixels whenever some 32-multiple size fits. Frames already at such a size pass through
Qwen3-VL's video processor unresized (tests/test_video.py checks against transformers' smart_resize).
Resizing is one swscale call (bicubic, antialiased when shrinking) fused with the YUV->RGB conversion; the
source colour matrix (BT.601/709/2020) is taken from the stream when it is tagged, else BT.601. Rotation
metadata and non-square pixels (SAR) are ignored: frames come out at their coded size.

Decoding: one demux pass reads every packet's pts (cheap: no decoding), which gives exact frame times,
indices, duration and keyframes. Then either one sequential decode pass up to the last sampled frame, or,
when the GOP layout makes it cheaper (long videos, sparse samples), a seek to the keyframe before each
needed group of pictures; `_plan` picks by counting frames to decode (bench/bench_decode.py measures both).
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from av.video.reformatter import VideoReformatter

    from videosearch_r1.config import Config, VideoConfig

FACTOR = 32  # Qwen3-VL: patch 16 x spatial merge 2
RULE_VERSION = 1  # bump when sampling or resizing changes the frames a config yields (invalidates stores)
SEEK_COST = 15  # a seek + decoder flush + keyframe costs about this many decoded frames (measured, CPU time)
THREAD_TYPE = "SLICE"  # per-video decoder threading; FRAME/AUTO cost more CPU (bench/bench_decode.py)
_COLORSPACES = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}  # AVColorSpace -> swscale colour matrix


class VideoError(RuntimeError):
    """A video that cannot be used (missing, empty, corrupt, truncated, no video stream); names the path."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float  # seconds, first frame's start to last frame's end
    fps: float  # average frame rate of the stream
    num_frames: int
    width: int  # coded size of the source
    height: int


@dataclass
class Clip:
    frames: np.ndarray  # [T, H, W, 3] uint8, H and W multiples of 32 within the per-frame pixel bounds
    timestamps: np.ndarray  # [T] float64, true presentation time in seconds of each frame
    indices: np.ndarray  # [T] int64 source frame indices (display order)
    info: VideoInfo


# ----------------------------------------------------------------------------- pure rules
def sample_times(duration: float, fps: float, max_frames: int, min_frames: int = 2) -> np.ndarray:
    """[T] target times in seconds: centres of T equal slices, T = clamp(floor(duration*fps), min, max)."""
    if duration <= 0 or fps <= 0 or max_frames < 1 or min_frames > max_frames:
        raise ValueError(f"sample_times: bad arguments duration={duration} fps={fps} "
                         f"max_frames={max_frames} min_frames={min_frames}")
    n = int(math.floor(duration * fps + 1e-6))
    n = min(max(n, min_frames, 1), max_frames)
    return (np.arange(n, dtype=np.float64) + 0.5) * (duration / n)


def frame_size(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = FACTOR) -> tuple[int, int]:
    """(H, W) multiples of `factor`, aspect kept, min_pixels <= H*W <= max_pixels (see module doc)."""
    if max_pixels < factor * factor or min_pixels > max_pixels:
        raise ValueError(f"frame_size: pixel bounds [{min_pixels}, {max_pixels}] admit no "
                         f"{factor}x{factor}-multiple frame")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    if not min_pixels <= h * w <= max_pixels:  # narrow [min, max] band or extreme aspect ratio
        h, w = _closest_size(height / width, min_pixels, max_pixels, factor) or \
            _closest_size(height / width, 0, max_pixels, factor)
    return h, w


def _closest_size(aspect: float, lo: int, hi: int, factor: int) -> tuple[int, int] | None:
    """The factor-multiple (H, W) with lo <= H*W <= hi whose aspect H/W is closest to `aspect`."""
    best, best_err = None, math.inf
    for h in range(factor, hi // factor + 1, factor):
        w_lo, w_hi = max(factor, -(-lo // (h * factor)) * factor), hi // (h * factor) * factor
        if w_lo > w_hi:
            continue
        for w in {min(max(f * factor, w_lo), w_hi) for f in (math.floor(h / aspect / factor),
                                                              math.ceil(h / aspect / factor))}:
            err = abs(math.log(h / w / aspect))
            if err < best_err - 1e-12:
                best, best_err = (h, w), err
    return best


def fingerprint(vcfg: "VideoConfig") -> str:
    """Short hash of everything that decides which frames and pixels a config yields."""
    key = {"fps": float(vcfg.fps), "max_frames": int(vcfg.max_frames), "min_frames": int(vcfg.min_frames),
           "min_pixels": int(vcfg.min_pixels), "max_pixels": int(vcfg.max_pixels),
           "backend": vcfg.backend, "factor": FACTOR, "rule": RULE_VERSION}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- container access
def _open(path: Path):
    """Open a file with a video stream, or raise VideoError saying what is wrong with it."""
    import av  # imported here: the GPU image has no PyAV, and the frame store needs none
    if not path.exists():
        raise VideoError(f"{path}: file not found")
    if not path.is_file():
        raise VideoError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise VideoError(f"{path}: cannot open as a video container (corrupt or truncated?): {e}") from None
    if not container.streams.video:
        kinds = [s.type for s in container.streams] or ["none"]
        container.close()
        raise VideoError(f"{path}: no video stream (streams: {', '.join(kinds)})")
    return container


class _Scan(NamedTuple):
    pts: np.ndarray  # [N] int64 presentation timestamps in display order (stream time base)
    key: np.ndarray  # [N] bool keyframe flags
    times: np.ndarray  # [N] float64 seconds from the stream start
    info: VideoInfo


def _scan(path: Path, container) -> _Scan:
    """Demux every packet (no decoding): exact frame times, count, duration and keyframes."""
    import av  # imported here: the GPU image has no PyAV, and the frame store needs none
    stream = container.streams.video[0]
    pts, key, durs, discarded = [], [], [], 0
    try:
        for packet in container.demux(stream):
            t = packet.pts if packet.pts is not None else packet.dts
            if t is None or packet.size == 0:
                continue
            if packet.is_discard:  # before an edit list's start: decoded, never shown
                discarded += 1
                continue
            pts.append(t)
            key.append(packet.is_keyframe)
            durs.append(packet.duration or 0)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: cannot read packets (corrupt or truncated?) after {len(pts)} frames: "
                         f"{e}") from None
    if not pts:
        raise VideoError(f"{path}: video stream has no frames")
    if stream.frames and len(pts) + discarded < stream.frames:
        raise VideoError(f"{path}: truncated: the header lists {stream.frames} frames, only {len(pts)} "
                         "are readable")
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    pts_a = np.asarray(pts, dtype=np.int64)[order]
    key_a = np.asarray(key, dtype=bool)[order]
    tb = stream.time_base or Fraction(1, 1)
    start = pts_a[0] if stream.start_time is None else min(int(stream.start_time), int(pts_a[0]))
    times = (pts_a - start).astype(np.float64) * float(tb)
    rate = float(stream.average_rate) if stream.average_rate else 0.0
    last = float(durs[order[-1]] * tb) if durs[order[-1]] else 0.0
    if last <= 0:
        last = float(np.median(np.diff(times))) if len(times) > 1 else (1.0 / rate if rate > 0 else 0.0)
    duration = float(times[-1] + last)
    if rate <= 0:
        rate = len(times) / duration if duration > 0 else 0.0
    if duration <= 0:
        raise VideoError(f"{path}: zero duration")
    cc = stream.codec_context
    info = VideoInfo(str(path), duration, rate, len(times), int(cc.width), int(cc.height))
    return _Scan(pts_a, key_a, times, info)


def probe(path) -> VideoInfo:
    """Duration, frame rate, frame count and size of a video, measured from its packets (no decoding)."""
    path = Path(path)
    with _open(path) as container:
        return _scan(path, container).info


# ----------------------------------------------------------------------------- decoding
def _plan(scan: _Scan, want: np.ndarray) -> list[tuple[int, list[int]]] | None:
    """Seek groups [(keyframe pts, [display indices])] when seeking decodes fewer frames, else None."""
    keys = np.flatnonzero(scan.key)
    if len(keys) == 0 or keys[0] != 0:
        return None  # cannot seek safely before the first keyframe
    gop = keys[np.searchsorted(keys, want, side="right") - 1]  # keyframe starting each wanted frame's group
    groups: dict[int, list[int]] = {}
    for g, k in zip(gop.tolist(), want.tolist()):
        groups.setdefault(g, []).append(k)
    seek_cost = sum(max(ks) - g + 1 + SEEK_COST for g, ks in groups.items())
    if seek_cost >= int(want.max()) + 1:
        return None
    return [(int(scan.pts[g]), ks) for g, ks in groups.items()]


def _to_rgb(reformatter: "VideoReformatter", frame, size: tuple[int, int]) -> np.ndarray:
    """One swscale call: resize to size (H, W) + YUV->RGB. A reused reformatter keeps its scaler."""
    cs = _COLORSPACES.get(int(frame.colorspace or 0))
    out = reformatter.reformat(frame, width=size[1], height=size[0], format="rgb24", src_colorspace=cs,
                               interpolation="BICUBIC")
    return out.to_ndarray()


def _decode_pass(container, seek_pts: int | None, last_pts: int, pos: dict[int, int],
                 out: dict[int, np.ndarray], size: tuple[int, int]) -> None:
    """Decode from the start (or a seek to `seek_pts`) up to `last_pts`, keeping the frames named in `pos`."""
    stream = container.streams.video[0]
    from av.video.reformatter import VideoReformatter

    reformatter = VideoReformatter()
    if seek_pts is not None:
        container.seek(seek_pts, stream=stream, backward=True)
    for frame in container.decode(stream):
        t = frame.pts
        if t in pos and pos[t] not in out:
            out[pos[t]] = _to_rgb(reformatter, frame, size)
        if t is not None and t >= last_pts:
            break


def _decode_frames(path: Path, scan: _Scan, want: np.ndarray, size: tuple[int, int],
                   seek: bool | None) -> dict[int, np.ndarray]:
    """Decode the display indices `want` (sorted, unique) to RGB arrays of `size` (H, W)."""
    import av  # imported here: the GPU image has no PyAV, and the frame store needs none
    pos = {int(scan.pts[k]): k for k in want.tolist()}  # pts -> display index
    out: dict[int, np.ndarray] = {}
    groups = _plan(scan, want) if seek is not False else None
    if seek and groups is None:
        groups = [(int(scan.pts[0]), want.tolist())]
    try:
        with _open(path) as container:
            container.streams.video[0].thread_type = THREAD_TYPE
            for seek_pts, ks in groups or [(None, want.tolist())]:
                _decode_pass(container, seek_pts, int(scan.pts[max(ks)]), pos, out, size)
        missing = [k for k in want.tolist() if k not in out]
        if missing and groups:  # a seek landed past a wanted frame (odd GOP layout): one sequential pass
            with _open(path) as container:
                container.streams.video[0].thread_type = THREAD_TYPE
                _decode_pass(container, None, int(scan.pts[max(missing)]), pos, out, size)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed after {len(out)}/{len(want)} sampled frames "
                         f"(corrupt or truncated?): {e}") from None
    missing = [k for k in want.tolist() if k not in out]
    if missing:
        raise VideoError(f"{path}: {len(missing)} sampled frame(s) could not be decoded, first at "
                         f"{scan.times[missing[0]]:.3f} s (corrupt or truncated stream?)")
    return out


def decode(path, vcfg: "VideoConfig", seek: bool | None = None) -> Clip:
    """Sample and resize a video per `vcfg` (module doc). seek: None = auto (fewest decoded frames)."""
    if vcfg.backend != "pyav":
        raise ValueError(f"video backend {vcfg.backend!r} is not available (only 'pyav')")
    path = Path(path)
    with _open(path) as container:
        scan = _scan(path, container)
    targets = sample_times(scan.info.duration, vcfg.fps, vcfg.max_frames, vcfg.min_frames)
    return _clip_at(path, scan, targets, vcfg, seek)


def decode_times(path, times, vcfg: "VideoConfig", seek: bool | None = None) -> Clip:
    """The frames on screen at the given times (seconds from the start; any order, repeats allowed),
    sized per `vcfg`; timestamps are the frames' own presentation times. For moment windows."""
    if vcfg.backend != "pyav":
        raise ValueError(f"video backend {vcfg.backend!r} is not available (only 'pyav')")
    path = Path(path)
    targets = np.asarray(times, dtype=np.float64).reshape(-1)
    if targets.size == 0 or not np.isfinite(targets).all():
        raise ValueError(f"decode_times: need finite target times, got {targets[:5].tolist()}")
    with _open(path) as container:
        scan = _scan(path, container)
    return _clip_at(path, scan, targets, vcfg, seek)


def _clip_at(path: Path, scan: _Scan, targets: np.ndarray, vcfg: "VideoConfig", seek: bool | None) -> Clip:
    idx = np.clip(np.searchsorted(scan.times, targets + 1e-9, side="right") - 1, 0, len(scan.times) - 1)
    want = np.unique(idx)
    size = frame_size(scan.info.height, scan.info.width, vcfg.min_pixels, vcfg.max_pixels)
    decoded = _decode_frames(path, scan, want, size, seek)
    frames = np.stack([decoded[k] for k in idx.tolist()])
    return Clip(frames=frames, timestamps=scan.times[idx].copy(), indices=idx.astype(np.int64), info=scan.info)


# ----------------------------------------------------------------------------- the front door
_STORES: dict[tuple[str, int], object] = {}  # (root, store.json mtime) -> FrameStore
_WARNED: set[str] = set()
OURS, AUTHORS = "frames", "frames_authors"  # under prepared_dir: `vsr1 build`'s store, `vsr1 download`'s converted one


def store_roots(cfg: "Config", dataset: str) -> list[Path]:
    """The frame stores the front door reads, in order: ours (decoded from the mp4s by `vsr1 build`), then the
    authors' frames converted by `vsr1 download` (their sampling times). Each lives in its own directory."""
    prepared = cfg.prepared_dir(dataset)
    return [prepared / OURS, prepared / AUTHORS]


def load_clip(cfg: "Config", dataset: str, video_id: str) -> Clip:
    """THE front door: the first prepared frame store (store_roots) holding `video_id` for this video config,
    else the mp4."""
    from videosearch_r1.video.framestore import FrameStore

    vcfg = cfg.video_cfg(dataset)
    notes = []
    for root in store_roots(cfg, dataset):
        if not FrameStore.exists(root):
            continue
        key = (str(root), (root / "store.json").stat().st_mtime_ns)
        if key not in _STORES:
            _STORES[key] = FrameStore(root)
        store = _STORES[key]
        if store.fingerprint == fingerprint(vcfg):
            if video_id in store:
                return store.get(video_id)
            continue
        note = (f"the frame store {root} was made with another video config "
                f"({store.fingerprint} != {fingerprint(vcfg)}: {store.video_config}); not used")
        notes.append(note)
        if str(root) not in _WARNED:
            _WARNED.add(str(root))
            warnings.warn(note + "; decoding raw videos instead", stacklevel=2)
    dcfg = cfg.dataset_cfg(dataset)
    path = cfg.dataset_root(dataset) / dcfg.video_dir / f"{video_id}{dcfg.video_ext}"
    try:
        return decode(path, vcfg)
    except VideoError as e:
        raise VideoError("; ".join([str(e), *notes])) from None
