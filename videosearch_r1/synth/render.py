"""Draw a synthetic VideoSpec into frames (numpy) and write it as an mp4 (PyAV, libx264, yuv420p).

    for frame in render_frames(spec, noise=4.0): ...        # [H, W, 3] uint8, one per 1/fps s
    write_video(spec, "videos/s0-train0000v0.mp4", noise=4.0)  # atomic; the render key goes in the metadata
    read_key("videos/s0-train0000v0.mp4")                   # -> that key, or None (missing / unreadable)

Each frame: the wall (colour + texture with a random layout and a fixed grain), the idle companion, the
object at its timeline state (position, jump offset, rotation, scale, colour), anti-aliased by 2x2
supersampling, then sub-pixel jitter of the object, brightness flicker and Gaussian pixel noise.
All randomness comes from spec.seed; x264 runs single-threaded without mbtree (see ENCODER) and the
muxer is bitexact, so one spec gives byte-identical files. The render key (a hash of everything that
decides the pixels and the encoding) lets a resumed build skip a video already written from the same
content parameters.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Iterator, NamedTuple

import av
import numpy as np

from videosearch_r1.synth.world import COLOURS, WALL_COLOURS, Segment, VideoSpec
from videosearch_r1.utils import atomic_path

RENDER_VERSION = 2  # bump whenever drawing or encoding changes (invalidates written videos)
KEY_PREFIX = "vsr1-synth:"
# mbtree off: x264's macroblock-tree SIMD gave run-to-run different bitstreams from identical frames at
# 96 px wide (measured: 2 of 8 encodes differed; with mbtree=0, asm=0 or 128 px wide, none of 25)
ENCODER = {"crf": "26", "preset": "veryfast", "x264-params": "mbtree=0"}
RADIUS = {"small": 0.11, "large": 0.19}  # object radius as a fraction of the frame height
COMPANION_RADIUS, COMPANION_Y = 0.09, 0.24
JUMP_HEIGHT = 0.28  # fraction of the height
GROW, SHRINK = 1.6, 0.55  # peak scale factors
NOISE_BANK = 6  # distinct noise fields cycled per video


# ----------------------------------------------------------------------------- keys
def render_key(spec: VideoSpec, noise: float) -> str:
    """Hash of the content parameters of one mp4 (not its queries or captions)."""
    d = dataclasses.asdict(spec)
    for k in ("video_id", "family", "variant", "split", "differs", "queries", "caption"):
        d.pop(k)
    d.update(noise=float(noise), render_version=RENDER_VERSION, encoder=ENCODER)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:32]


def read_key(path: str | Path) -> str | None:
    """The render key stored in an mp4's metadata; None when missing, unreadable or not ours."""
    try:
        with av.open(str(path)) as c:
            comment = c.metadata.get("comment", "")
            if not c.streams.video:
                return None
    except (av.FFmpegError, OSError):
        return None
    return comment[len(KEY_PREFIX):] if comment.startswith(KEY_PREFIX) else None


# ----------------------------------------------------------------------------- shapes
def _polygon(n: int, inner: float = 0.0, rot: float = -math.pi / 2) -> np.ndarray:
    """[k, 2] vertices of a regular n-gon (or an n-point star when inner > 0), radius 1, one vertex up."""
    if inner > 0:
        ang = rot + np.arange(2 * n) * math.pi / n
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    else:
        ang, r = rot + np.arange(n) * 2 * math.pi / n, np.ones(n)
    return np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1)


_POLYGONS = {"triangle": _polygon(3) * 1.1, "hexagon": _polygon(6), "star": _polygon(5, inner=0.45) * 1.1}


def _inside_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd ray casting, vectorised over points."""
    inside = np.zeros(u.shape, dtype=bool)
    xj, yj = poly[-1]
    for xi, yi in poly:
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = ((yi > v) != (yj > v)) & (u < (xj - xi) * (v - yi) / (yj - yi) + xi)
        inside ^= cross
        xj, yj = xi, yi
    return inside


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a unit shape at (u, v) (object frame: radius 1, v down)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.36)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape == "diamond":
        return np.abs(u) / 0.78 + np.abs(v) <= 1.05
    if shape == "cross":
        au, av_ = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av_ <= 0.95)) | ((av_ <= 0.3) & (au <= 0.95))
    return _inside_polygon(u, v, _POLYGONS[shape])


_SUB = np.array([[-0.25, -0.25], [-0.25, 0.25], [0.25, -0.25], [0.25, 0.25]])  # 2x2 supersampling offsets


def draw(frame: np.ndarray, shape: str, cx: float, cy: float, radius: float, angle: float,
         rgb: np.ndarray) -> None:
    """Alpha-blend an anti-aliased shape into frame [H, W, 3] float32, in place (clipped to the frame)."""
    h, w = frame.shape[:2]
    ext = radius * 1.45 + 1
    x0, x1 = max(0, int(cx - ext)), min(w, int(math.ceil(cx + ext)) + 1)
    y0, y1 = max(0, int(cy - ext)), min(h, int(math.ceil(cy + ext)) + 1)
    if x0 >= x1 or y0 >= y1 or radius <= 0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    px = (xs[None] + 0.5 + _SUB[:, 0, None, None] - cx) / radius  # [4, h, w]: one plane per subsample
    py = (ys[None] + 0.5 + _SUB[:, 1, None, None] - cy) / radius
    cos, sin = math.cos(angle), math.sin(angle)
    alpha = shape_mask(shape, cos * px + sin * py, -sin * px + cos * py).mean(axis=0, dtype=np.float32)[..., None]
    patch = frame[y0:y1, x0:x1]
    patch *= 1.0 - alpha
    patch += alpha * rgb


# ----------------------------------------------------------------------------- wall
def background(spec: VideoSpec, rng: np.random.Generator) -> np.ndarray:
    """The wall [H, W, 3] float32: colour, texture with a random layout, a fixed grain."""
    h, w = spec.height, spec.width
    base = np.array(WALL_COLOURS[spec.wall.colour], dtype=np.float32)
    dark = base * 0.7
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    tex = spec.wall.texture
    if tex == "striped":
        period = rng.uniform(8, 14)
        coord = [xs, ys, xs + ys, xs - ys][int(rng.integers(4))]
        mask = ((coord + rng.uniform(0, period)) % period) < period / 2
    elif tex == "checkered":
        cell = rng.uniform(7, 12)
        ox, oy = rng.uniform(0, cell, 2)
        mask = ((np.floor((xs + ox) / cell) + np.floor((ys + oy) / cell)) % 2) == 0
    elif tex == "dotted":
        sp, r = rng.uniform(9, 13), rng.uniform(1.8, 2.6)
        ox, oy = rng.uniform(0, sp, 2)
        dx, dy = (xs + ox) % sp - sp / 2, (ys + oy) % sp - sp / 2
        mask = dx * dx + dy * dy <= r * r
    else:
        mask = np.zeros((h, w), dtype=bool)
    img = np.where(mask[..., None], dark, base)
    if tex == "plain":
        img = img * (1.0 + 0.08 * (ys / h - 0.5))[..., None]
    img = img + rng.normal(0, 3.0, size=(h, w, 1))
    return img.astype(np.float32)


# ----------------------------------------------------------------------------- timeline state
class ObjectState(NamedTuple):
    x: float  # centre, pixels
    y: float
    radius: float  # pixels
    angle: float  # radians
    rgb: np.ndarray  # [3] float32


def _ease(p: float) -> float:
    return p * p * (3 - 2 * p)


def _envelope(p: float) -> float:
    """0 -> 1 over the first 40 %, hold, back to 0 over the last 20 %."""
    return _ease(min(1.0, p / 0.4)) * (1.0 - _ease(max(0.0, (p - 0.8) / 0.2)))


def object_state(spec: VideoSpec, t: float) -> ObjectState:
    """Where and how the object is at time t (seconds), from its segments; idle between them."""
    x, dy, scale, angle = spec.x_start, 0.0, 1.0, 0.0
    rgb = np.array(COLOURS[spec.thing.colour], dtype=np.float32)
    for seg in spec.segments:
        if t < seg.start:
            break
        p = min(1.0, (t - seg.start) / max(seg.end - seg.start, 1e-6))
        x = seg.x0 + (seg.x1 - seg.x0) * _ease(p)
        if seg.action == "recolour":
            q = _ease(min(1.0, max(0.0, (p - 0.3) / 0.25)))
            rgb = rgb * (1 - q) + np.array(COLOURS[seg.arg], dtype=np.float32) * q
        elif p < 1.0:
            dy, scale, angle = _transient(seg, p)
    h = spec.height
    return ObjectState(x * spec.width, spec.y * h + dy * h, RADIUS[spec.thing.size] * h * scale, angle, rgb)


def _transient(seg: Segment, p: float) -> tuple[float, float, float]:
    """(y offset as a fraction of the height, scale, angle) during an in-place action."""
    if seg.action == "jump":
        hops = 2 if seg.end - seg.start >= 4.5 else 1
        return -JUMP_HEIGHT * abs(math.sin(math.pi * hops * p)), 1.0, 0.0
    if seg.action == "spin":
        return 0.0, 1.0, 2 * math.pi * _ease(p)
    if seg.action == "grow":
        return 0.0, 1.0 + (GROW - 1.0) * _envelope(p), 0.0
    if seg.action == "shrink":
        return 0.0, 1.0 - (1.0 - SHRINK) * _envelope(p), 0.0
    return 0.0, 1.0, 0.0


# ----------------------------------------------------------------------------- frames and files
def render_frames(spec: VideoSpec, noise: float) -> Iterator[np.ndarray]:
    """Every frame of the video in order: [H, W, 3] uint8 at t = i / fps."""
    rng = np.random.default_rng(spec.seed)
    wall = background(spec, rng)
    bank = rng.normal(0, noise, size=(NOISE_BANK, spec.height, spec.width, 3)).astype(np.float32)
    comp_rgb = np.array(COLOURS[spec.companion.colour], np.float32) if spec.companion else None
    comp_phase = rng.uniform(0, 2 * math.pi)
    for i in range(spec.num_frames):
        t = i / spec.fps
        frame = wall * np.float32(1.0 + rng.normal(0, 0.012))
        if spec.companion is not None:
            bob = 0.6 * math.sin(comp_phase + 0.9 * t)
            draw(frame, spec.companion.shape, spec.companion_x * spec.width, COMPANION_Y * spec.height + bob,
                 COMPANION_RADIUS * spec.height, 0.0, comp_rgb)
        s = object_state(spec, t)
        jx, jy = rng.normal(0, 0.3, 2)
        draw(frame, spec.thing.shape, s.x + jx, s.y + jy, s.radius, s.angle, s.rgb)  # clipped when off screen
        frame += bank[int(rng.integers(NOISE_BANK))]
        yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)


_BT601 = (np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]],
                   dtype=np.float32) / 255.0).T.copy()  # [3 rgb, 3 yuv]
_BT601_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float32)


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [H*3/2, W] uint8 planar YUV 4:2:0, BT.601 limited range (H, W even).

    Explicit, so the stream's colour tags (BT.601, limited) are exact and no swscale default is relied on."""
    h, w = rgb.shape[:2]
    x = rgb.astype(np.float32)
    y = x.reshape(-1, 3) @ _BT601[:, 0] + _BT601_OFFSET[0]  # [H*W]
    box = (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) * 0.25  # 2x2 average: [H/2, W/2, 3]
    chroma = box.reshape(-1, 3) @ _BT601[:, 1:] + _BT601_OFFSET[1:]  # [H*W/4, 2] (the map is linear)
    planes = np.concatenate([y, chroma[:, 0], chroma[:, 1]]).reshape(h * 3 // 2, w)
    return np.clip(planes + 0.5, 0, 255).astype(np.uint8)


def write_video(spec: VideoSpec, path: str | Path, noise: float) -> str:
    """Render and encode spec to path (atomic: temp file + rename); returns the render key."""
    if spec.width % 2 or spec.height % 2:
        raise ValueError(f"synth: width and height must be even for yuv420p, got {spec.width}x{spec.height}")
    key = render_key(spec, noise)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"fflags": "+bitexact"}) as c:
            c.metadata["comment"] = KEY_PREFIX + key
            st = c.add_stream("libx264", rate=spec.fps)
            st.width, st.height, st.pix_fmt = spec.width, spec.height, "yuv420p"
            cc = st.codec_context
            cc.thread_count = 1  # x264 is deterministic single-threaded
            cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = 6, 1, 6, 6  # BT.601 (SMPTE 170M), limited
            st.options = {**ENCODER, "g": str(2 * spec.fps)}
            for arr in render_frames(spec, noise):
                frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(arr), format="yuv420p")
                frame.colorspace, frame.color_range = 6, 1
                for pkt in st.encode(frame):
                    c.mux(pkt)
            for pkt in st.encode():
                c.mux(pkt)
    return key
