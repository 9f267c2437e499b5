"""`vsr1 train sft`: supervised fine-tuning of the policy (verification + grounding tokens) with the
InfoNCE term on its SQR-refined queries through the frozen search engine (train/trainer.py).

    vsr1 build sft synth                                              # the rows first (train/sft_data.py)
    vsr1 train sft synth --checkpoint PATH_OR_ID run_name=sft-synth   # one process (CPU or 1 GPU)
    accelerate launch --num_processes 4 -m videosearch_r1.cli train sft synth --checkpoint P run_name=sft
    torchrun --nproc_per_node 4 -m videosearch_r1.cli train sft synth --checkpoint P run_name=sft
    accelerate launch --config_file fsdp.yaml -m videosearch_r1.cli train sft ...   # FSDP2 / DeepSpeed: accelerate's file
Rerun the same command to resume a killed run (same run_name: newest checkpoint, same data order).

1. rows: sft.rows or <workspace>/data/<dataset>/prepared/sft_train.jsonl (bad rows: an error naming
   file:line:field)
2. the frozen engine: the embedder (engine section) and the TRAIN index's video vectors (the InfoNCE
   positives/negatives are train-corpus videos)
3. the policy: --checkpoint, else train.init_checkpoint; fresh SQR modules sized to the engine
4. train_policy(cfg, policy, rows, out_dir, clip_fn, embedder, video vectors, section=cfg.sft)
5. out_dir (train.output or <workspace>/runs/<run_name>): checkpoint-N/, final/ (load it with
   `vsr1 infer DATASET --checkpoint <out_dir>/final`), metrics.jsonl, summary.json, config.yaml
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def run_sft(cfg, dataset: str, checkpoint: str = "", stop_after: int | None = None) -> dict:
    """Steps 1-4 of the module docstring; returns train_policy's summary."""
    from videosearch_r1.agent.infer import load_engine
    from videosearch_r1.agent.policy import Policy
    from videosearch_r1.config import ConfigError
    from videosearch_r1.models.qwen3vl import configure_processor
    from videosearch_r1.train import common
    from videosearch_r1.train.rows import read_rows
    from videosearch_r1.train.trainer import train_policy
    from videosearch_r1.video.decode import load_clip

    rows_path = Path(cfg.sft.rows) if cfg.sft.rows else cfg.prepared_dir(dataset) / "sft_train.jsonl"
    if not rows_path.is_file():
        raise FileNotFoundError(f"{rows_path} missing: build the rows with `vsr1 build sft {dataset}`")
    rows, _ = read_rows(rows_path)
    engine = load_engine(cfg, dataset, "train", with_embedder=cfg.sft.infonce_weight > 0)
    ckpt = checkpoint or cfg.train.init_checkpoint
    if not ckpt:
        raise ConfigError("no policy to start from: pass --checkpoint PATH_OR_ID or set train.init_checkpoint")
    he = engine.embedder.hidden_size if engine.embedder is not None else 0
    policy = Policy.from_pretrained(ckpt, device="cpu", dtype="fp32", embedder_hidden=he, seed=cfg.seed,
                                    soft_scale=common.soft_scale(cfg, engine.embedder))
    if policy.sqr_config.soft_insert != cfg.engine.soft_insert:
        raise ConfigError(f"the policy's SQR modules use soft_insert={policy.sqr_config.soft_insert!r}, "
                          f"the engine {cfg.engine.soft_insert!r}")
    configure_processor(policy.processor, cfg.video_cfg(dataset))
    out_dir = Path(cfg.train.output) if cfg.train.output else cfg.runs_dir() / (cfg.run_name or f"sft-{dataset}")
    return train_policy(cfg, policy, rows, out_dir, lambda v: load_clip(cfg, dataset, v), embedder=engine.embedder,
                        video_vectors=engine, section=cfg.sft, stop_after=stop_after)


def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.config import ConfigError
    from videosearch_r1.train.rows import RowError
    from videosearch_r1.utils import command_parser, config_from_args, parse_command

    parser = command_parser("vsr1 train sft", __doc__)
    parser.add_argument("dataset", help="dataset name (an entry under `datasets` in the config)")
    parser.add_argument("--checkpoint", default="", help="policy to start from (default: train.init_checkpoint)")
    args = parse_command(parser, argv)
    cfg = config_from_args(args, [f"dataset={args.dataset}"])
    try:
        summary = run_sft(cfg, args.dataset, args.checkpoint)
    except (FileNotFoundError, ValueError, RowError, ConfigError, OSError) as e:
        print(f"vsr1 train sft: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
