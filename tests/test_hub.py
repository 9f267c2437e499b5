"""Hub resolution (models/hub.py) against a local mirror in the Hugging Face cache layout."""
import shutil

import pytest

from videosearch_r1.models import tiny
from videosearch_r1.models.hub import CheckpointNotFoundError, resolve_checkpoint

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """<mirror>/models--testorg--tiny-emb/{refs/main, snapshots/<sha>/...}, as huggingface_hub writes it."""
    root = tmp_path_factory.mktemp("hf-mirror")
    ckpt = tiny.make_tiny_checkpoint(root / "src", kind="embedder")
    repo = root / "models--testorg--tiny-emb"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    shutil.copytree(ckpt, repo / "snapshots" / SHA)
    return root


def test_local_dir_is_itself(tmp_path):
    assert resolve_checkpoint(str(tmp_path)) == tmp_path


def test_mirror_resolves_offline_and_loads(mirror):
    from transformers import AutoModel

    path = resolve_checkpoint("testorg/tiny-emb", cache_dir=mirror, local_files_only=True)
    assert path == mirror / "models--testorg--tiny-emb" / "snapshots" / SHA
    assert (path / "config.json").is_file()
    assert resolve_checkpoint("testorg/tiny-emb", cache_dir=mirror, local_files_only=True, revision=SHA) == path
    assert type(AutoModel.from_pretrained(path)).__name__ == "Qwen3VLModel"


def test_absent_ids_name_the_id(mirror, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="testorg/absent"):
        resolve_checkpoint("testorg/absent", cache_dir=mirror, local_files_only=True)
    with pytest.raises(CheckpointNotFoundError, match="revision 'v9'"):
        resolve_checkpoint("testorg/tiny-emb", cache_dir=mirror, local_files_only=True, revision="v9")
    with pytest.raises(CheckpointNotFoundError, match="local checkpoint directory not found"):
        resolve_checkpoint(str(tmp_path / "nope" / "x"))
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(CheckpointNotFoundError, match="is a file"):
        resolve_checkpoint(str(f))
