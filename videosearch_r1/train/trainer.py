"""The policy trainer shared by base pretraining, SFT and GRPO-style supervised steps: token CE on the
assistant tokens + lambda * InfoNCE of the SQR-refined query through the FROZEN embedder.

    summary = train_policy(cfg, policy, rows, out_dir, clip_fn, embedder=engine.embedder,
                           video_vectors=engine, section=cfg.sft)

Signature (stable): train_policy(cfg, policy, rows, out_dir, clip_fn, embedder=None, video_vectors=None,
section=None, stop_after=None) -> summary dict
  cfg            the full Config; `cfg.train` holds the shared knobs (steps, batch, lrs, parts, ...)
  policy         agent.policy.Policy (weights are trained in place; its device is set by accelerate)
  rows           list[rows.TrainRow]
  out_dir        run directory: checkpoint-NNNNNN/, final/, metrics.jsonl, summary.json, config.yaml
  clip_fn        video id -> video.decode.Clip (errors are counted skips of that row)
  embedder       engine.embedder.Embedder (frozen) for the InfoNCE term; None when section's weight is 0
  video_vectors  the index's (frozen) video vectors: a SearchEngine, or (vectors [N, D], ids)
  section        stage knobs: `infonce_weight` (lambda) and `temperature` (tau); default cfg.sft.
                 A section without them (e.g. a base-pretraining section) means CE only.
  stop_after     stop after this many optimizer steps in THIS call (tests simulate a kill with it)
A run resumes from the newest checkpoint in out_dir (same data order, optimizer, RNG); a finished run
(out_dir/final) returns its summary without training. A checkpoint written with other rows, batch size,
grad_accum, seed, process count or total steps is refused (ValueError naming what changed).

The InfoNCE term (reference.md §3.2, without the ambiguous-negative filter): for each row whose target
ends with <REFINE> and has a positive, agent.n_latents latents Z by sqr.py's rollout, differentiable:
continued from the training forward's own KV cache (N-1 single-position steps, no second prefill; equal
to sqr.rollout_latents), or the authors' full forwards under grad checkpointing / sft.rollout_cached=false;
soft tokens = to_embedder(Z), q = embedder.embed_soft(query, soft, grad=True), and CE over
[cos(q, v+), cos(q, v-_j)] / tau.
Gradients reach the policy and all three SQR projectors; the embedder and the video vectors stay frozen.
Rows that cannot be used (video fails to load, too long, positive missing from the index) are counted
in summary["skipped"]; a CUDA OOM is an error naming the rows (train.on_oom=skip: a counted skipped step).

Distributed (accelerate launch / torchrun): every rank gets full micro-batches (the epoch wraps) and
runs the vision tower each step (models/qwen3vl.vision_keepalive for a batch without video). With
train.global_batch the optimizer batch is fixed over all processes (grad_accum derived from it), and
each metrics line covers all processes, so 1 and N processes log the same losses (tests/test_multiprocess.py;
launching: docs/training.md). The KV-cached rollout calls decoder sub-modules directly, which
parameter-sharding wrappers (FSDP, ZeRO-3) do not see: there set sft.rollout_cached=false (the
authors' full forwards, through the wrapped modules). DDP / ZeRO-1/2 run the cached path.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from videosearch_r1.train import common
from videosearch_r1.train.rows import TrainRow, collate


# ----------------------------------------------------------------------------- the module accelerate wraps
class PolicyModule(nn.Module):
    """policy.model + policy.sqr as one module, so DDP / FSDP see every trainable parameter and every
    forward goes through `forward` (module hooks run)."""

    def __init__(self, policy, n_latents: int, rollout_cached: bool, fast: bool, rollout_compile: bool = False):
        super().__init__()
        self.model, self.sqr = policy.model, policy.sqr
        object.__setattr__(self, "policy", policy)  # not a submodule (already registered above)
        self.n_latents, self.rollout_cached, self.fast = n_latents, rollout_cached, fast
        self.rollout_compile = rollout_compile  # the latent layer step torch.compile'd on CUDA (agent/sqr_grad.py)

    def forward(self, inputs: dict, labels: torch.Tensor, refine_pos: torch.Tensor, contrastive: torch.Tensor):
        """-> (CE summed over assistant tokens, number of those tokens, soft tokens [B', N, He] of the
        `contrastive` rows (None if there are none))."""
        from videosearch_r1.agent.sqr import rollout_from_forward, rollout_latents, shares_forward_cache
        from videosearch_r1.models.qwen3vl import model_inputs, vision_keepalive

        kw = model_inputs(self.model, inputs, fast=self.fast)
        want = bool(contrastive.any())
        share = want and shares_forward_cache(self.policy, self.rollout_cached)
        out = self.model.model(**kw, use_cache=share)
        hidden = out.last_hidden_state  # [B, L, H] post-norm
        target = labels[:, 1:]
        sel = target != -100
        logits = self.model.lm_head(hidden[:, :-1][sel]).float()  # only the assistant positions
        ce = F.cross_entropy(logits, target[sel], reduction="sum")
        keep = vision_keepalive(self.model, inputs)  # a batch without video still runs the vision tower
        if keep is not None:
            ce = ce + keep
        soft = None
        if want:
            rows = contrastive.nonzero()[:, 0]
            if share:  # continue from this forward's KV cache: no second prefill
                pos = kw.get("position_ids")
                pos = pos if pos is not None else self.policy.positions(inputs)
                z = rollout_from_forward(self.policy, out, hidden, pos, inputs["attention_mask"], refine_pos, rows,
                                         self.n_latents, compile=self.rollout_compile)
            else:  # a separate rollout (uncached full forwards under grad checkpointing, as the authors)
                gc = bool(getattr(self.model.model.language_model, "gradient_checkpointing", False))
                sub = _select_videos({k: v[rows] for k, v in inputs.items() if k in ("input_ids", "attention_mask",
                                                                                   "mm_token_type_ids")}, inputs, rows)
                z = rollout_latents(self.policy, sub, refine_pos[rows], self.n_latents, cached=self.rollout_cached and not gc)
            soft = self.policy.soft_tokens(z)
        return ce, sel.sum(), soft


def _select_videos(sub: dict, inputs: dict, rows: torch.Tensor) -> dict:
    """Keep the pixels / grids / positions of `rows` (one video per row)."""
    if inputs.get("video_grid_thw") is not None:
        grid = inputs["video_grid_thw"]
        sizes = grid.prod(-1).tolist()
        chunks = torch.split(inputs["pixel_values_videos"], sizes)
        sub["pixel_values_videos"] = torch.cat([chunks[int(i)] for i in rows])
        sub["video_grid_thw"] = grid[rows]
    if inputs.get("position_ids") is not None:
        sub["position_ids"] = inputs["position_ids"][:, rows]
    return sub


# ----------------------------------------------------------------------------- InfoNCE
class VideoVectors:
    """Frozen video vectors by id: a SearchEngine's (or vectors [N, D] + ids), on a device."""

    def __init__(self, source, device):
        vectors, ids = (source.vectors, source.ids) if hasattr(source, "vectors") else source
        self.row = {v: i for i, v in enumerate(ids)}
        self.ids = list(ids)
        self.vectors = torch.as_tensor(vectors, dtype=torch.float32, device=device)


def infonce(q: torch.Tensor, rows: list[TrainRow], vv: VideoVectors, tau: float, state) -> torch.Tensor | None:
    """Mean over rows of CE([cos(q, v+), cos(q, v-_j)] / tau, target 0). Rows whose positive is not in the
    index, or with no negative in it, are counted skips of the term; missing negatives are counted."""
    cand, keep = [], []
    for i, r in enumerate(rows):
        if r.positive not in vv.row:
            state.skip(r.id, f"positive {r.positive} not in the index", "infonce_no_positive")
            continue
        negs = [vv.row[n] for n in r.negatives if n in vv.row]
        missing = len(r.negatives) - len(negs)
        if missing:
            state.skipped["infonce_missing_negatives"] = state.skipped.get("infonce_missing_negatives", 0) + missing
        if not negs:
            state.skip(r.id, "no negative in the index", "infonce_no_negative")
            continue
        cand.append([vv.row[r.positive]] + negs)
        keep.append(i)
    if not keep:
        return None
    width = max(len(c) for c in cand)
    idx = torch.tensor([c + [0] * (width - len(c)) for c in cand], device=vv.vectors.device)
    valid = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in cand], dtype=torch.bool,
                         device=vv.vectors.device)
    qk = F.normalize(q[keep].float(), dim=-1)
    sims = torch.einsum("bd,bkd->bk", qk, vv.vectors[idx]) / tau
    sims = sims.masked_fill(~valid, float("-inf"))
    return F.cross_entropy(sims, torch.zeros(len(keep), dtype=torch.long, device=sims.device))


# ----------------------------------------------------------------------------- the loop
def _load_batch(rows: list[TrainRow], clip_fn, state) -> tuple[list[TrainRow], list]:
    kept, clips = [], []
    for r in rows:
        try:
            clips.append(clip_fn(r.video))
            kept.append(r)
        except Exception as e:  # noqa: BLE001  (any decode failure is this row's problem, counted)
            state.skip(r.id, f"video {r.video}: {type(e).__name__}: {e}", "video")
    return kept, clips


def _section_knobs(section) -> tuple[float, float]:
    lam = float(getattr(section, "infonce_weight", 0.0) or 0.0)
    tau = float(getattr(section, "temperature", 0.1) or 0.1)
    return lam, tau


def _micro_step(acc, module, policy, rows, clips, tc, lam, tau, embedder, vv, state):
    """Forward + backward of one micro-batch; returns its stats (or None if every row was skipped)."""
    batch = collate(policy, rows, clips, max_tokens=tc.max_tokens, device=acc.device)
    for rid, why in batch.skipped:
        state.skip(rid, why, "too_long")
    if not batch.rows:
        return None
    dev = acc.device
    inputs = {k: v.to(dev) for k, v in batch.inputs.items()}
    if "pixel_values_videos" in inputs:
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(policy.model.dtype)
    contrastive = torch.tensor([lam > 0 and r.contrastive and batch.refine_pos[i] >= 0
                                for i, r in enumerate(batch.rows)], dtype=torch.bool, device=dev)
    ce_sum, n_tok, soft = module(inputs, batch.labels.to(dev), batch.refine_pos.to(dev), contrastive)
    ce = ce_sum / n_tok.clamp(min=1)
    loss, nce = ce, None
    if soft is not None:
        crows = [r for r, c in zip(batch.rows, contrastive.tolist()) if c]
        q = embedder.embed_soft([r.query for r in crows], soft, grad=True)
        nce = infonce(q, crows, vv, tau, state)
        if nce is not None:
            loss = ce + lam * nce
    acc.backward(loss / max(1, tc.grad_accum))
    return {"loss": float(loss.detach()), "ce": float(ce.detach()),
            "infonce": None if nce is None else float(nce.detach()),
            "rows": len(batch.rows), "tokens": batch.n_tokens, "target_tokens": int(n_tok)}


def _prepare_policy(policy, tc, acc):
    from videosearch_r1.models.qwen3vl import prepare_model

    policy.model.float()
    if tc.fast_step:
        prepare_model(policy.model)
    if tc.grad_checkpointing:
        policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy.model.to(acc.device).train()
    policy.sqr.to(acc.device).float().train()


def train_policy(cfg, policy, rows: list[TrainRow], out_dir, clip_fn, embedder=None, video_vectors=None,
                 section=None, stop_after: int | None = None) -> dict:
    """See the module docstring. Returns the summary (also written to out_dir/summary.json)."""
    from videosearch_r1.utils import append_jsonl, atomic_write_json, progress

    tc = cfg.train
    lam, tau = _section_knobs(cfg.sft if section is None else section)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if lam > 0 and (embedder is None or video_vectors is None):
        raise ValueError("the InfoNCE term (infonce_weight > 0) needs the frozen embedder and the index's video vectors")
    acc = common.make_accelerator(tc)
    tc = dataclasses.replace(tc, grad_accum=common.effective_grad_accum(tc, acc.num_processes))
    order = common.DataOrder(len(rows), tc.batch_size, tc.seed, acc.num_processes, acc.process_index)
    total = common.total_steps(tc, order)
    key = {**common.run_key(rows, tc, acc.num_processes, total), "init_weights": common.weights_key(policy),
           "lr": tc.lr, "lr_sqr": tc.lr_sqr, "infonce_weight": lam, "temperature": tau,
           "train": common.settings_key(tc), "n_latents": cfg.agent.n_latents,
           **({"soft_scale": policy.sqr_config.soft_scale} if policy.sqr_config.soft_scale != 1.0 else {})}
    ckpt = common.latest_checkpoint(out_dir)
    if ckpt is not None:
        common.check_run_key(ckpt, key)
    if ckpt is not None and ckpt.name == common.FINAL and (out_dir / "summary.json").is_file():
        return json.loads((out_dir / "summary.json").read_text())
    if acc.is_main_process:  # after the key check: a refused rerun leaves the run's config.yaml alone
        from videosearch_r1.config import save_config

        save_config(cfg, out_dir)
    common.seed_everything(tc.seed)
    _prepare_policy(policy, tc, acc)
    if ckpt is not None:
        common.load_weights(policy, ckpt)
    groups = common.param_groups(policy, tc, sqr=lam > 0)
    opt = torch.optim.AdamW(groups, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay,
                            fused=acc.device.type == "cuda")
    module = PolicyModule(policy, cfg.agent.n_latents, getattr(cfg.sft, "rollout_cached", True), tc.fast_step,
                          rollout_compile=tc.rollout_compile)
    module, opt = acc.prepare(module, opt)
    state = common.load_trainer_state(acc, opt, ckpt) if ckpt is not None else common.TrainState()
    vv = VideoVectors(video_vectors, acc.device) if lam > 0 else None
    if embedder is not None:
        embedder.model.requires_grad_(False)
    metrics = out_dir / "metrics.jsonl"
    if acc.is_main_process:
        common.trim_metrics(metrics, state.step)
    cached_clip = functools.lru_cache(maxsize=max(1, tc.clip_cache))(clip_fn)
    bar = progress(total=total, desc="train", unit="step") if acc.is_main_process else None
    if bar is not None:
        bar.update(state.step)
    done_here, t_last, tokens_since = 0, time.time(), 0
    prefetch = _Prefetcher(rows, order, cached_clip, max(1, tc.grad_accum))
    while state.step < total and (stop_after is None or done_here < stop_after):
        prefetch.after(state)  # decode the NEXT step's clips in a thread while this step computes
        with torch.autograd.set_detect_anomaly(tc.detect_anomaly):  # train.detect_anomaly: the op of a NaN
            stats = _optimizer_step(acc, module, policy, opt, rows, order, cached_clip, tc, lam, tau, embedder, vv,
                                    state, total)
        state.step += 1
        done_here += 1
        tokens_since += stats["tokens"] if stats is not None else 0
        if acc.is_main_process and stats is not None and state.step % max(1, tc.log_every) == 0:
            now = time.time()  # seconds and tokens/s over the steps since the previous line
            stats.update(step=state.step, seconds=round(now - t_last, 4),
                         tokens_per_s=round(tokens_since / max(now - t_last, 1e-9), 1))
            t_last, tokens_since = now, 0
            append_jsonl(metrics, [stats])
        if bar is not None:
            bar.update(1)
            if stats is not None:
                bar.set_postfix(loss=f"{stats['loss']:.4f}")
        if tc.checkpoint_every and state.step % tc.checkpoint_every == 0 and state.step < total:
            common.save_checkpoint(acc, module, policy, opt, state, cfg, out_dir / common.checkpoint_name(state.step),
                                   extra={"run_key": key}, keep=tc.keep_checkpoints)
    prefetch.close()
    if bar is not None:
        bar.close()
    finished = state.step >= total
    final = None
    if finished:
        final = common.save_checkpoint(acc, module, policy, opt, state, cfg, out_dir / common.FINAL,
                                       extra={"run_key": key})
    summary = _summary(out_dir, state, total, finished, final, acc, groups)
    if acc.is_main_process:
        atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _optimizer_step(acc, module, policy, opt, rows, order, clip_fn, tc, lam, tau, embedder, vv, state, total):
    """grad_accum micro-batches, clip, AdamW step at the scheduled lr; the step's averaged stats."""
    factor = common.lr_factor(state.step, total, tc)
    common.set_lr(opt, factor)
    micro, ids = [], []
    try:
        for m in range(max(1, tc.grad_accum)):
            batch_rows = [rows[i] for i in order.next(state)]
            ids += [r.id for r in batch_rows]
            kept, clips = _load_batch(batch_rows, clip_fn, state)
            sync = m == max(1, tc.grad_accum) - 1
            ctx = acc.no_sync(module) if not sync and acc.num_processes > 1 else contextlib.nullcontext()
            with ctx:
                s = _micro_step(acc, module, policy, kept, clips, tc, lam, tau, embedder, vv, state) if kept else None
            if s is None and acc.num_processes > 1:  # the other ranks would wait for this one's gradients
                raise RuntimeError(f"rank {acc.process_index}: every row of a micro-batch was skipped at step "
                                   f"{state.step + 1} ({state.skipped_rows[-len(batch_rows):]}); fix the rows "
                                   "(a multi-process run cannot skip a whole micro-batch on one rank)")
            if s is not None:
                micro.append(s)
    except torch.cuda.OutOfMemoryError as e:
        opt.zero_grad(set_to_none=True)
        if tc.on_oom != "skip":
            raise RuntimeError(f"CUDA out of memory at step {state.step + 1} on rows {ids} "
                               f"(lower train.batch_size / train.max_tokens, or train.on_oom=skip): {e}") from None
        state.skipped["oom_step"] = state.skipped.get("oom_step", 0) + 1
        state.skipped_rows.append((",".join(ids), "CUDA out of memory (step skipped)"))
        torch.cuda.empty_cache()
        return None
    grad_norm = None
    if micro:
        # the total norm (all-reduced gradients: every rank decides alike); inf max_norm = measure only
        part_norms = common.grad_norms_by_part(policy)  # before clipping: read only if the total is non-finite
        grad_norm = float(acc.clip_grad_norm_(module.parameters(), tc.clip_grad if tc.clip_grad > 0 else math.inf))
        if math.isfinite(grad_norm):
            opt.step()
            state.nonfinite_run = 0
        else:
            _nonfinite_step(state, ids, f"{grad_norm} (in {', '.join(common.nonfinite_parts(part_norms))})", tc)
    opt.zero_grad(set_to_none=True)
    micro = [s for part in common.gather_objects(acc, micro) for s in part]  # the step over all processes
    if not micro:
        state.skipped["empty_step"] = state.skipped.get("empty_step", 0) + 1
        return None
    n = len(micro)
    nces = [s["infonce"] for s in micro if s["infonce"] is not None]
    state.rows_seen += sum(s["rows"] for s in micro)
    state.tokens_seen += sum(s["tokens"] for s in micro)
    return {"loss": sum(s["loss"] for s in micro) / n, "ce": sum(s["ce"] for s in micro) / n,
            "infonce": sum(nces) / len(nces) if nces else None, "lr": tc.lr * factor, "grad_norm": grad_norm,
            "rows": sum(s["rows"] for s in micro), "tokens": sum(s["tokens"] for s in micro),
            "target_tokens": sum(s["target_tokens"] for s in micro)}


def _nonfinite_step(state, ids, grad_norm, tc) -> None:
    """A step whose gradients are NaN/inf is not applied (one such step would poison every weight for the
    rest of the run: seen on the H200, base policy, bf16, step 156): counted in the summary with its rows;
    train.max_nonfinite_steps in a row is an error naming the step and rows."""
    state.skipped["nonfinite_step"] = state.skipped.get("nonfinite_step", 0) + 1
    state.nonfinite_run = getattr(state, "nonfinite_run", 0) + 1
    if len(state.skipped_rows) < 100:
        state.skipped_rows.append((",".join(ids), f"non-finite gradient norm {grad_norm} (step not applied)"))
    if state.nonfinite_run >= max(1, tc.max_nonfinite_steps):
        raise RuntimeError(f"{state.nonfinite_run} steps in a row with a non-finite gradient norm, the last at "
                           f"step {state.step + 1} on rows {ids}: lower the lr (train.lr / base.lr) or use "
                           f"train.mixed_precision=no; the last checkpoint is intact")


class _Prefetcher:
    """Warms the clip cache with the videos of the step after the current one, decoded by `workers` threads
    (PyAV decodes outside the GIL; one thread left a small model's first epoch waiting on decode); failures
    are left for the main path, which counts them."""

    def __init__(self, rows, order, clip_fn, accum: int, workers: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        self.rows, self.order, self.clip_fn, self.accum = rows, order, clip_fn, accum
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers))
        self.pending: list = []

    def after(self, state) -> None:
        if any(not f.done() for f in self.pending):
            return
        peek = common.TrainState(epoch=state.epoch, cursor=state.cursor)
        for _ in range(self.accum):  # skip this step's micro-batches
            self.order.next(peek)
        ids = dict.fromkeys(self.rows[i].video for _ in range(self.accum) for i in self.order.next(peek))
        self.pending = [self.pool.submit(self._load, v) for v in ids]

    def _load(self, video: str) -> None:
        try:
            self.clip_fn(video)
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _summary(out_dir: Path, state, total: int, finished: bool, final, acc, groups) -> dict:
    from videosearch_r1.utils import read_jsonl_resumable

    skipped, skipped_rows = common.skipped_over_ranks(acc, state)  # every rank takes part
    log = read_jsonl_resumable(out_dir / "metrics.jsonl") if acc.is_main_process else []
    return {"out_dir": str(out_dir), "steps": state.step, "total_steps": total, "complete": finished,
            "final_checkpoint": str(final) if final else None, "epoch": state.epoch,
            "rows_seen": state.rows_seen, "tokens_seen": state.tokens_seen,
            "skipped": skipped, "skipped_rows": [list(x) for x in skipped_rows],
            "trainable_parameters": common.count_parameters(groups), "processes": acc.num_processes,
            "losses": [r["loss"] for r in log], "last": log[-1] if log else None}
