"""Visual-token cache: a video shown to several queries (of one batch, or of a run) goes through the vision
tower once. Used by Policy.generate (agent.vision_cache_mb) through the bucketed prefill (agent/prefill.py).

    cache = VisionCache(max_bytes=2 << 30)
    keys = clip_keys(clips, processor)                       # one per video: content + processor settings
    feats = cache.features(model, pixel_values_videos, video_grid_thw, keys)   # [(embeds, deepstack)] per video
    cache.stats()                                            # hits, misses, evictions, bytes, entries

Keys. A video's entry is keyed by (a) `clip_keys`: a SHA-256 of the clip's frames (bytes, shape) and
timestamps, i.e. the video's identity after the video config sampled and sized it, plus a digest of the
processor's video settings (normalisation, patch sizes, bounds); and (b) the vision weights' identity:
the tower object, its dtype/device and the sum of its parameters' in-place version counters (an optimizer
step or a load_state_dict bumps them), so features of older weights are never returned: a change of
weights empties the cache. A different frame budget or pixel budget is a different key (a miss).
A clip object's content digest is computed once while it lives (GRPO shows the same clip objects every turn).

Exactness. The missing videos of a batch (each distinct key once) go through the vision tower in ONE
get_video_features call, as HF's forward encodes a batch; its attention is per video (cu_seqlens), so a
video's tokens equal its encoding alone within float tolerance (the GEMMs see more rows and may round
differently), and a hit returns bit-for-bit what was stored (tests/test_prefill.py). Not used with grad
enabled or a model in training mode (features are detached).
Bounded by bytes (LRU); `max_bytes=0` keeps nothing but still encodes each distinct video of a batch once.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

import videosearch_r1  # noqa: F401  (torchvision shim before transformers)


def processor_digest(processor) -> str:
    """Digest of the video processor settings that shape pixel values (its full serialised config)."""
    vp = getattr(processor, "video_processor", None)
    if vp is None:
        return "no-processor"
    try:
        settings = vp.to_dict()
    except Exception:  # noqa: BLE001  (an exotic processor: fall back on its repr)
        settings = repr(vp)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def clip_key(clip: Any) -> str:
    """SHA-256 of a clip's frames (shape + bytes) and timestamps: its identity as the policy sees it."""
    frames = np.ascontiguousarray(clip.frames)
    ts = np.ascontiguousarray(np.asarray(clip.timestamps, dtype=np.float64))
    h = hashlib.sha256()
    h.update(repr((frames.shape, str(frames.dtype))).encode())
    h.update(memoryview(frames).cast("B"))
    h.update(memoryview(ts).cast("B"))
    return h.hexdigest()


_HASH_POOL: list = []
_DIGESTS: dict[int, tuple] = {}  # id(clip) -> (weakref to the clip, its frames, its timestamps, clip_key)


def _forget(ref, ident: int) -> None:
    """Weakref callback: a hashed clip died; drop its memo entry (unless the id already holds a new clip's)."""
    if _DIGESTS.get(ident, (None,))[0] is ref:
        del _DIGESTS[ident]


def _known_digest(clip) -> str | None:
    hit = _DIGESTS.get(id(clip))
    if hit is not None and hit[0]() is clip and clip.frames is hit[1] and clip.timestamps is hit[2]:
        return hit[3]
    return None


def _remember(clip, digest: str) -> None:
    import weakref

    try:
        ref = weakref.ref(clip, lambda r, ident=id(clip): _forget(r, ident))
    except TypeError:  # a clip type without weak references: hashed on every call
        return
    _DIGESTS[id(clip)] = (ref, clip.frames, clip.timestamps, digest)


def clip_keys(clips: list, processor=None) -> list[str]:
    """One cache key per clip: clip content + the processor's video settings. Each distinct clip object is
    hashed once while it lives (a GRPO group shows one clip G times, and its cached clip_fn returns the same
    object every turn and step): clips are taken as immutable, so a clip whose frames or timestamps attribute
    is replaced is hashed again, one whose arrays are edited in place is not. New clips are hashed in
    parallel threads (hashlib releases the GIL; ~30 ms per 64-frame 448x448 clip on one core)."""
    from concurrent.futures import ThreadPoolExecutor

    settings = processor_digest(processor)
    digests = {}
    for c in clips:
        if id(c) not in digests:
            digests[id(c)] = _known_digest(c)
    uniq = list({id(c): c for c in clips if digests[id(c)] is None}.values())
    if len(uniq) > 1:
        if not _HASH_POOL:
            _HASH_POOL.append(ThreadPoolExecutor(max_workers=8, thread_name_prefix="clip-key"))
        fresh = list(_HASH_POOL[0].map(clip_key, uniq))
    else:
        fresh = [clip_key(c) for c in uniq]
    for c, d in zip(uniq, fresh):
        digests[id(c)] = d
        _remember(c, d)
    return [f"{digests[id(c)]}:{settings}" for c in clips]


def _ptr(p) -> int:
    try:
        return p.data_ptr()
    except (RuntimeError, NotImplementedError):  # a sharded / wrapped parameter: versions still count
        return 0


def weights_token(model) -> tuple:
    """Identity of the vision weights: changes whenever any vision parameter is modified in place (version
    counters) or replaced (storage pointers)."""
    visual = model.model.visual
    params = list(visual.parameters())
    return (id(visual), params[0].dtype, params[0].device, sum(p._version for p in params),
            tuple(_ptr(p) for p in params))


def _own(feat):
    """(embeds, deepstack) with every tensor owning its storage (torch.split pieces share the batch output's)."""
    emb, deep = feat
    own = lambda t: t if t.untyped_storage().nbytes() == t.numel() * t.element_size() else t.clone()  # noqa: E731
    return own(emb), type(deep)(own(d) for d in deep)


def _nbytes(feat) -> int:
    emb, deep = feat
    return sum(t.numel() * t.element_size() for t in (emb, *deep))


class VisionCache:
    """LRU of per-video vision features (embeds + deepstack levels), bounded by bytes; counts hits/misses."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"VisionCache max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.entries: OrderedDict[str, tuple] = OrderedDict()
        self.bytes = 0
        self.token = None
        self.hits = self.misses = self.evictions = self.resets = 0

    def stats(self) -> dict:
        return dict(hits=self.hits, misses=self.misses, evictions=self.evictions, resets=self.resets,
                    entries=len(self.entries), bytes=self.bytes, max_bytes=self.max_bytes)

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def _put(self, key: str, feat) -> None:
        """Store `feat` (counted by its own bytes: pass tensors that own their memory, see _own)."""
        size = _nbytes(feat)
        if size > self.max_bytes:
            return
        while self.entries and self.bytes + size > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= _nbytes(old)
            self.evictions += 1
        self.entries[key] = feat
        self.bytes += size

    @torch.no_grad()
    def features(self, model, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor,
                 keys: list[str]) -> list:
        """Per-video (embeds, deepstack) of a processor batch's videos, in order: cached ones taken from the
        cache, the distinct missing keys encoded together in one vision-tower call."""
        from videosearch_r1.models.qwen3vl import encode_videos, video_patch_rows

        if torch.is_grad_enabled() or model.training:
            raise RuntimeError("VisionCache serves inference only (grad disabled, model in eval mode)")
        rows = video_patch_rows(model, video_grid_thw)
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} video keys for {len(rows)} videos in the batch")
        token = weights_token(model)
        if token != self.token:
            if self.entries:
                self.resets += 1
            self.clear()
            self.token = token
        starts = np.concatenate([[0], np.cumsum(rows)]).tolist()
        out: list = [None] * len(keys)
        first_miss: dict[str, int] = {}  # key -> the first video of the batch with it, for the misses
        for i, key in enumerate(keys):
            if key in first_miss:
                self.hits += 1  # a repeat of a miss of this batch: encoded once
            elif key in self.entries:
                out[i] = self.entries[key]
                self.entries.move_to_end(key)
                self.hits += 1
            else:
                first_miss[key] = i
                self.misses += 1
        if first_miss:  # every miss of the batch in one vision-tower call
            todo = list(first_miss.values())
            pix = torch.cat([pixel_values_videos[starts[i]:starts[i + 1]] for i in todo]) \
                if len(todo) < len(keys) else pixel_values_videos
            grid = video_grid_thw[todo] if len(todo) < len(keys) else video_grid_thw
            fresh = dict(zip(first_miss, encode_videos(model, pix, grid)))
            for key, feat in fresh.items():  # a stored piece gets its own memory: a split view would keep the
                self._put(key, _own(feat))   # whole batch's output alive past the byte budget and evictions
            out = [fresh[k] if f is None else f for k, f in zip(keys, out)]
        return out
