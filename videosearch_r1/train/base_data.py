"""Rows for base-policy pretraining: generic tasks about the synthetic world's videos, from their known
timelines (`vsr1 train base` step 1; train/base.py runs it). Never verification or refinement.

    wcfg, dataset, world = base_world(cfg)                     # builds <workspace>/data/synth-base/raw
    rows, counts = task_rows(world, cfg.base, wcfg.video_cfg(dataset), dataset)

Tasks (kind="task": the instruction is the row's "query", prompts.build_task_messages renders it):
  describe   "Describe what happens in the video, with the time of each event."
             -> "A small red triangle next to a green circle, in front of a blue striped wall.
                 1.2 - 5.3 s: it enters from the left. 6.0 - 9.9 s: it jumps."
  caption    "What happens from 6.0 to 9.9 s?" -> the moment's fine description (world.fine_desc)
  ground     'When does this happen: "A small red triangle jumps in front of ..."?'
             -> "<start>6.0</start> <end>9.9</end>" (the span grammar the agent uses later); only
             moments whose description fits no other moment of the video (world.unique_in_video)
  attribute  "What colour / shape / size is the main object at 7.0 s?" -> "red" / "triangle" / "small"
             asked at a sampled frame time where the object is fully in view and its colour, size and
             position are steady for +-1 s (render.object_state), so the answer is on screen
  confirm    "Is the main object at 7.0 s a small pink triangle in front of a blue striped wall?"
             -> "Yes: it is a small pink triangle in front of a blue striped wall." or, half the time, with
             one detail (size / colour / shape / wall) changed in the question: "No: it is a small red
             triangle in front of a blue striped wall, not a small pink triangle." Generic yes/no VQA about
             one frame (what an instruction-tuned VLM has seen), not the agent's verification of a query: it
             makes the policy read a detail out of its prompt and set it against what it sees, which the
             other tasks never ask (the fifth GPU run's checklist traces copied the seen detail instead)
Each video gives base.tasks[task] rows of each task (drawn without repeats where it can; a task with
no valid item in a video is counted in `counts["unavailable"]`). Row ids: "<video>:<task>:<k>".
Deterministic: the rng of a video is seeded by (base.seed, its id).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
from pathlib import Path

import numpy as np

from videosearch_r1.agent.prompts import format_seconds
from videosearch_r1.train.rows import TrainRow

TASKS = ("describe", "caption", "ground", "attribute", "confirm")  # new tasks go last (row draws)
BASE_WORLD = "synth-base"
BASE_WORLD_SEED_OFFSET = 104729  # never the benchmark's seed, nor the engine world's (+7919)
DESCRIBE = "Describe what happens in the video, with the time of each event."
ATTRIBUTES = ("colour", "shape", "size")
STEADY = 1.0  # seconds either side of an attribute question's time where nothing may change
CONFIRM_DETAILS = ("size", "colour", "shape", "wall")  # what a "No" question changes (one of them)


# ----------------------------------------------------------------------------- the pretraining world
def base_world(cfg):
    """(config, dataset name, World) of the pretraining world: the benchmark's synth preset and video
    budget, seed synth.seed + 104729, only a train split of base.world_families families, at
    <workspace>/data/synth-base/raw (built or completed here; resumable like `vsr1 synth`)."""
    from videosearch_r1.synth.build import build
    from videosearch_r1.synth.world import resolve, sample_world

    if cfg.base.world_families < 1:
        raise ValueError(f"base.world_families must be >= 1, got {cfg.base.world_families}")
    base = cfg.dataset_cfg("synth")
    root = Path(cfg.workspace).expanduser() / "data" / BASE_WORLD / "raw"
    wcfg = copy.deepcopy(cfg)
    wcfg.datasets["synth"] = dataclasses.replace(base, root=str(root))
    wcfg.synth.families = {split: (cfg.base.world_families if split == "train" else 0) for split in base.splits}
    wcfg.synth.seed = cfg.synth.seed + BASE_WORLD_SEED_OFFSET
    print(build(wcfg).format(), flush=True)
    wcfg.datasets[BASE_WORLD] = wcfg.datasets["synth"]
    return wcfg, BASE_WORLD, sample_world(resolve(wcfg.synth))


# ----------------------------------------------------------------------------- answers from timelines
def describe_target(v) -> str:
    """The whole video: the object (+ companion) and wall, then every event with its times."""
    from videosearch_r1.synth.world import phrase, wall_phrase

    obj = _a(f"{v.thing.size} {v.thing.colour} {v.thing.shape}")
    comp = f" next to {_a(f'{v.companion.colour} {v.companion.shape}')}" if v.companion else ""
    head = f"{obj[0].upper()}{obj[1:]}{comp}, in front of {_a(wall_phrase(v.wall))}."
    events = [f"{format_seconds(s.start)} - {format_seconds(s.end)} s: it {phrase(s)}." for s in v.segments]
    return " ".join([head] + events)


def _a(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def span_target(start: float, end: float) -> str:
    return f"<start>{format_seconds(start)}</start> <end>{format_seconds(end)}</end>"


def _colour_name(rgb) -> str | None:
    from videosearch_r1.synth.world import COLOURS

    for name, ref in COLOURS.items():
        if float(np.abs(np.asarray(rgb, dtype=np.float32) - np.asarray(ref, dtype=np.float32)).max()) < 0.5:
            return name
    return None  # mid-recolour


def steady_attributes(v, t: float) -> dict | None:
    """{"colour", "shape", "size"} of the main object at time t when it is fully in view and nothing
    about it changes within +-STEADY s (sampled every 0.25 s), else None."""
    from videosearch_r1.synth.render import RADIUS, object_state

    if t - STEADY < 0 or t + STEADY > v.duration:
        return None
    states = [object_state(v, float(x)) for x in np.arange(t - STEADY, t + STEADY + 1e-9, 0.25)]
    base_r = RADIUS[v.thing.size] * v.height
    names = set()
    for s in states:
        if abs(s.radius - base_r) > 1e-6 or s.x - s.radius * 1.45 < 0 or s.x + s.radius * 1.45 > v.width:
            return None
        names.add(_colour_name(s.rgb))
    if len(names) != 1 or None in names:
        return None
    return {"colour": names.pop(), "shape": v.thing.shape, "size": v.thing.size}


def confirm_item(attrs: dict, wall, at: str, change: str | None, rng: np.random.Generator) -> tuple[str, str, dict]:
    """One yes/no question about the object at time `at` (attrs: steady_attributes) and the wall; `change`
    (one of CONFIRM_DETAILS) is the detail the question gets wrong, None for a true question."""
    from videosearch_r1.synth.world import COLOURS, SHAPES, SIZES, TEXTURES, WALL_COLOURS, Wall, wall_phrase

    def other(values, current):
        return str(rng.choice([x for x in values if x != current]))

    asked, asked_wall = dict(attrs), wall
    if change == "wall":
        asked_wall = (Wall(other(WALL_COLOURS, wall.colour), wall.texture) if rng.random() < 0.5
                      else Wall(wall.colour, other(TEXTURES, wall.texture)))
    elif change is not None:
        asked[change] = other({"size": SIZES, "colour": COLOURS, "shape": SHAPES}[change], attrs[change])
    obj = _a(f"{attrs['size']} {attrs['colour']} {attrs['shape']}")
    obj_q = _a(f"{asked['size']} {asked['colour']} {asked['shape']}")
    wall_t, wall_q = _a(wall_phrase(wall)), _a(wall_phrase(asked_wall))
    question = f"Is the main object at {at} s {obj_q} in front of {wall_q}?"
    seen = f"it is {obj} in front of {wall_t}"
    if change is None:
        return question, f"Yes: {seen}.", {"answer": "yes", "detail": "none"}
    return question, f"No: {seen}, not {wall_q if change == 'wall' else obj_q}.", {"answer": "no", "detail": change}


# ----------------------------------------------------------------------------- rows of one video
def _rng(seed: int, video_id: str) -> np.random.Generator:
    h = int.from_bytes(hashlib.sha1(video_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, h])


def steady_times(v, frame_times: np.ndarray) -> list[tuple[float, dict]]:
    """(time rounded to 0.1 s, steady_attributes) at the frame times where the main object is steady."""
    return [(round(float(t), 1), a) for t in frame_times if (a := steady_attributes(v, float(t))) is not None]


def _items(task: str, v, style, steady, rng: np.random.Generator) -> list[tuple[str, str, dict]]:
    """Every (instruction, target, meta) a task can ask about video v (`steady`: a call giving steady_times,
    computed once per video; confirm: a true and a false question per steady time, the false one's changed
    detail drawn from rng)."""
    from videosearch_r1.synth.world import fine_desc, unique_in_video

    segs = v.segments
    if task == "describe":
        return [(DESCRIBE, describe_target(v), {})]
    if task == "caption":
        return [(f"What happens from {format_seconds(s.start)} to {format_seconds(s.end)} s?",
                 fine_desc(style, v.thing, v.wall, v.companion, segs, i, "none"), {"segment": i})
                for i, s in enumerate(segs)]
    if task == "ground":
        out = []
        for i, s in enumerate(segs):
            if unique_in_video(style, v.thing, v.wall, v.companion, segs, i, "none"):
                desc = fine_desc(style, v.thing, v.wall, v.companion, segs, i, "none")
                out.append((f'When does this happen: "{desc}"?', span_target(s.start, s.end),
                            {"segment": i, "gt_span": [s.start, s.end]}))
        return out
    if task == "attribute":
        return [(f"What {a} is the main object at {format_seconds(t)} s?", attrs[a], {"attribute": a, "time": t})
                for t, attrs in steady() for a in ATTRIBUTES]
    if task == "confirm":
        out = []
        for t, attrs in steady():
            for change in (None, str(rng.choice(CONFIRM_DETAILS))):
                q, target, meta = confirm_item(attrs, v.wall, format_seconds(t), change, rng)
                out.append((q, target, {**meta, "time": t}))
        return out
    raise ValueError(f"base.tasks: unknown task {task!r}; known: {TASKS}")


def video_rows(v, style, tasks: dict[str, int], vcfg, dataset: str, seed: int, counts: dict) -> list[TrainRow]:
    """Up to tasks[task] rows of each task for one video (see the module docstring)."""
    from videosearch_r1.video.decode import sample_times

    frame_times = sample_times(v.duration, vcfg.fps, vcfg.max_frames, vcfg.min_frames)
    steady = functools.cache(lambda: steady_times(v, frame_times))  # attribute and confirm ask at the same times
    rng = _rng(seed, v.video_id)
    rows = []
    for task in TASKS:
        n = int(tasks.get(task, 0))
        if n <= 0:
            continue
        items = _items(task, v, style, steady, rng)
        if not items:
            counts["unavailable"][task] = counts["unavailable"].get(task, 0) + n
            continue
        pick = rng.choice(len(items), size=n, replace=len(items) < n)
        for k, j in enumerate(pick.tolist()):
            instr, target, meta = items[j]
            rows.append(TrainRow(id=f"{v.video_id}:{task}:{k}", dataset=dataset, split="train", video=v.video_id,
                                 kind="task", query=instr, target=target,
                                 meta={"task": task, "source": "synth-timeline", **meta}))
        counts["rows"][task] = counts["rows"].get(task, 0) + n
    return rows


def task_rows(world, bc, vcfg, dataset: str) -> tuple[list[TrainRow], dict]:
    """Rows of every video of the world's train families -> (rows, {"rows": per task, "unavailable": ...})."""
    from videosearch_r1.utils import progress

    unknown = set(bc.tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"base.tasks: unknown task(s) {sorted(unknown)}; known: {TASKS}")
    counts: dict = {"rows": {}, "unavailable": {}, "videos": 0}
    rows = []
    train = [f for f in world.families if f.split == "train"]
    bar = progress(total=sum(len(f.videos) for f in train), desc="task rows", unit="video")
    for fam in train:
        for v in fam.videos:
            rows += video_rows(v, fam.style, bc.tasks, vcfg, dataset, bc.seed, counts)
            counts["videos"] += 1
            bar.update(1)
    bar.close()
    return rows, counts
