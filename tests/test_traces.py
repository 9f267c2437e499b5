"""eval/traces.py: the checks of the synthetic world's checklist traces read back, on traces the SFT builder writes
(every check agrees with its two sides; the event is seen exactly on a match) and on a policy's slips."""
import _world as W
from videosearch_r1.eval.traces import format_trace_checks, parse_checks, trace_checks


def test_builder_traces_parse_back_consistent():
    from videosearch_r1.data.fig import load_split
    from videosearch_r1.train.sft_data import SynthTraces

    cfg = W.world().cfg()
    path = cfg.dataset_root("synth") / "world.json"
    queries = load_split(cfg, "synth", "train").queries[:6]
    videos = list(SynthTraces(path).videos)
    for style, names in (("checklist", ["object", "beside", "wall"]),
                         ("details", ["size", "colour", "shape", "beside", "wall"])):
        traces = SynthTraces(path, style)
        rows = []
        for q in queries:
            other = next(v for v in videos if v != q.video_id)
            turns = []
            for shown, label in ((other, "not_matched"), (q.video_id, "matched")):
                think, _ = traces.trace(q, shown, label)
                items, event = parse_checks(f"<think>{think}</think>")
                assert [n for n, *_ in items] == names
                assert event == "seen" if label == "matched" else event in ("seen", "not seen")
                turns.append({"video": shown, "output": f"<think>{think}</think> <answer>{label}</answer>"})
            rows.append({"gt_video": q.video_id, "turns": turns})
        tc = trace_checks(rows)
        assert tc["turns"] == 2 * len(queries) and tc["unparsed"] == 0
        assert all(v["contradict"] == 0 for v in tc["items"].values())  # the builder never contradicts itself
        assert tc["event"]["gt"] == {"seen": len(queries), "not_seen": 0}


def test_slips_are_counted_and_other_traces_apart():
    out = ("<think>I see a small cyan star. Check: size small / small: same; shape star / star: differs; wall plain "
           "wall / striped wall: same; event spins, after it spins: not seen. It does not match the query: it is a "
           "star, not a star.</think> <answer>not_matched</answer> <REFINE>")
    rows = [{"gt_video": "a", "turns": [{"video": "a", "gt_shown": True, "output": out},
                                        {"video": "b", "output": "<think>Wrong colour.</think>"},
                                        {"video": None, "output": None}]}]  # a turn that generated nothing
    tc = trace_checks(rows)
    assert tc["turns"] == 1 and tc["unparsed"] == 1
    assert tc["items"] == {"size": {"agree": 1, "contradict": 0}, "shape": {"agree": 0, "contradict": 1},
                           "wall": {"agree": 0, "contradict": 1}}
    assert tc["event"]["gt"] == {"seen": 0, "not_seen": 1} and tc["event"]["wrong"] == {"seen": 0, "not_seen": 0}
    assert "shape 1/1" in format_trace_checks(tc) and "on the GT 1/1" in format_trace_checks(tc)
    assert trace_checks([{"turns": [{"video": "b", "output": "<think>plain</think>"}]}]) is None
