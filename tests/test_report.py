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


def _row(qid, n_turns=1, hit=True, method="sqr"):
    """A hand-written prediction row: n_turns turns, the last one matched (on the GT video when hit)."""
    turns = [{"turn": t + 1, "video": f"v{qid}" if hit and t == n_turns - 1 else "x",
              "answer": "matched" if t == n_turns - 1 else "not_matched", "span": None, "refined": False}
             for t in range(n_turns)]
    return {"qid": str(qid), "query": "q", "gt_video": f"v{qid}", "gt_start": 0.0, "gt_end": 10.0, "duration": 30.0,
            "method": method, "turns": turns,
            "final": {"video": turns[-1]["video"], "answer": "matched", "start": 0.0, "end": 8.0},
            "stop_reason": "matched", "text_tokens": 30 * n_turns, "latent_tokens": 0}


def _write_run(root, name, rows, summary=None):
    path = root / name / "predictions.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        (path.parent / "summary.json").write_text(json.dumps(summary))
    return path


def test_report_names_query_sets_warns_and_restricts_to_common(tmp_path, capsys):
    a = _write_run(tmp_path, "a", [_row(i, hit=i < 4) for i in range(8)], {"queries": 8, "complete": True})
    b = _write_run(tmp_path, "b", [_row(i, hit=True) for i in range(4)], {"queries": 8, "complete": False})
    out = tmp_path / "rep"
    assert report_main([str(a), str(b), "--out", str(out), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "WARNING: the runs' query sets differ (8/4 queries, 4 common)" in text and "--common" in text
    assert "WARNING: run b is incomplete: 4 of 8 queries have rows" in text
    res = json.loads((out / "result.json").read_text())
    ra, rb = res["runs"]
    assert (ra["n"], rb["n"]) == (8, 4) and ra["query_set"]["hash"] != rb["query_set"]["hash"]
    assert (ra["query_set"]["complete"], rb["query_set"]["complete"]) == (True, False)
    assert res["query_sets"] == {**res["query_sets"], "identical": False, "common": 4, "restricted": False}
    assert ra["paper"]["vr_r1"] == 50.0 and rb["paper"]["vr_r1"] == 100.0  # not comparable as they stand

    assert report_main([str(a), str(b), "--out", str(out), "--no-plots", "--common"]) == 0
    text = capsys.readouterr().out
    assert "--common: every run scored on the 4 queries common to all runs" in text
    assert "rows dropped per run: 4/0" in text and "query sets differ" not in text
    res = json.loads((out / "result.json").read_text())
    ra, rb = res["runs"]
    assert ra["n"] == rb["n"] == 4 and ra["query_set"]["hash"] == rb["query_set"]["hash"]
    assert ra["paper"]["vr_r1"] == rb["paper"]["vr_r1"] == 100.0 and res["query_sets"]["restricted"] is True

    c = _write_run(tmp_path, "c", [_row(i) for i in range(20, 22)])  # nothing in common, no summary.json
    assert report_main([str(a), str(c), "--out", str(out), "--common"]) == 2
    assert "no query is common" in capsys.readouterr().err
    assert report_main([str(a), str(a), "--out", str(out), "--no-plots"]) == 0
    assert "query set: the runs have 8 queries (hash" in capsys.readouterr().out


def test_report_table_shows_turn1_verdict_sides(tmp_path, capsys):
    from videosearch_r1.agent.report import analyse, format_table, load_run

    # turn 1: q0 rejects x (wrong rejected), q1 accepts v1 (GT accepted), q2 accepts x (wrong not rejected)
    a = _write_run(tmp_path, "a", [_row(0, n_turns=2), _row(1), _row(2, hit=False)])
    assert report_main([str(a), "--out", str(tmp_path / "rep"), "--no-plots"]) == 0
    text = capsys.readouterr().out
    head, _, row = text.splitlines()[:3]
    assert head.split()[head.split().index("VER") + 1] == "acc/rej(t1)"
    assert row.split()[head.split().index("VER") + 2] == "100.0/50.0"  # the label "sqr (a)" is two words
    res = json.loads((tmp_path / "rep" / "result.json").read_text())
    # all turns: + q0's turn 2 (v0 accepted)
    assert res["runs"][0]["paper"]["verdicts"]["all_turns"] == {
        "gt_shown": 2, "gt_accepted": 2, "wrong_shown": 2, "wrong_rejected": 1,
        "gt_accept_rate": 100.0, "wrong_reject_rate": 50.0}
    run = analyse(load_run(a), (0.5,), (1,))
    del run["paper"]["verdicts"]  # a result from before verdicts existed
    old_row = format_table([run]).splitlines()[2].split()
    assert old_row[old_row.index("sqr") + 8] == "-"  # run(2 words) n qset complete R1@0.5 mIoU VER -> next cell


def test_refinement_effect_counts_rank_moves_where_the_gt_was_not_shown(tmp_path, capsys):
    """Only turns that refined with a wrong video shown count; ranks compared before / after the refinement,
    in result.json and in a line under the table."""
    from videosearch_r1.agent.report import refinement_effect

    def turn(before, after, gt_shown=False, refined=True):
        return {"rank_before": before, "rank_after": after, "gt_shown": gt_shown, "refined": refined}

    rows = [{"turns": [turn(3, 1), turn(1, 1, gt_shown=True)]},  # improved to rank 1; the GT turn does not count
            {"turns": [turn(2, 2), turn(4, 7)]},  # same, worse
            {"turns": [turn(5, 5), turn(5, None), turn(6, 2, refined=False)]},  # same; no rank after / no refine
            {"turns": "torn"}, "not a row"]
    assert refinement_effect(rows) == {"n": 4, "improved": 1, "same": 2, "worse": 1, "median_before": 3.5,
                                       "median_after": 3.5, "r1_before": 0.0, "r1_after": 25.0}
    assert refinement_effect([{"turns": [turn(2, 1, refined=False)]}]) == {"n": 0}
    real = _rows(3)  # the loop's own rows: scripted SQR refinements on the tiny world
    a = _write_run(tmp_path, "a", real)
    assert report_main([str(a), "--out", str(tmp_path / "rep"), "--no-plots"]) == 0
    res = json.loads((tmp_path / "rep" / "result.json").read_text())["runs"][0]["refinement"]
    assert res == refinement_effect(real) and res["n"] > 0
    assert f"refinement where the GT was not shown ({res['n']} turns)" in capsys.readouterr().out
    # a run made under agent.oracle_verifier (its summary.json says so) is labelled as such
    b = _write_run(tmp_path, "b", real, summary={"complete": True, "queries": len(real), "oracle_verifier": True})
    assert report_main([str(b), "--out", str(tmp_path / "rep2"), "--no-plots"]) == 0
    assert "sqr (b) [oracle verifier]" in capsys.readouterr().out


def test_report_plots_are_readable_with_one_turn_or_one_run(tmp_path):
    """One run of one turn: bars on a 0-based axis, not one point on a 0.96-1.04 axis; several turns:
    integer ticks 1..T; all-zero rates: still a 0-5 % axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from videosearch_r1.agent.report import load_run, analyse, plot_all, plot_soft_tokens, plot_tokens, plot_turns

    def runs_of(name, rows):
        return [analyse(load_run(_write_run(tmp_path, name, rows)), (0.3, 0.5), (1,))]

    one = runs_of("one", [_row(i, hit=i % 3 == 0) for i in range(9)])
    fig = plot_turns(one, plt)
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        assert lo == 0 and 5 <= hi <= 105 and ax.containers  # bars, from 0
        assert ax.get_xlim()[1] - ax.get_xlim()[0] >= 1
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["sqr (one)"]
    plt.close(fig)
    multi = runs_of("multi", [_row(i, n_turns=1 + i % 3) for i in range(9)])
    fig = plot_turns(multi, plt)
    assert list(fig.axes[0].get_xticks()) == [1, 2, 3] and fig.axes[0].get_ylim()[0] == 0
    plt.close(fig)
    zero = runs_of("zero", [_row(i, hit=False) for i in range(3)])
    for make in (plot_turns, plot_soft_tokens, plot_tokens):
        fig = make(zero, plt)
        assert all(ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 1 for ax in fig.axes)
        plt.close(fig)
    assert [p.name for p in plot_all(one, tmp_path)] == ["turns.png", "soft_tokens.png", "tokens.png"]


def test_report_names_the_line_of_a_turn_without_its_fields(tmp_path, capsys):
    rows = _rows(2)
    rows[1]["turns"] = [{k: v for k, v in t.items() if k != "turn"} for t in rows[1]["turns"]]
    path = tmp_path / "sqr" / "predictions.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert report_main([str(path), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2" in err and "'turn'" in err


def test_report_reads_back_the_written_checks(tmp_path, capsys):
    """Synthetic checklist traces: the report prints what the checks wrote (and writes it into result.json)."""
    checked = ("<think>I see a red circle. Check: colour red / blue: same; event spins: seen. From 1.0 to 2.0 s it "
               "spins, as the query asks.</think> <answer>matched</answer>")
    rows = [_row(0), _row(1)]
    for t in rows[0]["turns"]:
        t["output"] = checked
    a = _write_run(tmp_path, "a", rows)
    assert report_main([str(a), "--out", str(tmp_path / "rep"), "--no-plots"]) == 0
    assert "written checks contradicting their two sides: colour 1/1; event 'not seen' on the GT 0/1" in \
        capsys.readouterr().out
    res = json.loads((tmp_path / "rep" / "result.json").read_text())
    assert res["runs"][0]["trace_checks"]["items"] == {"colour": {"agree": 0, "contradict": 1}}
