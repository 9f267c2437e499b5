"""The synthetic fine-grained VCMR world (`vsr1 synth`): families of near-duplicate procedurally drawn mp4s
with known event timelines, written in the raw VERIFIED layout (videos/ + FIG JSONL annotations).

    world.py   pure data: presets, families, timelines, captions   (sample_world, resolve, PRESETS)
    render.py  frames (numpy) and mp4 writing (PyAV, libx264)       (render_frames, write_video)
    build.py   the command: `vsr1 synth [--config F] [key=value ...]` (build, main)
    sheet.py   the contact sheet PNG for a person to look at         (contact_sheet)
"""
from videosearch_r1.synth.world import PRESETS, resolve, sample_world

__all__ = ["PRESETS", "resolve", "sample_world"]
