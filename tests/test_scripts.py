"""The seed's bash entry points (scripts/): the exact `vsr1` command each runs, and real runs where cheap."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import _world

REPO = Path(__file__).resolve().parents[1]
VSR1 = str(Path(sys.executable).with_name("vsr1"))


def _bash(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "VSR1": VSR1, **env}
    return subprocess.run(["bash", str(REPO / "scripts" / script), *args], capture_output=True, text=True, env=full,
                          cwd=REPO, timeout=300)


def _dry(script: str, *args: str, **env: str) -> list[str]:
    r = _bash(script, *args, DRY_RUN="1", **env)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


CASES = [  # (script, args, env, the command it runs)
    ("data_construct/download_preextracted_data.bash", ["charades", "--mirror", "/m"], {},
     ["download", "data", "charades", "--mirror", "/m"]),
    ("data_construct/download_preextracted_data.bash", [], {}, ["download", "data", "all"]),
    ("data_construct/prepare_raw_layout.bash", ["didemo"], {}, ["data", "layout", "didemo"]),
    ("data_construct/download_verified_annotations.bash", [], {}, ["data", "annotations", "all"]),
    ("data_construct/check_raw_videos.bash", ["didemo"], {"ANNO_ROOT": "/a b", "VIDEO_BASE": "/v"},
     ["data", "check", "didemo", "--anno-root", "/a b", "--video-root", "/v"]),
    ("data_construct/start_from_scratch.bash", ["charades", "build.workers=4"],
     {"RUN_FROM_STEP": "3", "ANNO_ROOT": "/a", "VIDEO_BASE": "/v"},
     ["build", "charades", "--from-step", "3", "--anno-root", "/a", "--video-root", "/v", "build.workers=4"]),
    ("data_construct/start_from_scratch.bash", ["didemo"], {}, ["build", "didemo"]),
    ("inference/report.bash", ["r1/predictions.jsonl", "r2/predictions.jsonl"], {},
     ["report", "r1/predictions.jsonl", "r2/predictions.jsonl"]),
]
ENV_CASES = [  # scripts that also pin the visible GPUs
    ("inference/inference.bash", ["didemo", "--checkpoint", "/ck"], {"EVAL_GPUS": "1", "MAX_TURN": "2"},
     "1", ["infer", "didemo", "agent.max_turns=2", "--checkpoint", "/ck"]),
    ("inference/inference.bash", ["charades", "--checkpoint", "/ck"], {}, "0", ["infer", "charades", "--checkpoint",
                                                                               "/ck"]),
    ("training/stage1/train.bash", ["didemo", "train.steps=5"], {"GPUS": "0,1", "MODEL_PATH": "/base"}, "0,1",
     ["train", "sft", "didemo", "--checkpoint", "/base", "train.steps=5"]),
    ("training/stage2/train.bash", ["charades"], {"GPUS": "2", "MODEL_PATH": "/sft"}, "2",
     ["train", "grpo", "charades", "--checkpoint", "/sft"]),
    ("toy/toy_activitynet_full_process.bash", [], {"TOY_GPUS": "3", "TOY_ACTIVITYNET_VIDEO_SOURCE": "/anet",
                                                   "RUN_FROM_STEP": "sft"}, "3",
     ["toy", "--dataset", "activitynet", "--video-source", "/anet", "--from-step", "sft"]),
    ("toy/toy_activitynet_full_process.bash", [], {}, "0", ["toy"]),
    ("toy/toy_activitynet_full_process.bash", ["toy.videos_per_split=4"],
     {"TOY_ACTIVITYNET_VIDEO_SOURCE": "/a v", "ANNO_ROOT": "/f g"}, "0",
     ["toy", "--dataset", "activitynet", "--video-source", "/a v", "--annotations", "/f g", "toy.videos_per_split=4"]),
    ("toy/toy_activitynet_full_process.bash", [], {"ANNO_ROOT": "/f"}, "0", ["toy"]),  # synthetic: no FIG files
]


@pytest.mark.parametrize("script,args,env,want", CASES)
def test_wrapper_command(script, args, env, want):
    assert _dry(script, *args, **env) == [VSR1, *want]


@pytest.mark.parametrize("script,args,env,gpus,want", ENV_CASES)
def test_wrapper_command_with_gpus(script, args, env, gpus, want):
    assert _dry(script, *args, **env) == ["env", f"CUDA_VISIBLE_DEVICES={gpus}", VSR1, *want]


def test_every_script_is_covered():
    found = {p.relative_to(REPO / "scripts").as_posix() for p in (REPO / "scripts").rglob("*.bash")}
    assert found == {c[0] for c in CASES} | {c[0] for c in ENV_CASES}


def test_missing_dataset_argument_is_a_usage_error():
    r = _bash("data_construct/check_raw_videos.bash")
    assert r.returncode != 0 and "usage: check_raw_videos.bash DATASET" in r.stderr


def test_real_runs_layout_and_check(tmp_path):
    """The wrappers whose commands are cheap, run for real in a tmp workspace."""
    r = _bash("data_construct/prepare_raw_layout.bash", "charades", VSR1_HOME=str(tmp_path / "ws"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ws" / "data" / "charades" / "raw" / "videos").is_dir() and "charades_fig_test.jsonl" in r.stdout
    raw = _world.world().workspace / "data" / "synth" / "raw"
    videos = tmp_path / "videos"
    shutil.copytree(raw / "videos", videos)
    next(videos.glob("*.mp4")).unlink()
    r = _bash("data_construct/check_raw_videos.bash", "synth", VSR1_HOME=str(tmp_path / "ws"),
              ANNO_ROOT=str(raw / "annotations"), VIDEO_BASE=str(videos))
    assert r.returncode == 1 and "1 missing, 0 corrupt" in r.stdout
    for script in ("inference/inference.bash", "data_construct/start_from_scratch.bash"):
        r = _bash(script, "synth", "--help")  # the command line parses: its real help text
        assert r.returncode == 0 and "usage: vsr1" in r.stdout
