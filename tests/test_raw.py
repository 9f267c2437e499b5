"""`vsr1 data layout|annotations|check`: the raw layout, FIG files from a mirror, a video check naming each problem."""
import json
import shutil

import _world
from videosearch_r1 import cli


def test_check_names_missing_corrupt_and_extra(tmp_path, capsys):
    w = _world.world()
    raw = tmp_path / "raw"
    shutil.copytree(w.workspace / "data" / "synth" / "raw", raw)
    vids = sorted((raw / "videos").glob("*.mp4"))
    missing, corrupt = vids[0].stem, vids[1].stem
    vids[0].unlink()
    vids[1].write_bytes(vids[1].read_bytes()[:200])  # truncated
    (raw / "videos" / "holiday.mp4").write_bytes(b"x")
    shutil.move(vids[2], vids[2].with_suffix(".mkv"))  # another container: named as such
    ws = tmp_path / "ws"
    assert cli.main(["data", "check", "synth", f"workspace={ws}", f"datasets.synth.root={raw}"]) == 1
    out = capsys.readouterr().out
    assert f"missing {missing}\n" in out and f"corrupt {corrupt}: " in out and "extra holiday.mp4" in out
    assert f"missing {vids[2].stem} (found {vids[2].stem}.mkv: set datasets.synth.video_ext=.mkv" in out
    assert f"{len(vids) - 3} ok, 2 missing, 1 corrupt, 2 extra" in out
    report = json.loads((ws / "data" / "synth" / "prepared" / "check.json").read_text())
    assert report["missing"][0] == missing and report["extra"] == ["holiday.mp4", f"{vids[2].stem}.mkv"]
    assert [c["id"] for c in report["corrupt"]] == [corrupt]
    # the same tree through --anno-root / --video-root (the authors' ANNO_ROOT / VIDEO_BASE), all good now
    good = tmp_path / "videos"
    shutil.copytree(w.workspace / "data" / "synth" / "raw" / "videos", good)
    assert cli.main(["data", "check", "synth", f"workspace={ws}", "--anno-root", str(raw / "annotations"),
                     "--video-root", str(good)]) == 0
    assert f"{len(vids)} ok, 0 missing, 0 corrupt, 0 extra" in capsys.readouterr().out


def test_layout_and_annotations_from_a_mirror(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert cli.main(["data", "layout", "didemo", f"workspace={ws}"]) == 0
    out = capsys.readouterr().out
    root = ws / "data" / "didemo" / "raw"
    assert (root / "videos").is_dir() and (root / "annotations").is_dir()
    assert f"{root / 'videos'}/<video_id>.mp4" in out and "didemo_fig_test.jsonl" in out
    # the mirror publishes val and test only (as the VERIFIED git tree does), one of them malformed at first
    w = _world.world()
    src = (w.workspace / "data" / "synth" / "raw" / "annotations" / "synth_fig_test.jsonl").read_text()
    folder = tmp_path / "mirror" / "github" / "hlchen23" / "VERIFIED" / "fine-grained-anno" / "didemo-fig"
    folder.mkdir(parents=True)
    (folder / "didemo_fig_val.jsonl").write_text(src)
    (folder / "didemo_fig_test.jsonl").write_text(src + '{"video": "x", "time": [3, 1]}\n')
    args = ["data", "annotations", "didemo", "--mirror", str(tmp_path / "mirror"), f"workspace={ws}"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"didemo_fig_test.jsonl:{src.count(chr(10)) + 1}" in err and "'desc_id'" in err
    (folder / "didemo_fig_test.jsonl").write_text(src)
    (root / "annotations" / "didemo_fig_test.jsonl").unlink()
    assert cli.main(args) == 1  # train is not published: named, with where to put it
    captured = capsys.readouterr()
    assert "NOT FETCHED train:" in captured.err and str(root / "annotations" / "didemo_fig_train.jsonl") in captured.err
    assert (root / "annotations" / "didemo_fig_test.jsonl").read_text() == src
    assert (root / "annotations" / "didemo_fig_val.jsonl").read_text() == src
