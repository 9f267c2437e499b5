"""The synthetic fine-grained VCMR world, as pure data: families of near-duplicate videos, event timelines
and captions. No pixels here (render.py draws a VideoSpec; build.py writes files).

    world = sample_world(resolve(cfg.synth))      # World: families -> VideoSpecs (timelines + queries)

A video: one object (shape, colour, size) in front of a wall (colour, texture), optionally beside an idle
companion object, doing a sequence of actions (enter / leave / move left or right / jump / spin / grow /
shrink / change colour), each over a time segment, with idle gaps between them.
A family: V videos that share the main event (its action; the queried moment) and differ from variant 0
in one or two details: object colour, size or shape, wall colour or texture, the companion, the colour
a recolouring turns to, or a neighbouring (secondary) event named in the query's context clause. So the
coarse caption of the main moment ("a shape jumps.") is the same for the whole family, and only the
fine details ("A small red triangle jumps in front of a blue striped wall.") single out the video.
Guarantees (checked, RuntimeError otherwise): within a family the main coarse captions are equal and
the main fine descriptions differ; within a split no two queries share a fine description.
Deterministic: family i of a split is drawn from SeedSequence([seed, i, attempt]) alone.
Ids are seed-unique, so two worlds never share a video id or a query id (the engine's training world
uses another seed than the benchmark): video `s{seed}-{split}{family:04d}v{variant}` (video_id), query
desc_id = seed * ID_STRIDE + row number within the split file (desc_id; seed >= 0).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from videosearch_r1.config import SynthConfig

# ids and presets live in presets.py (re-exported here: world.resolve, world.PRESETS, ...)
from videosearch_r1.synth.presets import ID_STRIDE, PRESETS, desc_id, resolve, video_id  # noqa: F401


# ----------------------------------------------------------------------------- vocabulary
# object colours (saturated) and wall colours (muted), RGB; render.py draws with these
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35), "green": (30, 165, 55), "blue": (35, 75, 225), "yellow": (240, 215, 35),
    "orange": (250, 135, 20), "purple": (135, 50, 195), "pink": (250, 125, 190), "cyan": (40, 205, 220),
    "white": (248, 248, 248), "black": (18, 18, 18),
}
WALL_COLOURS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128), "brown": (125, 85, 50), "blue": (85, 105, 170), "green": (85, 140, 90),
    "yellow": (190, 175, 85), "pink": (195, 140, 165), "purple": (120, 85, 150),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "ring", "cross")
SYMMETRIC = ("circle", "ring")  # a spin would be invisible
SIZES = ("small", "large")
TEXTURES = ("plain", "striped", "checkered", "dotted")
PHRASES = {
    "enter_left": "enters from the left", "enter_right": "enters from the right",
    "leave_left": "leaves to the left", "leave_right": "leaves to the right",
    "move_left": "moves to the left", "move_right": "moves to the right",
    "jump": "jumps", "spin": "spins", "grow": "grows", "shrink": "shrinks", "recolour": "changes colour to {arg}",
}
IN_PLACE = ("jump", "spin", "grow", "shrink")
KINDS = ("enter", "leave", "move", "jump", "spin", "grow", "shrink", "recolour")  # main-event kinds, uniform
DETAILS = ("colour", "size", "shape", "wall_colour", "texture", "companion", "target", "secondary")
SUBJECTS = ("a shape", "an object", "the shape", "the object")
OFF_LEFT, OFF_RIGHT = -0.15, 1.15  # x of an object just off screen (fraction of the width)
SEG_PERIOD = 8.0  # seconds of video per action segment, gaps included
MIN_CONTRAST = 95.0  # RGB distance between an object colour and the wall behind it


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    size: str  # "small" | "large" (the base size; grow/shrink return to it)


@dataclass(frozen=True)
class Wall:
    colour: str
    texture: str  # plain | striped | checkered | dotted


@dataclass(frozen=True)
class Segment:
    action: str  # a PHRASES key
    start: float  # seconds, one decimal
    end: float
    x0: float  # object centre x (fraction of the width) at start and end
    x1: float
    arg: str = ""  # recolour: the new colour


@dataclass(frozen=True)
class QuerySpec:
    segment: int  # index into VideoSpec.segments
    start: float
    end: float
    cog_desc: str
    fig_desc: str
    main: bool  # the family's main moment
    context: str  # "none" | "after" | "then": the neighbouring event the fine query names


@dataclass(frozen=True)
class VideoSpec:
    video_id: str
    family: int
    variant: int
    split: str
    duration: float  # num_frames / fps, the mp4's exact length
    num_frames: int
    fps: int
    width: int
    height: int
    seed: int  # render randomness (noise, jitter, texture layout)
    thing: Thing
    wall: Wall
    companion: Optional[Thing]
    companion_x: float
    y: float  # baseline y of the object centre (fraction of the height)
    x_start: float  # object x at t=0 (off screen when the first action is an enter)
    segments: tuple[Segment, ...]
    main: int  # index of the main segment
    differs: tuple[str, ...]  # details changed from variant 0
    queries: tuple[QuerySpec, ...]
    caption: str  # whole-video description (for inspection and caption training)


@dataclass
class Family:
    family: int
    split: str
    long: bool
    main_kind: str
    context: str  # "none" | "after" | "then": the clause the main fine query carries
    style: "Style"
    videos: list[VideoSpec] = field(default_factory=list)


@dataclass
class World:
    config: dict
    families: list[Family]
    dropped_queries: int  # other-moment queries not written because no unique fine description existed

    def videos(self) -> list[VideoSpec]:
        return [v for f in self.families for v in f.videos]


# ----------------------------------------------------------------------------- small helpers
def _pick(rng: np.random.Generator, seq: Sequence, p: Sequence[float] | None = None):
    if p is None:
        return seq[int(rng.integers(len(seq)))]
    w = np.asarray(p, dtype=float)
    return seq[int(rng.choice(len(seq), p=w / w.sum()))]


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def kind_of(action: str) -> str:
    return action.split("_")[0]


def phrase(seg: Segment) -> str:
    return PHRASES[seg.action].format(arg=seg.arg)


def wall_phrase(w: Wall) -> str:
    return f"plain {w.colour} wall" if w.texture == "plain" else f"{w.colour} {w.texture} wall"


def colour_at(thing: Thing, segments: Sequence[Segment], i: int) -> str:
    """The object's colour when segment i starts (recolourings before it applied)."""
    colour = thing.colour
    for seg in segments[:i]:
        if seg.action == "recolour":
            colour = seg.arg
    return colour


# ----------------------------------------------------------------------------- captions
@dataclass(frozen=True)
class Style:
    """How a family words its queries (shared by its variants, so only details differ)."""

    template: int  # 0: "... in front of a wall", 1: "In front of a wall, ...", 2: "... against a wall"
    subject: str  # coarse subject ("a shape")


def fine_desc(style: Style, thing: Thing, wall: Wall, companion: Optional[Thing],
              segments: Sequence[Segment], i: int, context: str) -> str:
    """The fine-grained query for segment i: object, action, companion, wall, optional context clause."""
    obj = article(f"{thing.size} {colour_at(thing, segments, i)} {thing.shape}")
    act = phrase(segments[i])
    if companion is not None:
        act += " next to " + article(f"{companion.colour} {companion.shape}")
    ctx = ""
    if context == "after":
        ctx = f", after it {phrase(segments[i - 1])}"
    elif context == "then":
        ctx = f", and then it {phrase(segments[i + 1])}"
    w = article(wall_phrase(wall))
    if style.template == 1:
        return f"In front of {w}, {obj} {act}{ctx}."
    where = "against" if style.template == 2 else "in front of"
    return f"{obj[0].upper()}{obj[1:]} {act} {where} {w}{ctx}."


def coarse_desc(style: Style, seg: Segment) -> str:
    """The coarse caption: who is generic, the action keeps its direction but not its colour."""
    act = "changes colour" if seg.action == "recolour" else phrase(seg)
    return f"{style.subject} {act}."


def video_caption(thing: Thing, wall: Wall, companion: Optional[Thing], segments: Sequence[Segment]) -> str:
    obj = f"{thing.size} {thing.colour} {thing.shape}"
    comp = f" next to {article(f'{companion.colour} {companion.shape}')}" if companion else ""
    acts = ", then it ".join(phrase(s) for s in segments)
    return f"{article(obj)[0].upper()}{article(obj)[1:]}{comp} in front of {article(wall_phrase(wall))}: it {acts}."


# ----------------------------------------------------------------------------- attributes
def _contrast_ok(colour: str, wall: Wall) -> bool:
    return math.dist(COLOURS[colour], WALL_COLOURS[wall.colour]) >= MIN_CONTRAST


def _valid(thing: Thing, wall: Wall, companion: Optional[Thing], actions: Sequence[tuple[str, str]]) -> bool:
    """A combination a person could read off the frames (contrast, visible spins, distinct objects)."""
    if not _contrast_ok(thing.colour, wall):
        return False
    if companion is not None and (not _contrast_ok(companion.colour, wall)
                                  or (companion.shape, companion.colour) == (thing.shape, thing.colour)):
        return False
    colour = thing.colour
    for action, arg in actions:
        if action == "spin" and thing.shape in SYMMETRIC:
            return False
        if action == "recolour":
            if arg == colour or not _contrast_ok(arg, wall):
                return False
            colour = arg
    return True


def _sample_thing(rng: np.random.Generator) -> Thing:
    return Thing(_pick(rng, SHAPES), _pick(rng, list(COLOURS)), _pick(rng, SIZES))


# ----------------------------------------------------------------------------- timelines
def _step(rng: np.random.Generator, visible: bool, x: float, shape: str, allow_recolour: bool,
          colour: str) -> tuple[str, str, float]:
    """One random action valid in the current state -> (action, arg, x after)."""
    if not visible:
        action = _pick(rng, ["enter_left", "enter_right"])
        return action, "", (_uniform(rng, 0.25, 0.6) if action == "enter_left" else _uniform(rng, 0.4, 0.75))
    options, weights = [], []
    for a in IN_PLACE:
        if a != "spin" or shape not in SYMMETRIC:
            options.append(a), weights.append(1.0)
    if x >= 0.4:
        options.append("move_left"), weights.append(1.0)
    if x <= 0.6:
        options.append("move_right"), weights.append(1.0)
    options += ["leave_left", "leave_right"]
    weights += [0.4, 0.4]
    if allow_recolour:
        options.append("recolour"), weights.append(0.8)
    action = _pick(rng, options, weights)
    if action == "recolour":
        return action, _pick(rng, [c for c in COLOURS if c != colour]), x
    if action == "move_left":
        return action, "", _uniform(rng, 0.15, x - 0.2)
    if action == "move_right":
        return action, "", _uniform(rng, x + 0.2, 0.85)
    if action.startswith("leave"):
        return action, "", OFF_LEFT if action == "leave_left" else OFF_RIGHT
    return action, "", x


def _sample_actions(rng: np.random.Generator, n: int, m: int, kind: str, shape: str, colour: str):
    """Actions of n segments with segment m of `kind` -> (actions [(action, arg)], [(x0, x1)] per segment)
    or None; x is the object's centre as a fraction of the width, off screen before an enter."""
    for _ in range(400):
        visible = bool(rng.random() < 0.65)
        x = _uniform(rng, 0.25, 0.75) if visible else 0.0
        actions, pos, c = [], [], colour
        for i in range(n):
            action, arg, x1 = _step(rng, visible, x, shape, i >= m, c)
            if not visible:
                x = OFF_LEFT if action == "enter_left" else OFF_RIGHT
            pos.append((x, x1))
            actions.append((action, arg))
            visible, x, c = not action.startswith("leave"), x1, (arg or c)
        if kind_of(actions[m][0]) == kind:
            return actions, pos
    return None


def _timings(rng: np.random.Generator, n: int, duration: float, fps: int) -> tuple[list[tuple[float, float]], int]:
    """n segments with idle gaps, scaled to fill `duration` -> ([(start, end)] one decimal, num_frames)."""
    lengths = [_uniform(rng, 3.0, 7.0) for _ in range(n)]
    gaps = [_uniform(rng, 0.5, 3.0)] + [_uniform(rng, 0.8, 3.5) for _ in range(n - 1)] + [_uniform(rng, 0.5, 3.0)]
    num_frames = max(2, round(duration * fps))
    scale = (num_frames / fps) / (sum(lengths) + sum(gaps))
    spans, t = [], gaps[0] * scale
    for i in range(n):
        start, end = round(t, 1), round(t + lengths[i] * scale, 1)
        spans.append((start, end))
        t += (lengths[i] + gaps[i + 1]) * scale
    return spans, num_frames


# ----------------------------------------------------------------------------- families
@dataclass
class _Draft:
    """One variant before timing: its details and action list."""

    thing: Thing
    wall: Wall
    companion: Optional[Thing]
    actions: list[tuple[str, str]]
    differs: tuple[str, ...] = ()


def _mutate(rng: np.random.Generator, d: _Draft, detail: str, m: int, context: str) -> _Draft:
    t, w, c, acts = d.thing, d.wall, d.companion, list(d.actions)
    if detail == "colour":
        t = dataclasses.replace(t, colour=_pick(rng, [x for x in COLOURS if x != t.colour]))
    elif detail == "size":
        t = dataclasses.replace(t, size="large" if t.size == "small" else "small")
    elif detail == "shape":
        t = dataclasses.replace(t, shape=_pick(rng, [x for x in SHAPES if x != t.shape]))
    elif detail == "wall_colour":
        w = dataclasses.replace(w, colour=_pick(rng, [x for x in WALL_COLOURS if x != w.colour]))
    elif detail == "texture":
        w = dataclasses.replace(w, texture=_pick(rng, [x for x in TEXTURES if x != w.texture]))
    elif detail == "companion":
        if rng.random() < 0.5:
            c = dataclasses.replace(c, colour=_pick(rng, [x for x in COLOURS if x != c.colour]))
        else:
            c = dataclasses.replace(c, shape=_pick(rng, [x for x in SHAPES if x != c.shape]))
    elif detail == "target":
        acts[m] = ("recolour", _pick(rng, [x for x in COLOURS if x != acts[m][1]]))
    elif detail == "secondary":
        j = m - 1 if context == "after" else m + 1
        acts[j] = (_pick(rng, [a for a in IN_PLACE if a != acts[j][0]]), "")
    return _Draft(t, w, c, acts, d.differs + (detail,))


def _details(base: _Draft, m: int, context: str) -> list[str]:
    """The details a variant of this family may change."""
    out = ["colour", "size", "shape", "wall_colour", "texture"]
    if base.companion is not None:
        out.append("companion")
    if base.actions[m][0] == "recolour":
        out.append("target")
    j = m - 1 if context == "after" else m + 1
    if context != "none" and base.actions[j][0] in IN_PLACE:
        out.append("secondary")
    return out


def _segments(d: _Draft, pos: list[tuple[float, float]], spans: list[tuple[float, float]]) -> tuple[Segment, ...]:
    return tuple(Segment(a, s, e, round(x0, 3), round(x1, 3), arg)
                 for (a, arg), (s, e), (x0, x1) in zip(d.actions, spans, pos))


def _draft_family(rng: np.random.Generator, s: SynthConfig, n: int):
    """Variant 0 and the family's shared structure -> (base draft, positions, main index, kind, context)."""
    kind = _pick(rng, KINDS)
    context = _pick(rng, ["none", "after", "then"], [0.5, 0.3, 0.2]) if n >= 2 else "none"
    lo, hi = (1 if context == "after" else 0), (n - 2 if context == "then" else n - 1)
    m = int(rng.integers(lo, hi + 1))
    thing = _sample_thing(rng)
    if kind == "spin" and thing.shape in SYMMETRIC:
        thing = dataclasses.replace(thing, shape=_pick(rng, [x for x in SHAPES if x not in SYMMETRIC]))
    wall = Wall(_pick(rng, list(WALL_COLOURS)), _pick(rng, TEXTURES))
    companion = None
    if rng.random() < s.companion_prob:
        companion = Thing(_pick(rng, SHAPES), _pick(rng, list(COLOURS)), "small")
    sampled = _sample_actions(rng, n, m, kind, thing.shape, thing.colour)
    if sampled is None:
        return None
    actions, pos = sampled
    base = _Draft(thing, wall, companion, actions)
    if not _valid(base.thing, base.wall, base.companion, base.actions):
        return None
    return base, pos, m, kind, context


def _main_desc(style: Style, d: _Draft, m: int, context: str) -> str:
    segs = [Segment(a, 0.0, 0.0, 0.0, 0.0, arg) for a, arg in d.actions]
    return fine_desc(style, d.thing, d.wall, d.companion, segs, m, context)


def _has_context(n: int, j: int, context: str) -> bool:
    return context == "none" or (context == "after" and j >= 1) or (context == "then" and j + 1 < n)


def unique_in_video(style: Style, thing: Thing, wall: Wall, companion: Optional[Thing],
                    segments: Sequence[Segment], i: int, context: str) -> bool:
    """True when no other segment of the video fits segment i's fine query (so the moment is unambiguous)."""
    desc = fine_desc(style, thing, wall, companion, segments, i, context)
    return all(j == i or not _has_context(len(segments), j, context)
               or fine_desc(style, thing, wall, companion, segments, j, context) != desc
               for j in range(len(segments)))


def _draft_ok(style: Style, d: _Draft, m: int, context: str) -> bool:
    segs = [Segment(a, 0.0, 0.0, 0.0, 0.0, arg) for a, arg in d.actions]
    return (_valid(d.thing, d.wall, d.companion, d.actions)
            and unique_in_video(style, d.thing, d.wall, d.companion, segs, m, context))


def _variants(rng: np.random.Generator, base: _Draft, style: Style, m: int, context: str,
              count: int) -> list[_Draft] | None:
    """variant 0 plus count-1 variants, each 1-2 details away from it, all main fine queries distinct."""
    if not _draft_ok(style, base, m, context):
        return None
    drafts, seen = [base], {_main_desc(style, base, m, context)}
    details = _details(base, m, context)
    for _ in range(count - 1):
        for _try in range(60):
            k = 1 if rng.random() < 0.7 or len(details) < 2 else 2
            chosen = [details[i] for i in sorted(rng.choice(len(details), size=k, replace=False))]
            d = base
            for detail in chosen:
                d = _mutate(rng, d, detail, m, context)
            desc = _main_desc(style, d, m, context)
            if desc not in seen and _draft_ok(style, d, m, context):
                drafts.append(d)
                seen.add(desc)
                break
        else:
            return None
    return drafts


def _timed(rng: np.random.Generator, s: SynthConfig, split: str, k: int, drafts: list[_Draft],
           pos: list[tuple[float, float]], m: int, duration: float,
           dur_range: tuple[float, float]) -> list[tuple[_Draft, VideoSpec]]:
    """Give every variant its own timing (length within +-8 % of the family's), layout and render seed."""
    out = []
    y = _uniform(rng, 0.52, 0.66)
    companion_x = _pick(rng, [0.12, 0.88])
    for v, d in enumerate(drafts):
        dur = min(max(duration * _uniform(rng, 0.92, 1.08), dur_range[0]), dur_range[1])
        spans, num_frames = _timings(rng, len(d.actions), dur, s.fps)
        segs = _segments(d, pos, spans)
        spec = VideoSpec(
            video_id=video_id(s.seed, split, k, v), family=k, variant=v, split=split, duration=num_frames / s.fps,
            num_frames=num_frames, fps=s.fps, width=s.width, height=s.height, seed=int(rng.integers(2**31)),
            thing=d.thing, wall=d.wall, companion=d.companion, companion_x=companion_x,
            y=round(y + _uniform(rng, -0.03, 0.03), 3), x_start=round(pos[0][0], 3), segments=segs, main=m,
            differs=d.differs, queries=(), caption=video_caption(d.thing, d.wall, d.companion, segs))
        out.append((d, spec))
    return out


def _queries(rng: np.random.Generator, style: Style, videos: list[VideoSpec], context: str, q: int,
             used: set[str]) -> tuple[list[VideoSpec], int]:
    """Main query of every variant, then up to q-1 other moments whose fine query is unique in the split.

    Returns the videos with queries attached and how many other moments were skipped for want of a
    unique fine description (the summary reports it)."""
    per_video: list[list[QuerySpec]] = []
    for v in videos:
        seg = v.segments[v.main]
        desc = fine_desc(style, v.thing, v.wall, v.companion, v.segments, v.main, context)
        per_video.append([QuerySpec(v.main, seg.start, seg.end, coarse_desc(style, seg), desc, True, context)])
        used.add(desc)
    skipped = 0
    for v, qs in zip(videos, per_video):
        others = [j for j in rng.permutation(len(v.segments)).tolist() if j != v.main]
        for j in others:
            if len(qs) >= q:
                break
            contexts = ["none"] + (["after"] if j >= 1 else []) + (["then"] if j + 1 < len(v.segments) else [])
            for ctx in contexts:
                desc = fine_desc(style, v.thing, v.wall, v.companion, v.segments, j, ctx)
                if desc not in used and unique_in_video(style, v.thing, v.wall, v.companion, v.segments, j, ctx):
                    seg = v.segments[j]
                    qs.append(QuerySpec(j, seg.start, seg.end, coarse_desc(style, seg), desc, False, ctx))
                    used.add(desc)
                    break
            else:
                skipped += 1
    return [dataclasses.replace(v, queries=tuple(qs)) for v, qs in zip(videos, per_video)], skipped


def check_family(fam: Family) -> None:
    """The family invariants: one main coarse caption, distinct main fine queries, each query's moment
    inside its video and the only moment there that fits the query."""
    mains = [next(q for q in v.queries if q.main) for v in fam.videos]
    if len({q.cog_desc for q in mains}) != 1:
        raise RuntimeError(f"family {fam.split}/{fam.family}: main coarse captions differ: "
                           f"{[q.cog_desc for q in mains]}")
    if len({q.fig_desc for q in mains}) != len(mains):
        raise RuntimeError(f"family {fam.split}/{fam.family}: two variants share a main fine query: "
                           f"{[q.fig_desc for q in mains]}")
    for v in fam.videos:
        for q in v.queries:
            if not 0 <= q.start < q.end <= v.duration:
                raise RuntimeError(f"video {v.video_id}: moment [{q.start}, {q.end}] outside [0, {v.duration}]")
            if not unique_in_video(fam.style, v.thing, v.wall, v.companion, v.segments, q.segment, q.context):
                raise RuntimeError(f"video {v.video_id}: query {q.fig_desc!r} fits more than one moment")


def _family(s: SynthConfig, split: str, k: int, is_long: bool, used: set[str]) -> tuple[Family, int]:
    """Family k of a split; redrawn (next attempt seed) until its main queries are new to the split."""
    dur_range = tuple(s.long_duration) if is_long else (s.min_duration, s.max_duration)
    for attempt in range(200):
        rng = np.random.default_rng([s.seed, _split_key(split), k, attempt])
        duration = _uniform(rng, *dur_range)
        n = max(1, round(duration / SEG_PERIOD))
        drafted = _draft_family(rng, s, n)
        if drafted is None:
            continue
        base, pos, m, kind, context = drafted
        style = Style(int(rng.integers(3)), _pick(rng, SUBJECTS))
        drafts = _variants(rng, base, style, m, context, s.variants_per_family)
        if drafts is None:
            continue
        timed = _timed(rng, s, split, k, drafts, pos, m, duration, dur_range)
        if any(_main_desc(style, d, m, context) in used for d, _ in timed):
            continue
        videos, skipped = _queries(rng, style, [v for _, v in timed], context, s.queries_per_video, used)
        fam = Family(k, split, is_long, kind, context, style, videos)
        check_family(fam)
        return fam, skipped
    raise RuntimeError(f"synth: could not draw family {split}/{k} with unique fine queries in 200 attempts")


def _split_key(split: str) -> int:
    return int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")


def sample_world(s: SynthConfig) -> World:
    """Every family of every split (s must be resolved); splits are disjoint in families."""
    families, skipped = [], 0
    for split, count in s.families.items():
        rng = np.random.default_rng([s.seed, _split_key(split), 2**20])
        long_ids = set(rng.permutation(count)[: round(s.long_fraction * count)].tolist())
        used: set[str] = set()
        for k in range(count):
            fam, n = _family(s, split, k, k in long_ids, used)
            families.append(fam)
            skipped += n
    return World(config=dataclasses.asdict(s), families=families, dropped_queries=skipped)


def world_json(world: World) -> dict:
    """The inspection file: config, families (with what each variant changed) and every video's timeline."""
    fams = [{"family": f.family, "split": f.split, "long": f.long, "main_kind": f.main_kind, "context": f.context,
             "style": dataclasses.asdict(f.style),
             "videos": [v.video_id for v in f.videos], "differs": {v.video_id: list(v.differs) for v in f.videos}}
            for f in world.families]
    videos = {v.video_id: dataclasses.asdict(v) for v in world.videos()}
    return {"config": world.config, "dropped_queries": world.dropped_queries, "families": fams, "videos": videos}
