"""Contact sheet of the synthetic world: a PNG a person can read to check videos against their queries.

    contact_sheet(world, root / "videos", ".mp4", root / "contact_sheet.png", families=4)

One block per family (test split first), one row per video: its id, length and the details it changes
from variant 0; frames decoded from the written mp4 (5 spread over the video, 3 inside the main
moment, green border = inside the main moment), each labelled with its true timestamp and the action
under way; under the frames, the video's queries with their moments (MAIN = the family's main moment,
whose coarse caption is in the block header and is the same for every variant).
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from videosearch_r1.synth.world import Family, VideoSpec, World
from videosearch_r1.utils import atomic_path

SCALE = 2  # thumbnail magnification
LABEL_W = 210
PAD = 8
LINE = 18
BG, INK, MUTED = (255, 255, 255), (20, 20, 20), (110, 110, 110)
IN_MAIN, OUTSIDE = (30, 170, 60), (200, 200, 200)


def _times(v: VideoSpec, n: int) -> list[float]:
    """n sample times: spread over the whole video, plus 3 inside the main moment."""
    seg = v.segments[v.main]
    inside = [seg.start + f * (seg.end - seg.start) for f in (0.2, 0.5, 0.8)]
    spread = [(j + 0.5) * v.duration / max(1, n - 3) for j in range(max(1, n - 3))]
    return sorted(spread + inside)


def _frames(path: Path, times: list[float]) -> list[tuple[float, np.ndarray]]:
    """(true timestamp, RGB frame) on screen at each time: the last decoded frame with pts <= t."""
    out, pending, prev = [], sorted(times), None
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            while pending and f.time > pending[0] + 1e-6:
                pending.pop(0)
                out.append(prev or f)
            prev = f
            if not pending:
                break
    out += [prev] * len(pending)
    return [(float(f.time), f.to_ndarray(format="rgb24")) for f in out]


def _doing(v: VideoSpec, t: float) -> str:
    for seg in v.segments:
        if seg.start <= t <= seg.end:
            return seg.action.replace("_", " ")
    return "idle"


def _fonts():
    return ImageFont.load_default(size=14), ImageFont.load_default(size=12), ImageFont.load_default(size=18)


def _pick_families(world: World, n: int) -> list[Family]:
    order = sorted(world.families, key=lambda f: (f.split != "test", f.split, f.family))
    return order[:n]


def _row_height(v: VideoSpec, th: int) -> int:
    return th + 6 + LINE + PAD + LINE * len(v.queries) + PAD


def _draw_video(img: Image.Image, draw: ImageDraw.ImageDraw, v: VideoSpec, path: Path, y: int,
                n_frames: int, fonts) -> int:
    font, small, _ = fonts
    th, tw = v.height * SCALE, v.width * SCALE
    draw.text((PAD, y), v.video_id, fill=INK, font=font)
    draw.text((PAD, y + LINE), f"{v.duration:.1f} s, {len(v.segments)} events", fill=MUTED, font=small)
    what = "variant 0 (base)" if not v.differs else "differs: " + ", ".join(v.differs)
    draw.text((PAD, y + 2 * LINE), what, fill=INK, font=small)
    seg = v.segments[v.main]
    for i, (t, frame) in enumerate(_frames(path, _times(v, n_frames))):
        x = LABEL_W + i * (tw + 2 * PAD)
        inside = seg.start <= t <= seg.end
        draw.rectangle([x - 3, y - 3, x + tw + 2, y + th + 2], fill=IN_MAIN if inside else OUTSIDE)
        img.paste(Image.fromarray(frame).resize((tw, th), Image.NEAREST), (x, y))
        draw.text((x, y + th + 5), f"{t:5.2f} s  {_doing(v, t)}", fill=INK if inside else MUTED, font=small)
    qy = y + th + 6 + LINE
    for q in v.queries:
        tag = "MAIN " if q.main else "     "
        draw.text((PAD, qy), f"{tag}[{q.start:.1f}-{q.end:.1f} s]  {q.fig_desc}", fill=INK if q.main else MUTED,
                  font=font)
        qy += LINE
    return _row_height(v, th)


def contact_sheet(world: World, vdir: Path, ext: str, out: Path, families: int = 4, n_frames: int = 8) -> Path:
    """Draw the sheet for the first `families` families (test split first); write `out` atomically."""
    fonts = _fonts()
    fams = _pick_families(world, families)
    if not fams:
        raise ValueError("contact sheet: the world has no families")
    v0 = fams[0].videos[0]
    th, tw = v0.height * SCALE, v0.width * SCALE
    width = LABEL_W + n_frames * (tw + 2 * PAD)
    header = 3 * LINE + PAD
    height = header + sum(2 * LINE + PAD + sum(_row_height(v, th) for v in f.videos) for f in fams)
    img = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(img)
    cfg = world.config
    draw.text((PAD, PAD), f"synth world: {len(world.videos())} videos in {len(world.families)} families "
              f"(preset {cfg['preset']}, seed {cfg['seed']}, {v0.width}x{v0.height} at {v0.fps} fps)",
              fill=INK, font=fonts[2])
    draw.text((PAD, PAD + LINE + 4), "Each block is one family of near-duplicates sharing the main event; "
              "green frames lie inside the video's MAIN moment. Label: true frame time and the action under way.",
              fill=MUTED, font=fonts[1])
    y = header
    for fam in fams:
        main = next(q for q in fam.videos[0].queries if q.main)
        draw.line([(0, y), (width, y)], fill=INK, width=2)
        draw.text((PAD, y + 4), f"family {fam.split}/{fam.family:04d}: main moment \"{main.cog_desc}\" (coarse, "
                  f"same for all {len(fam.videos)} variants); context clause: {fam.context}", fill=INK, font=fonts[0])
        y += 2 * LINE + PAD
        for v in fam.videos:
            y += _draw_video(img, draw, v, vdir / f"{v.video_id}{ext}", y, n_frames, fonts)
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
    return out
