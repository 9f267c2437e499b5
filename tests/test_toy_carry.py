"""bench/toy_carry.sh: a GPU toy's engine, indexes, SFT checkpoint and evaluations packed into the parts a lease
returns, kept here, stashed on the next machine and unpacked into a fresh workspace byte for byte (optimizer
state and intermediate checkpoints left behind). The GRPO-from-the-unpacked-workspace run itself is the toy's
`--from-step grpo` (tests/test_toy.py); LOG.md records the whole chain rehearsed with the cpu profile."""
import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _carry(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the script from a copy of bench/ under `cwd` (it works relative to its repository root)."""
    return subprocess.run(["bash", str(cwd / "bench" / "toy_carry.sh"), *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **env}, timeout=120)


def _workspace(ws: Path) -> None:
    rng = os.urandom
    files = {
        "models/synth-engine/model.safetensors": rng(70_000), "models/synth-engine/config.json": b"{}",
        "indexes/synth-train-x/vectors.npy": rng(5_000),
        "runs/toy-sft-train/final/model.safetensors": rng(90_000), "runs/toy-sft-train/final/sqr.safetensors": rng(9),
        "runs/toy-sft-train/final/trainer_state.pt": rng(50_000),  # the optimizer: not carried
        "runs/toy-sft-train/checkpoint-100/model.safetensors": rng(10),  # intermediate: not carried
        "runs/toy-sft-train/summary.json": b'{"complete": true}', "runs/toy-sft-train/config.yaml": b"seed: 0\n",
        "runs/toy-sft-train/metrics.jsonl": b"{}\n",  # not needed by GRPO
        "runs/toy-sft/summary.json": b"{}", "runs/toy-sft/predictions.jsonl": b"{}\n",
        "runs/toy-engine/summary.json": b"{}",
        "runs/toy-sft-oracle/predictions.jsonl": b"{}\n",  # still running (no summary.json): not carried
        "runs/toy-base/policy/model.safetensors": os.urandom(30_000), "runs/toy-base/summary.json": b"{}",
        "runs/toy-base/config.yaml": b"seed: 0\n", "runs/toy-base/final/trainer_state.pt": os.urandom(9),
    }
    for rel, data in files.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_bytes(data)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "bench").mkdir(parents=True)
    shutil.copy(REPO / "bench" / "toy_carry.sh", r / "bench")
    return r


def test_pack_keep_stash_unpack_round_trip(repo: Path, tmp_path: Path):
    ws, out, stash, fresh = (tmp_path / d for d in ("ws", "out", "stash", "fresh"))
    _workspace(ws)
    r = _carry(repo, "pack", "engine", "base", "sft", "evals", WS=str(ws), OUT=str(out), PART="40000")
    assert r.returncode == 0, r.stderr
    parts = sorted(p.name for p in out.iterdir())
    assert len([p for p in parts if p.startswith("toy_sft.tgz.part")]) >= 2  # split into parts of PART bytes
    assert all(p.stat().st_size <= 40000 for p in out.iterdir())
    stale = repo / ".toyckpt" / "sft" / "toy_sft.tgz.part09"  # a part left from an earlier, longer pack
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    assert _carry(repo, "keep", str(out)).returncode == 0  # here: the returned files -> .toyckpt/<group>/
    assert not stale.exists()  # replaced, not mixed into the new parts
    assert sorted(p.name for p in (repo / ".toyckpt").iterdir()) == ["base", "engine", "evals", "sft"]
    r = _carry(repo, "stash", STASH=str(stash))  # the next machine: the carried parts -> the stash
    assert r.returncode == 0, r.stderr
    r = _carry(repo, "unpack", WS=str(fresh), STASH=str(stash))
    assert r.returncode == 0, r.stderr
    for rel in ("models/synth-engine/model.safetensors", "indexes/synth-train-x/vectors.npy",
                "runs/toy-sft-train/final/model.safetensors", "runs/toy-sft-train/final/sqr.safetensors",
                "runs/toy-sft-train/summary.json", "runs/toy-sft/predictions.jsonl", "runs/toy-engine/summary.json",
                "runs/toy-base/policy/model.safetensors", "runs/toy-base/summary.json"):
        assert filecmp.cmp(ws / rel, fresh / rel, shallow=False), rel
    for rel in ("runs/toy-sft-train/final/trainer_state.pt", "runs/toy-sft-train/checkpoint-100",
                "runs/toy-sft-train/metrics.jsonl", "runs/toy-base/final", "runs/toy-sft-oracle"):
        assert not (fresh / rel).exists(), rel


def test_refusals_name_what_is_missing(repo: Path, tmp_path: Path):
    ws, out = tmp_path / "ws", tmp_path / "out"
    _workspace(ws)
    (ws / "runs/toy-sft-train/summary.json").unlink()  # SFT still running
    r = _carry(repo, "pack", "sft", WS=str(ws), OUT=str(out))
    assert r.returncode != 0 and "toy-sft-train/summary.json does not exist" in r.stderr
    r = _carry(repo, "pack", "grpo", WS=str(ws), OUT=str(out))
    assert r.returncode != 0 and "unknown group 'grpo'" in r.stderr
    shutil.rmtree(ws / "models")
    r = _carry(repo, "pack", "engine", WS=str(ws), OUT=str(out))
    assert r.returncode != 0 and "models/synth-engine does not exist" in r.stderr
    (ws / "runs/toy-base/summary.json").unlink()
    r = _carry(repo, "pack", "base", WS=str(ws), OUT=str(out))
    assert r.returncode != 0 and "toy-base/summary.json does not exist" in r.stderr
    r = _carry(repo, "unpack", WS=str(tmp_path / "fresh"), STASH=str(tmp_path / "empty"))
    assert r.returncode != 0 and "no engine parts" in r.stderr
    r = _carry(repo, "stash", STASH=str(tmp_path / "s"))
    assert r.returncode != 0 and "nothing carried" in r.stderr
    r = _carry(repo, "keep", str(tmp_path / "empty"))
    assert r.returncode != 0 and "no toy_*.tgz.part* files" in r.stderr


def test_pack_waits_for_a_run_to_finish(repo: Path, tmp_path: Path):
    """WAIT=S: pack polls until the group's runs have finished (here SFT's summary.json appears ~1 s later)."""
    import threading
    import time

    ws, out = tmp_path / "ws", tmp_path / "out"
    _workspace(ws)
    summary = ws / "runs/toy-sft-train/summary.json"
    summary.unlink()
    threading.Timer(1.0, lambda: summary.write_text('{"complete": true}')).start()
    t = time.time()
    r = _carry(repo, "pack", "sft", WS=str(ws), OUT=str(out), WAIT="60")
    assert r.returncode == 0, r.stderr
    assert 1.0 <= time.time() - t < 30 and (out / "toy_sft.tgz.part00").is_file()


def test_verify_compares_the_regenerated_world_with_the_packed_one(repo: Path, tmp_path: Path):
    """pack engine records the world's checksums; verify after regeneration: equal passes, a changed video is a
    warning (same spec), a changed world.json stops the resume (the carried index does not fit it)."""
    ws, out, stash, fresh = (tmp_path / d for d in ("ws", "out", "stash", "fresh"))
    _workspace(ws)
    raw = ws / "data/synth/raw"
    (raw / "videos").mkdir(parents=True)
    (raw / "world.json").write_text('{"seed": 0}')
    for v in ("a", "b"):
        (raw / "videos" / f"{v}.mp4").write_bytes(v.encode() * 100)
    assert _carry(repo, "pack", "engine", WS=str(ws), OUT=str(out)).returncode == 0
    assert _carry(repo, "keep", str(out)).returncode == 0 and _carry(repo, "stash", STASH=str(stash)).returncode == 0
    assert _carry(repo, "unpack", WS=str(fresh), STASH=str(stash)).returncode == 0
    shutil.copytree(raw, fresh / "data/synth/raw")  # `vsr1 synth` regenerated it identically
    r = _carry(repo, "verify", WS=str(fresh))
    assert r.returncode == 0 and "equals the packed one (3 files)" in r.stdout, r.stdout + r.stderr
    (fresh / "data/synth/raw/videos/b.mp4").write_bytes(b"x")
    r = _carry(repo, "verify", WS=str(fresh))
    assert r.returncode == 0 and "WARNING: 1 regenerated video" in r.stdout
    (fresh / "data/synth/raw/world.json").write_text('{"seed": 1}')
    r = _carry(repo, "verify", WS=str(fresh))
    assert r.returncode == 1 and "world.json differs" in r.stderr
