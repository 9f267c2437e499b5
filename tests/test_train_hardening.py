"""Training hardening on the tiny synthetic world: the teacher-trace cache is keyed by everything that
changes a trace, unreadable videos are counted skips, long steps show progress, a finished GRPO run is
recognised before any model loads, and a resume reads the trainer state once.

    .venv/bin/python -m pytest -q tests/test_train_hardening.py
"""
import json
import shutil

import pytest
import torch

import _world as W
from videosearch_r1.train import common


def _teacher_cfg(tmp_path, *extra):
    """A workspace of its own (its own teacher cache) over the tiny world's videos (or a damaged copy)."""
    root = W.world().cfg().dataset_root("synth")
    return W.world().cfg(f"workspace={tmp_path / 'ws'}", f"datasets.synth.root={root}",
                         f"sft.teacher={W.world().policy_path}", "sft.teacher_max_new_tokens=4",
                         "sft.teacher_batch_size=2", *extra)


def _pairs(n=3):
    qs, seen = [], set()
    for q in W.split().queries:
        if q.video_id not in seen:
            seen.add(q.video_id)
            qs.append(q)
    return [(q, q.video_id, "matched" if i % 2 == 0 else "not_matched") for i, q in enumerate(qs[:n])]


def _traces(cfg, pairs):
    from videosearch_r1.train.sft_data import SFTDataSummary, teacher_traces

    s = SFTDataSummary(dataset="synth")
    return teacher_traces(cfg, "synth", pairs, s), s


# ----------------------------------------------------------------------------- teacher cache (item 1)
def test_teacher_cache_is_keyed_by_prompt_video_and_generation(tmp_path, monkeypatch):
    from videosearch_r1.models.tiny import make_tiny_checkpoint
    from videosearch_r1.train import sft_data

    pairs = _pairs(2)
    cfg = _teacher_cfg(tmp_path)
    cache = cfg.prepared_dir("synth") / "sft_teacher.jsonl"
    out, s = _traces(cfg, pairs)
    first = cache.read_text()
    key = json.loads(cache.with_suffix(".key.json").read_text())["key"]
    assert len(first.splitlines()) == 2 and all(json.loads(x)["key"] == key for x in first.splitlines())
    _, s = _traces(cfg, pairs)
    assert cache.read_text() == first and "reused" in s.teacher_cache  # same settings: nothing generated

    def changed_by(cfg2, part, back=True):
        _, s2 = _traces(cfg2, pairs)
        rows = [json.loads(x) for x in cache.read_text().splitlines()]
        new_key = json.loads(cache.with_suffix(".key.json").read_text())["key"]
        assert new_key != key and len(rows) == 2 and all(r["key"] == new_key for r in rows), part
        assert "rebuilt" in s2.teacher_cache and part in s2.teacher_cache, s2.teacher_cache
        assert (cache.parent / f"sft_teacher.{key}.jsonl").read_text() == first  # old traces set aside, unmixed
        if back:  # the original settings again: their traces are taken back, not redone
            _, again = _traces(cfg, pairs)
            assert cache.read_text() == first and "taken back" in again.teacher_cache

    fps = cfg.video_cfg("synth").fps
    changed_by(_teacher_cfg(tmp_path, f"datasets.synth.video.fps={fps / 2}"), "video")
    changed_by(_teacher_cfg(tmp_path, "datasets.synth.video.max_frames=4"), "video")
    changed_by(_teacher_cfg(tmp_path, "sft.teacher_max_new_tokens=5"), "generation")
    with monkeypatch.context() as m:
        m.setattr(sft_data, "TEACHER_PROMPT_VERSION", sft_data.TEACHER_PROMPT_VERSION + 1)
        changed_by(cfg, "prompt", back=False)
    _, again = _traces(cfg, pairs)
    assert cache.read_text() == first and "taken back" in again.teacher_cache
    shutil.copytree(W.world().policy_path, tmp_path / "copy")  # the same files elsewhere: the same teacher
    _, s = _traces(_teacher_cfg(tmp_path, f"sft.teacher={tmp_path / 'copy'}"), pairs)
    assert cache.read_text() == first and "reused" in s.teacher_cache
    other = make_tiny_checkpoint(tmp_path / "teacher2", kind="policy", video_cfg=cfg.video_cfg("synth"), seed=5)
    changed_by(_teacher_cfg(tmp_path, f"sft.teacher={other}"), "teacher")


def test_an_unkeyed_teacher_cache_is_not_reused(tmp_path):
    """A cache written before the key existed (rows without "key", no key file) holds traces of unknown
    settings: set aside, never mixed into the new traces."""
    pairs = _pairs(2)
    cfg = _teacher_cfg(tmp_path)
    cache = cfg.prepared_dir("synth") / "sft_teacher.jsonl"
    cache.parent.mkdir(parents=True)
    stale = [{"qid": q.qid, "video": v, "teacher": cfg.sft.teacher, "think": "STALE TRACE"} for q, v, _ in pairs]
    cache.write_text("".join(json.dumps(r) + "\n" for r in stale))
    out, s = _traces(cfg, pairs)
    assert "STALE TRACE" not in json.dumps(list(out.values())) and "rebuilt" in s.teacher_cache
    assert "STALE" not in cache.read_text() and len(cache.read_text().splitlines()) == 2
    assert (cache.parent / "sft_teacher.unkeyed.jsonl").is_file()


# ----------------------------------------------------------------------------- unreadable videos (item 2)
def test_unreadable_videos_in_the_teacher_build_are_counted_skips(tmp_path):
    pairs = _pairs(3)
    bad, gone = pairs[0][1], pairs[1][1]
    root = W.damaged_root(tmp_path, truncate={bad}, drop={gone})
    cfg = _teacher_cfg(tmp_path, f"datasets.synth.root={root}")
    cache = cfg.prepared_dir("synth") / "sft_teacher.jsonl"
    out, s = _traces(cfg, pairs)
    assert [json.loads(x)["video"] for x in cache.read_text().splitlines()] == [pairs[2][1]]
    assert s.skipped.get("video_unreadable") == 2 and sum(s.skipped.values()) == 2 + (not out), s.skipped
    assert any(bad in e and "video_unreadable" in e for e in s.examples), s.examples
    assert "video_unreadable" in s.format()
    # the videos repaired: the skipped pairs are generated on the next build (failures are not cached)
    out, s = _traces(_teacher_cfg(tmp_path), pairs)
    assert len(cache.read_text().splitlines()) == 3 and "video_unreadable" not in s.skipped


def test_unreadable_heldout_videos_are_counted_not_fatal(tmp_path):
    from videosearch_r1.train.base import heldout_clips
    from videosearch_r1.train.base_data import video_rows
    from videosearch_r1.synth.world import resolve, sample_world
    from videosearch_r1.video.decode import load_clip

    cfg = W.world().cfg("synth.preset=tiny")
    world = sample_world(resolve(cfg.synth))
    videos = [(v, f.style) for f in world.families if f.split == "test" for v in f.videos][:3]
    counts = {"rows": {}, "unavailable": {}}
    rows = [r for v, st in videos for r in video_rows(v, st, {"describe": 1, "ground": 1}, cfg.video_cfg("synth"),
                                                       "synth", 0, counts)]
    root = W.damaged_root(tmp_path, truncate={videos[0][0].video_id}, drop={videos[1][0].video_id})
    bcfg = W.world().cfg(f"datasets.synth.root={root}")
    kept, clips, skipped = heldout_clips(rows, lambda v: load_clip(bcfg, "synth", v))
    assert {r.video for r in kept} == {videos[2][0].video_id} and set(clips) == {videos[2][0].video_id}
    assert skipped["video_unreadable"] == len(rows) - len(kept) > 0 and len(skipped["examples"]) == 2


# ----------------------------------------------------------------------------- progress bars (item 3)
def test_long_steps_show_progress(capsys):
    from videosearch_r1.agent.policy import Policy
    from videosearch_r1.synth.world import resolve, sample_world
    from videosearch_r1.train.base import task_scores
    from videosearch_r1.train.base_data import task_rows, video_rows
    from videosearch_r1.train.sft_data import SFTDataSummary, top1_pairs

    cfg = W.world().cfg("synth.preset=tiny")
    pairs = top1_pairs(cfg, W.engine(), W.split().queries[:3], cfg.dataset_cfg("synth").query_field,
                       SFTDataSummary(dataset="synth"))
    assert len(pairs) == 3 and "top-1 pairs" in capsys.readouterr().err
    world = sample_world(resolve(cfg.synth))
    rows, _ = task_rows(world, cfg.base, cfg.video_cfg("synth"), "synth")
    assert rows and "task rows" in capsys.readouterr().err
    v, st = next((v, f.style) for f in world.families if f.split == "test" for v in f.videos)  # on disk
    rows = video_rows(v, st, {"describe": 1}, cfg.video_cfg("synth"), "synth", 0, {"rows": {}, "unavailable": {}})
    pol = Policy.from_pretrained(str(W.world().policy_path), device="cpu", dtype="fp32")
    assert task_scores(pol, rows, W.clip_fn(cfg)) and "task scores" in capsys.readouterr().err


# ----------------------------------------------------------------------------- trainer state read once (item 5)
def _count_state_loads(monkeypatch) -> list:
    calls = []
    real = torch.load

    def counting(f, *a, **kw):
        if str(f).endswith(common.STATE_FILE):
            calls.append(str(f))
        return real(f, *a, **kw)

    monkeypatch.setattr(torch, "load", counting)
    return calls


def test_a_resume_reads_the_trainer_state_once(tmp_path, monkeypatch):
    from videosearch_r1.train.rows import TrainRow
    from videosearch_r1.train.trainer import train_policy

    vids = list(W.split().videos)[:2]
    target = "<think>It fits.</think> <answer>matched</answer> <start>1.0</start> <end>2.0</end> <REFINE>"
    rows = [TrainRow(f"r{i}", "synth", "train", v, "verify", "a red star", target, v, (vids[1 - i],))
            for i, v in enumerate(vids)]
    cfg = W.world().cfg("train.batch_size=1", "train.steps=2", "train.checkpoint_every=1", "train.log_every=1",
                        "sft.infonce_weight=0", f"train.output={tmp_path}")
    s = train_policy(cfg, W.policy(), rows, tmp_path, W.clip_fn(), section=cfg.sft, stop_after=1)
    assert not s["complete"]
    calls = _count_state_loads(monkeypatch)
    s = train_policy(cfg, W.policy(), rows, tmp_path, W.clip_fn(), section=cfg.sft)
    assert s["complete"] and len(calls) == 1, calls  # the run-key check reads run_key.json, not the state
    calls.clear()
    assert train_policy(cfg, W.policy(), rows, tmp_path, W.clip_fn(), section=cfg.sft)["complete"]
    assert calls == []  # a finished run is reused without reading its optimizer state


# ----------------------------------------------------------------------------- finished GRPO run (item 4)
def _grpo_cfg(out, *extra):
    return W.world().cfg("grpo.split=test", "grpo.queries_per_step=1", "grpo.group_size=2", "grpo.max_new_tokens=4",
                         "grpo.micro_batch=2", "grpo.latent_objective=none", "grpo.kl_beta=0.0", "agent.max_turns=1",
                         "train.steps=1", f"train.output={out}", *extra)


def test_a_finished_grpo_run_is_recognised_before_loading_models(tmp_path, monkeypatch):
    from videosearch_r1.agent import infer, policy as policy_mod
    from videosearch_r1.train.grpo import run_grpo

    sft = W.policy().save_pretrained(tmp_path / "sft")  # an SFT-like checkpoint: SQR modules, <REFINE>
    out = tmp_path / "run"
    first = run_grpo(_grpo_cfg(out), "synth", checkpoint=str(sft), engine=W.engine())
    assert first["complete"]
    other = W.policy(nonzero_latents=False).save_pretrained(tmp_path / "sft2")  # other starting weights

    class Loaded(Exception):
        pass

    def trip(*a, **kw):
        raise Loaded("a model or engine was loaded")

    with monkeypatch.context() as m:
        m.setattr(policy_mod.Policy, "from_pretrained", trip)
        m.setattr(infer, "load_engine", trip)
        calls = _count_state_loads(m)
        assert run_grpo(_grpo_cfg(out), "synth", checkpoint=str(sft)) == first
        with pytest.raises(ValueError, match="group_size"):  # other settings: refused, still nothing loaded
            run_grpo(_grpo_cfg(out, "grpo.group_size=3"), "synth", checkpoint=str(sft))
        assert calls == []
        # other starting weights under another path: the digest differs, so only loading them can tell
        with pytest.raises(Loaded):
            run_grpo(_grpo_cfg(out), "synth", checkpoint=str(other))
    with pytest.raises(ValueError, match="init_weights"):
        run_grpo(_grpo_cfg(out), "synth", checkpoint=str(other), engine=W.engine())


def test_a_checkpoint_of_an_older_version_is_still_checked(tmp_path):
    """No run_key.json (written before it existed): the key inside trainer_state.pt is read, memory-mapped."""
    torch.save({"state": {}, "run_key": {"seed": 1, "rows": 4}, "optimizer": {"m": torch.zeros(64)}},
               tmp_path / common.STATE_FILE)
    assert common.saved_run_key(tmp_path) == {"run_key": {"seed": 1, "rows": 4}, "start": None}
    common.check_run_key(tmp_path, {"seed": 1, "rows": 4})
    with pytest.raises(ValueError, match="another seed"):
        common.check_run_key(tmp_path, {"seed": 2, "rows": 4})
    common.check_run_key(tmp_path, {"seed": 2, "rows": 4}, ignore=("seed",))


def test_training_turns_cudnn_attention_off_on_cuda(monkeypatch):
    """torch 2.11's cuDNN SDPA backward NaNs on left-padded rows (pytorch/pytorch#196678; our GRPO steps): every
    trainer's accelerator turns that backend off when CUDA is there, and leaves the CPU alone."""
    import torch

    from videosearch_r1.models.qwen3vl import guard_sdpa_backward
    from videosearch_r1.train import common

    was = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert guard_sdpa_backward() is False and torch.backends.cuda.cudnn_sdp_enabled()
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert guard_sdpa_backward() is True and not torch.backends.cuda.cudnn_sdp_enabled()
        torch.backends.cuda.enable_cudnn_sdp(True)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the accelerator itself runs on the CPU
        from videosearch_r1.config import load_config

        common.make_accelerator(load_config(None, []).train)
        assert torch.backends.cuda.cudnn_sdp_enabled()  # no CUDA: untouched
    finally:
        torch.backends.cuda.enable_cudnn_sdp(was)
