"""`vsr1 train grpo`: Stage 2, multi-turn GRPO of the agent as it runs at inference, SQR trained too.

    vsr1 index synth --split train                                          # the rollouts' corpus
    vsr1 train grpo synth --checkpoint RUNS/sft-synth/final run_name=grpo-synth
    vsr1 train grpo synth --checkpoint P grpo.engine_url=http://127.0.0.1:8765   # search via `vsr1 serve`
    accelerate launch --num_processes 4 -m videosearch_r1.cli train grpo synth --checkpoint P run_name=grpo
Rerun the same command to resume a killed run (same run_name: newest checkpoint, same query order and
the same rollout seeds, so a resumed run repeats the uninterrupted one). A finished run is recognised
before the engine or any model is loaded (finished_run): its run key is checked against the queries and
settings, its starting weights against the content digest of --checkpoint's files (start_key); only when
those cannot tell (no digest recorded, a checkpoint whose loading initialises something) is the policy
loaded to compare its weights.

Top to bottom (train/common.py holds the accelerate set-up, parameter groups, checkpoints and data order
shared with SFT; train/trainer.py the policy preparation):
1. queries: the grpo.split of DATASET (grpo.max_queries); the engine in-process (SearchEngine over the
   split's index + the embedder) or a SearchClient to grpo.engine_url (with grpo.corpus_size each query
   searches only its GT's chunk of that many videos); the split index's video vectors (retrieval reward,
   InfoNCE) and the frozen embedder are always local.
2. the policy from --checkpoint (an SFT checkpoint; train.init_checkpoint otherwise), fresh SQR modules
   sized to the engine if it has none; a frozen copy of it is the KL reference (grpo.kl_beta > 0).
3. per step (train.steps, or train.epochs passes over the queries): grpo.queries_per_step queries x
   grpo.group_size trajectories rolled out through the agent loop with sampling (grpo_rollout.py; seed
   = grpo.seed and the step), rewards (rewards.py, grpo.reward_weights), group-normalised advantages,
   reference log-probs, then grpo.iterations updates of the clipped objective + grpo.latent_weight x the
   latent objective over micro-batches of grpo.micro_batch turns (grpo_step.py), AdamW at grpo.lr /
   grpo.lr_sqr with train's schedule and clipping.
4. <out_dir>/metrics.jsonl (one line a step): reward/<name> per reward function, reward/total, kl,
   entropy, clip_frac, latent losses, turns, tokens, rollout_s (rollout_stage_s: its seconds by loop stage;
   rollout_counts: generate calls, rows, decode steps; rollout_new_graphs: torch.compile graphs made) /
   logprob_s / update_s, tokens_per_s;
   checkpoint-N/ and final/ (load with `vsr1 infer DATASET --checkpoint <out_dir>/final`), summary.json.
   Curves: <out_dir>/grpo_curves.png at the end of a run (`python -m videosearch_r1.train.grpo_report
   <out_dir>/metrics.jsonl` redraws them, e.g. mid-run).
"""
from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from videosearch_r1.train import common
from videosearch_r1.train.grpo_loss import ADV_SCALES, AGGREGATIONS, group_advantages
from videosearch_r1.train.grpo_rollout import LoopDelta, RetrievalScorer, reward_columns, rollout
from videosearch_r1.train.grpo_step import (LATENT_OBJECTIVES, GRPOModule, Knobs, batch_logprobs, collate_turns,
                                            micro_loss)
from videosearch_r1.train.rewards import RETRIEVAL_MODES, VERIFICATION_MODES, check_weights, score
from videosearch_r1.train.trainer import _nonfinite_step


def check_grpo_config(g) -> None:
    """ValueError naming the grpo.* field that cannot run."""
    if g.group_size < 2:
        raise ValueError(f"grpo.group_size must be >= 2 (advantages compare a group), got {g.group_size}")
    for name in ("queries_per_step", "iterations", "micro_batch", "max_new_tokens", "n_negatives"):
        if getattr(g, name) < 1:
            raise ValueError(f"grpo.{name} must be >= 1, got {getattr(g, name)}")
    if not 0 < g.top_p <= 1 or g.temperature < 0:
        raise ValueError(f"grpo.top_p must be in (0, 1] and grpo.temperature >= 0, got {g.top_p}, {g.temperature}")
    for name, value, allowed in (("aggregation", g.aggregation, AGGREGATIONS),
                                 ("scale_rewards", g.scale_rewards, ADV_SCALES),
                                 ("retrieval_reward", g.retrieval_reward, RETRIEVAL_MODES),
                                 ("verification_reward", g.verification_reward, VERIFICATION_MODES),
                                 ("latent_objective", g.latent_objective, LATENT_OBJECTIVES)):
        if value not in allowed:
            raise ValueError(f"grpo.{name} must be one of {allowed}, got {value!r}")
    if g.latent_objective in ("gaussian", "both") and g.latent_sigma <= 0:
        raise ValueError(f"grpo.latent_sigma must be > 0 for the Gaussian latent objective, got {g.latent_sigma}")
    if g.corpus_size < 0:
        raise ValueError(f"grpo.corpus_size must be >= 0 (0: the whole split index), got {g.corpus_size}")
    check_weights(g.reward_weights)


def knobs(g) -> Knobs:
    return Knobs(g.clip_eps, g.clip_eps_high, g.kl_beta, g.aggregation, g.latent_objective, g.latent_weight,
                 g.latent_sigma, g.retrieval_tau)


# ------------------------------------------------------------------------------------ set-up
@dataclasses.dataclass
class Run:
    """Everything a GRPO step reads (built once by `setup`)."""

    cfg: object
    acc: object
    policy: object
    module: object
    opt: object
    ref_model: object
    loop: object
    scorer: RetrievalScorer
    embedder: object
    queries: list
    order: object
    total: int
    out_dir: Path
    key: dict = dataclasses.field(default_factory=dict)  # what a resumed run must share (see run_key)
    start: dict | None = None  # start_key of the checkpoint the policy was loaded from (None: not known)

    def extra(self) -> dict:
        """What a checkpoint of this run records beside its weights (train/common.py KEY_FILE)."""
        return {"run_key": self.key, "start": self.start}


def _engines(cfg, dataset: str, split: str, need_embedder: bool):
    """(engine the loop searches, local SearchEngine with the video vectors, embedder or None)."""
    from videosearch_r1.agent.infer import load_engine
    from videosearch_r1.engine.index import load_embedder
    from videosearch_r1.engine.search import SearchEngine

    g = cfg.grpo
    if not g.engine_url:
        engine = load_engine(cfg, dataset, split)
        return engine, engine, engine.embedder
    from videosearch_r1.engine.client import SearchClient

    local = SearchEngine.load(cfg.index_dir(dataset) / split)
    remote = SearchClient(g.engine_url)
    if list(remote.ids) != list(local.ids):
        raise ValueError(f"{g.engine_url} serves another corpus than {cfg.index_dir(dataset) / split}")
    return remote, local, load_embedder(cfg, dataset) if need_embedder else None


def setup(cfg, dataset: str, checkpoint: str, out_dir: Path, engine=None, policy=None) -> tuple[Run, object]:
    """Steps 1-2 of the module docstring, the accelerator, optimizer and resume point -> (run, state)."""
    from videosearch_r1.agent.loop import AgentLoop
    from videosearch_r1.agent.policy import Policy
    from videosearch_r1.config import ConfigError
    from videosearch_r1.engine.search import chunk_scopes
    from videosearch_r1.models.qwen3vl import configure_processor
    from videosearch_r1.train.trainer import _prepare_policy
    from videosearch_r1.video.decode import load_clip

    g, tc = cfg.grpo, cfg.train
    check_grpo_config(g)
    split, queries = _queries(cfg, dataset)
    latent_on = g.latent_objective != "none" and g.latent_weight > 0
    need_emb = g.latent_objective in ("infonce", "both") and latent_on
    if engine is None:
        engine, local, embedder = _engines(cfg, dataset, g.split, need_emb)
    else:
        local, embedder = engine, engine.embedder
    start = None
    if policy is None:
        ckpt = checkpoint or tc.init_checkpoint
        if not ckpt:
            raise ConfigError("no policy to start from: pass --checkpoint PATH (the SFT checkpoint)")
        he = embedder.hidden_size if embedder is not None else int(local.meta.get("hidden_size", 0) or 0)
        policy = Policy.from_pretrained(ckpt, device="cpu", dtype="fp32", embedder_hidden=he, seed=cfg.seed)
        start = start_key(ckpt)
    configure_processor(policy.processor, cfg.video_cfg(dataset))
    init_weights = common.weights_key(policy)
    acc = common.make_accelerator(tc)
    common.seed_everything(tc.seed)
    ref = clone_model(policy.model).requires_grad_(False).eval() if g.kl_beta > 0 else None
    _prepare_policy(policy, tc, acc)
    if ref is not None:
        ref.to(acc.device)
    roller = rollout_policy(policy, g.rollout_dtype, acc.device)
    if hasattr(roller, "set_decode"):  # the decode path for the device the policy now lives on
        roller.set_decode(cfg.agent.decode_attention, cfg.agent.decode_compile, cfg.agent.cuda_graph,
                          cfg.agent.compile_blocks and roller is not policy)  # never the trained model
    resume = common.latest_checkpoint(out_dir)
    order, stage_tc, total = _schedule(cfg, len(queries), acc.num_processes, acc.process_index)
    key = run_key(cfg, queries, acc.num_processes, total, init_weights)
    if resume is not None:
        common.check_run_key(resume, key)
        common.load_weights(policy, resume)
    groups = common.param_groups(policy, stage_tc, sqr=latent_on)
    opt = torch.optim.AdamW(groups, lr=g.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay,
                            fused=acc.device.type == "cuda")
    module, opt = acc.prepare(GRPOModule(policy, cfg.agent.n_latents, tc.fast_step,
                                                rollout_compile=tc.rollout_compile), opt)
    state = common.load_trainer_state(acc, opt, resume) if resume is not None else common.TrainState()
    acfg = dataclasses.replace(cfg.agent, method="sqr", max_new_tokens=g.max_new_tokens)
    clip_fn = functools.lru_cache(maxsize=max(1, tc.clip_cache))(lambda v: load_clip(cfg, dataset, v))
    loop = AgentLoop(acfg, engine, roller, clip_fn=clip_fn, durations={v: r.duration for v, r in split.videos.items()},
                     query_field=cfg.dataset_cfg(dataset).query_field)
    if g.corpus_size:
        scopes = chunk_scopes(local.ids, g.corpus_size)
        loop.scope = lambda q: scopes.get(q.video_id)  # a GT outside the index: the whole index
    check_distributed(acc, g)
    scorer = RetrievalScorer(local.vectors, local.ids, g.retrieval_tau, g.n_negatives)
    if embedder is not None:
        embedder.model.requires_grad_(False)
    run = Run(cfg, acc, policy, module, opt, ref, loop, scorer, embedder, queries, order, total, out_dir, key, start)
    return run, state


def _queries(cfg, dataset: str) -> tuple:
    """(the grpo.split of DATASET, its first grpo.max_queries queries)."""
    from videosearch_r1.data.fig import load_split

    g = cfg.grpo
    split = load_split(cfg, dataset, g.split)
    return split, (split.queries[: g.max_queries] if g.max_queries else split.queries)


def _schedule(cfg, n_queries: int, processes: int, rank: int) -> tuple:
    """(query order, the stage's `train` settings, total steps)."""
    g = cfg.grpo
    order = common.DataOrder(n_queries, common.per_process(g.queries_per_step, processes, "grpo.queries_per_step"),
                             g.seed, processes, rank)
    stage_tc = stage_train(cfg)
    return order, stage_tc, common.total_steps(stage_tc, order)


def stage_train(cfg):
    """The `train` settings of this stage: grpo.lr / lr_sqr / schedule over train's, one micro-step a step."""
    g = cfg.grpo
    return dataclasses.replace(cfg.train, lr=g.lr, lr_sqr=g.lr_sqr, grad_accum=1,
                               schedule=g.schedule or cfg.train.schedule)


def start_key(checkpoint) -> dict | None:
    """A stand-in for the starting weights' key that needs no model loaded: the content digest of a local
    checkpoint's weight, config and tokenizer files (not its trainer state), when those alone decide the
    loaded policy (SQR modules saved and <REFINE> in the tokenizer: nothing is initialised at random on
    load); None otherwise."""
    from videosearch_r1.agent.policy import SQR_CONFIG, SQR_WEIGHTS
    from videosearch_r1.agent.prompts import REFINE_TOKEN
    from videosearch_r1.fingerprint import digest, file_digest, model_files

    root = Path(checkpoint) if checkpoint else None
    if root is None or not root.is_dir() or not (root / SQR_WEIGHTS).is_file() or not (root / SQR_CONFIG).is_file():
        return None
    tok = [p for p in (root / "tokenizer_config.json", root / "tokenizer.json") if p.is_file()]
    if not any(REFINE_TOKEN in p.read_text() for p in tok):
        return None
    skip = {common.STATE_FILE, common.KEY_FILE, "config.yaml", "accelerate_state"}
    files = [p for p in model_files(root) if not skip.intersection(p.relative_to(root).parts)]
    return {"files": digest([[p.relative_to(root).as_posix(), file_digest(p)] for p in files])}


def finished_run(cfg, dataset: str, checkpoint: str, out_dir: Path, policy=None) -> dict | None:
    """The summary of the finished run at out_dir, before any engine or model is loaded; None when there is
    none, or when only the loaded policy can tell whether it started from the same weights (setup decides).
    A finished run with other queries / settings is refused here (ValueError), as setup would refuse it."""
    from accelerate import PartialState

    final = Path(out_dir) / common.FINAL
    if not ((final / common.STATE_FILE).is_file() and (Path(out_dir) / "summary.json").is_file()):
        return None
    check_grpo_config(cfg.grpo)
    _, queries = _queries(cfg, dataset)
    ps = PartialState()
    total = _schedule(cfg, len(queries), ps.num_processes, ps.process_index)[2]
    init = common.weights_key(policy) if policy is not None else None
    common.check_run_key(final, run_key(cfg, queries, ps.num_processes, total, init),
                         ignore=() if policy is not None else ("init_weights",))
    if policy is None:
        recorded = common.saved_run_key(final)["start"]
        if recorded is None or recorded != start_key(checkpoint or cfg.train.init_checkpoint):
            return None
    return json.loads((Path(out_dir) / "summary.json").read_text())


def run_key(cfg, queries: list, processes: int, total: int, init_weights: str) -> dict:
    """What a resumed (or reused finished) GRPO run must share with the run that wrote its checkpoint: the
    queries and their order, the group / step sizes, seeds, schedule and the starting weights (an SFT
    checkpoint retrained under the same path must not be continued from the old run's weights)."""
    import hashlib

    g = cfg.grpo
    h = hashlib.sha1("\n".join(str(q.qid) for q in queries).encode())
    from videosearch_r1.fingerprint import digest, section

    return {"queries_sha1": h.hexdigest(), "queries": len(queries), "queries_per_step": g.queries_per_step,
            "group_size": g.group_size, "seed": g.seed, "train_seed": cfg.train.seed, "processes": processes,
            "total_steps": total, "init_weights": init_weights, "lr": g.lr, "lr_sqr": g.lr_sqr,
            # rewards, sampling, KL, objective (an unset stage schedule, the per-turn mean verification reward and
            # the whole index as corpus, what runs had before those settings existed, add nothing: older runs keep
            # their key)
            "grpo": digest(section(cfg, "grpo", drop=("engine_url",) + (() if g.schedule else ("schedule",))
                                   + (("verification_reward",) if g.verification_reward == "mean" else ())
                                   + (() if g.corpus_size else ("corpus_size",)))),
            "agent": digest(section(cfg, "agent", drop=("device", "profile_depths", "compile_blocks"))),  # speed only
            "train": common.settings_key(cfg.train)}


def check_distributed(acc, g) -> None:
    """ValueError for a launch GRPO cannot run: FSDP would need the full weights gathered into every
    rank's rollout copy each step (not built yet; the rollouts decode with whole weights), and the per-rank
    share of grpo.queries_per_step must split into grpo.rollout_groups chunks."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.FSDP:
        raise ValueError("vsr1 train grpo runs under DDP (one process or several), not FSDP: launch with "
                         "videosearch_r1/configs/accelerate/ddp.yaml (docs/training.md)")
    share = common.per_process(g.queries_per_step, acc.num_processes, "grpo.queries_per_step")
    if g.rollout_groups and share % g.rollout_groups:
        raise ValueError(f"grpo.rollout_groups={g.rollout_groups} must divide grpo.queries_per_step / processes "
                         f"= {share}")


def rollout_policy(policy, rollout_dtype: str, device):
    """The Policy the rollouts decode with: the trained one, or ("auto" on CUDA) a bf16 copy of its
    model sharing its processor and SQR modules (fp32 master weights make a slow decode)."""
    if rollout_dtype not in ("auto", "train"):
        raise ValueError(f"grpo.rollout_dtype must be 'auto' or 'train', got {rollout_dtype!r}")
    if rollout_dtype == "train" or torch.device(device).type != "cuda" or policy.model.dtype == torch.bfloat16:
        return policy
    return bf16_copy(policy)


def clone_model(model, dtype=None):
    """An independent copy of a model (optionally cast). The fast-step forwards are instance attributes
    bound to their module; deepcopy rebinds them to the copied modules (it deep-copies a bound method's
    __self__ through the memo), which tests/test_grpo_train.py checks."""
    clone = copy.deepcopy(model)
    return clone.to(dtype) if dtype is not None else clone


def bf16_copy(policy):
    """A bf16 Policy over a copy of policy.model, sharing its processor and SQR modules."""
    from videosearch_r1.agent.policy import Policy

    model = clone_model(policy.model, torch.bfloat16).requires_grad_(False).eval()
    return Policy(model, policy.processor, policy.sqr, policy.sqr_config, refine_token_id=policy.refine_token_id)


@torch.no_grad()
def sync_rollout_weights(roller, policy) -> None:
    """Copy the trained weights into the rollout copy (a no-op when the rollouts use the trained policy), and
    empty the roller's visual-token cache: its weights key cannot see every in-place update (a fused AdamW
    step bumps no version counter), and the merger trains, so features of the last step's weights are stale."""
    cache = getattr(roller, "vision_cache", None)
    if cache is not None:
        cache.clear()
    if roller is policy or roller.model is policy.model:
        return
    for d, s in zip(roller.model.parameters(), policy.model.parameters()):
        d.copy_(s)


# ------------------------------------------------------------------------------------ one step
def rollout_step(run: Run, state) -> tuple[list, dict]:
    """Roll out this rank's share of the step's queries: (trajectories, clips). Chunks of
    grpo.rollout_groups query groups are sampled together, each seeded by grpo.seed, the step and the
    global position of its first query, so 1 and N processes sample the same trajectories."""
    g, policy = run.cfg.grpo, run.policy
    sync_rollout_weights(run.loop.policy, policy)
    qs = [run.queries[i] for i in run.order.next(state)]
    first = run.acc.process_index * len(qs)  # global position of this rank's first query in the step
    n = g.rollout_groups or len(qs)
    sigma = g.latent_sigma if g.latent_objective in ("gaussian", "both") else 0.0
    trajs, clips = [], {}
    policy.model.eval()
    try:
        for k in range(0, len(qs), n):
            seed = g.seed * 1_000_003 + state.step * 7919 + (first + k) * 104_729
            gen = torch.Generator(device=policy.device).manual_seed(seed)
            noise = torch.Generator().manual_seed(seed + 1)
            part, shown = rollout(run.loop, qs[k:k + n], g.group_size, scorer=run.scorer, generator=gen,
                                  temperature=g.temperature, top_p=g.top_p, latent_sigma=sigma, noise_generator=noise)
            for t in part:  # renumber into this rank's batch (group-major)
                t.index, t.group = t.index + len(trajs), t.group + k
                for turn in t.turns:
                    turn.traj = t.index
            trajs += part
            clips.update(shown)
        return trajs, clips
    finally:
        policy.model.train()


def rewards_step(run: Run, trajs: list) -> tuple[torch.Tensor, dict]:
    """Advantages [N] and the reward stats (reward/<name> means) of a rollout batch."""
    g = run.cfg.grpo
    completions, cols = reward_columns(trajs, run.loop.durations)
    total, parts = score(g.reward_weights, completions, mode=g.retrieval_reward,
                         verification_mode=g.verification_reward, **cols)
    adv = group_advantages(torch.tensor(total, dtype=torch.float32), g.group_size, g.scale_rewards)  # per group
    every = common.gather_objects(run.acc, (list(total), {k: list(v) for k, v in parts.items()}))
    total = [x for t, _ in every for x in t]  # the stats cover all processes' groups
    parts = {k: [x for _, p in every for x in p[k]] for k in parts}
    stats = {f"reward/{k}": float(np.mean(v)) for k, v in parts.items()}
    r = np.asarray(total).reshape(-1, g.group_size)
    stats.update({"reward/total": float(r.mean()), "reward/std_in_group": float(r.std(axis=1, ddof=1).mean()),
                  "groups_all_equal": int((r.std(axis=1) == 0).sum())})
    return adv, stats


def update_step(run: Run, trajs: list, clips: dict, adv: torch.Tensor) -> dict:
    """Reference (and old) log-probs, then grpo.iterations optimizer updates over micro-batches."""
    g, acc, policy = run.cfg.grpo, run.acc, run.policy
    kn = knobs(g)
    bad = policy.placeholder_ids  # never generated; a turn made elsewhere holding one is dropped (counted)
    nonfinite, bad_parts = 0, {}
    turns = [ts for t in trajs for ts in t.turns if not bad.intersection(ts.completion_ids)]
    dropped = sum(len(t.turns) for t in trajs) - len(turns)
    latent_on = kn.latent_objective != "none" and kn.latent_weight > 0
    chunks = [turns[i:i + g.micro_batch] for i in range(0, len(turns), g.micro_batch)]
    # the step's denominators over ALL processes (a 1-process run divides by the same numbers), and the
    # most micro-batches any rank has: every rank runs that many forwards/backwards (zero-weighted repeats)
    den = common.all_reduce(acc, {"tokens": sum(len(t.completion_ids) for t in turns), "turns": len(turns),
                                  "refined": sum(t.refined for t in turns) if latent_on else 0})
    n_micro = int(common.all_reduce(acc, {"n": len(chunks)}, "max")["n"])
    if not common.all_reduce(acc, {"n": len(chunks)}, "min")["n"]:  # a rank has nothing to train on: all skip
        return {"turns": 0, "dropped_placeholder_turns": dropped}
    batches = [collate_turns(policy, c, clips) for c in chunks]
    dev, dt = acc.device, policy.model.dtype
    t0 = time.perf_counter()
    with acc.autocast():
        refs = [batch_logprobs(run.ref_model, b, dev, dt) if run.ref_model is not None else None for b in batches]
        olds = [batch_logprobs(policy.model, b, dev, dt) if g.iterations > 1 else None for b in batches]
        for _ in range(n_micro - len(batches)) if g.iterations > 1 else ():  # same forwards on every rank
            batch_logprobs(policy.model, batches[0], dev, dt)
    t1 = time.perf_counter()
    negatives = {t.index: t.negatives for t in trajs}
    gt = {t.index: t.record.gt_video for t in trajs}
    sums: dict[str, float] = {}
    scale = float(acc.num_processes)  # gradients are averaged over processes; the loss is a global sum
    for _ in range(g.iterations):
        for i in range(n_micro):
            j, weight = (i, 1.0) if i < len(batches) else (0, 0.0)  # a repeat of micro-batch 0, weight 0
            c = chunks[j]
            loss, st = micro_loss(kn, run.module, batches[j], adv[[ts.traj for ts in c]], den, ref_logp=refs[j],
                                  old_logp=olds[j], embedder=run.embedder, scorer=run.scorer, negatives=negatives,
                                  gt=gt, device=dev, dtype=dt)
            last = i == n_micro - 1  # gradients are all-reduced once, after the step's last micro-batch
            with (acc.no_sync(run.module) if not last and acc.num_processes > 1 else contextlib.nullcontext()):
                acc.backward(loss * (scale * weight))
            if not weight:
                continue
            for k, v in st.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        clip = run.cfg.train.clip_grad  # the total norm always (inf max_norm = measure only): NaN/inf is caught
        part_norms = common.grad_norms_by_part(policy)
        grad_norm = float(acc.clip_grad_norm_(run.module.parameters(), clip if clip > 0 else math.inf))
        if math.isfinite(grad_norm):
            run.opt.step()
        else:  # not applied: one such update would poison every weight (counted by train_step)
            nonfinite += 1
            for part in common.nonfinite_parts(part_norms):  # where it came from, in the metrics
                bad_parts[part] = bad_parts.get(part, 0) + 1
        run.opt.zero_grad(set_to_none=True)
    t2 = time.perf_counter()
    latent_keys = ("latent_infonce", "latent_gaussian")
    present = common.all_reduce(acc, {k: float(k in sums) for k in latent_keys}, "max")
    sums = common.all_reduce(acc, {k: sums.get(k, 0.0) for k in ("loss", "tokens", "kl", "entropy", "clip_frac",
                                                                 *latent_keys)})
    counts = common.all_reduce(acc, {"forward_tokens": sum(b.n_tokens for b in batches), "dropped": dropped})
    n_tok, it = max(1.0, sums.get("tokens", 0.0)), g.iterations
    out = {"loss": sums.get("loss", 0.0) / it, "kl": sums.get("kl", 0.0) / n_tok,
           "entropy": sums.get("entropy", 0.0) / n_tok,
           "clip_frac": sums.get("clip_frac", 0.0) / n_tok, "grad_norm": grad_norm, "turns": int(den["turns"]),
           "completion_tokens": int(den["tokens"]), "forward_tokens": int(counts["forward_tokens"]),
           "refined_turns": int(den["refined"]), "logprob_s": round(t1 - t0, 4), "update_s": round(t2 - t1, 4),
           "dropped_placeholder_turns": int(counts["dropped"]), "nonfinite_updates": nonfinite,
           **({"nonfinite_parts": bad_parts} if bad_parts else {})}
    for k in latent_keys:
        if present[k]:
            out[k] = sums[k] / it / max(1, den["refined"])
    return out


def train_step(run: Run, state) -> dict | None:
    """One whole step: rollout, rewards, update; its metrics line (None when nothing was generated)."""
    factor = common.lr_factor(state.step, run.total, stage_train(run.cfg))
    common.set_lr(run.opt, factor)
    t0, probe = time.perf_counter(), LoopDelta(run.loop)
    trajs, clips = rollout_step(run, state)
    t1 = time.perf_counter()
    if not common.all_reduce(run.acc, {"any": float(any(t.turns for t in trajs))}, "min")["any"]:  # all ranks skip
        state.skipped["empty_step"] = state.skipped.get("empty_step", 0) + 1
        return None
    adv, stats = rewards_step(run, trajs)
    upd = update_step(run, trajs, clips, adv)
    if upd["turns"] == 0:  # every turn sampled a vision placeholder id (counted, no update)
        state.skipped["no_trainable_turns"] = state.skipped.get("no_trainable_turns", 0) + 1
        return None
    recs = [t.record for t in trajs]
    if upd["nonfinite_updates"]:  # counted; train.max_nonfinite_steps steps in a row is an error
        _nonfinite_step(state, [str(r.qid) for r in recs], upd["grad_norm"], run.cfg.train)
    else:
        state.nonfinite_run = 0
    stats.update(upd)
    stats.update(probe.metrics())  # where the rollout's time went: rollout_stage_s, rollout_counts, new graphs
    stats.update({"lr": run.cfg.grpo.lr * factor, "rollout_s": round(t1 - t0, 4),
                  "turns_per_trajectory": float(np.mean([len(r.turns) for r in recs])),
                  "found": float(np.mean([r.stop_reason == "matched" and r.turns[-1].gt_shown for r in recs])),
                  "stop_reasons": dict(sorted(collections.Counter(r.stop_reason for r in recs).items()))})
    state.rows_seen += len(trajs) * run.acc.num_processes
    state.tokens_seen += stats["forward_tokens"]
    return stats


# ------------------------------------------------------------------------------------ the run
def run_grpo(cfg, dataset: str, checkpoint: str = "", stop_after: int | None = None, engine=None,
             policy=None) -> dict:
    """Steps 1-4 of the module docstring; returns the summary (also <out_dir>/summary.json)."""
    from videosearch_r1.config import save_config
    from videosearch_r1.utils import append_jsonl, atomic_write_json, progress

    out_dir = Path(cfg.train.output) if cfg.train.output else cfg.runs_dir() / (cfg.run_name or f"grpo-{dataset}")
    finished = finished_run(cfg, dataset, checkpoint, out_dir, policy)  # before the engine and models load
    if finished is not None:
        return finished
    run, state = setup(cfg, dataset, checkpoint, out_dir, engine=engine, policy=policy)  # refuses another run's
    done = common.latest_checkpoint(out_dir)
    if done is not None and done.name == common.FINAL and (out_dir / "summary.json").is_file():
        return json.loads((out_dir / "summary.json").read_text())  # finished with the same key: reuse it
    acc, tc = run.acc, cfg.train
    if acc.is_main_process:  # one writer: ranks sharing out_dir raced on the same temporary file
        save_config(cfg, out_dir)
    metrics = out_dir / "metrics.jsonl"
    if acc.is_main_process:
        common.trim_metrics(metrics, state.step)
    bar = progress(total=run.total, desc="grpo", unit="step") if acc.is_main_process else None
    if bar is not None:
        bar.update(state.step)
    done_here = 0
    while state.step < run.total and (stop_after is None or done_here < stop_after):
        t0 = time.perf_counter()
        with torch.autograd.set_detect_anomaly(tc.detect_anomaly):  # train.detect_anomaly: the op of a NaN
            stats = train_step(run, state)
        state.step += 1
        done_here += 1
        if stats is not None and acc.is_main_process and state.step % max(1, tc.log_every) == 0:
            dt = time.perf_counter() - t0
            stats.update(step=state.step, seconds=round(dt, 4), tokens_per_s=round(stats["forward_tokens"] / dt, 1))
            append_jsonl(metrics, [stats])
        if bar is not None:
            bar.update(1)
            if stats is not None:
                bar.set_postfix(reward=f"{stats['reward/total']:.3f}", kl=f"{stats['kl']:.4f}")
        if tc.checkpoint_every and state.step % tc.checkpoint_every == 0 and state.step < run.total:
            common.save_checkpoint(acc, run.module, run.policy, run.opt, state, cfg,
                                   out_dir / common.checkpoint_name(state.step), extra=run.extra(),
                                   keep=tc.keep_checkpoints)
    if bar is not None:
        bar.close()
    finished = state.step >= run.total
    final = common.save_checkpoint(acc, run.module, run.policy, run.opt, state, cfg, out_dir / common.FINAL,
                                   extra=run.extra()) if finished else None
    summary = _summary(out_dir, state, run, finished, final)
    if acc.is_main_process:
        atomic_write_json(out_dir / "summary.json", summary)
        if finished and metrics.is_file():  # the reward / KL / entropy curves beside the metrics
            from videosearch_r1.train.grpo_report import grpo_series, plot_curves
            from videosearch_r1.utils import read_jsonl_resumable

            series = grpo_series(read_jsonl_resumable(metrics))
            if series:
                plot_curves(series, out_dir / "grpo_curves.png")
    return summary


def _summary(out_dir: Path, state, run: Run, finished: bool, final) -> dict:
    from videosearch_r1.utils import read_jsonl_resumable

    skipped = common.skipped_over_ranks(run.acc, state)[0]  # every rank takes part
    log = read_jsonl_resumable(out_dir / "metrics.jsonl") if run.acc.is_main_process else []
    return {"out_dir": str(out_dir), "steps": state.step, "total_steps": run.total, "complete": finished,
            "final_checkpoint": str(final) if final else None, "queries": len(run.queries),
            "trajectories": state.rows_seen, "tokens_seen": state.tokens_seen, "skipped": skipped,
            "rewards": [r.get("reward/total") for r in log], "last": log[-1] if log else None}


def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.config import ConfigError
    from videosearch_r1.utils import command_parser, config_from_args, parse_command

    parser = command_parser("vsr1 train grpo", __doc__)
    parser.add_argument("dataset", help="dataset name (an entry under `datasets` in the config)")
    parser.add_argument("--checkpoint", default="",
                        help="the SFT policy to start from (default: train.init_checkpoint)")
    args = parse_command(parser, argv)
    cfg = config_from_args(args, [f"dataset={args.dataset}"])
    try:
        summary = run_grpo(cfg, args.dataset, args.checkpoint)
    except (FileNotFoundError, ValueError, ConfigError, OSError) as e:
        print(f"vsr1 train grpo: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "rewards"}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
