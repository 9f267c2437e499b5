"""Compact on-disk store of prepared clips (sampled, resized frames + true timestamps + indices + info).

    store = FrameStore(cfg.prepared_dir("charades") / "frames", video_cfg=cfg.video_cfg("charades"))
    store.put("v1", decode(path, vcfg))    # atomic; a second put of the same id is a no-op
    clip = store.get("v1"); "v1" in store; store.ids()
    clips = store.get_many(["v1", "v2"], workers=8)     # CPU: numpy frames, Pillow on 8 threads
    clips = store.get_many(["v1", "v2"], device="cuda")  # one nvjpeg batch: clip.frames is a CUDA tensor

Where (video/decode.py store_roots): <prepared>/frames holds clips `vsr1 build` decoded from the mp4s,
<prepared>/frames_authors the authors' npy frames `vsr1 download` converted (+ converted_from.json); the
front door reads them in that order. separate_converted() moves an older workspace's converted store aside.

Layout: <root>/store.json (format version, the video config and its fingerprint, codec settings) and one
<root>/<video_id>.npz per video (numpy's uncompressed zip, read with allow_pickle=False) holding
`jpeg` (every frame's JPEG bytes, concatenated), `offsets` [T+1], `timestamps` [T] float64 (exact),
`indices` [T] int64, `shape` [4] and `info` (VideoInfo as JSON bytes).

Why JPEG per frame (bench/bench_decode.py; figures in docs/benchmarks.md): the authors ship raw npy frames
(107-436 GiB per dataset). Pillow (libjpeg-turbo) JPEG at quality 90 with 4:4:4 chroma is 7.6-13.7x smaller
than npy at the 448-px budget, at 39.3-44.4 dB PSNR on real clips (lossy: a few grey levels, more at sharp
colour edges). 4:2:0 chroma saves another 14-40% but drops to 35.8 dB on saturated colour edges (the
synthetic world's fine details are colours); WebP and h264 mp4s of the sampled frames are smaller still
but 2-3.5x slower to load.

Load paths (bench/bench_framestore.py, figures in docs/benchmarks.md): a 320x576 frame costs 1.1-1.6 ms
of CPU, so one core loads a 64-frame clip 9-10x slower than np.load of a page-cached npy (~8 ms); the
store wins only where reading the npy is slower than that (storage under ~340-460 MiB/s, or a dataset
too big for the page cache, where the 8-14x smaller store still fits). ~14% of Pillow's per-frame work
holds the GIL, which caps the thread speed-up near 7x. `get_many(ids, workers=N)` spreads every frame of every
clip over N threads (Pillow releases the GIL while decoding); `device="cuda"` decodes all frames of all
clips in one nvjpeg batch (torchvision.io.decode_jpeg) and returns `frames` as a torch.uint8 tensor
[T,H,W,3] already on the GPU (timestamps, indices stay numpy). nvjpeg and libjpeg-turbo may differ by a
grey level on some pixels. `threads` (constructor) is the default N for get/get_many (1: parallelise
across clips instead, e.g. in loader workers).
"""
from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

from videosearch_r1.config import VideoConfig
from videosearch_r1.utils import atomic_path, atomic_write_json
from videosearch_r1.video.decode import Clip, VideoError, VideoInfo, fingerprint, frame_size

if TYPE_CHECKING:
    import torch

FORMAT = "vsr1-framestore"
VERSION = 1
SUFFIX = ".npz"


class StoreMismatchError(VideoError):
    """The store on disk was made with another video config (or codec settings)."""


def encode_jpeg(frames: np.ndarray, quality: int, subsampling: int) -> tuple[np.ndarray, np.ndarray]:
    """[T,H,W,3] uint8 -> (concatenated JPEG bytes [N] uint8, offsets [T+1] int64)."""
    blobs = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
        blobs.append(buf.getvalue())
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


class FrameStore:
    """Prepared clips of one dataset under one video config. Opening an existing store with another
    config raises StoreMismatchError; opening without a config reads whatever the store holds.
    quality/subsampling (JPEG; 0 = 4:4:4, 2 = 4:2:0) apply when the store is created, then store.json rules."""

    def __init__(self, root, video_cfg: VideoConfig | None = None, quality: int = 90, subsampling: int = 0,
                 threads: int = 1):
        self.root = Path(root)
        self.threads = max(1, int(threads))
        self._pools: dict[int, ThreadPoolExecutor] = {}  # workers -> pool, rebuilt in a forked process
        self._pool_pid = os.getpid()
        meta_path = self.root / "store.json"
        if meta_path.exists():
            try:
                self.meta = json.loads(meta_path.read_text())
            except (OSError, ValueError) as e:
                raise VideoError(f"{meta_path}: unreadable frame store header: {e}") from None
            if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
                raise StoreMismatchError(f"{meta_path}: not a {FORMAT} v{VERSION} store: "
                                         f"{self.meta.get('format')} v{self.meta.get('version')}")
            if video_cfg is not None and fingerprint(video_cfg) != self.fingerprint:
                raise StoreMismatchError(
                    f"{self.root}: frame store made with video config {self.meta['video_config']} "
                    f"(fingerprint {self.fingerprint}), asked for {asdict(video_cfg)} "
                    f"(fingerprint {fingerprint(video_cfg)}); use another directory or rebuild it")
        elif video_cfg is not None:
            if not 1 <= quality <= 100 or subsampling not in (0, 1, 2):
                raise ValueError(f"JPEG quality {quality} / subsampling {subsampling} out of range")
            self.meta = {"format": FORMAT, "version": VERSION, "fingerprint": fingerprint(video_cfg),
                         "video_config": asdict(video_cfg), "codec": "jpeg", "quality": int(quality),
                         "subsampling": int(subsampling)}
            atomic_write_json(meta_path, self.meta)
        else:
            self.meta = {}  # no store here yet: empty, read-only

    @staticmethod
    def exists(root) -> bool:
        return (Path(root) / "store.json").is_file()

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("fingerprint")

    @property
    def video_config(self) -> VideoConfig | None:
        if not self.meta:
            return None
        known = {f.name for f in fields(VideoConfig)}
        return VideoConfig(**{k: v for k, v in self.meta["video_config"].items() if k in known})

    # ---- index
    def _path(self, video_id: str) -> Path:
        if not video_id or video_id.startswith(".") or any(c in video_id for c in "/\\\0"):
            raise ValueError(f"video id {video_id!r} cannot name a file in {self.root}")
        return self.root / f"{video_id}{SUFFIX}"

    def __contains__(self, video_id: str) -> bool:
        return self._path(video_id).is_file()

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in self.root.iterdir()
                      if p.name.endswith(SUFFIX) and not p.name.startswith("."))

    def __len__(self) -> int:
        return len(self.ids())

    # ---- write
    def put(self, video_id: str, clip: Clip, overwrite: bool = False) -> bool:
        """Store a clip atomically; False (nothing written) when the id is already stored."""
        if not self.meta:
            raise VideoError(f"{self.root}: no frame store here; open it with FrameStore(root, video_cfg=...)")
        path = self._path(video_id)
        if path.exists() and not overwrite:
            return False
        self._check(video_id, clip)
        jpeg, offsets = encode_jpeg(clip.frames, self.meta["quality"], self.meta["subsampling"])
        info = json.dumps(asdict(clip.info)).encode()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, jpeg=jpeg, offsets=offsets, timestamps=np.asarray(clip.timestamps, np.float64),
                         indices=np.asarray(clip.indices, np.int64), shape=np.asarray(clip.frames.shape, np.int64),
                         info=np.frombuffer(info, dtype=np.uint8))
                f.flush()
                os.fsync(f.fileno())
        return True

    def remove(self, video_id: str) -> bool:
        """Delete a stored clip; False when it was not stored."""
        path = self._path(video_id)
        if not path.is_file():
            return False
        path.unlink()
        return True

    def _check(self, video_id: str, clip: Clip) -> None:
        """A clip must be what this store's video config yields: uint8 frames of the config's frame size."""
        vc = self.video_config
        t = len(clip.frames)
        if clip.frames.dtype != np.uint8 or clip.frames.ndim != 4 or clip.frames.shape[-1] != 3:
            raise ValueError(f"{video_id}: frames must be [T,H,W,3] uint8, got {clip.frames.dtype} "
                             f"{clip.frames.shape}")
        if len(clip.timestamps) != t or len(clip.indices) != t or not vc.min_frames <= t <= vc.max_frames:
            raise ValueError(f"{video_id}: {t} frames, {len(clip.timestamps)} timestamps, {len(clip.indices)} "
                             f"indices; config allows {vc.min_frames}..{vc.max_frames} frames")
        want = frame_size(clip.info.height, clip.info.width, vc.min_pixels, vc.max_pixels)
        if tuple(clip.frames.shape[1:3]) != want:
            raise ValueError(f"{video_id}: frames are {clip.frames.shape[1:3]}, this store's video config gives "
                             f"{want} for a {clip.info.width}x{clip.info.height} source (decoded with another config?)")

    # ---- read
    def _decoder_pool(self, workers: int) -> ThreadPoolExecutor | None:
        if workers <= 1:
            return None
        if self._pool_pid != os.getpid():  # a forked worker needs its own threads
            self._pools, self._pool_pid = {}, os.getpid()
        if workers not in self._pools:
            self._pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="framestore")
        return self._pools[workers]

    def _read(self, video_id: str) -> _Entry:
        """One entry's arrays, checked (KeyError when absent, VideoError naming the file when unreadable)."""
        path = self._path(video_id)
        if not path.is_file():
            raise KeyError(f"{video_id!r} is not in the frame store {self.root}")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in ("jpeg", "offsets", "timestamps", "indices", "shape", "info")}
            info = VideoInfo(**json.loads(data["info"].tobytes()))
            shape = tuple(int(s) for s in data["shape"])
            offs = data["offsets"]
            if (len(shape) != 4 or shape[3] != 3 or offs.shape != (shape[0] + 1,) or offs[0] != 0
                    or offs[-1] != len(data["jpeg"]) or np.any(np.diff(offs) <= 0)
                    or data["timestamps"].shape != (shape[0],) or data["indices"].shape != (shape[0],)):
                raise ValueError(f"inconsistent arrays: shape {shape}, {len(offs)} offsets, "
                                 f"{len(data['jpeg'])} JPEG bytes, {data['timestamps'].shape} timestamps")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise VideoError(f"{path}: unreadable frame store entry: {e}") from None
        return _Entry(path, data["jpeg"], offs, shape, data["timestamps"], data["indices"], info)

    def get(self, video_id: str, device: str | torch.device = "cpu") -> Clip:
        """One clip; see get_many for `device`."""
        return self.get_many([video_id], device=device)[0]

    def get_many(self, video_ids: list[str], device: str | torch.device = "cpu",
                 workers: int | None = None) -> list[Clip]:
        """Clips in the order asked. device "cpu": frames are numpy [T,H,W,3] uint8, decoded by Pillow on
        `workers` threads (default: the store's `threads`) spread over every frame of every clip. A CUDA
        device: one batched nvjpeg call (torchvision.io.decode_jpeg) for all frames, and each Clip's
        `frames` is a torch.uint8 tensor [T,H,W,3] on that device (timestamps, indices stay numpy). nvjpeg
        and libjpeg-turbo may differ by a grey level or so on some pixels (IDCT rounding)."""
        ids = list(video_ids)
        workers = self.threads if workers is None else max(1, int(workers))
        pool = self._decoder_pool(workers)
        entries = list(pool.map(self._read, ids)) if pool and len(ids) > 1 else [self._read(v) for v in ids]
        if not entries:
            return []
        kind = device.split(":")[0] if isinstance(device, str) else device.type
        if kind == "cpu":
            frames = _decode_pil(entries, pool)
        elif kind == "cuda":
            frames = _decode_nvjpeg(entries, device)
        else:
            raise ValueError(f"frame store: device must be 'cpu' or a CUDA device, got {device!r}")
        return [Clip(frames=f, timestamps=e.timestamps, indices=e.indices, info=e.info)
                for e, f in zip(entries, frames)]


CONVERTED = "converted_from.json"  # in a store of the authors' converted frames (data/convert.py)


def separate_converted(prepared) -> str | None:
    """Workspaces from before the split kept the authors' converted frames in prepared/frames (marked by
    converted_from.json), where `vsr1 build` would take them for its own: move that store to
    prepared/frames_authors. Returns a line saying so, None when there was nothing to move."""
    from videosearch_r1.video.decode import AUTHORS, OURS

    prepared = Path(prepared)
    old, new = prepared / OURS, prepared / AUTHORS
    if not (old / CONVERTED).is_file():
        return None
    if new.exists():
        raise VideoError(f"{old} holds the authors' converted frames ({old / CONVERTED}) and {new} exists too; "
                         f"remove one of them (the converted frames belong in {new})")
    old.replace(new)
    return f"moved the authors' converted frames from {old} to {new} (our own frames go to {old})"


class _Entry(NamedTuple):
    path: Path
    jpeg: np.ndarray  # [N] uint8, every frame's JPEG bytes back to back
    offsets: np.ndarray  # [T+1] int64, frame i is jpeg[offsets[i]:offsets[i+1]]
    shape: tuple[int, int, int, int]  # (T, H, W, 3)
    timestamps: np.ndarray  # [T] float64
    indices: np.ndarray  # [T] int64
    info: VideoInfo


def _decode_pil(entries: list[_Entry], pool: ThreadPoolExecutor | None) -> list[np.ndarray]:
    """[T,H,W,3] uint8 per entry; one task per frame (Pillow releases the GIL while libjpeg-turbo decodes)."""
    outs = [np.empty(e.shape, dtype=np.uint8) for e in entries]

    def one(job: tuple[int, int]) -> None:
        k, i = job
        e = entries[k]
        try:
            with Image.open(io.BytesIO(e.jpeg[e.offsets[i]:e.offsets[i + 1]].tobytes()), formats=("JPEG",)) as img:
                outs[k][i] = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
        except (OSError, ValueError) as err:  # undecodable bytes, or a frame of the wrong size
            raise VideoError(f"{e.path}: corrupt JPEG frame {i}: {err}") from None

    jobs = [(k, i) for k, e in enumerate(entries) for i in range(e.shape[0])]
    if pool is None:
        for job in jobs:
            one(job)
    else:
        list(pool.map(one, jobs))
    return outs


def _decode_nvjpeg(entries: list[_Entry], device: str | torch.device) -> list[torch.Tensor]:
    """[T,H,W,3] torch.uint8 per entry on a CUDA device: every frame of every entry in one nvjpeg batch."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)

    def blobs(es: list[_Entry]) -> list[torch.Tensor]:  # [n] uint8 CPU tensors sharing the entries' memory
        return [torch.from_numpy(e.jpeg[e.offsets[i]:e.offsets[i + 1]]) for e in es for i in range(e.shape[0])]

    try:
        decoded = decode_jpeg(blobs(entries), mode=ImageReadMode.RGB, device=device)  # [3,H,W] each
    except RuntimeError as err:  # name the entry that fails on its own
        for e in entries:
            try:
                decode_jpeg(blobs([e]), mode=ImageReadMode.RGB, device=device)
            except RuntimeError as one:
                raise VideoError(f"{e.path}: corrupt JPEG frame (nvjpeg): {one}") from None
        raise VideoError(f"{', '.join(str(e.path) for e in entries)}: nvjpeg batch failed: {err}") from None
    out, k = [], 0
    for e in entries:
        t, h, w, _ = e.shape
        if any(d.shape != (3, h, w) for d in decoded[k:k + t]):
            raise VideoError(f"{e.path}: a JPEG frame is not {h}x{w} RGB")
        out.append(torch.stack(decoded[k:k + t]).permute(0, 2, 3, 1).contiguous())  # [T,H,W,3]
        k += t
    return out
