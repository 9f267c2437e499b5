"""`vsr1 engine train`: contrastive training of the synthetic search engine (a small Qwen3-VL embedder).

    vsr1 engine train [--config F] [engine_train.steps=300 engine_train.size=small ...]
    vsr1 engine train engine_train.size=tiny engine_train.lr=1e-3     # the measured CPU recipe (below)

Recipes are chosen on the VAL split and the test split is reported once, for the chosen recipe
(docs/results.md; selection rule in LOG.md, 2026-12-01). On val (40 videos, 80 queries; band 25-60 %
VR@1): fine_caption_prob 0.5 / 300 steps (the old default, picked on test figures in 2026-11) 63.8 %,
fine_caption_prob 0.25 / 300 steps 47.5 %, 0.5 / 150 steps 43.8 %; chosen and now the default:
fine_caption_prob 0.25 (size tiny, lr 1e-3, 300 steps, batch 64, engine world of 500 families), whose
one test figure is VR@1 23.7 % / VR@10 98.2 % (120 videos, 228 queries).

1. the training data: for the synthetic benchmark, a separate, larger synthetic world (engine_train.
   world_families train families, another seed; built here, resumable), as real engines are trained on
   data disjoint from the benchmark (the benchmark's 240 train videos overfit: test VR@10 ~50 %);
   with world_families=0 or another dataset, the train split of cfg.dataset
2. a fresh embedder checkpoint: models.tiny.make_tiny_checkpoint(kind="embedder", size=engine_train.size)
3. pre-decode every clip once and run the processor once per video (pixels, grid, mRoPE positions
   cached per video, so a step only pads and concatenates); with engine_train.perception_steps > 0, the
   vision tower is first pretrained on labelled stills of the world at the clips' frame size
   (engine/perception.py: dense shape / colour / size labels per merged token); the summary keeps its
   held-out accuracy before, after, and after the contrastive steps
4. train with a symmetric in-batch InfoNCE over (video, caption) pairs. The caption of a pair is its
   fine query with probability engine_train.fine_caption_prob, else its coarse caption (real engines
   were trained on coarse captions; environment.md §8: coarse-only gives an engine blind to fine words).
   Batch items sharing a video or an identical caption are all positives of each other (multi-positive
   InfoNCE), so repeated coarse captions are not pushed apart. Learnable (or fixed) temperature, AdamW,
   linear warm-up + cosine decay, bf16 autocast on CUDA.
5. save atomically (temp dir, then rename) to engine_train.output or cfg.engine_model(), loadable by
   Embedder.from_pretrained; the train log (jsonl) goes to the run dir and into the checkpoint, with
   train_summary.json recording train_key / train_fingerprint (what decides the weights: `vsr1
   quickstart` retrains when the config's differ)
6. evaluate the saved checkpoint through the real Embedder path on cfg.dataset's val/test splits: fine-query
   VR@1 / VR@10 over each split's corpus (exact ranks); queries whose video failed to decode count as misses.
A killed run, started again with the same config, continues from its last snapshot (perception result, then
every engine_train.save_every steps; engine/resume.py) and ends with the weights an unbroken run gives.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from videosearch_r1.models import qwen3vl

from videosearch_r1.engine.search import SearchEngine


@dataclass
class Pair:
    video_id: str
    fine: str  # the fine-grained query (the split's query field)
    coarse: str  # the coarse caption of the same moment


# ----------------------------------------------------------------------------- clip cache
class ClipCache:
    """Processor outputs per video, computed once: ids [L], token types [L], pixels [P, C] (fp16),
    grid [3], mRoPE positions [3, L]. `collate` left-pads a batch exactly as the processor would.
    On a CUDA embedder the pixels are made and kept on the GPU (qwen3vl.fast_video_inputs, equal to the
    processor's): a step then concatenates there instead of copying ~0.5 GB of pixels per 256 clips from the
    CPU (the toy world's 1,600 clips at 192x128 take ~3.4 GB). At most `gpu_share` of the GPU's memory is
    used so; clips past it are kept on the CPU (a smaller GPU still trains, as before)."""

    def __init__(self, embedder, gpu_share: float = 0.25):
        self.emb = embedder
        self.items: dict[str, dict] = {}
        self.pad_id = embedder.tokenizer.pad_token_id
        dev = torch.device(embedder.device)
        self.store = dev if dev.type == "cuda" else torch.device("cpu")
        self.room = int(gpu_share * torch.cuda.get_device_properties(dev).total_memory) if dev.type == "cuda" else 0

    def add(self, video_id: str, clip) -> None:
        from videosearch_r1.models.qwen3vl import fast_video_inputs, rope_positions

        inp = fast_video_inputs(self.emb.processor, [self.emb.video_prompt()], [clip], self.store, text_device="cpu")
        if inp is None:  # a clip the processor would resize: its own (CPU) path
            inp = self.emb.prepare_videos([clip])
            inp = {k: (v if k == "pixel_values_videos" else v.cpu()) for k, v in inp.items()}
        pixels = inp["pixel_values_videos"].to(self.store, torch.float16)
        if pixels.is_cuda:
            self.room -= pixels.numel() * pixels.element_size()
            if self.room < 0:  # the GPU's share is used up: this clip and the next ones stay on the CPU
                pixels, self.store = pixels.cpu(), torch.device("cpu")
        self.items[video_id] = {
            "input_ids": inp["input_ids"][0], "mm_token_type_ids": inp["mm_token_type_ids"][0],
            "pixel_values_videos": pixels,
            "video_grid_thw": inp["video_grid_thw"][0], "position_ids": rope_positions(self.emb.model, inp)[:, 0]}

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.items

    def collate(self, video_ids: list[str]) -> dict:
        items = [self.items[v] for v in video_ids]
        length = max(len(it["input_ids"]) for it in items)
        b = len(items)
        ids = torch.full((b, length), self.pad_id, dtype=torch.long)
        types = torch.zeros((b, length), dtype=torch.long)
        mask = torch.zeros((b, length), dtype=torch.long)
        pos = torch.zeros((3, b, length), dtype=torch.long)
        for i, it in enumerate(items):
            n = len(it["input_ids"])
            ids[i, length - n:] = it["input_ids"]
            types[i, length - n:] = it["mm_token_type_ids"]
            mask[i, length - n:] = 1
            pos[:, i, length - n:] = it["position_ids"]
        dev, dt = self.emb.device, self.emb.dtype
        pix = [it["pixel_values_videos"] for it in items]
        if len({t.device for t in pix}) > 1:  # some clips past the GPU share: bring those over one by one
            pix = [t.to(dev) for t in pix]
        return {"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "mm_token_type_ids": types.to(dev),
                "position_ids": pos.to(dev),
                "pixel_values_videos": torch.cat(pix).to(dev, dt),
                "video_grid_thw": torch.stack([it["video_grid_thw"] for it in items]).to(dev)}



def video_vectors(embedder, inputs: dict) -> torch.Tensor:
    """[B, D] unit vectors from collated inputs: the last column is every row's last real token."""
    out = embedder.model(**inputs)
    h = out.last_hidden_state[:, -1].float()[:, : embedder.dim]
    return F.normalize(h, dim=-1)


def decode_all(cfg, dataset: str, video_ids: list[str]) -> tuple[dict, list[tuple[str, str]]]:
    """{video_id: Clip} for every decodable video (threads), plus (video_id, reason) skips."""
    from videosearch_r1.engine.index import load_clip_or_reason
    from videosearch_r1.utils import decode_workers, progress

    clips, skipped = {}, []
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        futures = [pool.submit(load_clip_or_reason, cfg, dataset, v) for v in video_ids]
        for vid, fut in zip(video_ids, progress(futures, desc=f"decode {dataset}", unit="video")):
            clip, reason = fut.result()
            if clip is None:
                skipped.append((vid, reason))
            else:
                clips[vid] = clip
    return clips, skipped


# ----------------------------------------------------------------------------- loss / schedule
def multi_positive_infonce(v: torch.Tensor, t: torch.Tensor, positives: torch.Tensor,
                           scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; v, t [B, D] unit vectors; positives [B, B] bool (text i ~ video j)."""
    logits = scale * (t @ v.T)  # [B, B] text x video
    neg_inf = torch.finfo(logits.dtype).min

    def one_side(lg: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(lg, 1) - torch.logsumexp(lg.masked_fill(~pos, neg_inf), 1)).mean()

    return 0.5 * (one_side(logits, positives) + one_side(logits.T, positives.T))


def lr_at(step: int, tc) -> float:
    """Linear warm-up to tc.lr, then cosine decay to tc.lr * tc.min_lr_ratio at tc.steps."""
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    frac = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
    return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def batch_positives(video_ids: list[str], captions: list[str]) -> torch.Tensor:
    v = np.array(video_ids)
    c = np.array(captions)
    return torch.from_numpy((v[:, None] == v[None, :]) | (c[:, None] == c[None, :]))  # [B, B] bool


# ----------------------------------------------------------------------------- evaluation
def vr_at_k(ranks: list[int | None], ks=(1, 10)) -> dict:
    """VR@k in percent over every query; a None rank (video missing from the index) is a miss."""
    n = len(ranks)
    return {f"VR@{k}": 100.0 * sum(1 for r in ranks if r is not None and r <= k) / max(1, n) for k in ks}


@torch.no_grad()
def evaluate_split(embedder, video_vecs: np.ndarray, video_ids: list[str], queries, query_field: str) -> dict:
    """Exact ranks of each query's GT video among `video_ids` -> VR@1, VR@10 (percent), counts."""
    engine = SearchEngine(video_vecs, video_ids)
    texts = [getattr(q, query_field) for q in queries]
    q = embedder.embed_texts(texts).float().cpu().numpy()
    known = [i for i, qq in enumerate(queries) if qq.video_id in engine.row]
    ranks: list[int | None] = [None] * len(queries)
    if known:
        for i, r in zip(known, engine.rank_of(q[known], [queries[i].video_id for i in known])):
            ranks[i] = r
    return {**vr_at_k(ranks), "queries": len(queries), "videos": len(video_ids),
            "missing_gt": len(queries) - len(known)}


def cached_vectors(embedder, cache: ClipCache, video_ids: list[str], batch: int, autocast) -> np.ndarray:
    out = []
    with torch.no_grad(), autocast():
        for i in range(0, len(video_ids), batch):
            out.append(video_vectors(embedder, cache.collate(video_ids[i:i + batch])).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, embedder.dim), np.float32)


# ----------------------------------------------------------------------------- checkpoint
def save_atomic(embedder, out: Path, extra_files: dict[str, str]) -> None:
    """Write to a temp dir beside `out`, then swap it in with renames (an old checkpoint is replaced)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    old = out.parent / f".{out.name}.old{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    embedder.save_pretrained(tmp)
    for name, text in extra_files.items():
        (tmp / name).write_text(text)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- training
def load_pairs(cfg, dataset: str):
    from videosearch_r1.data.fig import load_split

    sp = load_split(cfg, dataset, "train")
    field = cfg.dataset_cfg(dataset).query_field
    return sp, [Pair(q.video_id, getattr(q, field), q.cog_desc) for q in sp.queries]


def init_embedder(cfg, dataset: str, pairs: list[Pair], work: Path, device: str):
    from videosearch_r1.engine.embedder import Embedder
    from videosearch_r1.models.tiny import make_tiny_checkpoint

    tc = cfg.engine_train
    texts = sorted({p.fine for p in pairs} | {p.coarse for p in pairs})
    path = make_tiny_checkpoint(work / "init", kind="embedder", size=tc.size, seed=tc.seed,
                                video_cfg=cfg.video_cfg(dataset), extra_texts=texts)
    return Embedder.from_pretrained(str(path), device=device, dtype="fp32", instruction=cfg.engine.instruction,
                                    max_query_tokens=cfg.engine.max_query_tokens, batch_size=max(tc.batch_size, 1),
                                    video_cfg=cfg.video_cfg(dataset), trainable=True)


class Batcher:
    """Each step: `batch_size` distinct videos (epochs over a shuffled list), one of each video's pairs,
    captioned fine with probability `fine_prob`, else coarse."""

    def __init__(self, pairs: list[Pair], batch_size: int, fine_prob: float, rng: np.random.Generator):
        self.by_video: dict[str, list[Pair]] = {}
        for p in pairs:
            self.by_video.setdefault(p.video_id, []).append(p)
        self.videos = sorted(self.by_video)
        self.bs = min(batch_size, len(self.videos))
        self.fine_prob, self.rng = fine_prob, rng
        self.order, self.cursor = rng.permutation(len(self.videos)), 0

    def next(self) -> tuple[list[str], list[str], np.ndarray]:
        if self.cursor + self.bs > len(self.order):
            self.order, self.cursor = self.rng.permutation(len(self.videos)), 0
        vids = [self.videos[i] for i in self.order[self.cursor:self.cursor + self.bs]]
        self.cursor += self.bs
        batch = [self.by_video[v][self.rng.integers(len(self.by_video[v]))] for v in vids]
        fine = self.rng.random(self.bs) < self.fine_prob
        return vids, [p.fine if f else p.coarse for p, f in zip(batch, fine)], fine


def make_optimizer(model, tc, device: str):
    """AdamW (no decay on norms / biases / the temperature) and the log inverse temperature."""
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1.0 / tc.temperature), device=device),
                                   requires_grad=tc.learn_temperature)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": tc.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    if tc.learn_temperature:
        groups.append({"params": [log_scale], "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=tc.lr, betas=(0.9, 0.98), eps=1e-6, fused=device.startswith("cuda"))
    return opt, log_scale


ENGINE_WORLD = "synth-engine"
ENGINE_WORLD_SEED_OFFSET = 7919  # the engine's world never shares a seed with the benchmark world


def training_world(cfg):
    """(config, dataset) the engine trains on. For the synthetic benchmark with engine_train.world_families
    > 0: a separate synthetic world (same preset and video budget, seed synth.seed + 7919, only a train
    split of that many families) at <workspace>/data/synth-engine/raw, built or completed here (resumable),
    as a real engine is trained on data disjoint from the benchmark. Otherwise cfg.dataset's train split."""
    tc = cfg.engine_train
    if tc.world_families <= 0 or cfg.dataset != "synth":
        return cfg, cfg.dataset
    from videosearch_r1.synth.build import build

    base = cfg.dataset_cfg("synth")
    root = Path(cfg.workspace).expanduser() / "data" / ENGINE_WORLD / "raw"
    wcfg = copy.deepcopy(cfg)
    wcfg.datasets["synth"] = dataclasses.replace(base, root=str(root))
    wcfg.synth.families = {split: (tc.world_families if split == "train" else 0) for split in base.splits}
    wcfg.synth.seed = cfg.synth.seed + ENGINE_WORLD_SEED_OFFSET
    print(build(wcfg).format(), flush=True)
    wcfg.datasets[ENGINE_WORLD] = wcfg.datasets["synth"]
    return wcfg, ENGINE_WORLD


def output_path(cfg) -> Path:
    return Path(cfg.engine_train.output or cfg.engine_model()).expanduser()


def prepare(cfg, device: str, resume):
    """Steps 1-3: the training world's pairs, a fresh embedder, every training clip decoded + processed once
    (perception pretraining, or its result from `resume`: engine/resume.py)."""
    from videosearch_r1.utils import progress

    tc = cfg.engine_train
    out = output_path(cfg)
    wcfg, world = training_world(cfg)
    sp, pairs = load_pairs(wcfg, world)
    work = out.parent / f".{out.name}.work{os.getpid()}"
    try:
        embedder = init_embedder(wcfg, world, pairs, work, device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    qwen3vl.enable_linear_patch_embed(embedder.model)
    params = sum(p.numel() for p in embedder.model.parameters())
    print(f"engine train: {world} train split, {len(pairs)} pairs, {len(sp.videos)} videos; size {tc.size} "
          f"({params / 1e6:.1f} M params) on {device}", flush=True)
    clips, skipped = decode_all(wcfg, world, sp.corpus_ids())
    perception = None
    if tc.perception_steps > 0 and clips:
        perception = perceive(wcfg, embedder, device, next(iter(clips.values())).frames.shape[1:3], resume)
    cache = ClipCache(embedder)
    for vid, clip in progress(list(clips.items()), desc="prepare", unit="video"):
        cache.add(vid, clip)
    pairs = [p for p in pairs if p.video_id in cache]
    if len(pairs) < 2:
        raise ValueError(f"{world}/train: {len(pairs)} usable pairs (skipped videos: {skipped[:5]})")
    return out, world, embedder, cache, pairs, skipped, params, perception


def perceive(cfg, embedder, device: str, frame_hw: tuple[int, int], resume):
    """Perception pretraining (engine/perception.py) at the clips' frame size, or its saved result."""
    from videosearch_r1.engine.perception import Check, pretrain

    saved = resume.load("perception")
    if saved is not None:
        embedder.model.visual.load_state_dict(saved["visual"])
        print(f"engine train: perception pretraining restored from {resume.dir}", flush=True)
        vp = embedder.processor.video_processor
        return json.loads(saved["summary"]), Check.from_state(embedder.model, vp, saved["check"], device)
    summary, check = pretrain(cfg, embedder, device, frame_hw[1], frame_hw[0])
    resume.save("perception", {"visual": embedder.model.visual.state_dict(), "check": check.state(),
                               "summary": json.dumps(summary)})
    return summary, check


# engine_train fields that do not change the trained weights (where they go, logging, evaluation, snapshots)
_KEY_DROP = ("output", "log_every", "eval_every", "eval_splits", "save_every")
_PERCEPTION = ("perception_steps", "perception_lr", "perception_batch", "perception_frames")


def train_key(cfg) -> dict:
    """What decides the weights `train` produces (videosearch_r1/fingerprint.py): engine_train.* but
    _KEY_DROP, the engine prompt (instruction, max_query_tokens), the dataset and its video sampling,
    and the training data: the synth section for a generated engine world (world_families > 0), else the
    content of cfg.dataset's train annotation file; the renderer's version where its pixels are trained on
    (the synthetic dataset or world, perception stills)."""
    from videosearch_r1 import fingerprint as fp

    off = () if cfg.engine_train.perception_steps > 0 else _PERCEPTION  # no pretraining: engines keep their key
    key = {"engine_train": fp.section(cfg, "engine_train", drop=_KEY_DROP + off),
           "engine": {"instruction": cfg.engine.instruction, "max_query_tokens": cfg.engine.max_query_tokens},
           "dataset": cfg.dataset, "video": asdict(cfg.video_cfg(cfg.dataset))}
    if cfg.dataset == "synth" and cfg.engine_train.world_families > 0:
        key["synth"] = fp.section(cfg, "synth", drop=("workers", "sheet_families"))
    if cfg.dataset == "synth" or cfg.engine_train.perception_steps > 0:  # pixels of our renderer: its version too
        from videosearch_r1.synth.render import RENDER_VERSION

        key["render_version"] = RENDER_VERSION
    if "synth" not in key:
        dcfg = cfg.dataset_cfg(cfg.dataset)
        path = cfg.dataset_root(cfg.dataset) / dcfg.annotation_dir / dcfg.splits.get("train", "")
        key["train_file"] = fp.file_digest(path) if path.is_file() else "missing"
    return key


def train(cfg, log_path: Path | None = None, stop_after: int | None = None) -> dict | None:
    """Steps 1-6 of the module doc; returns the summary dict (also written into the checkpoint, with
    train_key / train_fingerprint: `vsr1 quickstart` retrains when they differ from the config's). A run
    killed before the end continues from its last snapshot (engine/resume.py) when started again with the
    same config. stop_after=k stops after step k without saving the engine (tests: a kill), returning None."""
    from videosearch_r1.engine.resume import ResumeState, restore_step, step_state
    from videosearch_r1.fingerprint import digest
    from videosearch_r1.utils import append_jsonl, progress, resolve_device

    tc, dataset = cfg.engine_train, cfg.dataset
    torch.manual_seed(tc.seed)
    device = resolve_device(tc.device)
    if device.startswith("cuda"):
        qwen3vl.guard_sdpa_backward()  # left-padded captions: cuDNN attention backward NaNs (torch 2.11)
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))  # noqa
    t_start = time.time()
    if tc.save_every < 0:
        raise ValueError(f"engine_train.save_every must be >= 0 (0: no resume snapshots), got {tc.save_every}")
    key = train_key(cfg)
    resume = ResumeState(output_path(cfg), digest(key), tc.save_every > 0)
    out, world, embedder, cache, pairs, skipped, params, perception = prepare(cfg, device, resume)
    eval_cache = ClipCache(embedder)  # the benchmark's val clips, for eval_every
    opt, log_scale = make_optimizer(embedder.model, tc, device)
    batcher = Batcher(pairs, tc.batch_size, tc.fine_caption_prob, np.random.default_rng(tc.seed))
    start, log = 0, []
    saved = resume.load("step")
    if saved is not None:
        start, log = restore_step(saved, embedder.model, opt, log_scale, batcher)
        print(f"engine train: resumed after step {start}/{tc.steps} from {resume.dir}", flush=True)
    bar = progress(range(start, tc.steps), desc="engine train", unit="step")
    for step in bar:
        row = train_step(embedder, opt, log_scale, batcher, cache, step, tc, autocast, device)
        if tc.eval_every and (step + 1) % tc.eval_every == 0 and "val" in cfg.dataset_cfg(dataset).splits:
            row["val"] = _quick_eval(cfg, dataset, "val", embedder, eval_cache, autocast)
        log.append(row)
        if log_path is not None:
            append_jsonl(log_path, [row])
        if (step + 1) % max(1, tc.log_every) == 0:
            bar.set_postfix(loss=f"{row['loss']:.3f}", T=f"{row['temperature']:.3f}")
        if tc.save_every > 0 and (step + 1) % tc.save_every == 0 and step + 1 < tc.steps:
            resume.save("step", step_state(step + 1, embedder.model, opt, log_scale, batcher, log))
        if stop_after is not None and step + 1 >= stop_after:
            bar.close()
            return None
    bar.close()
    summary = {"dataset": dataset, "trained_on": world, "output": str(out), "size": tc.size, "params": params, "device": device,
               "pairs": len(pairs), "skipped_videos": [list(s) for s in skipped],
               "train_seconds": time.time() - t_start, "resumed_after_step": start, "config": asdict(tc),
               "train_key": key, "train_fingerprint": digest(key),
               "first_loss": log[0]["loss"] if log else None,
               "last_loss": float(np.mean([r["loss"] for r in log[-10:]])) if log else None}
    if perception is not None:  # what the tower learned from the stills, and what it kept after the steps
        summary["perception"] = {**perception[0], "heldout_after_engine": perception[1]()}
        print("engine train: perception kept after the contrastive steps: "
              + ", ".join(f"{a} {v} %" for a, v in summary["perception"]["heldout_after_engine"].items()), flush=True)
    summary = finish(cfg, embedder, out, log, summary)
    resume.clear()
    return summary


def train_step(embedder, opt, log_scale, batcher, cache, step: int, tc, autocast, device: str) -> dict:
    """One contrastive step (module doc, step 4); returns its log row."""
    t0 = time.time()
    vids, captions, fine = batcher.next()
    lr = lr_at(step, tc)
    for g in opt.param_groups:
        g["lr"] = lr
    with autocast():
        v = video_vectors(embedder, cache.collate(vids))
        t = embedder.embed_texts(captions, grad=True)
    scale = log_scale.exp().clamp(max=100.0)
    loss = multi_positive_infonce(v, t.float(), batch_positives(vids, captions).to(device), scale)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(embedder.model.parameters(), 1.0)
    opt.step()
    return {"step": step + 1, "loss": float(loss.detach()), "lr": lr, "temperature": 1.0 / float(scale.detach()),
            "grad_norm": float(gnorm), "fine_share": float(fine.mean()), "sec": round(time.time() - t0, 4)}


def finish(cfg, embedder, out: Path, log: list[dict], summary: dict) -> dict:
    """Steps 5-6: save atomically, reload through Embedder.from_pretrained, evaluate val/test."""
    embedder.model.eval()
    logs = "".join(json.dumps(r) + "\n" for r in log)
    save_atomic(embedder, out, {"train_log.jsonl": logs, "train_summary.json": json.dumps(summary, indent=2)})
    splits = [s for s in cfg.engine_train.eval_splits if s in cfg.dataset_cfg(cfg.dataset).splits]
    summary["eval"] = evaluate_checkpoint(cfg, cfg.dataset, out, splits)
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _quick_eval(cfg, dataset: str, split: str, embedder, cache: ClipCache, autocast) -> dict:
    """VR@k on a split with the training embedder (clips added to the cache on first use)."""
    from videosearch_r1.data.fig import load_split

    sp = load_split(cfg, dataset, split)
    missing = [v for v in sp.corpus_ids() if v not in cache]
    if missing:
        clips, _ = decode_all(cfg, dataset, missing)
        for vid, clip in clips.items():
            cache.add(vid, clip)
    ids = [v for v in sp.corpus_ids() if v in cache]
    embedder.model.eval()
    vecs = cached_vectors(embedder, cache, ids, cfg.engine_train.batch_size, autocast)
    with autocast():
        res = evaluate_split(embedder, vecs, ids, sp.queries, cfg.dataset_cfg(dataset).query_field)
    embedder.model.train()
    return res


def evaluate_checkpoint(cfg, dataset: str, path: Path, splits: list[str]) -> dict:
    """Load `path` with Embedder.from_pretrained and score each split's fine queries (exact ranks)."""
    from videosearch_r1.data.fig import load_split
    from videosearch_r1.engine.embedder import Embedder
    from videosearch_r1.utils import resolve_device

    device = resolve_device(cfg.engine_train.device)
    emb = Embedder.from_pretrained(str(path), device=device, dtype=cfg.engine.dtype,
                                   instruction=cfg.engine.instruction, max_query_tokens=cfg.engine.max_query_tokens,
                                   batch_size=cfg.engine.batch_size, video_cfg=cfg.video_cfg(dataset))
    results = {}
    for split in splits:
        sp = load_split(cfg, dataset, split)
        clips, skipped = decode_all(cfg, dataset, sp.corpus_ids())
        ids = sorted(clips)
        with torch.no_grad():
            vecs = emb.embed_videos([clips[v] for v in ids]).float().cpu().numpy()
        results[split] = {**evaluate_split(emb, vecs, ids, sp.queries, cfg.dataset_cfg(dataset).query_field),
                          "skipped_videos": len(skipped)}
    return results


def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.utils import command_parser, config_from_args, make_run_dir, parse_command

    parser = command_parser("vsr1 engine train", __doc__)
    args = parse_command(parser, argv)
    cfg = config_from_args(args)
    run_dir = make_run_dir(cfg, "engine-train")
    try:
        summary = train(cfg, log_path=run_dir / "train_log.jsonl")
    except (FileNotFoundError, ValueError) as e:
        print(f"vsr1 engine train: {e}", file=sys.stderr)
        return 2
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"engine train: loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f} in "
          f"{summary['train_seconds']:.0f} s; saved {summary['output']}", flush=True)
    for split, r in summary["eval"].items():
        print(f"  {split}: VR@1 {r['VR@1']:.1f}  VR@10 {r['VR@10']:.1f}  ({r['queries']} fine queries, "
              f"{r['videos']} videos, {r['missing_gt']} with a missing video)", flush=True)
    print(f"  log: {run_dir / 'train_log.jsonl'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
