"""VERIFIED FIG loader: the real files' quirks load, every malformed kind fails naming file/line/field."""
import json
import logging

import pytest

from videosearch_r1.config import ConfigError, load_config
from videosearch_r1.data import FIGFormatError, fig_row, load_fig_jsonl, load_split, write_fig_jsonl


def row(**kw):
    base = {"video": "TAQ25", "time": [11.6, 17.7], "desc_id": 65, "duration": 28.0,
            "cog_desc": "the person closes the laptop screen.",
            "fig_desc": "The person closes the laptop screen in a room with a closet.", "fig_desc_score": 0.39}
    base.update(kw)
    return base


def write_lines(path, lines):
    """lines: dicts (dumped as JSON) or raw bytes, one per line."""
    with open(path, "wb") as f:
        for x in lines:
            f.write((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n")
    return path


def test_quirks_load_and_are_counted(tmp_path, caplog):
    path = write_lines(tmp_path / "fig.jsonl", [
        row(),                                                                       # line 1: plain
        row(desc_id=1, time=[20.0, 52.8], duration=28.0),                            # 2: Charades end +24.8 s
        b"",                                                                         # 3: blank, not a row
        row(video="58792004@N06_8544469262_fd25eddb2e", desc_id=2, time=[25, 30], duration=27.06),  # 4: DiDeMo
        row(video="B1", desc_id=3, time=[7.0, 8.0], duration=6.29),                 # 5: wholly past the end
        row(video="C2", desc_id=4, time=[0, 5], duration=30),                        # 6: ints everywhere
    ])
    with caplog.at_level(logging.WARNING):
        queries, s = load_fig_jsonl(path)
    assert [q.qid for q in queries] == ["65", "1", "2", "4"]
    assert [q.line for q in queries] == [1, 2, 4, 6]
    q1, didemo, ints = queries[1], queries[2], queries[3]
    assert (q1.start, q1.end, q1.end_clamped) == (20.0, 28.0, True)
    assert (didemo.start, didemo.end, didemo.duration, didemo.end_clamped) == (25.0, 27.06, 27.06, True)
    assert isinstance(ints.start, float) and (ints.start, ints.end, ints.end_clamped) == (0.0, 5.0, False)
    assert queries[0].text == queries[0].fig_desc and queries[0].desc_id == 65
    assert (s.rows, s.loaded, s.clamped_end, s.skipped_past_end, s.skipped_bad) == (5, 4, 2, 1, 0)
    assert len(s.messages) == 1 and f"{path}:5" in s.messages[0]
    assert f"{path}:5" in caplog.text and "desc_id 3" in caplog.text
    text = s.format()
    assert "5 rows, 4 loaded, 2 end clamped" in text and "1 skipped (moment past video end)" in text


MALFORMED = [
    (b'{"video": "TAQ25", "time": [1.0, 2.0]', "(json)"),
    (b"[1, 2]", "(row)"),
    (json.dumps(row(desc_id=7, fig_desc="caf\u00e9")).encode().replace(b"caf\\u00e9", b"caf\xe9"), "(line)"),
    (row(desc_id=7, video=5), "video"),
    (row(desc_id=7, video=""), "video"),
    (row(desc_id=7, video="../etc"), "video"),
    (row(desc_id="7"), "desc_id"),
    (row(desc_id=7.0), "desc_id"),
    (row(desc_id=True), "desc_id"),
    (row(desc_id=65), "desc_id"),                       # duplicate of line 1
    (row(desc_id=7, time=[-1.0, 2.0]), "time"),
    (row(desc_id=7, time=[5.0, 2.0]), "time"),
    (row(desc_id=7, time=[1.0]), "time"),
    (row(desc_id=7, time=[1.0, 2.0, 3.0]), "time"),
    (row(desc_id=7, time="1-2"), "time"),
    (row(desc_id=7, time=["1", 2.0]), "time"),
    (row(desc_id=7, time=[1.0, float("inf")]), "time"),
    (b'{"video": "a", "time": [1.0, 1e999], "desc_id": 7, "duration": 9.0, "cog_desc": "c", "fig_desc": "f"}', "time"),
    (row(desc_id=7, duration=float("nan")), "duration"),
    (row(desc_id=7, duration="28"), "duration"),
    (row(desc_id=7, duration=0), "duration"),
    (row(desc_id=7, cog_desc=None), "cog_desc"),
    (row(desc_id=7, fig_desc=3), "fig_desc"),
    (row(desc_id=7, fig_desc="  "), "fig_desc"),
    (row(desc_id=7, fig_desc_score="high"), "fig_desc_score"),
    (b"[" * 100_000 + b"]" * 100_000, "(json)"),                        # nested 100,000 deep
    (json.dumps(row(desc_id=7)).encode().replace(b"28.0", b"9" * 5000), "(json)"),  # a 5,000-digit integer
    (json.dumps(row(desc_id=7, duration=10 ** 400)).encode(), "duration"),  # legal JSON, too large for a float
] + [({k: v for k, v in row(desc_id=7).items() if k != f}, f)
     for f in ("video", "time", "desc_id", "duration", "cog_desc", "fig_desc")]


@pytest.mark.parametrize("bad,field", MALFORMED)
def test_malformed_row_names_file_line_field(tmp_path, bad, field):
    path = write_lines(tmp_path / "bad.jsonl", [row(), bad, row(desc_id=8)])
    with pytest.raises(FIGFormatError) as ei:
        load_fig_jsonl(path)
    msg = str(ei.value)
    assert f"{path}:2:" in msg and f"field {field!r}" in msg
    if field == "desc_id" and "duplicate" in msg:
        assert "first on line 1" in msg


def test_skip_bad_counts_and_lists_every_malformed_row(tmp_path):
    lines = [row()] + [bad for bad, _ in MALFORMED] + [row(video="D3", desc_id=8, time=[1, 40], duration=30)]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    queries, s = load_fig_jsonl(path, skip_bad=True)
    n_bad = len(MALFORMED)
    assert [q.qid for q in queries] == ["65", "8"] and queries[1].end == 30.0
    assert (s.rows, s.loaded, s.skipped_bad, s.clamped_end, s.skipped_past_end) == (n_bad + 2, 2, n_bad, 1, 0)
    assert len(s.messages) == n_bad
    for i, msg in enumerate(s.messages):
        assert f"{path}:{i + 2}:" in msg


def test_load_split_builds_corpus_and_paths(tmp_path):
    cfg = load_config(None, [f"workspace={tmp_path}"])
    ann = cfg.dataset_root("synth") / "annotations" / "synth_fig_test.jsonl"
    write_fig_jsonl(ann, [fig_row("v1", 0, 1.0, 4.0, 10.0, "coarse", "fine one"),
                          fig_row("v2", 1, 2.0, 9.5, 9.0, "coarse", "fine two"),
                          fig_row("v3", 2, 12.0, 14.0, 11.0, "coarse", "past the end"),
                          fig_row("v1", 3, 5.0, 6.0, 10.5, "coarse", "fine three")])
    split = load_split(cfg, "synth", "test")
    assert (split.dataset, split.name) == ("synth", "test")
    assert [q.qid for q in split.queries] == ["0", "1", "3"]
    assert split.corpus_ids() == ["v1", "v2", "v3"]  # v3's only query is skipped, the video stays
    assert split.videos["v2"].path == tmp_path / "data/synth/raw/videos/v2.mp4"
    assert split.videos["v3"].duration == 11.0
    assert split.videos["v1"].duration == 10.5 and any(":4: video v1 has duration 10.5" in m for m in split.summary.messages)
    assert (split.summary.clamped_end, split.summary.skipped_past_end) == (1, 1)
    assert load_split(load_config(None, [f"workspace={tmp_path}", "dataset=synth", "split=test"])).queries == split.queries


def test_load_split_errors_are_clear(tmp_path):
    cfg = load_config(None, [f"workspace={tmp_path}"])
    with pytest.raises(ConfigError, match="no split 'dev'.*known"):
        load_split(cfg, "synth", "dev")
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_split(cfg, "nope", "test")
    with pytest.raises(FileNotFoundError, match="synth/val.*synth_fig_val.jsonl"):
        load_split(cfg, "synth", "val")


def test_fig_row_roundtrip_and_atomic_write(tmp_path):
    path = tmp_path / "out" / "fig.jsonl"
    rows = [fig_row("vid@1", 5, 0, 5, 27.06, "c", "f\u00e9", score=-1.5)]
    assert rows[0] == {"video": "vid@1", "time": [0.0, 5.0], "desc_id": 5, "duration": 27.06,
                       "cog_desc": "c", "fig_desc": "f\u00e9", "fig_desc_score": -1.5}
    write_fig_jsonl(path, rows)
    (q,), s = load_fig_jsonl(path)
    assert (q.video_id, q.qid, q.start, q.end, q.fig_desc, s.loaded) == ("vid@1", "5", 0.0, 5.0, "f\u00e9", 1)
    with pytest.raises(FIGFormatError, match="field 'time'"):
        fig_row("v", 1, 5.0, 2.0, 10.0, "c", "f")
    before = path.read_bytes()
    with pytest.raises(ValueError):  # NaN refuses to serialise; the old file stays whole, no temp left
        write_fig_jsonl(path, rows + [dict(rows[0], duration=float("nan"))])
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["fig.jsonl"]


def test_clamped_end_is_kept_as_annotated_for_scoring(tmp_path):
    """`end` is clamped (training targets, display); `annotated_end` is the file's end, what scoring uses."""
    from videosearch_r1.eval import evaluate_rows

    path = write_lines(tmp_path / "fig.jsonl", [row(video="A", desc_id=1, time=[20.0, 52.8], duration=28.0),
                                                row(video="B", desc_id=2, time=[2.0, 6.0], duration=28.0)])
    (clamped, plain), s = load_fig_jsonl(path)
    assert (clamped.end, clamped.annotated_end, clamped.end_clamped, clamped.raw_end) == (28.0, 52.8, True, 52.8)
    assert (plain.end, plain.annotated_end, plain.end_clamped) == (6.0, 6.0, False) and s.clamped_end == 1
    final = {"video": "A", "answer": "matched", "start": 20.0, "end": 28.0}  # exactly the clamped span
    rows = [{"qid": "1", "final": final, "turns": [{"video": "A", "answer": "matched"}], "stop_reason": "matched",
             "text_tokens": 1, "latent_tokens": 0}]
    r = evaluate_rows(rows, [clamped], (0.3, 0.5), (1,))
    assert r["paper"]["miou"] == pytest.approx(100 * 8.0 / 32.8)  # IoU against [20, 52.8], not 1.0
    assert r["paper"]["vcmr_r1"] == {"0.3": 0.0, "0.5": 0.0}


def test_zero_length_moment_is_loaded_and_counted(tmp_path, caplog):
    path = write_lines(tmp_path / "fig.jsonl", [row(), row(desc_id=9, time=[4.0, 4.0])])
    with caplog.at_level(logging.WARNING):
        queries, s = load_fig_jsonl(path)
    assert [q.qid for q in queries] == ["65", "9"] and s.zero_length == 1 and s.loaded == 2
    assert len(s.messages) == 1 and f"{path}:2" in s.messages[0] and "zero-length" in s.messages[0]
    assert f"{path}:2" in caplog.text and "1 zero-length moments" in s.format()
