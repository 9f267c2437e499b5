"""Labelled still frames of the synthetic world, for perception pretraining of a vision tower
(engine/perception.py): the world's own wall, shapes, colours, sizes, jitter and noise (synth/render.py),
one main object at a random place (any shape, colour, size; rotated half the time, as a spin shows it;
scaled by up to 10 %) and, half the time, a small companion at the companion's height; with, per cell of
a grid (the tower's merged tokens: 32x32 pixels for patch 16 and a 2x2 merge), which object covers it.

    frames, labels = sample_stills(seed=0, n=256, width=192, height=128, cell=32)
    frames: [n, H, W, 3] uint8    labels: [n, H // cell, W // cell, 3] int64 (shape, colour, size)

A label is 0 where no object covers the cell, 1 + the class index (CLASSES) where one does (the main object
wins where both do), IGNORE for the companion's size (its radius is neither size). A cell is covered by an
object when its centre lies within the object's radius of the object's centre, or when it holds that centre.
One seed gives the same frames. `render_stills` spreads the drawing over processes.
"""
from __future__ import annotations

import math
import multiprocessing as mp
from types import SimpleNamespace

import numpy as np

from videosearch_r1.synth import render
from videosearch_r1.synth.world import COLOURS, SHAPES, SIZES, SYMMETRIC, TEXTURES, WALL_COLOURS, Wall

ATTRIBUTES = ("shape", "colour", "size")
CLASSES = {"shape": tuple(SHAPES), "colour": tuple(COLOURS), "size": tuple(SIZES)}
IGNORE = -100


def _cover(labels: np.ndarray, cx: float, cy: float, r: float, values: tuple[int, int, int], cell: int) -> None:
    """Write `values` into the cells of `labels` [gh, gw, 3] that the object at (cx, cy) of radius r covers."""
    gh, gw = labels.shape[:2]
    centres_y = (np.arange(gh) + 0.5) * cell
    centres_x = (np.arange(gw) + 0.5) * cell
    near = (centres_y[:, None] - cy) ** 2 + (centres_x[None, :] - cx) ** 2 <= r * r
    near[min(gh - 1, max(0, int(cy // cell))), min(gw - 1, max(0, int(cx // cell)))] = True
    labels[near] = values


def _one(rng: np.random.Generator, width: int, height: int, cell: int, noise: float):
    wall = Wall(list(WALL_COLOURS)[rng.integers(len(WALL_COLOURS))], TEXTURES[rng.integers(len(TEXTURES))])
    img = render.background(SimpleNamespace(width=width, height=height, wall=wall), rng)
    img *= np.float32(1.0 + rng.normal(0, 0.012))
    labels = np.zeros((height // cell, width // cell, 3), dtype=np.int64)
    if rng.random() < 0.5:  # the companion: small, idle, near the top
        shape, colour = SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))]
        r = render.COMPANION_RADIUS * height
        cx, cy = rng.uniform(r, width - r), render.COMPANION_Y * height
        render.draw(img, shape, cx, cy, r, 0.0, np.array(COLOURS[colour], dtype=np.float32))
        _cover(labels, cx, cy, r, (SHAPES.index(shape) + 1, list(COLOURS).index(colour) + 1, IGNORE), cell)
    shape, colour = SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))]
    size = SIZES[rng.integers(len(SIZES))]
    r = render.RADIUS[size] * height * rng.uniform(0.9, 1.1)
    cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
    angle = rng.uniform(0, 2 * math.pi) if shape not in SYMMETRIC and rng.random() < 0.5 else 0.0
    render.draw(img, shape, cx + rng.normal(0, 0.3), cy + rng.normal(0, 0.3), r, angle,
                np.array(COLOURS[colour], dtype=np.float32))
    _cover(labels, cx, cy, r, (SHAPES.index(shape) + 1, list(COLOURS).index(colour) + 1, SIZES.index(size) + 1),
           cell)
    img += rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), labels


def sample_stills(seed: int, n: int, width: int, height: int, cell: int, noise: float = 4.0):
    """(frames [n, H, W, 3] uint8, labels [n, H // cell, W // cell, 3] int64), see the module doc."""
    if width % cell or height % cell:
        raise ValueError(f"stills: {width}x{height} is not a whole number of {cell}-pixel cells")
    rng = np.random.default_rng(seed)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    labels = np.empty((n, height // cell, width // cell, 3), dtype=np.int64)
    for i in range(n):
        frames[i], labels[i] = _one(rng, width, height, cell, noise)
    return frames, labels


def _chunk(args):
    return sample_stills(*args)


def render_stills(seed: int, n: int, width: int, height: int, cell: int, workers: int = 1, chunk: int = 512):
    """sample_stills over chunks of `chunk` frames (chunk k seeded seed * 1_000_003 + k), in `workers`
    spawned processes when > 1; the same frames for any number of workers."""
    jobs = [(seed * 1_000_003 + k, min(chunk, n - start), width, height, cell)
            for k, start in enumerate(range(0, n, chunk))]
    if workers <= 1 or len(jobs) <= 1:
        parts = [_chunk(j) for j in jobs]
    else:
        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            parts = pool.map(_chunk, jobs)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
