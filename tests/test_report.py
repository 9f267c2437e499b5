"""`vsr1 report`: turn-limit curves from truncated trajectories (checked against real runs with smaller
limits), the soft-token profile, token counts, and robustness to a torn prediction file."""
import json

import _world as W
from videosearch_r1.agent.loop import AgentLoop
from videosearch_r1.agent.report import main as report_main
from videosearch_r1.agent.report import per_turn, soft_token_profile, token_stats
from videosearch_r1.agent.trajectory import truncate_row
from videosearch_r1.eval.evaluate import evaluate_rows


def _script(q, v, k):
    kind = len(q) % 3
    if kind == 0 and k == 0:
        return W.GARBAGE
    if kind == 1 and k == 1:
        return W.MATCH.format(s="1.0", e="4.0")
    return W.NOT_MATCH


def _rows(max_turns, *overrides, script=_script):
    cfg = W.world().cfg(f"agent.max_turns={max_turns}", *overrides)
    sp = W.split()
    pol = W.policy()
    W.scripted(pol, script)
    loop = AgentLoop(cfg.agent, W.engine(), pol, clip_fn=W.clip_fn(cfg),
                     durations={v: r.duration for v, r in sp.videos.items()}, ranked_k=5)
    return [t.to_row() for t in loop.run(sp.queries)]


def _strip(row):
    return {k: v for k, v in row.items() if k != "ranked"}


def test_truncated_trajectories_equal_runs_with_smaller_limits():
    full = _rows(3)
    assert {r["stop_reason"] for r in full} == {"malformed", "matched", "max_turns"}
    curve = per_turn(full, (0.3, 0.5, 0.7), (1, 5))
    for limit in (1, 2):
        real = _rows(limit)
        cut = [truncate_row(r, limit) for r in full]
        assert [_strip(r) for r in cut] == [_strip(r) for r in real]
        got = evaluate_rows(real, iou_thresholds=(0.3, 0.5, 0.7), ks=(1, 5))["paper"]
        assert curve[str(limit)]["vcmr_r1"] == got["vcmr_r1"] and curve[str(limit)]["vr_r1"] == got["vr_r1"]
    assert curve["3"]["vcmr_r1"] == evaluate_rows(full, iou_thresholds=(0.3, 0.5, 0.7), ks=(1, 5))["paper"]["vcmr_r1"]


def test_soft_token_profile_and_token_stats():
    rows = _rows(1, "agent.profile_depths=[1,2,4,8]")
    prof = soft_token_profile(rows)
    refined = [r["turns"][0] for r in rows if r["turns"][0]["refined"]]
    assert prof["n"] == len(refined) > 0 and sorted(prof["r1"], key=int) == ["0", "1", "2", "4", "8"]
    assert prof["r1"]["8"] == 100.0 * sum(t["rank_after"] == 1 for t in refined) / len(refined)
    assert prof["r1"]["0"] == 100.0 * sum(t["rank_before"] == 1 for t in refined) / len(refined)
    stats = token_stats(rows)
    assert stats["refinements"] == len(refined) and stats["refine_tokens_per_refinement"] == 8
    assert stats["latent_per_query"] == 8 * len(refined) / len(rows)


def test_report_cli_survives_torn_file(tmp_path, capsys):
    rows = _rows(2)
    hqr = _rows(2, "agent.method=hqr", script=lambda q, v, k: W.HQR_NOT_MATCH.format(q="a red ring"))
    a, b = tmp_path / "sqr" / "predictions.jsonl", tmp_path / "hqr" / "predictions.jsonl"
    for path, rs in ((a, rows), (b, hqr)):
        path.parent.mkdir()
        path.write_text("".join(json.dumps(r) + "\n" for r in rs))
    with open(a, "a") as f:
        f.write('{"qid": "77", "tur')  # a run still being written (or killed)
    out = tmp_path / "report"
    assert report_main([str(a), str(b), "--out", str(out), "eval.recall_ks=[1,5]"]) == 0
    text = capsys.readouterr().out
    assert "sqr (sqr)" in text and "hqr (hqr)" in text
    res = json.loads((out / "result.json").read_text())
    first, second = res["runs"]
    assert first["counts"]["unscorable_by_reason"] == {"bad_json": 1} and first["counts"]["scored"] == len(rows)
    assert second["tokens"]["refine_tokens_per_refinement"] > 0 and second["paper"]["latent_tokens_per_query"] == 0
    assert res["settings"]["ks"] == [1, 5] and list(first["per_turn"]) == ["1", "2"]
    assert report_main([str(tmp_path / "missing.jsonl")]) == 2


def test_ranked_list_demotes_only_explicitly_rejected_videos():
    from videosearch_r1.agent.trajectory import Trajectory, TurnRecord

    def traj(answers):
        t = Trajectory(qid="1", query="q", gt_video="g", gt_start=0.0, gt_end=1.0, duration=5.0, method="sqr",
                       candidates=[["c1", None, None, 0.5], ["c2", None, None, 0.4]])
        t.turns = [TurnRecord(turn=i + 1, video=f"v{i}", score=0.9 - i / 10, answer=a,
                              span=[0.0, 1.0] if a == "matched" else [2.0, 3.0]) for i, a in enumerate(answers)]
        return t

    # rejected twice: both shown videos go after the unseen candidates
    assert [r[0] for r in traj(["not_matched", "not_matched"]).ranked()] == ["c1", "c2", "v0", "v1"]
    # malformed last answer: the shown video keeps first place, without a span
    assert traj(["not_matched", None]).ranked()[0] == ["v1", None, None, 0.8]
    # matched: first, with its span
    assert traj(["not_matched", "matched"]).ranked()[0][:3] == ["v1", 0.0, 1.0]


def test_rows_carry_the_ground_truth_as_annotated():
    """A clamped end (Charades: the file's end past `duration`) is scored as annotated: the row's gt_end
    is the file's end, so `vsr1 report` (GT from rows) and `vsr1 infer` (GT from the split) agree."""
    from dataclasses import replace

    cfg = W.world().cfg("agent.max_turns=1")
    sp = W.split()
    pol = W.policy()
    W.scripted(pol, lambda q, v, k: W.MATCH.format(s="1.0", e="4.0"))
    qs = [replace(q, end_clamped=True, raw_end=q.duration + 7.5) if i % 2 == 0 else q
          for i, q in enumerate(sp.queries[:4])]
    loop = AgentLoop(cfg.agent, W.engine(), pol, clip_fn=W.clip_fn(cfg),
                     durations={v: r.duration for v, r in sp.videos.items()}, ranked_k=5)
    rows = [t.to_row() for t in loop.run(qs)]
    assert [r["gt_end"] for r in rows] == [q.annotated_end for q in qs]
    assert rows[0]["gt_end"] == qs[0].duration + 7.5 > qs[0].end
    ious, ks = (0.1, 0.5), (1,)
    assert evaluate_rows(rows, iou_thresholds=ious, ks=ks)["paper"] == \
        evaluate_rows(rows, qs, iou_thresholds=ious, ks=ks)["paper"]
