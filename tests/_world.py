"""Shared set-up for the agent tests (test_loop, test_infer, test_report), built once per session.

`world()` builds, in a fresh temporary workspace: the tiny synthetic world (`vsr1 synth
synth.preset=tiny`), a tiny random embedder checkpoint at the default engine path, the test-split index
(`vsr1 index synth --split test`) and a tiny random policy checkpoint. `engine()` / `policy()` load
them once. `scripted(policy, fn)` replaces a policy's generate with scripted outputs: fn(query text,
video id, call number of that query) -> output text; everything else (tokenizer, ids, the SQR rollout
from prompt + output) stays real.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, NamedTuple

import videosearch_r1  # noqa: F401  (torchvision shim before transformers)
from videosearch_r1 import cli
from videosearch_r1.config import Config, load_config

MATCH = "<think>It matches.</think> <answer>matched</answer> <start>{s}</start> <end>{e}</end> <REFINE>"
NOT_MATCH = "<think>Wrong colour.</think> <answer>not_matched</answer> <REFINE>"
NOT_MATCH_NO_REFINE = "<think>Wrong colour.</think> <answer>not_matched</answer>"
GARBAGE = "the circle is red"
HQR_NOT_MATCH = "<think>Wrong wall.</think> <answer>not_matched</answer> <query>{q}</query>"


class World(NamedTuple):
    workspace: Path
    policy_path: Path

    def cfg(self, *overrides: str) -> Config:
        return load_config(None, [f"workspace={self.workspace}", "dataset=synth", "split=test", *overrides])


@functools.lru_cache(maxsize=None)
def world() -> World:
    from videosearch_r1.models.tiny import make_tiny_checkpoint

    ws = Path(tempfile.mkdtemp(prefix="vsr1-agent-world-"))
    atexit.register(shutil.rmtree, ws, ignore_errors=True)
    common = [f"workspace={ws}", "synth.preset=tiny"]
    assert cli.main(["synth", *common]) == 0
    cfg = load_config(None, common)
    vcfg = cfg.video_cfg("synth")
    make_tiny_checkpoint(cfg.engine_model(), kind="embedder", video_cfg=vcfg, seed=1)
    assert cli.main(["index", "synth", "--split", "test", *common]) == 0
    policy_path = make_tiny_checkpoint(ws / "models" / "tiny-policy", kind="policy", video_cfg=vcfg, seed=2)
    return World(ws, policy_path)


@functools.lru_cache(maxsize=None)
def split():
    from videosearch_r1.data.fig import load_split

    return load_split(world().cfg(), "synth", "test")


@functools.lru_cache(maxsize=None)
def engine():
    from videosearch_r1.agent.infer import load_engine

    return load_engine(world().cfg(), "synth", "test")


def policy(nonzero_latents: bool = True):
    """A fresh tiny policy (own object: tests patch its generate). Its SQR readout is randomised so
    latents are not all zero (the zero-initialised readout of an untrained policy gives zero latents)."""
    import torch

    from videosearch_r1.agent.policy import Policy

    p = Policy.from_pretrained(str(world().policy_path), embedder_hidden=engine().embedder.hidden_size)
    if nonzero_latents:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            w = p.sqr.readout[3].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.5)
    return p


def damaged_root(tmp_path: Path, truncate=(), drop=()) -> Path:
    """A dataset root beside the world's: every file linked, except the videos in `truncate` (the first half
    of their bytes: a real, damaged mp4) and in `drop` (missing). Use as datasets.synth.root=..."""
    import os

    src = world().cfg().dataset_root("synth")
    root = Path(tmp_path) / "damaged-raw"
    (root / "videos").mkdir(parents=True)
    for p in src.iterdir():
        if p.name != "videos":
            os.symlink(p, root / p.name)
    for p in (src / "videos").iterdir():
        if p.stem in truncate:
            data = p.read_bytes()
            (root / "videos" / p.name).write_bytes(data[: len(data) // 2])
        elif p.stem not in drop:
            os.symlink(p, root / "videos" / p.name)
    return root


def clip_fn(cfg=None):
    from videosearch_r1.video.decode import load_clip

    cfg = cfg or world().cfg()
    return lambda v: load_clip(cfg, "synth", v)


def scripted(pol, fn: Callable[[str, str, int], str]) -> list[tuple[int, str]]:
    """Patch pol.generate: output = fn(query, video_id, k) with k = 0, 1, ... per query. Returns the
    list of (batch size, method) of the generate calls made (grows as the loop runs)."""
    from videosearch_r1.agent.policy import Generation

    tok = pol.processor.tokenizer
    seen: Counter = Counter()
    batches: list[int] = []

    def generate(queries, clips, max_new_tokens=256, temperature=0.0, method="sqr", **kw):
        texts = []
        for q, c in zip(queries, clips):
            texts.append(fn(q, Path(c.info.path).stem, seen[q]))
            seen[q] += 1
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        batches.append((len(texts), method))
        return Generation(texts, ids, [len(i) for i in ids], [pol.refine_token_id in i for i in ids], 0, None)

    pol.generate = generate
    return batches


def forced(pol, fn: Callable[[str, str, int], str]) -> None:
    """Script outputs through the REAL Policy.generate (KV cache, kept state for the SQR rollout):
    the lm_head is replaced by one that emits fn(query, video_id, k)'s token ids, then <|im_end|>."""
    import torch
    from torch import nn

    tok = pol.processor.tokenizer
    head = pol.model.lm_head
    eos = pol.eos_token_ids[0]
    seen: Counter = Counter()

    class ForcedHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = head.weight  # device / dtype of the policy are read from here
            self.rows: list[list[int]] = []
            self.step = 0

        def forward(self, h):  # [B, H] -> [B, V]: a one-hot at this step's scripted token
            out = torch.full((h.shape[0], self.weight.shape[0]), -1e4, dtype=h.dtype, device=h.device)
            for b, ids in enumerate(self.rows):
                out[b, ids[self.step] if self.step < len(ids) else eos] = 0.0
            self.step += 1
            return out

    forced_head = ForcedHead()
    pol.model.lm_head = forced_head
    real_generate = pol.generate

    def generate(queries, clips, **kw):
        forced_head.rows, forced_head.step = [], 0
        for q, c in zip(queries, clips):
            forced_head.rows.append(tok(fn(q, Path(c.info.path).stem, seen[q]), add_special_tokens=False)["input_ids"])
            seen[q] += 1
        return real_generate(queries, clips, **kw)

    pol.generate = generate
