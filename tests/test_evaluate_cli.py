"""`vsr1 evaluate` end to end: a predictions JSONL + FIG ground truth -> table and JSON."""
import json

import pytest

from videosearch_r1.cli import main as vsr1
from videosearch_r1.data import fig_row, write_fig_jsonl
from videosearch_r1.eval.evaluate import main


def pred(qid, video, answer, start, end, gt_video="v1", ranked=None):
    r = {"qid": qid, "query": "q", "gt_video": gt_video, "gt_start": 0.0, "gt_end": 10.0, "duration": 30.0,
         "method": "sqr",
         "turns": [{"turn": 1, "video": video, "rank_before": 1, "rank_after": 1, "answer": answer,
                    "span": None, "parse_ok": True, "parse_error": None, "iou": None, "text_tokens": 30,
                    "latent_tokens": 8, "output": "<think>x</think>"}],
         "final": {"video": video, "answer": answer, "start": start, "end": end},
         "stop_reason": "matched" if answer == "matched" else "max_turns", "text_tokens": 30, "latent_tokens": 8}
    if ranked is not None:
        r["ranked"] = ranked
    return r


@pytest.fixture
def files(tmp_path):
    gt = [fig_row("v1", 1, 0.0, 10.0, 30.0, "c", "fine one"),     # qid 1
          fig_row("v2", 2, 5.0, 15.0, 30.0, "c", "fine two"),     # qid 2
          fig_row("v3", 3, 0.0, 4.0, 30.0, "c", "fine three")]    # qid 3: no prediction
    rows = [pred("1", "v1", "matched", 0.0, 6.0, ranked=[["v1", 0.0, 6.0, 0.9], ["v2", 0, 1, 0.5]]),
            pred("2", "v2", "matched", 5.0, 12.0, gt_video="v2")]  # iou .7 on v2
    p = tmp_path / "pred.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"qid": "7", "final": \n')  # torn last line
    return p, gt, tmp_path


def test_evaluate_with_gt_file_writes_json(files, capsys):
    p, gt, tmp = files
    write_fig_jsonl(tmp / "gt.jsonl", gt)
    out = tmp / "res" / "metrics.json"
    assert main([str(p), "--gt", str(tmp / "gt.jsonl"), "--json", str(out), f"workspace={tmp}"]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 3 and r["counts"]["scored"] == 2 and r["counts"]["missing"] == 1
    assert r["counts"]["unscorable_by_reason"] == {"bad_json": 1}
    assert any(f"{p}:3: bad_json" in m for m in r["messages"])
    assert r["paper"]["vcmr_r1"] == pytest.approx({"0.3": 200 / 3, "0.5": 200 / 3, "0.7": 100 / 3})
    assert r["paper"]["vr_r1"] == pytest.approx(200 / 3) and r["paper"]["latent_tokens_per_query"] == 8
    assert r["tvr"]["with_ranked"] == 1 and r["tvr"]["vcmr"]["0.5"]["1"] == pytest.approx(100 / 3)
    assert r["tvr"]["vr"]["100"] == pytest.approx(100 / 3)
    assert r["inputs"]["gt"] == str(tmp / "gt.jsonl")
    text = capsys.readouterr().out
    assert "paper view" in text and "TVR view" in text and "missing 1" in text


def test_evaluate_with_dataset_split_and_config_overrides(files):
    p, gt, tmp = files
    cfg_root = tmp / "data" / "synth" / "raw" / "annotations"
    write_fig_jsonl(cfg_root / "synth_fig_val.jsonl", gt)
    out = tmp / "m.json"
    # flags and overrides intermixed after PRED, through the `vsr1` dispatcher
    assert vsr1(["evaluate", "--dataset", "synth", str(p), f"workspace={tmp}", "eval.iou_thresholds=[0.5]",
                 "--split", "val", "eval.recall_ks=[1,2]", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["settings"] == {"iou_thresholds": [0.5], "ks": [1, 2]}
    assert list(r["paper"]["vcmr_r1"]) == ["0.5"] and r["tvr"]["vr"]["2"] == pytest.approx(100 / 3)


def test_evaluate_without_gt_uses_rows_and_errors_exit_2(files, capsys):
    p, _, tmp = files
    out = tmp / "rows.json"
    assert main([str(p), "--json", str(out), f"workspace={tmp}"]) == 0
    r = json.loads(out.read_text())
    assert r["counts"]["gt_source"] == "rows" and r["n"] == 3 and r["counts"]["missing"] == 1
    assert main([str(tmp / "nope.jsonl"), f"workspace={tmp}"]) == 2
    assert main([str(p), "--dataset", "synth", "--split", "test", f"workspace={tmp}"]) == 2  # no annotation file
    assert main([str(p), "--gt", "x.jsonl", "--split", "test", f"workspace={tmp}"]) == 2
    err = capsys.readouterr().err
    assert "nope.jsonl" in err and "synth_fig_test.jsonl" in err and "either --gt" in err


def test_ground_truth_in_rows_is_validated(tmp_path):
    """Rows carrying a reversed / negative / NaN / zero-length GT span are bad_gt, never scored."""
    good = pred("1", "v1", "matched", 0.0, 6.0)
    spans = [(10.0, 0.0), (-5.0, 1.0), (float("nan"), 3.0), (4.0, 4.0), (0.0, float("inf"))]
    bad = [dict(pred(str(i), "v1", "matched", 5.0, 1.0), gt_start=s, gt_end=e) for i, (s, e) in enumerate(spans, 2)]
    p = tmp_path / "pred.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in [good] + bad))  # json.dumps writes NaN / Infinity
    out = tmp_path / "m.json"
    assert main([str(p), "--json", str(out), f"workspace={tmp_path}"]) == 0
    r = json.loads(out.read_text())
    assert r["counts"]["unscorable_by_reason"] == {"bad_gt": 5} and r["counts"]["scored"] == 1 and r["n"] == 6
    assert r["paper"]["vcmr_r1"]["0.5"] == pytest.approx(100 / 6)  # the reversed GT vs reversed pred scores nothing
    for line in range(2, 7):
        assert any(m.startswith(f"{p}:{line}: bad_gt") for m in r["messages"]), line


def test_hostile_lines_are_counted_bad_json_and_bom_is_accepted(tmp_path):
    rows = [pred("1", "v1", "matched", 0.0, 6.0), pred("2", "v1", "matched", 0.0, 10.0)]
    p = tmp_path / "pred.jsonl"
    with open(p, "wb") as f:
        f.write(b"\xef\xbb\xbf" + json.dumps(rows[0]).encode() + b"\n")   # UTF-8 BOM on line 1
        f.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")                   # nested 100,000 deep
        f.write(b'{"qid": "9", "text_tokens": ' + b"7" * 5000 + b"}\n")    # a 5,000-digit integer
        f.write(json.dumps(dict(rows[1], text_tokens=10 ** 4000)).encode() + b"\n")  # legal JSON, no count
        f.write(json.dumps(dict(rows[1], qid="3", gt_end=10 ** 400)).encode() + b"\n")  # too large for a float
    out = tmp_path / "m.json"
    assert main([str(p), "--json", str(out), f"workspace={tmp_path}"]) == 0
    r = json.loads(out.read_text())
    assert r["counts"]["unscorable_by_reason"] == {"bad_json": 2, "bad_type": 2}
    assert r["counts"]["scored"] == 1 and r["n"] == 5  # the BOM row scores; unreadable lines are more queries
    assert any(f"{p}:2: bad_json" in m and "RecursionError" in m for m in r["messages"])
    assert any(f"{p}:3: bad_json" in m for m in r["messages"])


def test_unwritable_json_path_is_one_line_error(files, capsys):
    p, _, tmp = files
    (tmp / "afile").write_text("x")
    assert main([str(p), "--json", str(tmp / "afile" / "m.json"), f"workspace={tmp}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vsr1 evaluate: error: cannot write --json") and "afile" in err
    assert "\n" not in err and "Traceback" not in err
