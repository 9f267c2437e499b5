"""`vsr1 quickstart`: the main job on the built-in default, end to end on CPU.

    vsr1 quickstart [--config F] [key=value ...]

1. build the synthetic fine-grained world          (vsr1 synth)
2. train the small synthetic search engine          (vsr1 engine train)
3. embed and index the test corpus                  (vsr1 index synth --split test)
4. evaluate the engine alone on the test queries    (vsr1 infer synth agent.method=engine)
5. print the metric table and write plots           (vsr1 report)

Every step is resumable: rerunning skips finished work, and only work whose inputs are unchanged is
reused (videosearch_r1/fingerprint.py): the engine is retrained when its train_summary.json records
another training key (engine_train.*, engine prompt, video sampling, training data: engine/train.py
train_key), the index re-embeds for another engine, and the evaluation run is named
quickstart-engine-<resume key> (agent/infer.py resume_key) unless run_name is given. An engine that
`vsr1 engine train` did not make (no train_summary.json, e.g. engine.model=a hub checkpoint) is used
as is. Overrides apply to every step, e.g. `vsr1 quickstart synth.preset=tiny workspace=/tmp/vsr1`.
(The toy end-to-end agent run joins here once SFT/GRPO land.)
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

from videosearch_r1 import cli
from videosearch_r1.utils import command_parser, config_from_args, parse_command


def _step(title: str, argv: list[str]) -> None:
    cli.run_step(title, argv, "quickstart")


def engine_needs_training(cfg) -> tuple[bool, str]:
    """(train?, why): train when there is no engine, or when ours was trained from another train_key."""
    from videosearch_r1.engine.train import train_key
    from videosearch_r1.fingerprint import changed, digest

    path = Path(cfg.engine_model()).expanduser()
    if not (path / "config.json").is_file():
        return True, f"no engine at {path}"
    summary = path / "train_summary.json"
    if not summary.is_file():
        return False, f"{path} was not made by `vsr1 engine train` (no train_summary.json): used as is"
    try:
        old = json.loads(summary.read_text())
    except ValueError:
        old = {}
    new = train_key(cfg)
    if old.get("train_fingerprint") == digest(new):
        return False, f"{path} was trained with this configuration"
    old_key = old.get("train_key") if isinstance(old.get("train_key"), dict) else {}
    what = ", ".join(changed(_flat(old_key), _flat(new))) if old_key else "no training key recorded"
    return True, f"{path} was trained with other settings ({what}): retraining"


def _flat(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1} (names the changed fields in messages)."""
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("vsr1 quickstart", __doc__)
    args = parse_command(parser, argv)
    cfg = config_from_args(args, ["dataset=synth"])
    common = (["--config", args.config] if args.config else []) + list(args.overrides)
    _step("build the synthetic world", ["synth", *common])
    train, why = engine_needs_training(cfg)
    print(f"\nengine: {why}", flush=True)
    if train:
        _step("train the synthetic engine", ["engine", "train", *common])
    _step("index the test corpus", ["index", "synth", "--split", "test", *common])
    if cfg.run_name:
        run_name = cfg.run_name
    else:
        from videosearch_r1.agent.infer import resume_key

        ecfg = copy.deepcopy(cfg)
        ecfg.split, ecfg.agent.method = "test", "engine"
        run_name = f"quickstart-engine-{resume_key(ecfg)}"
    _step("evaluate the engine alone", ["infer", "synth", "--split", "test", *common,
                                        "agent.method=engine", f"run_name={run_name}"])
    pred = cfg.runs_dir() / run_name / "predictions.jsonl"
    _step("report", ["report", str(pred), *common])
    print(f"\nquickstart done: workspace {cfg.workspace}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
