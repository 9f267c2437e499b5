"""`vsr1 quickstart`: the main job on the built-in default, end to end on CPU.

    vsr1 quickstart [--config F] [key=value ...]

1. build the synthetic fine-grained world          (vsr1 synth)
2. train the small synthetic search engine          (vsr1 engine train)
3. embed and index the test corpus                  (vsr1 index synth --split test)
4. evaluate the engine alone on the test queries    (vsr1 infer synth agent.method=engine)
5. print the metric table and write plots           (vsr1 report)

Every step is resumable: rerunning skips finished work. Overrides apply to every step, e.g.
`vsr1 quickstart synth.preset=tiny workspace=/tmp/vsr1`. (The toy end-to-end agent run joins here
once SFT/GRPO land.)
"""
from __future__ import annotations

import sys
import time

from videosearch_r1 import cli
from videosearch_r1.utils import command_parser, config_from_args, parse_command


def _step(title: str, argv: list[str]) -> None:
    print(f"\n==> {title}: vsr1 {' '.join(argv)}", flush=True)
    t = time.time()
    rc = cli.main(argv)
    if rc != 0:
        raise SystemExit(f"quickstart: step '{title}' failed with exit code {rc}")
    print(f"    ({time.time() - t:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("vsr1 quickstart", __doc__)
    args = parse_command(parser, argv)
    cfg = config_from_args(args, ["dataset=synth"])
    common = (["--config", args.config] if args.config else []) + list(args.overrides)
    run_name = cfg.run_name or "quickstart-engine"
    _step("build the synthetic world", ["synth", *common])
    from pathlib import Path

    if not (Path(cfg.engine_model()) / "config.json").exists():
        _step("train the synthetic engine", ["engine", "train", *common])
    _step("index the test corpus", ["index", "synth", "--split", "test", *common])
    _step("evaluate the engine alone", ["infer", "synth", "--split", "test", *common,
                                        "agent.method=engine", f"run_name={run_name}"])
    pred = cfg.runs_dir() / run_name / "predictions.jsonl"
    _step("report", ["report", str(pred), *common])
    print(f"\nquickstart done: workspace {cfg.workspace}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
