"""The typed config tree: YAML + dotted overrides, type errors named, saved into run dirs."""
import pytest
import yaml

from videosearch_r1.cli import main as cli_main
from videosearch_r1.config import Config, ConfigError, load_config, save_config, to_dict


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["agent.max_turns=2", "datasets.synth.video.max_frames=16", "eval.iou_thresholds=[0.5]"])
    assert cfg.agent.max_turns == 2 and cfg.video_cfg("synth").max_frames == 16
    assert cfg.eval.iou_thresholds == (0.5,)
    path = save_config(cfg, tmp_path / "run")
    again = load_config(path)
    assert to_dict(again) == to_dict(cfg)


def test_yaml_then_overrides_win(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"agent": {"max_turns": 5, "n_latents": 4}, "dataset": "charades"}))
    cfg = load_config(f, ["agent.max_turns=1"])
    assert (cfg.agent.max_turns, cfg.agent.n_latents, cfg.dataset) == (1, 4, "charades")


@pytest.mark.parametrize("override,needle", [
    ("agent.maxturns=2", "agent: unknown key"),
    ("agent.max_turns=two", "agent.max_turns: expected int"),
    ("index.use_gpu=maybe", "index.use_gpu: expected true/false"),
    ("agent.max_turns=2.5", "expected int"),
    ("noequals", "key.path=value"),
    ("base.extra_layers=-1", "base.extra_layers: must be >= 0, got -1"),
    ("grpo.corpus_size=-5", "grpo.corpus_size: must be >= 0"),
])
def test_bad_overrides_name_the_field(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(None, [override])


def test_datasets_are_config_entries():
    cfg = Config()
    assert set(cfg.datasets) >= {"charades", "didemo", "activitynet", "synth"}
    # ActivityNet: val_1 as val, val_2 as test.
    assert cfg.datasets["activitynet"].splits["val"].endswith("val_1.jsonl")
    assert cfg.datasets["activitynet"].splits["test"].endswith("val_2.jsonl")
    with pytest.raises(ConfigError, match="unknown dataset"):
        cfg.dataset_cfg("nope")


def test_workspace_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VSR1_HOME", str(tmp_path))
    assert Config().workspace == str(tmp_path)
    assert Config().dataset_root("charades") == tmp_path / "data" / "charades" / "raw"


def test_cli_usage_and_unknown_command(capsys):
    assert cli_main(["--help"]) == 0
    assert "vsr1 synth" in capsys.readouterr().out
    assert cli_main(["frobnicate"]) == 2
    assert cli_main(["engine"]) == 2


def test_shipped_default_yaml_mirrors_the_tree():
    from pathlib import Path

    import videosearch_r1
    from videosearch_r1.config import default_yaml

    shipped = Path(videosearch_r1.__file__).parent / "configs" / "default.yaml"
    assert shipped.read_text() == default_yaml(), "regenerate: python -m videosearch_r1.config"
    assert load_config(shipped).agent == Config().agent
