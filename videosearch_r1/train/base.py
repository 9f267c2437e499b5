"""`vsr1 train base`: the synthetic world's base policy (the zero-shot baseline), pretrained from the
trained engine on generic video tasks of a separate world; never on verification or refinement.

    vsr1 train base run_name=base-synth                                   # CPU: tiny engine, tiny world
    vsr1 train base base.world_families=1500 base.steps=3000 base.batch_size=32 run_name=base-synth  # GPU
    accelerate launch -m videosearch_r1.cli train base ...                # several GPUs, same recipe
    vsr1 infer synth --checkpoint <workspace>/runs/base-synth/policy      # ZS: loads with no flags
Rerun the same command to resume a killed run (train/trainer.py: newest checkpoint, same data order).

Real training starts from Qwen3-VL-2B-Instruct, which already watches and describes video. This gives
the synthetic world the same starting point (environment.md §11: a backbone started from a trained
contrastive engine learns fine-grained verification where a random one stays at chance):
1. the pretraining world: the benchmark's preset at seed synth.seed + 104729 with base.world_families
   train families (<workspace>/data/synth-base/raw; built or completed here), and its task rows
   (train/base_data.py) written to <workspace>/data/synth-base/prepared/base_train.jsonl
2. the initial policy (base.init): "engine" copies the trained engine's Qwen3VLModel (engine.model;
   same architecture, same tokenizer) into a Qwen3VLForConditionalGeneration (lm_head tied to the
   token embeddings), adds <REFINE> (one new embedding row) and base.extra_layers decoder layers on top
   (starting as the identity: a deeper language model than the engine's); "scratch" is a random tiny policy of
   base.size. Fresh SQR modules sized to the engine (they do not train here: no InfoNCE term)
3. train_policy (train/trainer.py) with token CE on the answers; base.steps / lr / lr_vision /
   batch_size / warmup replace the `train` section's, and the vision tower trains
4. <out_dir>/policy: the final checkpoint without optimizer state (tens of MB), the ZS checkpoint
5. held-out check: teacher-forced answer-token CE and accuracy per task on base.eval_videos videos of
   the benchmark's val split (before training and after), in summary.json; a video that cannot be decoded
   drops its rows, counted in summary["heldout_skipped"] (and printed)
<out_dir> = train.output or <workspace>/runs/<run_name or base-synth>.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import torch

DATASET = "synth"


# ----------------------------------------------------------------------------- the initial policy
def engine_hidden(cfg) -> int:
    """The engine's text hidden size (the soft-token width He of the SQR modules); 0 without an engine."""
    from transformers import AutoConfig

    path = Path(cfg.engine_model())
    if not (path / "config.json").is_file():
        return 0
    return int(AutoConfig.from_pretrained(path).text_config.hidden_size)


def policy_from_engine(engine_path: str | Path, out: str | Path, seed: int = 0, extra_layers: int = 0) -> Path:
    """Write a policy checkpoint whose backbone (vision tower, mergers, language model) is the engine's
    Qwen3VLModel, lm_head tied to its token embeddings, and <REFINE> added; returns `out`. `extra_layers`
    (base.extra_layers) decoder layers are added on top of the engine's, each starting as the identity (its
    attention output and MLP down projections zero), so the policy starts computing what the engine did."""
    from transformers import AutoModel, AutoProcessor, Qwen3VLForConditionalGeneration

    from videosearch_r1.agent.prompts import REFINE_TOKEN

    engine = AutoModel.from_pretrained(engine_path, dtype=torch.float32)
    if type(engine).__name__ != "Qwen3VLModel":
        raise ValueError(f"{engine_path}: expected a qwen3_vl engine (Qwen3VLModel), got {type(engine).__name__}")
    config = engine.config
    config.tie_word_embeddings = True
    n_engine = _deepen(config.text_config, extra_layers)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    missing, unexpected = model.model.load_state_dict(engine.state_dict(), strict=False)
    added = [k for k in missing if k.startswith("language_model.layers.") and int(k.split(".")[2]) >= n_engine]
    missing = [k for k in missing if k not in added]
    if missing or unexpected:
        raise ValueError(f"{engine_path}: engine weights do not fit the policy: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    with torch.no_grad():  # the added layers write nothing to the residual stream until they train
        for layer in model.model.language_model.layers[n_engine:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    model.tie_weights()
    processor = AutoProcessor.from_pretrained(engine_path)
    tok = processor.tokenizer
    if REFINE_TOKEN not in tok.get_vocab():
        tok.add_tokens([REFINE_TOKEN], special_tokens=True)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        with torch.no_grad():  # the new row(s): the mean embedding, so <REFINE> starts as an average token
            emb = model.get_input_embeddings().weight
            n_old = engine.get_input_embeddings().weight.shape[0]
            emb[n_old:] = emb[:n_old].mean(0, keepdim=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _deepen(text_config, extra: int) -> int:
    """Add `extra` decoder layers to a text config (the kind of the last one); returns the old layer count."""
    n = text_config.num_hidden_layers
    if extra < 0:
        raise ValueError(f"base.extra_layers must be >= 0, got {extra}")
    text_config.num_hidden_layers = n + extra
    kinds = getattr(text_config, "layer_types", None)
    if kinds:
        text_config.layer_types = list(kinds) + [kinds[-1]] * extra
    return n


def initial_policy(cfg, work: Path):
    """Step 2: the Policy to pretrain (fp32, CPU; the trainer moves it)."""
    from videosearch_r1.agent.policy import Policy
    from videosearch_r1.models.tiny import make_tiny_checkpoint
    from videosearch_r1.models.qwen3vl import configure_processor
    from videosearch_r1.train import common

    bc = cfg.base
    if bc.init == "engine":
        if not (Path(cfg.engine_model()) / "config.json").is_file():
            raise FileNotFoundError(f"no engine at {cfg.engine_model()} to start the base policy from: train one "
                                    f"with `vsr1 engine train`, set engine.model, or use base.init=scratch")
        path = policy_from_engine(cfg.engine_model(), work, seed=cfg.train.seed, extra_layers=bc.extra_layers)
    elif bc.init == "scratch":
        path = make_tiny_checkpoint(work, kind="policy", size=bc.size, seed=cfg.train.seed,
                                    video_cfg=cfg.video_cfg(DATASET))
    else:
        raise ValueError(f"base.init must be 'engine' or 'scratch', got {bc.init!r}")
    policy = Policy.from_pretrained(str(path), device="cpu", dtype="fp32", embedder_hidden=engine_hidden(cfg),
                                    seed=cfg.seed, soft_scale=common.soft_scale(cfg))
    configure_processor(policy.processor, cfg.video_cfg(DATASET))
    return policy


def stage_config(cfg):
    """The config the trainer sees: base.steps / lr / lr_vision / batch_size / warmup over `train`."""
    bc = cfg.base
    train = dataclasses.replace(cfg.train, steps=bc.steps, lr=bc.lr, lr_merger=bc.lr, lr_vision=bc.lr_vision,
                                batch_size=bc.batch_size, warmup=bc.warmup, train_vision=True, train_sqr=False)
    return dataclasses.replace(cfg, train=train)


# ----------------------------------------------------------------------------- held-out check
def heldout_clips(rows, clip_fn) -> tuple[list, dict, dict]:
    """(rows whose video decodes, {video: clip}, skipped): each video decoded once; an unreadable one drops
    its rows, counted: skipped = {"video_unreadable": rows dropped, "examples": ["<video>: <error>", ...]}."""
    clips, bad = {}, {}
    for v in dict.fromkeys(r.video for r in rows):
        try:
            clips[v] = clip_fn(v)
        except Exception as e:  # noqa: BLE001  (a decode failure is this video's problem, counted)
            bad[v] = f"{type(e).__name__}: {e}"
    kept = [r for r in rows if r.video in clips]
    skipped = {"video_unreadable": len(rows) - len(kept), "examples": [f"{v}: {e}" for v, e in bad.items()][:10]}
    return kept, clips, (skipped if bad else {})


@torch.no_grad()
def task_scores(policy, rows, clip_fn, batch_size: int = 8, key: str = "task") -> dict:
    """Teacher-forced answer tokens per row.meta[key] (the task; key="attribute": colour / shape / size of the
    attribute rows; key="answer": yes / no of the confirm rows): mean CE, share of tokens the policy predicts
    (argmax), share of rows all right (exact), share of rows whose first answer token is right (first: the
    confirm rows' decision, "Yes" or "No")."""
    from videosearch_r1.models.qwen3vl import model_inputs
    from videosearch_r1.train.rows import collate
    from videosearch_r1.utils import progress

    bar = progress(total=len(rows), desc="task scores", unit="row")
    model = policy.model
    was_training = model.training
    model.eval()
    dev = policy.device
    sums: dict[str, list[float]] = {}
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        batch = collate(policy, chunk, [clip_fn(r.video) for r in chunk], device=dev)
        inputs = {k: v.to(dev) for k, v in batch.inputs.items()}
        if "pixel_values_videos" in inputs:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(model.dtype)
        logits = model(**model_inputs(model, inputs)).logits[:, :-1].float()
        target = batch.labels[:, 1:].to(dev)
        for j, r in enumerate(batch.rows):
            sel = target[j] != -100
            ce = torch.nn.functional.cross_entropy(logits[j][sel], target[j][sel], reduction="sum")
            hit = (logits[j][sel].argmax(-1) == target[j][sel]).sum()
            s = sums.setdefault(str(r.meta.get(key, "?")), [0.0, 0.0, 0, 0, 0, 0])  # ce, hits, tokens, exact,
            s[0] += float(ce)                                                            # rows, first right
            s[1] += float(hit)
            s[2] += int(sel.sum())
            s[3] += int(hit == sel.sum())
            s[4] += 1
            s[5] += int(sel.any() and bool(logits[j][sel][0].argmax() == target[j][sel][0]))
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    return {t: {"ce": s[0] / max(1, s[2]), "token_acc": 100 * s[1] / max(1, s[2]), "exact": 100 * s[3] / max(1, s[4]),
                "first": 100 * s[5] / max(1, s[4]), "rows": s[4]} for t, s in sorted(sums.items())}


HELDOUT_ROWS = {"confirm": 4}  # held-out rows per video of a task (1 for the others): the yes / no decision
                               # needs more rows than 1 per video to be read


def eval_rows(cfg) -> list:
    """Task rows of the first base.eval_videos videos of the BENCHMARK's val split (never trained on)."""
    from videosearch_r1.synth.world import resolve, sample_world
    from videosearch_r1.train.base_data import video_rows

    n = cfg.base.eval_videos
    if n <= 0 or "val" not in cfg.dataset_cfg(DATASET).splits:
        return []
    world = sample_world(resolve(cfg.synth))
    rows, counts = [], {"rows": {}, "unavailable": {}}
    videos = [(v, f.style) for f in world.families if f.split == "val" for v in f.videos][:n]
    for v, style in videos:
        one_each = {t: HELDOUT_ROWS.get(t, 1) for t, k in cfg.base.tasks.items() if k > 0}
        rows += video_rows(v, style, one_each, cfg.video_cfg(DATASET), DATASET, cfg.base.seed + 1, counts)
    return rows


# ----------------------------------------------------------------------------- the recipe
def run_base(cfg, stop_after: int | None = None) -> dict:
    """Steps 1-5 of the module docstring; returns the summary (also out_dir/summary.json)."""
    from videosearch_r1.agent.policy import Policy
    from videosearch_r1.models.qwen3vl import configure_processor
    from videosearch_r1.train.base_data import base_world, task_rows
    from videosearch_r1.train.rows import write_rows
    from videosearch_r1.train.trainer import train_policy
    from videosearch_r1.utils import atomic_write_json
    from videosearch_r1.video.decode import load_clip

    if cfg.dataset != DATASET:
        raise ValueError(f"vsr1 train base pretrains on the synthetic world (dataset=synth), got {cfg.dataset!r}")
    wcfg, world_name, world = base_world(cfg)
    rows, counts = task_rows(world, cfg.base, wcfg.video_cfg(world_name), world_name)
    write_rows(wcfg.prepared_dir(world_name) / "base_train.jsonl", rows)
    print(f"train base: {len(rows)} rows from {counts['videos']} videos: {counts['rows']}"
          + (f"; unavailable {counts['unavailable']}" if counts["unavailable"] else ""), flush=True)
    out_dir = Path(cfg.train.output) if cfg.train.output else cfg.runs_dir() / (cfg.run_name or "base-synth")
    scfg = stage_config(cfg)
    work = out_dir / ".init"
    shutil.rmtree(work, ignore_errors=True)
    try:
        policy = initial_policy(scfg, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    held, clips, held_skipped = heldout_clips(eval_rows(cfg), lambda v: load_clip(cfg, DATASET, v))
    if held_skipped:
        print(f"train base: held-out check: {held_skipped['video_unreadable']} rows skipped (unreadable videos): "
              + "; ".join(held_skipped["examples"][:3]), flush=True)
    bench_clip = clips.__getitem__
    before = task_scores(policy, held, bench_clip) if held else None
    summary = train_policy(scfg, policy, rows, out_dir, lambda v: load_clip(wcfg, world_name, v), section=cfg.base,
                           stop_after=stop_after)
    if not summary.get("complete"):
        return summary
    export = export_policy(out_dir / "final", out_dir / "policy")
    summary["policy"], summary["policy_mb"] = str(export), _size_mb(export)
    summary["rows"], summary["world"] = counts, str(wcfg.dataset_root(world_name))
    summary["heldout_skipped"] = held_skipped
    if held:  # scored through the exported checkpoint, loaded as inference loads it (no flags)
        trained = Policy.from_pretrained(str(export), device=str(policy.device), dtype="fp32")
        configure_processor(trained.processor, cfg.video_cfg(DATASET))
        summary["heldout_before"] = before
        summary["heldout_after"] = task_scores(trained, held, bench_clip)
        attr = [r for r in held if r.meta.get("task") == "attribute"]
        if attr:  # which detail the policy cannot see: the perception gate before SFT (docs/results.md)
            summary["heldout_attributes"] = task_scores(trained, attr, bench_clip, key="attribute")
        confirm = [r for r in held if r.meta.get("task") == "confirm"]
        if confirm:  # does it read the detail asked and set it against what it sees: "first" = the yes / no
            summary["heldout_confirm"] = task_scores(trained, confirm, bench_clip, key="answer")
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def export_policy(final: Path, out: Path) -> Path:
    """Copy a final checkpoint without trainer/optimizer state (what `vsr1 infer --checkpoint` needs)."""
    from videosearch_r1.train.common import KEY_FILE, STATE_FILE

    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(final, tmp, ignore=shutil.ignore_patterns(STATE_FILE, KEY_FILE, "accelerate_state"))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _size_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20, 1)


def format_summary(s: dict) -> str:
    lines = [f"train base: {s['steps']}/{s['total_steps']} steps, {s['rows_seen']} rows, loss "
             f"{s['losses'][0] if s['losses'] else float('nan'):.3f} -> "
             f"{s['last']['loss'] if s.get('last') else float('nan'):.3f}; skipped {s['skipped'] or 'none'}"]
    if s.get("policy"):
        lines.append(f"  ZS policy: {s['policy']} ({s['policy_mb']} MB)")
    for name in ("heldout_before", "heldout_after", "heldout_attributes", "heldout_confirm"):
        for task, r in (s.get(name) or {}).items():
            first = f"  first token {r['first']:.1f} %" if "first" in r else ""
            lines.append(f"  {name:15} {task:10} answer CE {r['ce']:.3f}  token acc {r['token_acc']:.1f} %  "
                         f"exact {r['exact']:.1f} %{first} ({r['rows']} rows)")
    if s.get("heldout_skipped"):
        sk = s["heldout_skipped"]
        lines.append(f"  held-out rows skipped: {sk['video_unreadable']} (unreadable videos: "
                     f"{'; '.join(sk['examples'])})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.config import ConfigError
    from videosearch_r1.utils import command_parser, config_from_args, parse_command

    parser = command_parser("vsr1 train base", __doc__)
    args = parse_command(parser, argv)
    cfg = config_from_args(args, ["dataset=synth"])
    try:
        summary = run_base(cfg)
    except (FileNotFoundError, ValueError, ConfigError, OSError) as e:
        print(f"vsr1 train base: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary), flush=True)
    print(json.dumps({"out_dir": summary["out_dir"], "complete": summary["complete"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
