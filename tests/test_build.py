"""`vsr1 build` on the tiny synthetic world: kill mid-step + rerun = uninterrupted build, skips, --from-step."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import _world
from videosearch_r1 import cli

NO_PLUGINS = ["build.sft_module=videosearch_r1.train.no_such_sft", "build.grpo_module=videosearch_r1.no_such_grpo"]


def _args(ws, *extra):
    w = _world.world()
    return [f"workspace={ws}", f"datasets.synth.root={w.workspace / 'data' / 'synth' / 'raw'}",
            f"engine.model={w.workspace / 'models' / 'synth-engine'}", "index.shard_size=1", "engine.batch_size=1",
            "build.workers=1", *NO_PLUGINS, *extra]


def _tree(ws: Path) -> dict[str, str]:
    """sha256 of every output the build writes (prepared data, indexes), by path under the workspace."""
    out = {}
    for top in (ws / "data" / "synth" / "prepared", ws / "indexes"):
        for p in sorted(top.rglob("*")):
            if p.is_file() and p.parent.name != "build":  # the step records hold mtimes
                out[p.relative_to(ws).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _statuses(capsys) -> str:
    return capsys.readouterr().out


def test_kill_mid_index_then_rerun_equals_uninterrupted(tmp_path, capsys):
    ws = tmp_path / "ws"
    args = _args(ws, "build.splits=[train]")
    assert cli.main(["build", "synth", *args]) == 0
    out = _statuses(capsys)
    assert "index: done" in out and "sft: not available" in out and "grpo: not available" in out
    want = _tree(ws)
    assert any("/frames/" in k for k in want) and any(k.endswith("train/index.faiss") for k in want)
    assert any(k.endswith("train/hard_negatives.json") for k in want)

    shutil.rmtree(ws / "data" / "synth" / "prepared")
    shutil.rmtree(ws / "indexes")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "videosearch_r1.cli", "build", "synth", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    shards = ws / "indexes" / "synth" / "synth-engine" / "train" / "shards"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list(shards.glob("shard_*.json"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the build finished before it could be killed"
    n_done = len(list(shards.glob("shard_*.json")))
    assert 2 <= n_done < 9  # killed mid-step: some of the 9 train shards written
    assert not (ws / "data" / "synth" / "prepared" / "build" / "index.json").exists()

    assert cli.main(["build", "synth", *args]) == 0
    out = _statuses(capsys)
    assert "frames: complete, skipped" in out and "index: running" in out
    assert _tree(ws) == want


def test_rerun_skips_and_detects_changed_outputs(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert cli.main(["build", "synth", *_args(ws, "build.splits=[test]")]) == 0
    _statuses(capsys)
    assert cli.main(["build", "synth", *_args(ws, "build.splits=[test]", "build.grpo_module=")]) == 0
    out = _statuses(capsys)
    for step in ("splits", "frames", "index", "hardneg"):
        assert f"{step}: complete, skipped" in out
    assert "grpo: build.grpo_module is empty: no data step needed" in out and "grpo: not needed" in out
    # a damaged output is rebuilt by its step; identical outputs leave the later steps skipped
    good = _tree(ws)
    store = ws / "data" / "synth" / "prepared" / "frames"
    victim = sorted(store.glob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    assert cli.main(["build", "synth", *_args(ws, "build.splits=[test]")]) == 0
    out = _statuses(capsys)
    assert f"frames: running ({victim.relative_to(ws).as_posix()} changed content)" in out
    assert "index: complete, skipped" in out
    assert _tree(ws) == good
    # a damaged index shard: the index step reruns, re-embeds that shard only, same files
    shard = ws / "indexes" / "synth" / "synth-engine" / "test" / "shards" / "shard_00001.npy"
    shard.write_bytes(shard.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    assert cli.main(["build", "synth", *_args(ws, "build.splits=[test]")]) == 0
    out = _statuses(capsys)
    assert "index: running" in out and "hardneg: complete, skipped" in out
    assert _tree(ws) == good
    # --from-step forces a step and the later ones
    assert cli.main(["build", "synth", "--from-step", "hardneg", *_args(ws, "build.splits=[test]")]) == 0
    out = _statuses(capsys)
    assert "index: complete, skipped" in out and "hardneg: running (forced by --from-step)" in out
    assert _tree(ws) == good


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert cli.main(["build", "synth", "--from-step", "nope", *_args(ws)]) == 2
    assert "--from-step 'nope'" in capsys.readouterr().err
    assert cli.main(["build", "synth", *_args(ws, "build.splits=[nosuch]")]) == 2
    assert "has no split(s) ['nosuch']" in capsys.readouterr().err
    assert cli.main(["build", "synth", "--from-step", "index", *_args(ws)]) == 2
    assert "step 1/6 splits is not complete" in capsys.readouterr().err
    lock = ws / "data" / "synth" / "prepared" / "build" / ".lock"
    lock.write_text(str(os.getpid()))  # a live owner: refused
    assert cli.main(["build", "synth", *_args(ws)]) == 2
    assert f"another vsr1 build (pid {os.getpid()}) is running" in capsys.readouterr().err
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(str(dead.pid))  # a killed owner: taken over (then the bad step name stops it)
    assert cli.main(["build", "synth", "--from-step", "nope", *_args(ws)]) == 2
    assert "--from-step 'nope'" in capsys.readouterr().err and not lock.exists()
    anno = tmp_path / "anno"
    anno.mkdir()
    (anno / "synth_fig_test.jsonl").write_text('{"video": "v1", "time": [1, 2]}\n')
    assert cli.main(["build", "synth", "--anno-root", str(anno), *_args(ws, "build.splits=[test]")]) == 2
    err = capsys.readouterr().err
    assert "synth_fig_test.jsonl:1" in err and "desc_id" in err


def test_missing_and_corrupt_videos_are_counted_skips(tmp_path, capsys):
    w = _world.world()
    raw = tmp_path / "raw"
    shutil.copytree(w.workspace / "data" / "synth" / "raw", raw, ignore=shutil.ignore_patterns("*train*", "*val*"))
    vids = sorted((raw / "videos").glob("*.mp4"))
    vids[0].write_bytes(b"not a video")
    vids[1].unlink()
    ws = tmp_path / "ws"
    assert cli.main(["build", "synth", *_args(ws, "build.splits=[test]", f"datasets.synth.root={raw}")]) == 0
    out = capsys.readouterr().out
    assert f"skipped {vids[0].stem}" in out and f"skipped {vids[1].stem}" in out
    rec = json.loads((ws / "data" / "synth" / "prepared" / "build" / "frames.json").read_text())
    assert set(rec["summary"]["skipped"]) == {vids[0].stem, vids[1].stem}
    assert rec["summary"]["stored"] == rec["summary"]["videos"] - 2


def test_pluggable_step_commands_route_to_their_module(capsys):
    assert cli.main(["build", "grpo", "synth"]) == 0  # empty by default: GRPO needs no data step
    assert "nothing to build (build.grpo_module is empty)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # `vsr1 build sft` is the SFT-data module's own command
        cli.main(["build", "sft", "--help"])
    assert e.value.code == 0 and "vsr1 build sft" in capsys.readouterr().out


def test_a_replaced_raw_video_is_decoded_again(tmp_path, capsys):
    """The frame store records the raw video each clip came from: a video replaced in the raw tree (same id,
    other content) is decoded again on the next build, not kept from the old file."""
    from videosearch_r1.config import load_config
    from videosearch_r1.video.decode import decode
    from videosearch_r1.video.framestore import FrameStore

    raw = tmp_path / "raw"
    shutil.copytree(_world.world().workspace / "data" / "synth" / "raw", raw)
    ws = tmp_path / "ws"
    args = [*_args(ws, "build.splits=[test]"), f"datasets.synth.root={raw}"]
    assert cli.main(["build", "synth", *args]) == 0
    cfg = load_config(None, args)
    vids = sorted((raw / "videos").glob("*.mp4"))
    store_dir = ws / "data" / "synth" / "prepared" / "frames"
    stored = {p.name.split(".")[0] for p in store_dir.glob("*.npz")}
    a, b = [v for v in vids if v.stem in stored][:2]
    before = FrameStore(store_dir, video_cfg=cfg.video_cfg("synth")).get(a.stem).frames
    shutil.copyfile(b, a)  # video a now holds b's content
    os.utime(a, ns=(time.time_ns(), time.time_ns() + 10**9))
    _statuses(capsys)
    assert cli.main(["build", "synth", *args]) == 0
    assert "1 whose raw video changed" in _statuses(capsys)
    store = FrameStore(store_dir, video_cfg=cfg.video_cfg("synth"))
    want = decode(a, cfg.video_cfg("synth")).frames
    got = store.get(a.stem).frames
    assert got.shape == want.shape and abs(got.astype(int) - want.astype(int)).mean() < 3  # jpeg rounding
    n = min(len(before), len(want))
    assert before.shape[1:] != want.shape[1:] or abs(before[:n].astype(int) - want[:n].astype(int)).mean() > 3
