"""`vsr1 quickstart` reuses only what its inputs still match: a changed engine_train.* retrains the engine
(recorded train key in the checkpoint), which re-embeds the index and gets a fresh evaluation run."""
import json
from pathlib import Path

import pytest

from videosearch_r1 import quickstart
from videosearch_r1.config import load_config
from videosearch_r1.engine.train import train_key
from videosearch_r1.fingerprint import digest


@pytest.mark.slow
def test_quickstart_retrains_when_engine_train_changes(tmp_path, capsys):
    common = [f"workspace={tmp_path}", "synth.preset=tiny", "synth.workers=1", "engine_train.steps=2",
              "engine_train.batch_size=8", "engine_train.world_families=0", "engine_train.warmup=1",
              "engine_train.eval_splits=[]"]
    assert quickstart.main(common) == 0
    out = capsys.readouterr().out
    assert "engine: no engine at" in out and "==> train the synthetic engine" in out
    cfg = load_config(None, [*common, "dataset=synth"])
    summary = json.loads((Path(cfg.engine_model()) / "train_summary.json").read_text())
    assert summary["train_fingerprint"] == digest(train_key(cfg))

    train, why = quickstart.engine_needs_training(cfg)  # nothing changed: nothing to retrain
    assert not train and "trained with this configuration" in why

    assert quickstart.main([*common, "engine_train.steps=3"]) == 0
    text = capsys.readouterr()
    assert "other settings (engine_train.steps): retraining" in text.out
    assert "==> train the synthetic engine" in text.out
    assert "other settings (engine_fingerprint); re-embedding" in text.err
    runs = sorted(p.name for p in (tmp_path / "runs").glob("quickstart-engine-*"))
    assert len(runs) == 2  # the retrained engine's evaluation did not append to the old engine's run
    new = load_config(None, [*common, "dataset=synth", "engine_train.steps=3"])
    summary = json.loads((Path(new.engine_model()) / "train_summary.json").read_text())
    assert summary["train_fingerprint"] == digest(train_key(new)) != digest(train_key(cfg))


def test_an_engine_not_trained_here_is_used_as_is(tmp_path):
    from videosearch_r1.models.tiny import make_tiny_checkpoint

    cfg = load_config(None, [f"workspace={tmp_path}", f"engine.model={tmp_path / 'hub-like'}"])
    assert quickstart.engine_needs_training(cfg)[0]
    make_tiny_checkpoint(cfg.engine_model(), kind="embedder", video_cfg=cfg.video_cfg("synth"))
    train, why = quickstart.engine_needs_training(cfg)
    assert not train and "used as is" in why
    (Path(cfg.engine_model()) / "train_summary.json").write_text('{"config": {}}')  # ours, from before keys
    train, why = quickstart.engine_needs_training(cfg)
    assert train and "no training key recorded" in why
