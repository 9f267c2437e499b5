"""`vsr1 toy`: the plan of steps (order, checkpoints handed from stage to stage, the five evaluations on
one split), the profiles as loadable config files, and --from-step.

    .venv/bin/python -m pytest -q tests/test_toy.py
"""
from pathlib import Path

import pytest

from videosearch_r1 import cli, toy
from videosearch_r1.config import load_config


@pytest.mark.parametrize("profile", toy.PROFILES)
def test_profiles_are_config_files_of_the_tree(profile):
    cfg = load_config(toy.profile_config(profile))
    assert cfg.toy.grpo_steps > 0 and cfg.engine_train.size in ("tiny", "small")
    with pytest.raises(ValueError, match="unknown toy profile"):
        toy.profile_config("tpu")


def test_plan_hands_each_stage_the_previous_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    steps = toy.plan(runs, ["--config", "c.yaml", "x.y=1"], grpo_steps=7, grpo_warmup=2)
    names = [s for s, _, _ in steps]
    assert names == sorted(names, key=toy.STEPS.index), "steps out of order"
    assert set(names) == set(toy.STEPS)
    argv = {title: a for _, title, a in steps}
    sft = argv["SFT (token CE + InfoNCE)"]
    assert sft[sft.index("--checkpoint") + 1] == str(runs / "toy-base" / "policy")
    grpo = argv["GRPO from SFT"]
    assert grpo[grpo.index("--checkpoint") + 1] == str(runs / "toy-sft-train" / "final")
    assert "train.steps=7" in grpo and "train.warmup=2" in grpo and grpo[-1] == "run_name=toy-grpo-train"  # the toy's own names win
    split = lambda a: a[a.index("--split") + 1]  # noqa: E731
    evals = [a for _, _, a in steps if a[0] == "infer" and split(a) == "test"]
    assert [a[-1] for a in evals] == [f"run_name={n}" for n, _, _ in toy.EVAL_RUNS]
    assert names.index("grpo") > max(i for i, s in enumerate(names) if s == "infer")  # GRPO after the others' evals
    assert len(evals) == 8
    oracle = [a for a in evals if "agent.oracle_verifier=true" in a]  # SFT with / without SQR, GRPO: truth as verifier
    assert [a[-1] for a in oracle] == ["run_name=toy-sft-nosqr-oracle", "run_name=toy-sft-oracle", "run_name=toy-grpo-oracle"]
    assert [a[a.index("--checkpoint") + 1] for a in oracle] == [str(runs / "toy-sft-train" / "final")] * 2 + [
        str(runs / "toy-grpo-train" / "final")]
    # SFT and GRPO are also evaluated on val (where choices are read), right after their test evaluation
    val = [(title, a) for _, title, a in steps if a[0] == "infer" and split(a) == "val"]
    assert [a[-1] for _, a in val] == ["run_name=toy-sft-val", "run_name=toy-grpo-val"]
    assert [a[a.index("--checkpoint") + 1] for _, a in val] == [str(runs / "toy-sft-train" / "final"),
                                                                 str(runs / "toy-grpo-train" / "final")]
    titles = [t for _, t, _ in steps]
    assert titles.index("evaluate toy-sft on val") == titles.index("evaluate toy-sft") + 1
    assert titles.index("evaluate toy-grpo on val") == titles.index("evaluate toy-grpo") + 1
    assert "index the val corpus" in titles
    assert all("x.y=1" in a for _, _, a in steps)  # user overrides reach every step
    report = argv["report"]
    assert [p for p in report if p.endswith("predictions.jsonl")] == [
        str(runs / n / "predictions.jsonl") for n, _, _ in toy.EVAL_RUNS]


@pytest.mark.parametrize("real", [False, True])
def test_no_training_run_shares_a_directory_with_an_evaluation(tmp_path, real):
    """A trainer rewrites its run's config.yaml, so an evaluation in the same directory refused to resume on a
    rerun ("holds predictions made with a different agent" at 'evaluate toy-sft')."""
    runs = tmp_path / "runs"
    steps = toy.dataset_plan("toy-x", runs, [], 1) if real else toy.plan(runs, [], 1)

    def run_names(command: str) -> set[str]:
        return {[x for x in a if x.startswith("run_name=")][-1] for _, _, a in steps if a[0] == command}

    trained, evaluated = run_names("train"), run_names("infer")
    assert len(trained) == 3 and len(evaluated) == (8 if real else 10) and not trained & evaluated


def test_from_step_skips_earlier_steps_and_a_failure_names_the_step(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "main", lambda argv: seen.append(argv) or (3 if argv[0] == "report" else 0))
    with pytest.raises(SystemExit, match="vsr1 toy: step 'report' failed with exit code 3"):
        toy.main(["--profile", "cpu", "--from-step", "grpo", f"workspace={tmp_path}"])
    assert [a[:2] for a in seen][0] == ["train", "grpo"]
    assert not any(a[0] in ("synth", "engine", "index") for a in seen)
    assert [a[-1] for a in seen if a[0] == "infer"] == ["run_name=toy-grpo", "run_name=toy-grpo-val",
                                                        "run_name=toy-grpo-oracle"]  # the others came before
    assert str(Path(toy.profile_config("cpu"))) in seen[0]


def test_overlap_runs_paired_steps_beside_and_joins_before_what_needs_them(tmp_path, monkeypatch):
    """toy.overlap: index + channel run in a child process beside the base, and are done before the SFT rows."""
    log = tmp_path / "toy-beside-base.log"
    fg = []

    def foreground(argv):  # the in-process steps; the SFT rows read the indexes, so the lane must be done by then
        fg.append((argv[-1], log.read_text().count(" s)\n") if log.exists() else 0))
        return 0

    monkeypatch.setattr(cli, "main", foreground)
    ok = ["--help"]  # a real child `vsr1` process that succeeds at once
    todo = [("engine", "E", ok + ["e"]), ("index", "I1", ok), ("index", "I2", ok), ("channel", "C", ok),
            ("base", "B", ok + ["b"]), ("sft-data", "S", ok + ["s"])]
    times = toy.run_plan(todo, overlap=True, log_dir=tmp_path)
    assert set(times) == {"E", "I1", "I2", "C", "B", "S"}
    assert [a for a, _ in fg] == ["e", "b", "s"]  # the lane's steps never ran in this process
    assert fg[-1][1] == 3  # all three lane steps had finished when the SFT rows started
    assert [x for x in log.read_text().splitlines() if x.startswith("==>")] == [
        "==> I1: vsr1 --help", "==> I2: vsr1 --help", "==> C: vsr1 --help"]
    fg.clear()
    assert set(toy.run_plan(todo, overlap=False, log_dir=tmp_path / "seq")) == set(times)
    assert [a for a, _ in fg] == ["e", "--help", "--help", "--help", "b", "s"]  # without overlap: in order, here
    assert not (tmp_path / "seq").exists()


def test_overlap_a_failed_lane_step_stops_the_toy_with_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "main", lambda argv: 0)
    bad = ["report", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r")]
    todo = [("infer", "evaluate toy-sft", bad), ("infer", "evaluate toy-zs", ["--help"]), ("grpo", "G", ["g"]),
            ("report", "R", ["r"])]
    with pytest.raises(SystemExit, match=r"step 'evaluate toy-sft' failed \(log .*toy-beside-grpo.log"):
        toy.run_plan(todo, overlap=True, log_dir=tmp_path)
    text = (tmp_path / "toy-beside-grpo.log").read_text()
    assert "no such prediction file" in text and "evaluate toy-zs" not in text  # the lane stopped at the failure
