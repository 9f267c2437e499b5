"""`vsr1 toy --dataset activitynet`: a raw-layout ActivityNet tree (the synthetic world's mp4s under ActivityNet
ids and FIG file names, one video missing and one corrupt) -> the real-dataset toy runs to its report, the
missing and corrupt videos counted skips; the choice is deterministic and reused; the wrapper script runs it.

    .venv/bin/python -m pytest -q tests/test_toy_dataset.py
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import _world
from videosearch_r1 import toy
from videosearch_r1.config import load_config
from videosearch_r1.data import toyset

REPO = Path(__file__).resolve().parents[1]
ANET = {"train": "activitynet_fig_train.jsonl", "val": "activitynet_fig_val_1.jsonl",
        "test": "activitynet_fig_val_2.jsonl"}
TINY = ["toy.videos_per_split=3", "synth.workers=1", "build.workers=1",
        "engine_train.steps=2", "engine_train.batch_size=4", "engine_train.warmup=1", "engine_train.eval_splits=[]",
        "channel.steps=2", "channel.eval_every=1", "base.world_families=1", "base.steps=1", "base.batch_size=2",
        "base.warmup=0", "train.steps=1", "sft.n_negatives=2", "toy.grpo_steps=1", "grpo.group_size=2",
        "grpo.queries_per_step=1", "grpo.max_new_tokens=8", "agent.max_new_tokens=8", "agent.max_turns=2"]


def anet_tree(root: Path) -> tuple[Path, Path, dict]:
    """<root>/videos/v_<id>.mp4 (symlinks to the synthetic world's mp4s) and <root>/fig/<ActivityNet FIG files>;
    the first train candidate is missing, the first test candidate corrupt. Returns (videos, fig, broken)."""
    raw = _world.world().workspace / "data" / "synth" / "raw"
    videos, fig = root / "videos", root / "fig"
    videos.mkdir(parents=True)
    fig.mkdir()
    ids = {}
    for split, fname in ANET.items():
        rows = [json.loads(line) for line in (raw / "annotations" / f"synth_fig_{split}.jsonl").read_text().splitlines()]
        for r in rows:
            r["video"] = "v_" + r["video"]
        (fig / fname).write_text("".join(json.dumps(r) + "\n" for r in rows))
        ids[split] = sorted({r["video"] for r in rows})
        for v in ids[split]:
            os.symlink(raw / "videos" / f"{v[2:]}.mp4", videos / f"{v}.mp4")
    broken = {"missing": toyset.candidate_order(ids["train"], 0)[0],
              "corrupt": toyset.candidate_order(ids["test"], 0)[0]}
    (videos / f"{broken['missing']}.mp4").unlink()
    (videos / f"{broken['corrupt']}.mp4").unlink()
    (videos / f"{broken['corrupt']}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return videos, fig, broken


@pytest.mark.slow
def test_activitynet_toy_runs_to_the_report(tmp_path, capsys):
    videos, fig, broken = anet_tree(tmp_path / "anet")
    ws = tmp_path / "ws"
    argv = ["--profile", "cpu", "--dataset", "activitynet", "--video-source", str(videos), "--annotations", str(fig),
            f"workspace={ws}", *TINY]
    assert toy.main(argv) == 0
    out = capsys.readouterr().out
    assert "skipped 1 missing, 1 corrupt" in out
    assert f"missing {broken['missing']}" in out and f"corrupt {broken['corrupt']}: " in out

    root = ws / "data" / "toy-activitynet" / "raw"
    sel = json.loads((root / toyset.SELECTION).read_text())
    assert {s: len(c["chosen"]) for s, c in sel["splits"].items()} == {"train": 3, "val": 3, "test": 3}
    assert sel["splits"]["train"]["missing"] == [broken["missing"]]
    assert [v for v, _ in sel["splits"]["test"]["corrupt"]] == [broken["corrupt"]]
    for split, fname in ANET.items():  # the toy copy in the raw layout: only the chosen videos' rows and files
        rows = [json.loads(line) for line in (root / "annotations" / fname).read_text().splitlines()]
        assert {r["video"] for r in rows} == set(sel["splits"][split]["chosen"])
    assert sorted(p.stem for p in (root / "videos").iterdir()) == sorted(sel["videos"])

    # every step ran on the toy copy: its engine, build, the five evaluations on its test split, the report
    engine = ws / "models" / "toy-activitynet-engine"
    summary = json.loads((engine / "train_summary.json").read_text())
    assert summary["dataset"] == "toy-activitynet" and summary["trained_on"] == "toy-activitynet"
    frames = json.loads((ws / "data" / "toy-activitynet" / "prepared" / "build" / "frames.json").read_text())
    assert frames["summary"]["skipped"] == {} and frames["summary"]["stored"] == len(sel["videos"])
    assert (ws / "data" / "toy-activitynet" / "prepared" / "sft_train.jsonl").stat().st_size > 0
    test_queries = sum(1 for r in (root / "annotations" / ANET["test"]).read_text().splitlines() if r.strip())
    for name, _, _ in toy.EVAL_RUNS:
        run = ws / "runs" / ("toy-activitynet" + name[len("toy"):])
        preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
        assert len(preds) == test_queries and {p["gt_video"] for p in preds} <= set(sel["splits"]["test"]["chosen"])
    report = ws / "runs" / "toy-activitynet-report"
    assert (report / "result.json").is_file() and any(report.glob("*.png"))
    assert not (ws / "data" / "synth" / "raw").exists()  # no synthetic benchmark was built

    # a rerun reuses the choice (nothing decoded) and the trained engine; the wrapper script runs the same toy
    env = {**os.environ, "VSR1": str(Path(sys.executable).with_name("vsr1")),
           "TOY_ACTIVITYNET_VIDEO_SOURCE": str(videos), "ANNO_ROOT": str(fig), "RUN_FROM_STEP": "data"}
    r = subprocess.run(["bash", str(REPO / "scripts" / "toy" / "toy_activitynet_full_process.bash"),
                        "--profile", "cpu", f"workspace={ws}", *TINY],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(reused;" in r.stdout and "was trained with this configuration" in r.stdout
    assert "vsr1 toy --dataset activitynet (cpu) done" in r.stdout


def test_choice_is_deterministic_and_names_its_skips(tmp_path):
    videos, fig, broken = anet_tree(tmp_path / "anet")
    common = [f"workspace={tmp_path / 'ws'}", "toy.videos_per_split=2"]
    cfg = load_config(toy.profile_config("cpu"), common)
    cfg.datasets["toy-activitynet"] = toyset.toy_entry(cfg, "activitynet")
    first = toyset.prepare(cfg, "activitynet", videos, fig)
    assert not first.reused and first.skipped == {"missing": 1, "corrupt": 1}
    assert "TypeError" not in first.format() and broken["corrupt"] in first.format()
    again = toyset.prepare(cfg, "activitynet", videos, fig)
    assert again.reused and {s: c.chosen for s, c in again.splits.items()} == {s: c.chosen for s, c in first.splits.items()}
    cfg.toy.videos_per_split = 1  # another choice: re-chosen, stale links removed
    fewer = toyset.prepare(cfg, "activitynet", videos, fig)
    root = tmp_path / "ws" / "data" / "toy-activitynet" / "raw"
    assert not fewer.reused and len(list((root / "videos").iterdir())) == len({v for c in fewer.splits.values()
                                                                              for v in c.chosen})
    # bad input: a clear error naming the file / the folder
    (fig / ANET["val"]).write_text('{"video": "v_x", "time": [1, 2]}\n')
    with pytest.raises(Exception, match=r"activitynet_fig_val_1.jsonl:1.*'desc_id'"):
        toyset.prepare(cfg, "activitynet", videos, fig)
    with pytest.raises(toyset.ToySetError, match="not a folder"):
        toyset.prepare(cfg, "activitynet", tmp_path / "nowhere", fig)
    (fig / ANET["val"]).unlink()
    with pytest.raises(toyset.ToySetError, match="activitynet_fig_val_1.jsonl.*vsr1 data annotations activitynet"):
        toyset.prepare(cfg, "activitynet", videos, fig)


def test_flags_are_checked(tmp_path, capsys):
    for argv, msg in ((["--video-source", "/v"], "need --dataset"),
                      (["--dataset", "activitynet", "--from-step", "world"], "real-dataset toy's steps are data"),
                      (["--dataset", "synth"], "a real dataset is expected")):
        with pytest.raises(SystemExit):
            toy.main(argv)
        assert msg in capsys.readouterr().err
    ws = f"workspace={tmp_path}"
    assert toy.main(["--profile", "cpu", "--dataset", "kinetics", ws]) == 2
    assert "unknown dataset 'kinetics'" in capsys.readouterr().err
    assert toy.main(["--profile", "cpu", "--dataset", "charades", "--video-source", str(tmp_path), ws]) == 2
    assert "charades_fig_train.jsonl" in capsys.readouterr().err  # no FIG files there: named, with the fetch command
    assert toy.main(["--profile", "cpu", "--dataset", "didemo", "--from-step", "sft", ws]) == 2
    assert "run without --from-step first" in capsys.readouterr().err
