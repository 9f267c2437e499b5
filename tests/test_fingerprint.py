"""Content keys for artifacts (videosearch_r1/fingerprint.py) and the resumable jsonl reader (utils.py):
digests follow content not names, the stat cache notices rewrites, a torn last line is the only line dropped."""
import json
import os

import pytest

from videosearch_r1 import fingerprint as fp
from videosearch_r1.utils import JSONLError, append_jsonl, read_jsonl_resumable


# ----------------------------------------------------------------------------- read_jsonl_resumable
def test_bad_line_in_the_middle_raises_and_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "pred.jsonl"
    data = b'{"qid": "1"}\n{"qid": "2", "tu\n{"qid": "3"}\n{"qid": "4"}\n'
    path.write_bytes(data)
    with pytest.raises(JSONLError, match=f"{path}:2"):
        read_jsonl_resumable(path)
    assert path.read_bytes() == data


@pytest.mark.parametrize("tail", [b'{"qid": "3", "tu', b'{"qid": "3"}', b'\x00\x00\x00\n', b'{"qid": "3", "t\n'])
def test_only_a_torn_last_line_is_dropped(tmp_path, tail):
    path = tmp_path / "pred.jsonl"
    head = b'{"qid": "1"}\n\n{"qid": "2"}\n'
    path.write_bytes(head + tail)
    assert [r["qid"] for r in read_jsonl_resumable(path)] == ["1", "2"]
    assert path.read_bytes() == head
    append_jsonl(path, [{"qid": "3"}])  # appending after the repair gives a clean file
    assert [r["qid"] for r in read_jsonl_resumable(path)] == ["1", "2", "3"]


def test_non_object_rows_and_bad_utf8_name_the_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"qid": "1"}\n[1, 2]\n{"qid": "3"}\n')
    with pytest.raises(JSONLError, match=f"{path}:2: expected a JSON object"):
        read_jsonl_resumable(path)
    path.write_bytes(b'{"qid": "1"}\n{"q": "caf\xe9"}\n{"qid": "3"}\n')
    with pytest.raises(JSONLError, match=f"{path}:2: unreadable"):
        read_jsonl_resumable(path)


# ----------------------------------------------------------------------------- fingerprints
def test_digest_is_canonical():
    assert fp.digest({"a": 1, "b": [1.5, (2, 3)]}) == fp.digest({"b": [1.5, [2, 3]], "a": 1})
    assert fp.digest({"a": 1}) != fp.digest({"a": 1.0000001}) and len(fp.digest({})) == fp.SHORT
    assert fp.changed({"a": 1, "b": 2}, {"b": 3, "c": 4}) == ["a", "b", "c"]
    with pytest.raises(TypeError):
        fp.digest({"a": object()})


def test_dir_digest_follows_content_not_names(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "model.safetensors").write_bytes(b"weights-1")
    (a / "config.json").write_text("{}")
    (a / "train_log.jsonl").write_text("{}\n")  # logs describe, not define, a model
    (a / ".cache").mkdir()
    first = fp.dir_digest(a)
    b = tmp_path / "b"
    os.rename(a, b)
    assert fp.dir_digest(b) == first  # a moved checkpoint is the same checkpoint
    (b / "train_log.jsonl").write_text('{"step": 2}\n')
    (b / ".cache" / "x").write_text("y")
    assert fp.dir_digest(b) == first
    st = (b / "model.safetensors").stat()
    with open(b / "model.safetensors", "r+b") as f:  # rewritten in place, same size
        f.write(b"weights-2")
    os.utime(b / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = fp.dir_digest(b)
    assert second != first and second == fp.dir_digest(b, cache=False)
    assert fp.file_digest(b / "model.safetensors") == fp.file_digest(b / "model.safetensors", cache=False)
    with pytest.raises(FileNotFoundError):
        fp.dir_digest(tmp_path / "nothing")


def test_hub_cache_files_are_keyed_by_their_blob_name(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    name = "ab" * 32
    (blobs / name).write_bytes(b"whatever")
    snap = tmp_path / "snapshots" / "rev"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(blobs / name)
    assert fp.file_digest(snap / "model.safetensors") == f"blob:{name}"


def test_section_drops_fields():
    from videosearch_r1.config import load_config

    cfg = load_config(None, ["engine_train.steps=7"])
    sec = fp.section(cfg, "engine_train", drop=("log_every",))
    assert sec["steps"] == 7 and "log_every" not in sec
    assert json.loads(fp.canonical(sec)) == sec | {"eval_splits": list(sec["eval_splits"])}
