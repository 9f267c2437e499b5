"""Metrics against hand-computed figures, with every edge case (definitions: docs/metrics.md)."""
import math

import pytest

from videosearch_r1.data import Query
from videosearch_r1.eval import GT, Pred, Turn, evaluate_rows, format_table, paper_metrics, temporal_iou, tvr_metrics
from videosearch_r1.eval.metrics import iou_hit, valid_span, verification_correct


@pytest.mark.parametrize("pred,gt,iou", [
    ((1.0, 4.0), (2.0, 5.0), 0.5),        # overlap 2, union 4
    ((2.0, 3.0), (0.0, 10.0), 0.1),       # contained
    ((0.0, 10.0), (2.0, 3.0), 0.1),       # symmetric
    ((0, 1), (1, 2), 0.0),                # touching
    ((0.0, 1.0), (5.0, 6.0), 0.0),        # disjoint
    ((2.0, 5.0), (2.0, 5.0), 1.0),
    ((3.0, 3.0), (2.0, 5.0), 0.0),        # zero-length prediction
    ((5.0, 2.0), (2.0, 5.0), 0.0),        # reversed prediction: invalid (a swap would give 1.0)
    ((2.0, 5.0), (4.0, 4.0), 0.0),        # zero-length ground truth
    (None, (2.0, 5.0), 0.0),
    ((None, 4.0), (2.0, 5.0), 0.0),       # unparsed start
    ((float("nan"), 4.0), (2.0, 5.0), 0.0),
    ((1.0, float("inf")), (2.0, 5.0), 0.0),
    ((True, 4.0), (2.0, 5.0), 0.0),       # bools are not times
])
def test_temporal_iou(pred, gt, iou):
    assert temporal_iou(pred, gt) == pytest.approx(iou)


def test_span_threshold_and_verification_rules():
    assert valid_span(0, 1) and not valid_span(1, 1) and not valid_span(2, 1) and not valid_span("0", 1)
    assert iou_hit(0.5, 0.5) and iou_hit(0.7 - 1e-12, 0.7) and not iou_hit(0.69, 0.7)
    assert verification_correct("a", "matched", "a") and verification_correct("b", "not_matched", "a")
    assert not verification_correct("a", "not_matched", "a") and not verification_correct("b", "matched", "a")
    assert not verification_correct("a", None, "a") and not verification_correct("a", "match", "a")
    assert not verification_correct(None, "not_matched", "a")  # nothing was verified


def P(qid, video, answer, span, turns, stop="matched", text=10, latent=0, ranked=None):
    s, e = span if span else (None, None)
    return Pred(qid, video, answer, s, e, [Turn(v, a) for v, a in turns], stop, text, latent, ranked)


# (pred, gt): every edge case once; q9 has no prediction.
CASES = [
    (P("1", "v1", "matched", (0, 8), [("v2", "not_matched"), ("v1", "matched")], text=50, latent=8),
     GT("v1", 0, 10)),                                                                        # iou .8
    (P("2", "v3", "matched", (0, 10), [("v3", "matched")], text=20), GT("v2", 0, 10)),         # wrong video
    (P("3", "v3", "not_matched", None, [("v9", "not_matched"), ("v3", "not_matched")], "max_turns", 60, 16),
     GT("v3", 2, 4)),                                                                         # unmatched on GT
    (P("4", "v4", "matched", None, [("v4", "matched")]), GT("v4", 1, 3)),                      # unparseable span
    (P("5", "v5", "matched", (6, 2), [("v5", "matched")]), GT("v5", 2, 6)),                    # reversed span
    (P("6", "v6", "matched", (3, 3), [("v6", "matched")]), GT("v6", 2, 4)),                    # zero-length span
    (P("7", "v7", None, None, [("v7", None)], "malformed"), GT("v7", 0, 5)),                   # unparseable answer
    (P("8", "v8", "matched", (0, 4), [("v8", "matched")]), GT("v8", 0, 10)),                   # iou .4
    (None, GT("v9", 0, 10)),                                                                  # missing
    (P("10", "v10", "matched", (0, 6), [("v10", "matched")]), GT("v10", 0, 10)),               # iou .6
]


def test_paper_metrics_hand_computed():
    preds, gts = zip(*CASES)
    m = paper_metrics(preds, gts, (0.3, 0.5, 0.7))
    assert m["n"] == 10
    assert m["vcmr_r1"] == pytest.approx({"0.3": 30.0, "0.5": 20.0, "0.7": 10.0})  # q1,q8,q10 / q1,q10 / q1
    assert m["miou"] == pytest.approx((0.8 + 0.4 + 0.6) / 10 * 100)
    assert m["ver_acc"] == pytest.approx(60.0)                   # q1 q4 q5 q6 q8 q10
    assert m["turns_verified"] == 11
    assert m["ver_acc_per_turn"] == pytest.approx(100 * 8 / 11)  # wrong: q2, q3 turn 2, q7
    assert m["vr_r1"] == pytest.approx(80.0)                     # all but q2 and the missing q9
    assert m["vr_r1_turn1"] == pytest.approx(60.0)               # q1 and q3 saw another video first
    assert m["mean_turns"] == pytest.approx(11 / 9)
    assert m["text_tokens_per_query"] == pytest.approx((50 + 20 + 60 + 6 * 10) / 9)
    assert m["latent_tokens_per_query"] == pytest.approx(24 / 9)
    assert m["stop_reasons"] == {"(missing)": 1, "malformed": 1, "matched": 7, "max_turns": 1}
    # turn 1: q1 q3 reject another video, q2 accepts one; q4-q6 q8 q10 accept the GT, q7 is unparseable on it
    assert m["verdicts"]["turn1"] == {"gt_shown": 6, "gt_accepted": 5, "wrong_shown": 3, "wrong_rejected": 2,
                                      "gt_accept_rate": pytest.approx(500 / 6),
                                      "wrong_reject_rate": pytest.approx(200 / 3)}
    # all turns: + q1 turn 2 (GT accepted), q3 turn 2 (GT rejected); the two sides' correct turns are VER/turn's 8
    assert m["verdicts"]["all_turns"] == {"gt_shown": 8, "gt_accepted": 6, "wrong_shown": 3, "wrong_rejected": 2,
                                          "gt_accept_rate": 75.0, "wrong_reject_rate": pytest.approx(200 / 3)}


def test_paper_metrics_verdicts_scripted_turns():
    """Turns with no video are skipped, unparseable answers are shown but neither accepted nor rejected,
    None preds add nothing."""
    cases = [
        (P("a", "g", "matched", (0, 1), [(None, "not_matched"), ("x", None), ("g", "matched")]), GT("g", 0, 1)),
        (P("b", "y", "not_matched", None, [("h", "not_matched"), ("y", "not_matched")]), GT("h", 0, 1)),
        (None, GT("k", 0, 1)),
        (P("d", "m", "yes", None, [("z", "matched"), ("m", "yes")], "malformed"), GT("m", 0, 1)),
        (P("e", None, None, None, [], "no_turns"), GT("e", 0, 1)),
        (P("f", "f", "matched", (0, 1), [("f", "matched")]), GT("f", 0, 1)),
        (P("g", "t", "not_matched", None, [("w", "not_matched"), ("u", "not_matched"), ("t", "not_matched")]),
         GT("q", 0, 1)),
        (P("h", "r", "matched", (0, 1), [("r", "matched")]), GT("r", 0, 1)),
    ]
    preds, gts = zip(*cases)
    v = paper_metrics(preds, gts)["verdicts"]
    # turn 1: a shows no video; GT shown by b (rejected), f h (accepted); wrong by d (accepted), g (rejected)
    assert v["turn1"] == {"gt_shown": 3, "gt_accepted": 2, "wrong_shown": 2, "wrong_rejected": 1,
                          "gt_accept_rate": pytest.approx(200 / 3), "wrong_reject_rate": 50.0}
    # all turns: GT a f h accepted, b rejected, d unparseable; wrong a (unparseable), b, g x3 rejected, d accepted
    assert v["all_turns"] == {"gt_shown": 5, "gt_accepted": 3, "wrong_shown": 6, "wrong_rejected": 4,
                              "gt_accept_rate": 60.0, "wrong_reject_rate": pytest.approx(200 / 3)}


def test_paper_metrics_verdict_rates_none_when_nothing_shown():
    zero = {"gt_shown": 0, "gt_accepted": 0, "wrong_shown": 0, "wrong_rejected": 0,
            "gt_accept_rate": None, "wrong_reject_rate": None}
    for preds in ([None, None], [P("1", None, None, None, [(None, "matched")], "malformed"), None]):
        v = paper_metrics(preds, [GT("a", 0, 1), GT("b", 0, 1)])["verdicts"]
        assert v == {"turn1": zero, "all_turns": zero}
    # only the GT shown: the wrong side's rate is None, the GT side's a number
    v = paper_metrics([P("1", "a", "not_matched", None, [("a", "not_matched")])], [GT("a", 0, 1)])["verdicts"]
    assert v["all_turns"]["gt_accept_rate"] == 0.0 and v["all_turns"]["wrong_reject_rate"] is None


def test_paper_metrics_empty_and_all_missing():
    m = paper_metrics([None, None], [GT("a", 0, 1), GT("b", 0, 1)])
    assert m["vcmr_r1"]["0.5"] == 0.0 and m["ver_acc"] == 0.0 and m["vr_r1"] == 0.0
    assert m["ver_acc_per_turn"] is None and m["mean_turns"] is None and m["stop_reasons"] == {"(missing)": 2}
    assert paper_metrics([], [])["ver_acc"] is None


def test_tvr_metrics_hand_computed():
    ranked = [
        [("b", 0, 10, .9), ("a", 20, 30, .8), ("b", 1, 2, .7), ("a", 0, 6, .6), ("a", 0, 9, .5)],  # GT a 0-10
        [("c", 0, 4, 1.0)],                                                                    # GT c 0-4
        None,                                                                                  # no list
        [("e", 4, 2, .5)],                                                                     # reversed span
    ]
    gts = [GT("a", 0, 10), GT("c", 0, 4), GT("d", 0, 1), GT("e", 2, 4)]
    m = tvr_metrics(ranked, gts, (0.5, 0.7), (1, 4, 5))
    assert m["n"] == 4 and m["with_ranked"] == 3
    # q1: first hit at .5 is rank 4 (iou .6), at .7 rank 5 (iou .9); its video order is b, a -> VR rank 2
    assert m["vcmr"]["0.5"] == pytest.approx({"1": 25.0, "4": 50.0, "5": 50.0})
    assert m["vcmr"]["0.7"] == pytest.approx({"1": 25.0, "4": 25.0, "5": 50.0})
    assert m["vr"] == pytest.approx({"1": 50.0, "4": 75.0, "5": 75.0})


def row(qid, video="v1", answer="matched", span=(0.0, 8.0), gt=("v1", 0.0, 10.0), **kw):
    r = {"qid": qid, "query": "q", "gt_video": gt[0], "gt_start": gt[1], "gt_end": gt[2], "duration": 30.0,
         "method": "sqr", "turns": [{"turn": 1, "video": video, "answer": answer}],
         "final": {"video": video, "answer": answer, "start": span[0] if span else None,
                   "end": span[1] if span else None},
         "stop_reason": "matched", "text_tokens": 40, "latent_tokens": 0}
    r.update(kw)
    return r


def test_evaluate_rows_with_ground_truth_counts_everything():
    gt = [Query(str(i), i, f"v{i}", "fine", "coarse", 0.0, 10.0, 30.0, i, False) for i in (1, 2, 3)]
    no_final = row("3", gt=("v3", 0, 10))
    del no_final["final"]
    rows = [row("1", gt=("WRONG", 50, 60)),             # row's gt ignored: scored against v1 0-10 -> hit
            row("2", video="v2", span=(0, 4), gt=("v2", 0, 10)),   # iou .4 on v2
            row("2", video="v2", span=(0, 10), gt=("v9", 0, 10)),  # duplicate: first kept
            row("99"),                                  # unknown qid
            "bad JSON (JSONDecodeError: ...)",          # an unreadable line
            no_final,                                   # missing field -> query 3 missing
            ["not", "an", "object"]]
    r = evaluate_rows(rows, gt, (0.3, 0.5), (1,))
    c = r["counts"]
    assert (r["n"], c["rows"], c["scored"], c["missing"], c["unscorable"], c["gt_disagree"]) == (3, 7, 2, 1, 5, 1)
    assert c["unscorable_by_reason"] == {"bad_json": 1, "duplicate_qid": 1, "missing_field": 1,
                                         "not_object": 1, "unknown_qid": 1}
    assert r["paper"]["vcmr_r1"] == pytest.approx({"0.3": 200 / 3, "0.5": 100 / 3})
    assert r["paper"]["ver_acc"] == pytest.approx(200 / 3) and r["paper"]["stop_reasons"]["(missing)"] == 1
    assert r["tvr"] is None
    msgs = "\n".join(r["messages"])
    for needle in ("row 3: duplicate_qid", "row 4: unknown_qid", "row 5: bad_json", "row 6: missing_field: 'final'",
                   "row 1: gt_video 'WRONG'"):
        assert needle in msgs


def test_format_table_prints_the_verdict_sides():
    rows = [row("1"),                                                    # GT accepted
            row("2", video="v2", answer="not_matched", span=None),       # wrong video rejected
            row("3", video="v3", answer="matched", span=(0, 1)),         # wrong video accepted
            row("4", video="v1", answer="maybe", span=None)]             # GT shown, unparseable
    r = evaluate_rows(rows, None, (0.5,), (1,))
    assert r["paper"]["verdicts"]["turn1"]["gt_shown"] == 2 and r["paper"]["verdicts"]["turn1"]["wrong_shown"] == 2
    lines = format_table(r).splitlines()
    assert "  turn 1: GT accepted 1/2 (50.0 %), wrong rejected 1/2 (50.0 %)" in lines
    assert "  all turns: GT accepted 1/2 (50.0 %), wrong rejected 1/2 (50.0 %)" in lines
    only_gt = format_table(evaluate_rows([row("1")], None, (0.5,), (1,))).splitlines()
    assert "  turn 1: GT accepted 1/1 (100.0 %), wrong rejected 0/0" in only_gt
    none_shown = evaluate_rows([row("1", video=None, answer=None, span=None)], None, (0.5,), (1,))
    assert "GT accepted" not in format_table(none_shown)
    del r["paper"]["verdicts"]  # a result written before verdicts existed
    assert "GT accepted" not in format_table(r) and "VER/turn" in format_table(r)


def test_evaluate_rows_without_ground_truth_never_shrinks_the_denominator():
    no_final_b = row("b")
    del no_final_b["final"]
    bad_c = row("c", text_tokens="many")
    rows = [row("a"), no_final_b, "bad JSON", row("a", span=(0, 1)), bad_c, row("c", span=(0, 10)),
            row("d", gt_start=None)]
    r = evaluate_rows(rows, None, (0.5,), (1,))
    c = r["counts"]
    # queries: a, c scored; b and d unscorable (misses); the bad JSON line is one more query
    assert (r["n"], c["scored"], c["missing"], c["unscorable"]) == (5, 2, 3, 5)
    assert c["unscorable_by_reason"] == {"bad_json": 1, "bad_type": 2, "duplicate_qid": 1, "missing_field": 1}
    assert r["paper"]["vcmr_r1"]["0.5"] == pytest.approx(40.0)  # a (iou .8), c (iou 1.0)


def test_evaluate_rows_tvr_view_and_ranked_checks():
    rows = [row("1", ranked=[["v2", 0, 10, 0.9], ["v1", 0, 9, 0.8]]), row("2", gt=("v5", 0, 10)),
            row("3", ranked=[["v1", 0, 10]])]  # malformed entry -> unscorable
    r = evaluate_rows(rows, None, (0.5,), (1, 2))
    assert r["counts"]["unscorable_by_reason"] == {"bad_type": 1}
    assert r["tvr"]["n"] == 3 and r["tvr"]["with_ranked"] == 1
    assert r["tvr"]["vcmr"]["0.5"] == pytest.approx({"1": 0.0, "2": 100 / 3})
    assert r["tvr"]["vr"] == pytest.approx({"1": 0.0, "2": 100 / 3})
    assert not any(isinstance(v, float) and math.isnan(v) for v in r["paper"].values())


def test_moment_recall_beyond_one_only_with_real_spans():
    """The agent's ranked list grounds only its first entry: moment R@k>1 would equal R@1 by construction,
    so it is not reported (video R@k is); with spans below the first it is."""
    gts = [GT("a", 0, 10), GT("b", 0, 10)]
    agent_like = [[("a", 0, 9, .9), ("x", None, None, .5)], [("x", None, None, .8), ("b", None, None, .7)]]
    m = tvr_metrics(agent_like, gts, (0.5,), (1, 2, 5))
    assert m["moment_ks"] == [1] and m["vcmr"] == {"0.5": {"1": 50.0}}
    assert m["vr"] == pytest.approx({"1": 50.0, "2": 100.0, "5": 100.0})
    spans = [[("a", 0, 9, .9)], [("x", 0, 1, .8), ("b", 0, 8, .7)]]
    m = tvr_metrics(spans, gts, (0.5,), (1, 2, 5))
    assert m["moment_ks"] == [1, 2, 5] and m["vcmr"]["0.5"] == pytest.approx({"1": 50.0, "2": 100.0, "5": 100.0})
    r = evaluate_rows([row("1", ranked=[["v1", 0, 8, 0.9], ["v2", None, None, 0.5]])], None, (0.5,), (1, 10))
    assert r["tvr"]["vcmr"] == {"0.5": {"1": 100.0}} and "R@10" not in format_table(r).split("VCMR")[1].split("\n")[0]
