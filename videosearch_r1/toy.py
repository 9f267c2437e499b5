"""`vsr1 toy`: the whole VideoSearch-R1 process on a small workspace, end to end, one command.

    vsr1 toy                                   # CPU: the synthetic world at toy sizes (configs/toy_cpu.yaml)
    vsr1 toy --profile gpu                     # one GPU: larger world, `small` engine and policy (toy_gpu.yaml)
    vsr1 toy workspace=/tmp/toy train.steps=4  # any dotted override applies to every step
    vsr1 toy --from-step sft                   # redo from a step (earlier steps' outputs are kept)

Steps (each one is a plain `vsr1` subcommand, printed before it runs; each resumes or skips finished work,
so rerunning the command after a kill continues where it stopped):
1. world      vsr1 synth                                  the benchmark world (real mp4s, FIG JSONL)
2. engine     vsr1 engine train                           the synthetic search engine (its own world)
3. index      vsr1 index synth --split train|test         FAISS indexes + hard negatives
4. channel    vsr1 engine channel synth                   the soft-token ceiling of this engine (SQR's bound)
5. base       vsr1 train base                             the base policy = the zero-shot (ZS) baseline
6. sft-data   vsr1 build sft synth                        top-1 pairs, traces from the timelines, negatives
7. sft        vsr1 train sft synth --checkpoint BASE      token CE + InfoNCE through the frozen engine
8. infer      vsr1 infer synth ...                        engine alone, ZS, SFT (SQR), SFT without SQR
9. grpo       vsr1 train grpo synth --checkpoint SFT      multi-turn GRPO with the live engine, then its infer
   (the runs that do not need GRPO are evaluated first: a run stopped during GRPO still has them)
10. report    vsr1 report RUN ... --out <workspace>/runs/toy-report   one table, result.json, plots

Run names are fixed (`toy-*`), so the runs land in <workspace>/runs/toy-*/. The profiles are plain config
files (videosearch_r1/configs/toy_{cpu,gpu}.yaml); `--config FILE` replaces the profile.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from videosearch_r1 import cli
from videosearch_r1.utils import command_parser, config_from_args, parse_command

PROFILES = ("cpu", "gpu")
STEPS = ("world", "engine", "index", "channel", "base", "sft-data", "sft", "infer", "grpo", "report")
# the inference runs compared in the report: (run name, policy run dir under runs/ or None, extra overrides)
EVAL_RUNS = (
    ("toy-engine", None, ["agent.method=engine"]),
    ("toy-zs", "toy-base/policy", ["agent.method=sqr"]),
    ("toy-sft-nosqr", "toy-sft/final", ["agent.method=zeroshot"]),
    ("toy-sft", "toy-sft/final", ["agent.method=sqr"]),
    ("toy-grpo", "toy-grpo/final", ["agent.method=sqr"]),
)


def profile_config(profile: str) -> Path:
    """The shipped config file of a profile ("cpu" | "gpu")."""
    if profile not in PROFILES:
        raise ValueError(f"unknown toy profile {profile!r}; known: {PROFILES}")
    return Path(__file__).parent / "configs" / f"toy_{profile}.yaml"


def plan(runs: Path, common: list[str], grpo_steps: int, grpo_warmup: int = 0) -> list[tuple[str, str, list[str]]]:
    """(step, title, vsr1 argv) in order; `common` (--config + overrides) goes to every command, and the
    toy's own run names come last so they win."""
    steps = [
        ("world", "build the benchmark world", ["synth", *common]),
        ("engine", "train the search engine", ["engine", "train", *common]),
        ("index", "index the train corpus", ["index", "synth", "--split", "train", *common]),
        ("index", "index the test corpus", ["index", "synth", "--split", "test", *common]),
        ("channel", "soft-token ceiling of the engine", ["engine", "channel", "synth", *common,
                                                          "run_name=toy-channel"]),
        ("base", "pretrain the base policy (ZS)", ["train", "base", *common, "run_name=toy-base"]),
        ("sft-data", "build the SFT rows", ["build", "sft", "synth", *common]),
        ("sft", "SFT (token CE + InfoNCE)", ["train", "sft", "synth", "--checkpoint",
                                             str(runs / "toy-base" / "policy"), *common, "run_name=toy-sft"]),
    ]
    grpo = ("grpo", "GRPO from SFT", ["train", "grpo", "synth", "--checkpoint", str(runs / "toy-sft" / "final"),
                                      *common, f"train.steps={grpo_steps}", f"train.warmup={grpo_warmup}",
                                      "run_name=toy-grpo"])
    for name, policy, extra in EVAL_RUNS:
        if name == "toy-grpo":
            steps.append(grpo)
        ckpt = ["--checkpoint", str(runs / policy)] if policy else []
        steps.append(("grpo" if name == "toy-grpo" else "infer", f"evaluate {name}",
                      ["infer", "synth", "--split", "test", *ckpt, *common, *extra, f"run_name={name}"]))
    preds = [str(runs / name / "predictions.jsonl") for name, _, _ in EVAL_RUNS]
    steps.append(("report", "report", ["report", *preds, "--out", str(runs / "toy-report"), *common]))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("vsr1 toy", __doc__)
    parser.add_argument("--profile", default="auto", choices=("auto",) + PROFILES,
                        help="size profile (auto: gpu when CUDA is available)")
    parser.add_argument("--from-step", default=STEPS[0], choices=STEPS, help="skip the steps before this one")
    args = parse_command(parser, argv)
    profile = args.profile
    if profile == "auto":
        import torch

        profile = "gpu" if torch.cuda.is_available() else "cpu"
    config = args.config or str(profile_config(profile))
    args.config = config
    cfg = config_from_args(args, ["dataset=synth"])
    common = ["--config", config, *args.overrides]
    runs = cfg.runs_dir()
    todo = plan(runs, common, cfg.toy.grpo_steps, cfg.toy.grpo_warmup)
    first = STEPS.index(args.from_step)
    t0, times = time.time(), {}
    for step, title, step_argv in todo:
        if STEPS.index(step) < first:
            continue
        times[title] = cli.run_step(title, step_argv, "toy")
    print(f"\nvsr1 toy ({profile}) done in {time.time() - t0:.0f} s: workspace {cfg.workspace}", flush=True)
    for title, dt in times.items():
        print(f"  {dt:7.1f} s  {title}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
