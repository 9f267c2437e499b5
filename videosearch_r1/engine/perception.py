"""Perception pretraining of a Qwen3-VL vision tower on labelled stills of the synthetic world
(synth/stills.py), run by `vsr1 engine train` before the contrastive steps when
engine_train.perception_steps > 0; the base policy inherits the tower from the engine (train/base.py).

    vsr1 engine train engine_train.size=small engine_train.perception_steps=3000     # GPU: ~1-2 min
    vsr1 engine train engine_train.perception_steps=20 engine_train.perception_frames=256   # CPU smoke

Why (LOG.md, 2026-12-01): a real VLM's tower arrives pretrained; ours starts random, and contrastive
captions and answer tokens taught it colour and size but not shape (held-out shape answers 16.7 %, chance
12.5 %). Probed on rendered frames, shape sits in the few tokens that hold the object: a per-patch MLP with a
max pool learned it, a mean pool hid it, and the tower learned it slowly. So the supervision here is dense:
every merged token (the vectors the language model reads) names the shape, colour and size of the object
covering its cell, or "no object".

1. a pool of engine_train.perception_frames stills (seed engine_train.seed + PERCEPTION_SEED_OFFSET; drawn on
   synth.workers processes) and a held-out set of PERCEPTION_HELDOUT more; kept on the training device
2. each step: perception_batch stills, each shown as a clip of 2 identical frames (one temporal patch), pixels
   made on the device by the processor's own normalise/patchify; the tower (blocks + merger); a linear head
   per attribute on every merged token; cross-entropy per attribute (the "no object" class weighted
   NO_OBJECT_WEIGHT: most cells are wall); AdamW at perception_lr, linear warm-up over a tenth of the steps,
   cosine to a tenth; gradient norm clipped at 1; bf16 autocast on CUDA
3. held-out accuracy before and after: per attribute, over the cells an object covers, the argmax over that
   attribute's object classes (chance: 1 / classes); "object" is the share of cells whose no-object call is
   right. The heads are dropped; the tower keeps what it learned.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

PERCEPTION_SEED_OFFSET = 15485863  # the stills never share a seed with a world
PERCEPTION_HELDOUT = 512
NO_OBJECT_WEIGHT = 0.1


def stills_pixels(video_processor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_values_videos, video_grid_thw) for stills [B, H, W, 3] uint8 (on any device), each a clip of
    temporal_patch_size identical frames: the rows video_pixels would make for each, concatenated."""
    from videosearch_r1.models.qwen3vl import clips_pixels

    vp = video_processor
    b, h, w = frames.shape[:3]
    pix = clips_pixels(vp, frames[:, None].expand(b, vp.temporal_patch_size, h, w, 3))
    grid = torch.tensor([[1, h // vp.patch_size, w // vp.patch_size]] * b, device=frames.device)
    return pix, grid


def merged_tokens(model, video_processor, frames: torch.Tensor) -> torch.Tensor:
    """The tower's merged tokens for stills [B, H, W, 3]: [B, H/cell, W/cell, D] (raster order)."""
    pix, grid = stills_pixels(video_processor, frames)
    out = model.visual(pix.to(model.visual.dtype), grid_thw=grid)
    merged = out.pooler_output if getattr(out, "pooler_output", None) is not None else out[0]
    cell = video_processor.patch_size * video_processor.merge_size
    return merged.reshape(frames.shape[0], frames.shape[1] // cell, frames.shape[2] // cell, -1)


def make_heads(width: int, device) -> torch.nn.ModuleDict:
    from videosearch_r1.synth.stills import ATTRIBUTES, CLASSES

    return torch.nn.ModuleDict({a: torch.nn.Linear(width, len(CLASSES[a]) + 1) for a in ATTRIBUTES}).to(device)


def losses(heads, tokens: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy per attribute over every cell: tokens [B, gh, gw, D], labels [B, gh, gw, 3]."""
    from videosearch_r1.synth.stills import ATTRIBUTES, IGNORE

    out = {}
    for i, a in enumerate(ATTRIBUTES):
        logits = heads[a](tokens.float()).flatten(0, 2)
        weight = torch.ones(logits.shape[-1], device=logits.device)
        weight[0] = NO_OBJECT_WEIGHT
        out[a] = F.cross_entropy(logits, labels[..., i].flatten(), weight=weight, ignore_index=IGNORE)
    return out


@torch.no_grad()
def accuracy(model, vp, heads, frames: torch.Tensor, labels: torch.Tensor, batch: int = 128) -> dict:
    """Held-out accuracy in % (module doc, step 3)."""
    from videosearch_r1.synth.stills import ATTRIBUTES, IGNORE

    hits = {a: [0, 0] for a in (*ATTRIBUTES, "object")}
    for s in range(0, len(frames), batch):
        tokens = merged_tokens(model, vp, frames[s:s + batch]).float()
        lab = labels[s:s + batch]
        covered = lab[..., 0] > 0
        hits["object"][0] += int(((heads["shape"](tokens).argmax(-1) > 0) == covered).sum())
        hits["object"][1] += covered.numel()
        for i, a in enumerate(ATTRIBUTES):
            sel = covered & (lab[..., i] != IGNORE)
            pred = heads[a](tokens[sel])[:, 1:].argmax(-1) + 1
            hits[a][0] += int((pred == lab[..., i][sel]).sum())
            hits[a][1] += int(sel.sum())
    return {a: round(100.0 * h / max(1, n), 1) for a, (h, n) in hits.items()}


def pretrain(cfg, embedder, device: str, width: int, height: int):
    """Steps 1-3 of the module doc on embedder.model's tower, in place; returns (summary, Check): check() is
    the held-out accuracy of the same heads on the tower as it is when called."""
    from videosearch_r1.synth.stills import render_stills
    from videosearch_r1.utils import progress

    tc = cfg.engine_train
    for name in ("perception_frames", "perception_batch"):
        if getattr(tc, name) < 1:
            raise ValueError(f"engine_train.{name} must be >= 1 with perception_steps > 0, got {getattr(tc, name)}")
    if tc.perception_lr <= 0:
        raise ValueError(f"engine_train.perception_lr must be > 0, got {tc.perception_lr}")
    model, vp = embedder.model, embedder.processor.video_processor
    cell = vp.patch_size * vp.merge_size
    t0 = time.time()
    seed = tc.seed + PERCEPTION_SEED_OFFSET
    workers = max(1, int(cfg.synth.workers or 1))
    frames, labels = render_stills(seed, tc.perception_frames + PERCEPTION_HELDOUT, width, height, cell, workers)
    frames, labels = torch.from_numpy(frames).to(device), torch.from_numpy(labels).to(device)
    test_x, test_y = frames[-PERCEPTION_HELDOUT:], labels[-PERCEPTION_HELDOUT:]
    frames, labels = frames[:-PERCEPTION_HELDOUT], labels[:-PERCEPTION_HELDOUT]
    render_s = time.time() - t0
    heads = make_heads(model.config.text_config.hidden_size, device)
    params = [*model.visual.parameters(), *heads.parameters()]
    was_training = model.training
    model.eval()  # dropout-free either way; eval for the before-check
    before = accuracy(model, vp, heads, test_x, test_y)
    model.train()
    opt = torch.optim.AdamW(params, lr=tc.perception_lr, weight_decay=0.01, fused=device.startswith("cuda"))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    steps, warm = tc.perception_steps, max(1, tc.perception_steps // 10)
    bs = min(tc.perception_batch, len(frames))
    log = []
    bar = progress(range(steps), desc="perception", unit="step")
    for step in bar:
        p = min(1.0, (step + 1) / warm)
        if step >= warm:
            q = (step - warm) / max(1, steps - warm)
            p = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * q))
        for g in opt.param_groups:
            g["lr"] = tc.perception_lr * p
        idx = torch.randint(len(frames), (bs,), generator=gen).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            tokens = merged_tokens(model, vp, frames[idx])
        parts = losses(heads, tokens, labels[idx])
        loss = sum(parts.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            log.append({"step": step + 1, "loss": round(float(loss.detach()), 4),
                        **{a: round(float(v.detach()), 4) for a, v in parts.items()}})
            bar.set_postfix(loss=f"{log[-1]['loss']:.3f}")
    bar.close()
    model.eval()
    after = accuracy(model, vp, heads, test_x, test_y)
    model.train(was_training)
    summary = {"steps": steps, "frames": len(frames), "heldout": len(test_x), "size": [width, height],
               "render_seconds": round(render_s, 1), "seconds": round(time.time() - t0, 1),
               "heldout_before": before, "heldout_after": after, "log": log}
    print(f"engine train: perception pretraining {steps} steps in {summary['seconds']} s: held-out accuracy "
          + ", ".join(f"{a} {before[a]} -> {after[a]} %" for a in after), flush=True)
    return summary, Check(model, vp, heads, test_x, test_y)


class Check:
    """check(): the held-out accuracy of the pretraining's heads on the tower as it is when called (after the
    contrastive steps: how much of the perception the engine kept). state() / from_state(): what a resumed
    `vsr1 engine train` needs to make the same check (engine/resume.py)."""

    def __init__(self, model, vp, heads, test_x: torch.Tensor, test_y: torch.Tensor):
        self.model, self.vp, self.heads, self.test_x, self.test_y = model, vp, heads, test_x, test_y

    def __call__(self) -> dict:
        training = self.model.training
        self.model.eval()
        try:
            return accuracy(self.model, self.vp, self.heads, self.test_x, self.test_y)
        finally:
            self.model.train(training)

    def state(self) -> dict:
        return {"heads": self.heads.state_dict(), "test_x": self.test_x.cpu(), "test_y": self.test_y.cpu()}

    @classmethod
    def from_state(cls, model, vp, state: dict, device: str) -> "Check":
        heads = make_heads(model.config.text_config.hidden_size, device)
        heads.load_state_dict(state["heads"])
        return cls(model, vp, heads, state["test_x"].to(device), state["test_y"].to(device))
