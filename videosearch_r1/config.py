"""One typed config tree for every command: dataclasses, loaded from YAML plus dotted overrides.

    cfg = load_config("configs/default.yaml", ["agent.max_turns=2", "dataset=synth"])
    save_config(cfg, run_dir)          # every run directory gets its resolved config.yaml

The tree mirrors `videosearch_r1/configs/default.yaml`. A dataset is an entry under `datasets`, not a
script. The only environment variable read anywhere is VSR1_HOME (the workspace root: a machine
fact). Each section belongs to one part of the system; add fields to your own section.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

DEFAULT_WORKSPACE = "~/.cache/videosearch_r1"


def default_workspace() -> str:
    """The workspace root: $VSR1_HOME, else ~/.cache/videosearch_r1 (machine fact, not behaviour)."""
    return os.path.expanduser(os.environ.get("VSR1_HOME", DEFAULT_WORKSPACE))


# --------------------------------------------------------------------------------------- video
@dataclass
class VideoConfig:
    """How every consumer (indexing, SFT, GRPO, inference) samples and sizes frames. Shared."""

    fps: float = 1.0  # target sampling rate in frames per second of real time
    max_frames: int = 64  # cap; when it binds, frames are spread uniformly over the whole video
    min_frames: int = 2  # Qwen3-VL needs at least one 2-frame temporal patch
    min_pixels: int = 128 * 28 * 28  # per-frame pixel bounds (the reference's budget)
    max_pixels: int = 256 * 28 * 28
    backend: str = "pyav"


# --------------------------------------------------------------------------------------- data
@dataclass
class DatasetConfig:
    """One dataset in the raw VERIFIED layout: <root>/videos/<id><ext>, <root>/annotations/<file>."""

    root: str = ""  # empty: <workspace>/data/<name>/raw
    video_dir: str = "videos"
    video_ext: str = ".mp4"
    annotation_dir: str = "annotations"
    splits: dict[str, str] = field(default_factory=dict)  # split name -> JSONL file name
    query_field: str = "fig_desc"  # the query evaluated (fine-grained)
    video: Optional[VideoConfig] = None  # per-dataset sampling budget; None: the global `video`


def _builtin_datasets() -> dict[str, DatasetConfig]:
    return {
        "charades": DatasetConfig(splits={"train": "charades_fig_train.jsonl", "test": "charades_fig_test.jsonl"}),
        "didemo": DatasetConfig(splits={"train": "didemo_fig_train.jsonl", "val": "didemo_fig_val.jsonl",
                                        "test": "didemo_fig_test.jsonl"}),
        # ActivityNet Captions has no public test: val_1 serves as val, val_2 as test.
        "activitynet": DatasetConfig(splits={"train": "activitynet_fig_train.jsonl",
                                             "val": "activitynet_fig_val_1.jsonl",
                                             "test": "activitynet_fig_val_2.jsonl"}),
        # Tiny frames for the tiny models: the world is drawn at 96x64, sampled at 1 fps.
        "synth": DatasetConfig(splits={"train": "synth_fig_train.jsonl", "val": "synth_fig_val.jsonl",
                                       "test": "synth_fig_test.jsonl"},
                               video=VideoConfig(fps=1.0, max_frames=32, min_pixels=32 * 32, max_pixels=96 * 64)),
    }


# --------------------------------------------------------------------------------------- synth
@dataclass
class SynthConfig:
    """The synthetic fine-grained VCMR world (`vsr1 synth`). The preset fills every size field left
    unset (None); a value given in YAML or on the command line wins (synth/world.py PRESETS)."""

    preset: str = "default"  # "default" (< 2 min on 2 cores) | "large" (GPU training) | "tiny" (tests)
    seed: int = 0
    families: Optional[dict[str, int]] = None  # families per split (splits are disjoint in families)
    variants_per_family: Optional[int] = None  # near-duplicate videos per family (differ in 1-2 details)
    queries_per_video: Optional[int] = None  # the family's main moment + other moments of the video
    min_duration: Optional[float] = None  # seconds
    max_duration: Optional[float] = None
    long_fraction: Optional[float] = None  # share of families (per split) whose videos are longer than 64 s
    long_duration: Optional[tuple[float, float]] = None
    width: int = 96
    height: int = 64
    fps: int = 4  # of the written mp4 files
    noise: float = 4.0  # pixel noise std (uint8 units)
    companion_prob: float = 0.3  # share of families with a second, idle object in every variant
    workers: int = 0  # render processes; 0: one per CPU core
    sheet_families: int = 4  # families on the contact sheet


# --------------------------------------------------------------------------------------- engine
@dataclass
class EngineConfig:
    """The embedding model behind the search engine (Qwen3-VL-Embedding or a tiny same-arch one)."""

    model: str = ""  # hub id or local path; empty: <workspace>/models/synth-engine
    instruction: str = "Represent the user's input."
    dtype: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    device: str = "auto"
    batch_size: int = 32
    max_query_tokens: int = 128
    soft_insert: str = "before_tail"  # where latents go: "before_tail" (after the user text) | "reference"
    dim: int = 0  # Matryoshka truncation; 0 = full hidden size


@dataclass
class EngineTrainConfig:
    """`vsr1 engine train`: contrastive training of a small embedder on the synthetic world."""

    size: str = "tiny"  # tiny-model size preset (models/tiny.py); "small" for GPU runs
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 30
    temperature: float = 0.05
    fine_caption_prob: float = 0.25  # share of captions with the fine details (chosen on val; real engines: coarse)
    seed: int = 0
    output: str = ""  # empty: <workspace>/models/synth-engine
    learn_temperature: bool = True  # temperature starts at `temperature`, learned (clamped to >= 0.01)
    weight_decay: float = 0.01
    min_lr_ratio: float = 0.1  # cosine decay after warm-up down to lr * min_lr_ratio
    device: str = "auto"  # auto: cuda if available (bf16 autocast), else cpu (fp32)
    log_every: int = 10
    eval_every: int = 0  # steps between VR@1/VR@10 checks on the val split (0: only at the end)
    eval_splits: tuple[str, ...] = ("val", "test")  # evaluated at the end (those the dataset has)
    save_every: int = 50  # steps between resume snapshots (engine/resume.py; 0: none, a killed run starts over)
    world_families: int = 500  # synth: train on a separate world of this many train families (0: the benchmark's)
    # perception pretraining of the vision tower on labelled stills of the world, before the contrastive steps
    # (engine/perception.py; the stills are the synthetic world's, whatever the dataset): steps (0: none), AdamW lr,
    # stills per step, stills in the pool
    perception_steps: int = 0
    perception_lr: float = 1e-3
    perception_batch: int = 128
    perception_frames: int = 8192


@dataclass
class ChannelConfig:
    """`vsr1 engine channel`: per-query latents fitted to the ground truth (the ceiling of refinement)."""

    n_latents: int = 8  # soft tokens per query (the agent's agent.n_latents)
    steps: int = 300  # Adam steps per query batch
    lr: float = 0.3  # Adam learning rate (in units of the token-embedding RMS when scale="embed")
    scale: str = "embed"  # "embed": soft = z * RMS of the engine's token embeddings | "none": raw soft tokens
    init: str = "zeros"  # "zeros" | "random" (z ~ N(0, 1))
    temperature: float = 0.05  # InfoNCE over the whole corpus
    queries: int = 256  # a fixed random sample of the split's queries (0: all)
    batch_size: int = 256  # queries optimised together (one batched forward per step; engine.batch_size splits it)
    eval_every: int = 50  # steps between exact-rank checks (the VR@1 curve)
    seed: int = 0


@dataclass
class IndexConfig:
    """`vsr1 index`: FAISS factory string, search options, hard negatives for training queries."""

    factory: str = "Flat"  # "Flat" (exact IP), "IVF64,Flat", "HNSW32", ...
    use_gpu: bool = False
    nprobe: int = 16
    ef_search: int = 256
    shard_size: int = 64  # videos embedded per resumable shard
    hard_negatives: int = 50


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8765
    max_batch: int = 256
    max_k: int = 1000
    max_soft_tokens: int = 64  # soft tokens per refined query accepted by /embed_refined
    max_body_mb: float = 64.0  # request bodies over this are refused (413) before they are read
    max_text_chars: int = 4096  # longest query text accepted, in characters (413 beyond)
    max_text_tokens: int = 1024  # longest query text accepted, in tokenizer tokens (413 beyond)


# --------------------------------------------------------------------------------------- library
@dataclass
class LibraryConfig:
    """`vsr1 library|search|clip|web`: your own videos, embedded as whole videos and moment windows."""

    store: str = "faiss+sqlite://"  # faiss+sqlite:///DIR | milvus+sqlite:///DIR[?uri=http://HOST:19530]; no DIR: <workspace>/library
    video_budget: str = "synth"  # frames sampled as datasets.<name>.video (the engine's budget); "": the global `video`
    window: float = 8.0  # moment window length, seconds
    stride: float = 4.0  # seconds between window starts (< window: overlapping moments)
    window_frames: int = 16  # frame cap per moment window (sampled at the budget's fps)
    windows_per_batch: int = 64  # windows decoded at once per video (bounds memory on long videos)
    extensions: tuple[str, ...] = (".mp4", ".mkv", ".mov", ".webm", ".avi")  # scanned, case-insensitive
    hash_bytes: int = 1 << 20  # leading bytes hashed into a file's fingerprint (with size and mtime)
    thumb_size: int = 160  # longest side of a moment's JPEG thumbnail, pixels
    top_k: int = 10  # moments listed by `vsr1 search` and the web page
    host: str = "127.0.0.1"  # `vsr1 web` binds loopback unless told otherwise
    port: int = 8780


# --------------------------------------------------------------------------------------- agent
@dataclass
class AgentConfig:
    """The policy and the multi-turn loop: retrieve -> verify -> refine (SQR) or ground."""

    checkpoint: str = ""  # policy: hub id or local path
    method: str = "sqr"  # "sqr" | "engine" (top-1 only) | "zeroshot" (next candidate) | "hqr" (text rewrite)
    max_turns: int = 3
    n_latents: int = 8
    soft_scale: str = "none"  # SQR modules created fresh (base, SFT from an HF model): "none" (reference) | "embed" (soft tokens x the engine's token RMS, as channel.scale)
    refine_mode: str = "replace"  # "replace": original text + this turn's latents; "accumulate": all turns'
    max_new_tokens: int = 256
    batch_size: int = 8
    temperature: float = 0.0
    kv_cache: bool = True  # SQR rollout with a KV cache (False: the reference's full forward per step)
    reference_layout: bool = False  # load the authors' checkpoint layout and quirks
    decode_attention: str = "auto"  # decode-step attention: "auto" (matmul on CUDA, sdpa on CPU) | "sdpa" | "matmul"
    decode_compile: bool = True  # torch.compile the decode step (CUDA only; once per process, eager if it fails)
    cuda_graph: bool = True  # capture the decode step as a CUDA graph (CUDA only)
    compile_blocks: bool = False  # norms + MLPs torch.compile'd (CUDA; qwen3vl.compile_blocks): off until measured
    prefill_tokens: int = 65536  # verification prefill: rows of equal length bucketed, <= this many tokens per forward (0: one padded HF forward)
    vision_cache_mb: int = 2048  # visual-token cache (MiB on the policy's device): a video shown again is not re-encoded (0: off)
    prefetch: bool = True  # `vsr1 infer`: decode the next batch's first-turn clips in background threads while this batch runs
    device: str = "auto"  # policy device ("auto": cuda if available)
    dtype: str = "auto"  # policy dtype ("auto": bf16 on GPU, fp32 on CPU)
    profile_depths: tuple[int, ...] = ()  # also log the GT rank after refinement from the first d latents
    oracle_verifier: bool = False  # diagnostic (needs the GT): every turn's verdict is the truth, the policy's own is
                                   # kept as policy_answer; retrieval and refinement measured apart from the verifier


# --------------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """Knobs shared by every policy trainer (base, SFT, GRPO; train/common.py, train/trainer.py)."""

    init_checkpoint: str = ""  # policy to start from (hub id or path); `--checkpoint` overrides
    output: str = ""  # run directory; empty: <workspace>/runs/<run_name or train-<stage>>
    steps: int = 0  # optimizer steps; 0: `epochs` passes over the rows
    epochs: float = 1.0  # used when steps = 0
    batch_size: int = 2  # rows per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step (per process; replaced when global_batch > 0)
    global_batch: int = 0  # rows per optimizer step, all processes (>0: grad_accum = it / (batch_size x processes))
    lr: float = 2e-5  # language model (and tied embeddings / lm_head)
    lr_merger: float = 2e-5  # vision merger + deepstack mergers
    lr_vision: float = 2e-6  # vision tower (ViT blocks, patch and position embeddings)
    lr_sqr: float = 5e-5  # the three SQR projectors
    train_llm: bool = True  # which parts train
    train_merger: bool = True
    train_vision: bool = False
    train_sqr: bool = True  # only where the stage has an InfoNCE term (frozen otherwise)
    weight_decay: float = 0.0  # AdamW, on matrices only
    betas: tuple[float, ...] = (0.9, 0.999)  # AdamW
    warmup: int = 0  # linear warm-up steps
    schedule: str = "linear"  # after warm-up: "linear" decay | "cosine" | "constant"
    min_lr_ratio: float = 0.0  # decay floor as a share of each group's lr
    clip_grad: float = 1.0  # max grad norm (0: off)
    checkpoint_every: int = 0  # steps between checkpoints (0: only the final one)
    keep_checkpoints: int = 2  # newest step checkpoints kept (the final one always)
    log_every: int = 1  # steps between metrics.jsonl lines
    seed: int = 42  # data order and init randomness
    grad_checkpointing: bool = False  # recompute decoder layers in backward (SQR rollout then runs uncached)
    mixed_precision: str = "auto"  # "auto" (bf16 on GPU, none on CPU) | "no" | "bf16" (accelerate autocast)
    max_tokens: int = 0  # rows longer than this (prompt + target tokens) are counted skips (0: no limit)
    on_oom: str = "error"  # a CUDA OOM in a step: "error" (names the rows) | "skip" (counted in the summary)
    max_nonfinite_steps: int = 3  # NaN/inf gradients: the step is skipped (counted); this many in a row is an error
    detect_anomaly: bool = False  # debugging NaN gradients: torch.autograd anomaly mode names the op (slow)
    fast_step: bool = True  # rope_positions + batched vision attention + linear patch embed (False: HF path)
    rollout_compile: bool = False  # SQR latent steps under grad torch.compile'd on CUDA (agent/sqr_grad.py); off until measured on a GPU
    clip_cache: int = 256  # decoded clips kept in memory (LRU)


@dataclass
class BaseConfig:
    """`vsr1 train base`: the synthetic world's base policy, pretrained on generic video tasks of a separate
    world (describe / caption / ground / attribute / confirm: train/base_data.py; never verify or refine).
    Its own steps, lrs and batch replace train.steps / lr / lr_merger / lr_vision / batch_size / warmup for
    this stage (the vision tower trains)."""

    world_families: int = 300  # train families of the pretraining world (seed synth.seed + 104729, same preset)
    init: str = "engine"  # "engine": backbone copied from the trained engine (engine.model) | "scratch"
    extra_layers: int = field(default=0, metadata={"min": 0})  # init="engine": layers above the engine's (identity)
    size: str = "tiny"  # tiny-model size for init="scratch" ("small" on a GPU)
    tasks: dict[str, int] = field(  # rows per video of each task
        default_factory=lambda: dict(describe=1, caption=2, ground=2, attribute=3, confirm=2))
    steps: int = 0  # optimizer steps (0: train.epochs passes over the rows)
    lr: float = 3e-4  # language model + mergers
    lr_vision: float = 1e-4  # vision tower
    batch_size: int = 8  # rows per micro-batch per process
    warmup: int = 50  # linear warm-up steps (then train.schedule)
    eval_videos: int = 16  # benchmark val videos whose tasks are scored after training (0: none)
    seed: int = 0  # task sampling


@dataclass
class SFTConfig:
    """`vsr1 build sft` / `vsr1 train sft`: supervised verification + grounding, plus InfoNCE on SQR."""

    rows: str = ""  # training rows (JSONL); empty: <prepared>/sft_train.jsonl
    infonce_weight: float = 0.3  # lambda: loss = CE(assistant tokens) + lambda * InfoNCE(refined query)
    temperature: float = 0.1  # tau of the InfoNCE over [positive, negatives]
    rollout_cached: bool = True  # latents from a KV-cached rollout (False or grad checkpointing: full forwards)
    n_negatives: int = 24  # negatives per row: wrong top-1, then index hard negatives, then random fill
    balance: bool = True  # add pairs (GT shown / hard negative shown) towards matched_share
    matched_share: float = 0.5  # target share of matched rows when balancing
    max_queries: int = 0  # training queries used (0: all)
    trace_style: str = "restate"  # synthetic traces: "restate" (seen, the query restated alike, verdict) | "checklist"
    # (seen, each detail seen / asked: same or differs, verdict) | "details" (the checklist with size, colour and shape
    # checked apart) | "plain" (seen, verdict) | "query_first" (the query
    # restated, seen, each detail same or differs, verdict)
    teacher: str = ""  # real datasets: teacher VLM for reasoning traces ("none": template traces)
    teacher_batch_size: int = 8
    teacher_max_new_tokens: int = 256
    seed: int = 0  # negatives' random fill and balancing choices


def _grpo_reward_weights() -> dict[str, float]:
    return {"format": 0.1, "verification": 1.0, "iou": 1.0, "retrieval": 0.5, "turn_cost": 0.0}


@dataclass
class GRPOConfig:
    """`vsr1 train grpo`: multi-turn GRPO from an SFT checkpoint, rollouts through the agent loop
    (train/grpo.py). Optimizer parts, schedule, steps and checkpoints come from `train`; turns, latents
    and the refine mode from `agent`."""

    split: str = "train"  # queries rolled out; its index must exist (`vsr1 index DATASET --split train`)
    engine_url: str = ""  # empty: the engine in-process; else a `vsr1 serve` URL the rollouts search through
    queries_per_step: int = 4  # queries per optimizer step over ALL processes (each rank rolls out its share)
    rollout_groups: int = 0  # query groups sampled per decode, seeded by global position (0: all of a rank's)
    group_size: int = 8  # G trajectories per query; advantages are normalised within a group
    temperature: float = 1.0  # rollout sampling temperature
    top_p: float = 1.0  # rollout nucleus sampling
    max_new_tokens: int = 256  # generated tokens per turn in rollouts
    rollout_dtype: str = "auto"  # "auto": on CUDA a bf16 copy of the weights, synced each step | "train": the trained weights
    lr: float = 1e-6  # this stage's policy lr (replaces train.lr)
    lr_sqr: float = 1e-5  # this stage's SQR-module lr (replaces train.lr_sqr)
    schedule: str = ""  # this stage's lr schedule after warm-up ("constant" | "linear" | "cosine"; "": train.schedule)
    iterations: int = 1  # policy updates per rollout batch (1: on-policy, ratio 1, clipping inactive)
    micro_batch: int = 8  # turns per forward/backward (gradients accumulate over the step)
    clip_eps: float = 0.2  # PPO ratio clip, lower side (and upper unless clip_eps_high > 0)
    clip_eps_high: float = 0.0  # upper clip bound (DAPO clip-higher); 0: clip_eps
    kl_beta: float = 0.01  # k3 KL to the frozen SFT policy; 0: no reference model is kept
    aggregation: str = "token"  # "token": mean over every loss token of the step | "sequence": per turn, then mean
    scale_rewards: str = "group"  # "group": (r - mean) / std within a group | "none": r - mean
    reward_weights: dict[str, float] = field(default_factory=_grpo_reward_weights)  # train/rewards.py REWARDS
    verification_reward: str = "all"  # over a trajectory's turns: "all" (+1 only if every turn is right) | "mean"
    retrieval_reward: str = "exp_neg_loss"  # "exp_neg_loss": p of the refined query | "delta": p_after - p_before
    retrieval_tau: float = 0.1  # temperature of the retrieval probability and of the InfoNCE term
    n_negatives: int = 24  # per query: the corpus videos nearest to the original query, GT excluded
    latent_objective: str = "infonce"  # SQR in this stage: "infonce" | "gaussian" | "both" | "none" (frozen)
    latent_weight: float = 0.3  # weight of the latent objective in the loss
    latent_sigma: float = 0.05  # std of the Gaussian latent action (soft-token units), "gaussian" / "both"
    max_queries: int = 0  # training queries used (0: all of the split)
    corpus_size: int = field(default=0, metadata={"min": 0})  # > 0: a query's rollouts search only its GT's chunk
    # of this many videos (the split index's ids sorted, cut in consecutive chunks: the synthetic world's families
    # stay together), so the engine's top-1 is right about as often as on an evaluation corpus of that size; the learned
    # accept / reject balance follows it (docs/results.md, sixth run). 0: the whole split index.
    seed: int = 0  # rollout sampling, latent noise and query order


@dataclass
class EvalConfig:
    iou_thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)
    recall_ks: tuple[int, ...] = (1, 5, 10, 100)


# --------------------------------------------------------------------------------------- user paths
@dataclass
class DownloadConfig:
    """`vsr1 download` and `vsr1 data annotations`: released checkpoints, prepared data, FIG files."""

    hub_org: str = "VideoSearchR1"  # owner of the released checkpoint repos (alias table: data/download.py)
    bucket: str = "hf://buckets/VideoSearchR1/data"  # prepared datasets: <bucket>/datasets/<key>/manifest.json
    engine_model: str = "Qwen/Qwen3-VL-Embedding-2B"  # the engine whose vectors the prepared data ships
    annotations_host: str = "github"  # where the VERIFIED FIG files are: "github" (raw files) | "hf" (dataset repo)
    annotations_repo: str = "hlchen23/VERIFIED"  # that repository
    annotations_path: str = "fine-grained-anno"  # its folder holding <dataset>-fig/<file>.jsonl
    annotations_revision: str = "main"  # branch / tag / commit
    mirror: str = ""  # a local directory laid out like the hub (offline machines, tests); empty: the network
    checkpoints_dir: str = ""  # empty: <workspace>/checkpoints
    workers: int = 4  # parallel transfers and conversions
    verify: str = "sha256"  # file check: "sha256" where the source gives one (else size) | "size"
    min_free_gb: float = 2.0  # headroom left free on the target disk after a download
    keep_archives: bool = False  # keep the prepared data's tar shards after extraction


@dataclass
class BuildConfig:
    """`vsr1 build DATASET`: the from-scratch pipeline (steps and their outputs: data/build.py)."""

    splits: tuple[str, ...] = ()  # splits to build (empty: every split of the dataset)
    workers: int = 0  # processes decoding videos into the frame store (0: one per CPU core)
    verify: str = "sha256"  # check of a finished step's outputs before it is skipped: "sha256" | "size"
    sft_module: str = "videosearch_r1.train.sft_data"  # `main([DATASET, ...])` of the SFT-data step
    grpo_module: str = ""  # `main([DATASET, ...])` of a GRPO-data step; empty: none (GRPO rolls out on the split live)


@dataclass
class ToyConfig:
    """`vsr1 toy`: step counts where stages share `train` (SFT and GRPO read train.steps), real copies, overlap."""
    grpo_steps: int = 4  # optimizer steps of the toy's GRPO stage (passed as train.steps to that stage)
    grpo_warmup: int = 0  # warm-up steps of the toy's GRPO stage (train.warmup there; SFT keeps train.warmup)
    videos_per_split: int = 10  # `vsr1 toy --dataset D`: videos per split of the real dataset (that exist and decode)
    seed: int = 0  # `--dataset D`: the fixed order videos are tried in (data/toyset.py)
    video: Optional[VideoConfig] = None  # `--dataset D`: frame sampling of the toy copy (None: the dataset's own)
    overlap: bool = False  # indexes + channel beside the base, evaluations before GRPO beside GRPO (child processes)


# --------------------------------------------------------------------------------------- root
@dataclass
class Config:
    workspace: str = field(default_factory=default_workspace)
    dataset: str = "synth"
    split: str = "test"
    run_name: str = ""  # empty: derived from command + time
    seed: int = 0
    datasets: dict[str, DatasetConfig] = field(default_factory=_builtin_datasets)
    video: VideoConfig = field(default_factory=VideoConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    engine_train: EngineTrainConfig = field(default_factory=EngineTrainConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    library: LibraryConfig = field(default_factory=LibraryConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    toy: ToyConfig = field(default_factory=ToyConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    build: BuildConfig = field(default_factory=BuildConfig)

    # ---- derived paths (one place, so every command agrees on the workspace layout)
    def dataset_cfg(self, name: str | None = None) -> DatasetConfig:
        name = name or self.dataset
        if name not in self.datasets:
            raise ConfigError(f"unknown dataset {name!r}; known: {sorted(self.datasets)}")
        return self.datasets[name]

    def video_cfg(self, name: str | None = None) -> VideoConfig:
        """The sampling budget for a dataset: its own `video` entry, else the global one."""
        return self.dataset_cfg(name).video or self.video

    def dataset_root(self, name: str | None = None) -> Path:
        name = name or self.dataset
        root = self.dataset_cfg(name).root
        return Path(root).expanduser() if root else Path(self.workspace).expanduser() / "data" / name / "raw"

    def prepared_dir(self, name: str | None = None) -> Path:
        return Path(self.workspace).expanduser() / "data" / (name or self.dataset) / "prepared"

    def engine_model(self) -> str:
        return self.engine.model or str(Path(self.workspace).expanduser() / "models" / "synth-engine")

    def index_dir(self, name: str | None = None) -> Path:
        tag = Path(self.engine_model().rstrip("/")).name
        return Path(self.workspace).expanduser() / "indexes" / (name or self.dataset) / tag

    def runs_dir(self) -> Path:
        return Path(self.workspace).expanduser() / "runs"


class ConfigError(ValueError):
    pass


# --------------------------------------------------------------------------------------- loading
def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type `tp` (dataclasses, dicts, tuples, scalars)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], where)
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        elem = args[0] if args else Any
        out = [_coerce(v, elem, where) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        try:
            out = tp(value)
        except ValueError:
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise ConfigError(f"{where}: expected int, got {value!r}")
        return out
    if tp is str:
        return "" if value is None else str(value)
    return value


def _build(cls, data: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    for f in dataclasses.fields(cls):  # bounds declared on the field (metadata "min"), checked at load
        low = f.metadata.get("min")
        if low is not None and f.name in kwargs and kwargs[f.name] < low:
            raise ConfigError(f"{where + '.' if where else ''}{f.name}: must be >= {low}, got {kwargs[f.name]!r}")
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    def conv(x):
        if dataclasses.is_dataclass(x):
            return {f.name: conv(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [conv(v) for v in x]
        return x

    return conv(cfg)


def _merge(base: dict, upd: dict) -> dict:
    out = dict(base)
    for k, v in upd.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(item: str) -> dict:
    """`a.b.c=value` -> {"a": {"b": {"c": parsed value}}}; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- dotted overrides, type-checked against the dataclasses."""
    data = to_dict(Config())
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = _merge(data, loaded)
    for item in overrides or []:
        data = _merge(data, parse_override(item))
    return _build(Config, data, "")


def default_yaml() -> str:
    """The built-in tree as YAML (the shipped configs/default.yaml; workspace left to VSR1_HOME)."""
    data = to_dict(Config())
    data.pop("workspace")
    head = "# The built-in config tree (videosearch_r1/config.py). Regenerate: python -m videosearch_r1.config\n"
    return head + yaml.safe_dump(data, sort_keys=False)


def save_config(cfg: Config, run_dir: str | Path) -> Path:
    """Write the resolved config to <run_dir>/config.yaml atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "config.yaml"
    tmp = out.with_suffix(f".yaml.{os.getpid()}.tmp")  # per process: concurrent writers never share it
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, out)
    return out


if __name__ == "__main__":  # regenerate the shipped default.yaml
    (Path(__file__).parent / "configs" / "default.yaml").write_text(default_yaml())
