"""Shared test set-up: every test session gets its own workspace (never the user's ~/.cache)."""
import os
import shutil
import tempfile

import pytest

_HOME = tempfile.mkdtemp(prefix="vsr1-test-home-")
os.environ["VSR1_HOME"] = _HOME
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import videosearch_r1  # noqa: E402,F401  (installs the torchvision shim before transformers is imported)


@pytest.fixture
def workspace(tmp_path):
    """A fresh workspace directory as a dotted override."""
    return f"workspace={tmp_path}"


def pytest_unconfigure(config):
    """The session's workspace goes with the session (it held the test worlds' videos and models)."""
    shutil.rmtree(_HOME, ignore_errors=True)
