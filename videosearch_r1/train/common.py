"""Shared training infrastructure for every policy trainer (base, SFT, GRPO): accelerate, seeding,
parameter groups, the LR schedule, checkpoints, the data order and the metrics log.

    acc = make_accelerator(cfg.train)                     # one process, several GPUs, several nodes alike
    groups = param_groups(policy, cfg.train, sqr=True)    # which parts train and their learning rates
    save_checkpoint(acc, module, policy, opt, state, cfg, out_dir / "checkpoint-000100")
    ckpt = latest_checkpoint(out_dir)                     # resume point (None: start fresh)

Distribution is accelerate's business: `accelerate launch --config_file F -m videosearch_r1.cli train sft`
(or torchrun) picks DDP or FSDP2 from accelerate's own config file (videosearch_r1/configs/accelerate/,
docs/training.md); no code here chooses. DeepSpeed is refused (its engine accumulates gradients on a fixed
count; ours accumulate themselves). Under FSDP the optimizer state goes through `accelerator.save_state` (a folder
`accelerate_state/` inside the checkpoint); with one process or DDP it is part of `trainer_state.pt`.

A checkpoint directory is what `vsr1 infer --checkpoint DIR` loads with no flags (Policy.save_pretrained:
HF model + processor + sqr.safetensors + sqr_config.json), plus `trainer_state.pt` (optimizer, step, RNG
states, data-order position, run counters), `run_key.json` (the run key a rerun is checked against, small,
so that check never reads the optimizer state) and the resolved `config.yaml`. It is written to a temp dir
and renamed into place, so a kill never leaves a half checkpoint under the final name. A resume reads
trainer_state.pt once (load_trainer_state).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"
KEY_FILE = "run_key.json"  # {"run_key": ..., "start": ...} beside the state (extra["run_key"] / ["start"])
CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
FINAL = "final"


# ----------------------------------------------------------------------------- accelerate / seeding
def soft_scale(cfg, embedder=None) -> float:
    """The soft-token scale for SQR modules created fresh (agent.soft_scale): 1.0 ("none", the reference) or
    the RMS of the engine's input token embeddings ("embed", what `vsr1 engine channel` scales latents by),
    from `embedder` or read from the engine checkpoint's safetensors (cfg.engine_model())."""
    mode = cfg.agent.soft_scale
    if mode == "none":
        return 1.0
    if mode != "embed":
        raise ValueError(f"agent.soft_scale must be 'none' or 'embed', got {mode!r}")
    if embedder is not None:
        from videosearch_r1.engine.channel import token_rms

        return token_rms(embedder)
    from safetensors import safe_open

    root = Path(cfg.engine_model())
    for f in sorted(root.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            name = next((k for k in st.keys() if k.endswith("embed_tokens.weight")), None)
            if name is not None:
                return float(st.get_tensor(name).float().pow(2).mean().sqrt())
    raise FileNotFoundError(f"agent.soft_scale=embed: no embed_tokens.weight in {root}/*.safetensors "
                            "(train or point engine.model at the engine first)")


def make_accelerator(tc):
    """An accelerate Accelerator for the `train` section (mixed precision; unused params allowed under DDP,
    since rows without <REFINE> leave the SQR modules out of a step); cuDNN attention off on CUDA
    (qwen3vl.guard_sdpa_backward)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    mp = tc.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() else "no"
    if mp not in ("no", "bf16", "fp16"):
        raise ValueError(f"train.mixed_precision must be auto, no, bf16 or fp16; got {tc.mixed_precision!r}")
    from videosearch_r1.models.qwen3vl import guard_sdpa_backward

    guard_sdpa_backward()  # cuDNN attention backward NaNs on left-padded rows (torch 2.11; models/qwen3vl.py)
    acc = Accelerator(mixed_precision=mp, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if acc.distributed_type == DistributedType.DEEPSPEED:  # its engine accumulates and steps on its own count
        raise ValueError("DeepSpeed launches are not supported: the trainers accumulate gradients themselves (GRPO "
                         "over a varying number of micro-batches); use the DDP or FSDP2 accelerate configs in "
                         "videosearch_r1/configs/accelerate/ (docs/training.md)")
    return acc


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    out = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- parameters
PARTS = ("llm", "merger", "vision", "sqr")


def part_of(name: str) -> str:
    """Which part a parameter of a Policy belongs to, from its name in `model` / `sqr`."""
    if name.startswith("sqr."):
        return "sqr"
    if ".visual." in f".{name}":
        return "merger" if (".merger." in name or ".deepstack_merger_list." in name) else "vision"
    return "llm"


def grad_norms_by_part(policy) -> dict[str, torch.Tensor]:
    """{part: norm of its gradients}, taken BEFORE clipping (a NaN total norm makes clipping scale every
    gradient by NaN): queued on the device, read only when a step's norm is non-finite, to name the parts
    it came from (the vision tower is reached only through the token forward; SQR also through the latents)."""
    grads: dict[str, list] = {}
    for name, p in named_policy_parameters(policy):
        if p.grad is not None:
            grads.setdefault(part_of(name), []).append(p.grad)
    return {k: torch.nn.utils.get_total_norm(v) for k, v in grads.items()}


def nonfinite_parts(norms: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k for k, n in norms.items() if not bool(torch.isfinite(n)))


def named_policy_parameters(policy):
    yield from ((f"model.{n}", p) for n, p in policy.model.named_parameters())
    yield from ((f"sqr.{n}", p) for n, p in policy.sqr.named_parameters())


def param_groups(policy, tc, sqr: bool = True) -> list[dict]:
    """Set requires_grad per part (train.train_llm/merger/vision/sqr; the SQR modules only when the stage
    uses them: `sqr`) and return AdamW groups: one per part with its lr, matrices decayed, the rest not."""
    lrs = {"llm": tc.lr, "merger": tc.lr_merger, "vision": tc.lr_vision, "sqr": tc.lr_sqr}
    on = {"llm": tc.train_llm, "merger": tc.train_merger, "vision": tc.train_vision, "sqr": tc.train_sqr and sqr}
    buckets: dict[tuple[str, bool], list] = {}
    for name, p in named_policy_parameters(policy):
        part = part_of(name)
        p.requires_grad_(bool(on[part]))
        if on[part]:
            buckets.setdefault((part, p.ndim >= 2), []).append(p)
    groups = []
    for (part, decay), params in sorted(buckets.items()):
        groups.append({"params": params, "lr": lrs[part], "base_lr": lrs[part], "part": part,
                       "weight_decay": tc.weight_decay if decay else 0.0})
    if not groups:
        raise ValueError("nothing to train: every part is frozen (train.train_llm/merger/vision/sqr)")
    return groups


def count_parameters(groups: list[dict]) -> dict:
    out: dict[str, int] = {}
    for g in groups:
        out[g["part"]] = out.get(g["part"], 0) + sum(p.numel() for p in g["params"])
    return out


def lr_factor(step: int, total: int, tc) -> float:
    """Multiplier of each group's base lr at optimizer step `step` (0-based): linear warm-up over
    train.warmup steps, then "linear" / "cosine" decay to min_lr_ratio at `total`, or "constant"."""
    if tc.warmup and step < tc.warmup:
        return (step + 1) / tc.warmup
    if tc.schedule == "constant":
        return 1.0
    frac = min(1.0, (step - tc.warmup) / max(1, total - tc.warmup))
    if tc.schedule == "linear":
        shape = 1.0 - frac
    elif tc.schedule == "cosine":
        shape = 0.5 * (1 + math.cos(math.pi * frac))
    else:
        raise ValueError(f"train.schedule must be linear, cosine or constant; got {tc.schedule!r}")
    return tc.min_lr_ratio + (1 - tc.min_lr_ratio) * shape


def set_lr(optimizer, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor


# ----------------------------------------------------------------------------- data order
@dataclass
class TrainState:
    """Where a run is; saved in trainer_state.pt so a resumed run continues with the same data order."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current pass over the rows
    cursor: int = 0  # micro-batches of this epoch consumed (all processes together)
    rows_seen: int = 0
    tokens_seen: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows (or steps, for "oom_step")
    skipped_rows: list[tuple[str, str]] = field(default_factory=list)  # first (row id, reason) pairs
    nonfinite_run: int = 0  # optimizer steps in a row whose gradients were NaN/inf (not applied)

    def skip(self, row_id: str, reason: str, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        if len(self.skipped_rows) < 100:
            self.skipped_rows.append((row_id, reason))


class DataOrder:
    """Epoch e visits the rows in permutation(seed, e); each micro-batch is `batch` rows per process.
    Process p of P takes slice p of each group of P micro-batches. Pure function of (seed, epoch, cursor)."""

    def __init__(self, n_rows: int, batch: int, seed: int, world: int = 1, rank: int = 0):
        if n_rows < 1:
            raise ValueError("no training rows")
        self.n, self.batch, self.seed, self.world, self.rank = n_rows, max(1, batch), seed, world, rank
        self._perm: tuple[int, np.ndarray] | None = None

    @property
    def micro_per_epoch(self) -> int:
        return max(1, math.ceil(self.n / (self.batch * self.world)))

    def permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return self._perm[1]

    def next(self, state: TrainState) -> list[int]:
        """Row indices of this process's next micro-batch; advances state.epoch / state.cursor."""
        if state.cursor >= self.micro_per_epoch:
            state.epoch, state.cursor = state.epoch + 1, 0
        perm = self.permutation(state.epoch)
        start = (state.cursor * self.world + self.rank) * self.batch
        state.cursor += 1
        if self.world == 1:  # a short last batch
            return perm[start:start + self.batch].tolist()
        # several processes: every rank gets a full batch (wrapping to the epoch's first rows), so no rank
        # sits out a collective
        return perm[np.arange(start, start + self.batch) % self.n].tolist()


def total_steps(tc, order: DataOrder) -> int:
    if tc.steps > 0:
        return int(tc.steps)
    return max(1, math.ceil(tc.epochs * order.micro_per_epoch / max(1, tc.grad_accum)))


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The resume point: `final` if complete, else the highest `checkpoint-N` holding a trainer state."""
    out_dir = Path(out_dir)
    if (out_dir / FINAL / STATE_FILE).is_file():
        return out_dir / FINAL
    found = [(int(m.group(1)), p) for p in out_dir.glob("checkpoint-*")
             if (m := CKPT_RE.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


def _sharded(acc) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def save_checkpoint(acc, module, policy, optimizer, state: TrainState, cfg, path: Path, extra: dict | None = None,
                    keep: int = 0) -> Path:
    """Write a checkpoint directory atomically (temp dir + rename); main process writes the files."""
    from safetensors.torch import save_file

    from videosearch_r1.agent.policy import SQR_CONFIG, SQR_WEIGHTS
    from videosearch_r1.config import save_config

    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    if _sharded(acc):  # gather the full weights, and let accelerate save the sharded optimizer
        full = acc.get_state_dict(module)
        acc.save_state(str(tmp / "accelerate_state"))
        if acc.is_main_process:
            policy.model.save_pretrained(tmp, state_dict={k[len("model."):]: v for k, v in full.items()
                                                          if k.startswith("model.")})
            policy.processor.save_pretrained(tmp)
            save_file({k[len("sqr."):]: v.float().contiguous().cpu() for k, v in full.items() if k.startswith("sqr.")},
                      str(tmp / SQR_WEIGHTS), metadata={"format": "pt"})
            (tmp / SQR_CONFIG).write_text(policy.sqr_config.to_json())
    elif acc.is_main_process:
        policy.save_pretrained(tmp)
    if acc.is_main_process:
        torch.save({"state": asdict(state), "rng": rng_state(),
                    "optimizer": None if _sharded(acc) else optimizer.state_dict(), **(extra or {})},
                   tmp / STATE_FILE)
        if extra and "run_key" in extra:
            (tmp / KEY_FILE).write_text(json.dumps({k: extra[k] for k in ("run_key", "start") if k in extra},
                                                   sort_keys=True))
        save_config(cfg, tmp)
        old = path.parent / f".{path.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        if keep > 0:
            prune_checkpoints(path.parent, keep)
    acc.wait_for_everyone()
    return path


def prune_checkpoints(out_dir: Path, keep: int) -> None:
    found = sorted((int(m.group(1)), p) for p in Path(out_dir).glob("checkpoint-*") if (m := CKPT_RE.match(p.name)))
    for _, p in found[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def load_weights(policy, ckpt: Path) -> None:
    """Copy a checkpoint's model + SQR weights into `policy` in place (before accelerate.prepare)."""
    from safetensors.torch import load_file
    from transformers import Qwen3VLForConditionalGeneration

    from videosearch_r1.agent.policy import SQR_WEIGHTS

    saved = Qwen3VLForConditionalGeneration.from_pretrained(ckpt, dtype=policy.model.dtype)
    missing, unexpected = policy.model.load_state_dict(saved.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{ckpt}: weights do not fit the policy: missing {missing[:5]}, unexpected {unexpected[:5]}")
    policy.sqr.load_state_dict(load_file(str(ckpt / SQR_WEIGHTS)))


def run_key(rows, tc, processes: int, total: int) -> dict:
    """What a resumed run must share with the run that wrote its checkpoint: rows, data order, schedule."""
    import hashlib

    h = hashlib.sha1()
    for r in rows:
        h.update(json.dumps(r.to_json(), sort_keys=True).encode() + b"\n")
    return {"rows_sha1": h.hexdigest(), "rows": len(rows), "batch_size": tc.batch_size, "grad_accum": tc.grad_accum,
            "seed": tc.seed, "processes": processes, "total_steps": total}


def weights_key(policy) -> str:
    """A short key of the policy's starting weights (model + SQR modules), so that a run started from
    other weights (a retrained engine or base under the same path) does not reuse a finished run or
    resume into it. Per tensor: name, shape and a strided sample of its values (cheap at 2B shapes)."""
    import hashlib

    h = hashlib.sha1()
    for part in (policy.model, policy.sqr):
        for name, t in part.state_dict().items():
            flat = t.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)][:4096].float().cpu().numpy().tobytes()
            h.update(f"{name}{tuple(t.shape)}".encode() + sample)
    return h.hexdigest()[:16]


def saved_run_key(ckpt: Path) -> dict:
    """{"run_key": the key the checkpoint was written with (None if none), "start": its cheap starting-point
    key or None}: from run_key.json; a checkpoint of an older version has its key inside trainer_state.pt
    only (read memory-mapped: the optimizer tensors are not loaded)."""
    ckpt = Path(ckpt)
    if (ckpt / KEY_FILE).is_file():
        data = json.loads((ckpt / KEY_FILE).read_text())
        return {"run_key": data.get("run_key"), "start": data.get("start")}
    blob = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False, mmap=True)
    return {"run_key": blob.get("run_key"), "start": blob.get("start")}


def check_run_key(ckpt: Path, key: dict, ignore: tuple[str, ...] = ()) -> None:
    """Refuse to resume (or reuse) a checkpoint written with other rows / data order / schedule (`ignore`:
    key fields not compared, for a check made before they can be computed)."""
    from videosearch_r1.fingerprint import changed

    old = saved_run_key(ckpt)["run_key"]
    if not old:
        raise ValueError(f"{ckpt} holds no run key (written by an older version): its settings cannot be "
                         "checked; use another train.output / run_name, or delete that run to retrain")
    diff = [k for k in changed(old, key) if k not in ignore]  # a key only one side has counts too
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)} -> {key.get(k)}" for k in diff if k != "rows_sha1")
        raise ValueError(f"{ckpt} was written by a run with another {', '.join(diff)} ({shown}); "
                         "resume with the same rows and train settings, or use another train.output / run_name")


# train fields that change neither the data order nor the arithmetic (logging, bookkeeping, equal code paths)
NOT_IN_KEY = ("init_checkpoint", "output", "log_every", "checkpoint_every", "keep_checkpoints", "on_oom",
              "max_nonfinite_steps", "fast_step", "clip_cache", "grad_checkpointing", "rollout_compile",
              "detect_anomaly")


def settings_key(tc) -> str:
    """A digest of the `train` settings a resumed run must share (schedule, parts trained, lrs, clipping,
    precision, ...), so a rerun with another warm-up or lr is refused instead of continued."""
    from videosearch_r1.fingerprint import digest

    return digest({k: v for k, v in dataclasses.asdict(tc).items() if k not in NOT_IN_KEY})


def load_trainer_state(acc, optimizer, ckpt: Path) -> TrainState:
    """Optimizer, RNG and position of a checkpoint (after accelerate.prepare)."""
    blob = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
    if blob.get("optimizer") is not None:
        optimizer.load_state_dict(blob["optimizer"])
    elif (ckpt / "accelerate_state").is_dir():
        acc.load_state(str(ckpt / "accelerate_state"))
    set_rng_state(blob["rng"])
    s = blob["state"]
    return TrainState(**{**s, "skipped_rows": [tuple(x) for x in s.get("skipped_rows", [])]})


# ----------------------------------------------------------------------------- metrics log
def trim_metrics(path: Path, last_step: int) -> None:
    """Drop log lines after `last_step` (a resumed run redoes those steps), atomically."""
    from videosearch_r1.utils import atomic_write_text, read_jsonl_resumable

    rows = read_jsonl_resumable(path)
    kept = [r for r in rows if int(r.get("step", 0)) <= last_step]
    if len(kept) != len(rows):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


# ----------------------------------------------------------------------------- several processes
def effective_grad_accum(tc, world: int) -> int:
    """Micro-batches per optimizer step on each process: train.grad_accum, or, with train.global_batch > 0,
    global_batch / (batch_size x world) so the optimizer sees the same rows on 1 and N processes."""
    if tc.global_batch <= 0:
        return max(1, tc.grad_accum)
    per = max(1, tc.batch_size) * world
    if tc.global_batch % per:
        raise ValueError(f"train.global_batch={tc.global_batch} is not a multiple of train.batch_size x processes "
                         f"= {tc.batch_size} x {world}")
    return tc.global_batch // per


def per_process(total: int, world: int, field_name: str) -> int:
    """A global per-step count split evenly over `world` processes (ValueError naming the field if it cannot)."""
    if total < world or total % world:
        raise ValueError(f"{field_name}={total} must be a multiple of the number of processes ({world})")
    return total // world


def gather_objects(acc, obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] with one process)."""
    if acc.num_processes == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * acc.num_processes
    dist.all_gather_object(out, obj)
    return out


def all_reduce(acc, values: dict, op: str = "sum") -> dict:
    """Element-wise sum (or max, min) over processes of a dict of floats with the same keys on every rank."""
    if acc.num_processes == 1 or not values:
        return dict(values)
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=acc.device)
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return dict(zip(keys, t.tolist()))


STEP_SKIPS = ("empty_step", "oom_step", "no_trainable_turns")  # skip kinds that count steps, not rows


def skipped_over_ranks(acc, state: TrainState) -> tuple[dict, list]:
    """(skip counts summed over processes, the first skipped (row id, reason) pairs of all of them): a
    row skipped on rank 1 is counted in the summary rank 0 writes."""
    parts = gather_objects(acc, (dict(state.skipped), [tuple(x) for x in state.skipped_rows[:50]]))
    counts: dict[str, int] = {}
    for d, _ in parts:
        for k, v in d.items():  # whole-step kinds are decided together (counted once), row kinds add up
            counts[k] = max(counts.get(k, 0), v) if k in STEP_SKIPS else counts.get(k, 0) + v
    return counts, [x for _, rows in parts for x in rows][:50]
