"""`vsr1 infer` on the tiny synthetic world: outputs, resume after a kill, refusal to mix settings, and the
CLI end to end with a tiny random policy (followed by `vsr1 report`)."""
import json
import uuid
from pathlib import Path

import pytest

import _world as W
from videosearch_r1 import cli
from videosearch_r1.agent.infer import run_infer
from videosearch_r1.config import ConfigError
from videosearch_r1.utils import read_jsonl_resumable


def _name(tag):
    return f"{tag}-{uuid.uuid4().hex[:8]}"


CHECKED = ("<think>I see a red circle. Check: colour red / blue: same; shape circle / circle: same; event spins: not "
           "seen. It does not match the query: it never spins.</think> <answer>not_matched</answer> <REFINE>")


def _script(q, v, k):
    """Depends on the query text and the turn only (never on the ground truth): a mix of stop reasons."""
    kind = len(q) % 3
    if kind == 0:
        return W.GARBAGE  # malformed at turn 1
    if kind == 1:
        return W.MATCH.format(s="1.0", e="4.0") if k == 1 else W.NOT_MATCH  # matched at turn 2
    return CHECKED  # max_turns, with a checklist trace whose colour check contradicts its two sides


def _run(run_name, max_batches=None, **over):
    cfg = W.world().cfg(f"run_name={run_name}", "agent.batch_size=3", "agent.max_turns=3",
                        *[f"{k}={v}" for k, v in over.items()])
    pol = W.policy()
    W.scripted(pol, _script)
    return cfg, run_infer(cfg, engine=W.engine(), policy=pol, max_batches=max_batches)


def test_infer_writes_rows_and_summary():
    sp = W.split()
    cfg, summary = _run(_name("full"))
    run_dir = cfg.runs_dir() / cfg.run_name
    rows = read_jsonl_resumable(run_dir / "predictions.jsonl")
    assert [r["qid"] for r in rows] == [q.qid for q in sp.queries]
    assert summary["complete"] and summary["finished"] == len(sp.queries)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["metrics"]["paper"]["n"] == len(sp.queries)
    assert on_disk["stop_reasons"] == summary["stop_reasons"] and sum(summary["stop_reasons"].values()) == len(rows)
    assert (run_dir / "config.yaml").is_file()
    for r in rows:  # the contract's row schema
        assert set(r) >= {"qid", "query", "gt_video", "gt_start", "gt_end", "duration", "method", "turns",
                          "final", "stop_reason", "text_tokens", "latent_tokens", "ranked"}
        assert r["final"]["video"] == r["turns"][-1]["video"]
        assert r["text_tokens"] == sum(t["text_tokens"] for t in r["turns"])
    assert summary["counts"]["generate_calls"] >= 3 and summary["timings_s"]["generate"] >= 0
    wrong = [t for r in rows for t in r["turns"] if t["video"] is not None and t["video"] != r["gt_video"]]
    by_diff = summary["wrong_shown_by_difference"]  # the synthetic world's wrong videos, by how they differ
    assert wrong and by_diff["any"] == {"shown": len(wrong),
                                        "rejected": sum(t["answer"] == "not_matched" for t in wrong)}
    details = {"other_family", "colour", "size", "shape", "wall_colour", "texture", "companion", "target", "secondary"}
    assert set(by_diff) - {"any"} <= details and all(v["shown"] <= len(wrong) for v in by_diff.values())
    checked = [(r, t) for r in rows for t in r["turns"] if t["output"] == CHECKED]
    tc, n = summary["trace_checks"], len(checked)  # what the checks wrote, read back
    others = sum(t["output"] not in (None, CHECKED) for r in rows for t in r["turns"])  # generated, no checks
    assert n and others and tc["turns"] == n and tc["unparsed"] == others
    assert tc["items"] == {"colour": {"agree": 0, "contradict": n}, "shape": {"agree": n, "contradict": 0}}
    on_gt = sum(t["video"] == r["gt_video"] for r, t in checked)
    assert tc["event"] == {"gt": {"seen": 0, "not_seen": on_gt}, "wrong": {"seen": 0, "not_seen": n - on_gt}}


def test_resume_after_kill_equals_uninterrupted_run():
    sp = W.split()
    _, full = _run(_name("ref"))
    name = _name("killed")
    cfg, part = _run(name, max_batches=1)  # the process "dies" after its first batch
    pred = cfg.runs_dir() / name / "predictions.jsonl"
    assert not part["complete"] and part["finished"] == 3
    with open(pred, "a") as f:
        f.write('{"qid": "999", "turns": [{"tu')  # the kill tore the next batch's first line
    cfg, resumed = _run(name)
    assert resumed["complete"] and resumed["finished"] == len(sp.queries)
    ref_rows = read_jsonl_resumable(Path(full["run_dir"]) / "predictions.jsonl")
    assert read_jsonl_resumable(pred) == ref_rows
    assert resumed["metrics"]["paper"] == full["metrics"]["paper"]
    assert set(full["stop_reasons"]) == {"malformed", "matched", "max_turns"}


def test_resume_refuses_other_settings():
    name = _name("mixed")
    _run(name, max_batches=1)
    with pytest.raises(ConfigError, match="agent"):
        _run(name, **{"agent.refine_mode": "accumulate"})
    _run(name, **{"agent.batch_size": 2})  # batch size only regroups the work: allowed


@pytest.mark.slow
def test_cli_infer_and_report_end_to_end(tmp_path, capsys):
    """Real tiny random policy (it writes nonsense: the malformed path), then the engine baseline, then
    the report over both runs."""
    ws = W.world().workspace
    W.engine()
    common = [f"workspace={ws}", "agent.max_new_tokens=12", "agent.batch_size=2", "agent.max_turns=2"]
    sqr, eng = _name("cli-sqr"), _name("cli-engine")
    assert cli.main(["infer", "synth", "--checkpoint", str(W.world().policy_path), "--limit", "3",
                     *common, f"run_name={sqr}"]) == 0
    assert cli.main(["infer", "synth", "--split", "test", *common, "agent.method=engine", f"run_name={eng}"]) == 0
    runs = ws / "runs"
    rows = read_jsonl_resumable(runs / sqr / "predictions.jsonl")
    assert len(rows) == 3 and all(r["method"] == "sqr" and r["turns"] for r in rows)
    assert all(0 < t["text_tokens"] <= 12 for r in rows for t in r["turns"])
    out = tmp_path / "rep"
    capsys.readouterr()
    assert cli.main(["report", str(runs / sqr / "predictions.jsonl"), str(runs / eng / "predictions.jsonl"),
                     "--out", str(out), f"workspace={ws}"]) == 0
    table = capsys.readouterr().out
    assert f"sqr ({sqr})" in table and f"engine ({eng})" in table
    result = json.loads((out / "result.json").read_text())
    assert [r["method"] for r in result["runs"]] == ["sqr", "engine"]
    assert result["runs"][1]["n"] == len(W.split().queries)
    for name in ("turns.png", "soft_tokens.png", "tokens.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_clean(capsys):
    ws = W.world().workspace
    assert cli.main(["infer", "synth", f"workspace={ws}", f"run_name={_name('nockpt')}"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert cli.main(["infer", "nosuch", f"workspace={ws}"]) == 2


def test_resume_refuses_another_world_index_or_weights(tmp_path):
    """synth.*, index.*, engine.max_query_tokens and the content of both checkpoints key a run."""
    import shutil

    from videosearch_r1.models.tiny import make_tiny_checkpoint

    wcfg = W.world().cfg()
    pol, eng = tmp_path / "policy", tmp_path / "e" / "synth-engine"  # same folder name: same index dir
    shutil.copytree(W.world().policy_path, pol)
    shutil.copytree(wcfg.engine_model(), eng)
    base = {"agent.checkpoint": str(pol), "engine.model": str(eng)}
    name = _name("keyed")
    _run(name, max_batches=1, **base)
    for key, value in (("synth.seed", 5), ("index.factory", "HNSW32"), ("engine.max_query_tokens", 64)):
        with pytest.raises(ConfigError, match=key.split(".")[0] if key != "engine.max_query_tokens" else key):
            _run(name, **base, **{key: value})
    vcfg = wcfg.video_cfg("synth")
    make_tiny_checkpoint(pol, kind="policy", video_cfg=vcfg, seed=9)  # the policy retrained in place
    with pytest.raises(ConfigError, match="policy_weights"):
        _run(name, **base)
    shutil.rmtree(pol)
    shutil.copytree(W.world().policy_path, pol)  # the same content again: resumes
    assert _run(name, **base)[1]["complete"]
    make_tiny_checkpoint(eng, kind="embedder", video_cfg=vcfg, seed=9)  # the engine retrained in place
    with pytest.raises(ConfigError, match="engine_weights"):
        _run(name, **base)


def test_queries_whose_video_is_not_in_the_index_are_counted(capsys):
    import numpy as np

    from videosearch_r1.engine.search import SearchEngine

    full, sp = W.engine(), W.split()
    gone = sp.queries[0].video_id
    keep = [i for i, v in enumerate(full.ids) if v != gone]
    engine = SearchEngine(full.vectors[keep], [full.ids[i] for i in keep], embedder=full.embedder)
    summary = run_infer(W.world().cfg(f"run_name={_name('gap')}", "agent.method=engine"), engine=engine)
    n = sum(q.video_id == gone for q in sp.queries)
    assert summary["gt_not_in_index"] == n >= 1 and summary["index_videos"] == len(full.ids) - 1
    assert f"ground truth not in the index: {n} of {len(sp.queries)} queries" in capsys.readouterr().out
    empty = SearchEngine(np.zeros((0, full.dim), np.float32), [], embedder=full.embedder)
    with pytest.raises(ValueError, match="holds no videos"):
        run_infer(W.world().cfg(f"run_name={_name('empty')}", "agent.method=engine"), engine=empty)


def test_verdicts_by_difference_counts_the_policys_own_verdict_under_an_oracle():
    from videosearch_r1.agent.infer import verdicts_by_difference
    from videosearch_r1.engine.channel import load_world

    world = load_world(W.world().cfg(), "synth")
    fam = next(iter({(v["split"], v["family"]) for v in world["videos"].values()}))
    a, b = sorted(k for k, v in world["videos"].items() if (v["split"], v["family"]) == fam)[:2]
    other = next(k for k, v in world["videos"].items() if (v["split"], v["family"]) != fam)
    turns = [{"video": b, "answer": "not_matched", "policy_answer": "matched"},
             {"video": other, "answer": "not_matched", "policy_answer": None},
             {"video": a, "answer": "matched", "policy_answer": "matched"}]  # the GT: not counted
    rows = [{"gt_video": a, "turns": turns}]
    plain, oracle = verdicts_by_difference(world, rows), verdicts_by_difference(world, rows, oracle=True)
    assert plain["any"] == {"shown": 2, "rejected": 2} and oracle["any"] == {"shown": 2, "rejected": 0}
    assert oracle["other_family"] == {"shown": 1, "rejected": 0} and len(plain) >= 3  # + the sibling's details
    assert verdicts_by_difference(None, rows) is None
