"""Shared test set-up: every test session gets its own workspace (never the user's ~/.cache)."""
import os
import tempfile

import pytest

os.environ["VSR1_HOME"] = tempfile.mkdtemp(prefix="vsr1-test-home-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import videosearch_r1  # noqa: E402,F401  (installs the torchvision shim before transformers is imported)


@pytest.fixture
def workspace(tmp_path):
    """A fresh workspace directory as a dotted override."""
    return f"workspace={tmp_path}"
