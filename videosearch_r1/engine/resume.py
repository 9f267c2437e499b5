"""Resume state of `vsr1 engine train` (engine/train.py): a killed run, started again with the same config,
continues where its last snapshot left it, with the same data order, and ends with the same weights.

    <output's parent>/.<output name>.resume/
        key.json        the train fingerprint the state belongs to (another fingerprint: the state is dropped)
        perception.pt   after perception pretraining: the tower, the heads and held-out stills of its check,
                        its summary (a resumed run skips the stills and the pretraining)
        step.pt         every engine_train.save_every steps: model, optimizer, temperature, the batcher's order
                        and random state, the torch random state, the log so far

Each file is written to a temporary name and renamed (a kill mid-write leaves the previous one). The
directory is removed once the engine is saved. engine_train.save_every=0 keeps no state (and drops any).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from videosearch_r1.data.records import read_state
from videosearch_r1.utils import atomic_write_json


class ResumeState:
    def __init__(self, out: Path, fingerprint: str, enabled: bool):
        self.dir = Path(out).parent / f".{Path(out).name}.resume"
        self.enabled = enabled
        key = self.dir / "key.json"
        mine = {"train_fingerprint": fingerprint}
        if not enabled or read_state(key) != mine:
            shutil.rmtree(self.dir, ignore_errors=True)  # another config's state, or none wanted
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not key.is_file():
                atomic_write_json(key, mine)

    def load(self, name: str) -> dict | None:
        path = self.dir / f"{name}.pt"
        if not self.enabled or not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def save(self, name: str, state: dict) -> None:
        if not self.enabled:
            return
        tmp = self.dir / f".{name}.pt.tmp{os.getpid()}"
        torch.save(state, tmp)
        os.replace(tmp, self.dir / f"{name}.pt")

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def step_state(step: int, model, opt, log_scale, batcher, log: list[dict]) -> dict:
    """What `restore_step` needs to continue after `step` steps exactly as an unbroken run would."""
    return {"step": step, "model": model.state_dict(), "opt": opt.state_dict(), "log_scale": log_scale.detach().cpu(),
            "batcher": {"rng": json.dumps(batcher.rng.bit_generator.state),
                        "order": torch.as_tensor(np.asarray(batcher.order)), "cursor": batcher.cursor},
            "torch_rng": torch.get_rng_state(), "log": json.dumps(log)}


def restore_step(state: dict, model, opt, log_scale, batcher) -> tuple[int, list[dict]]:
    """Load a step_state into the run's objects; returns (steps done, the log so far)."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    with torch.no_grad():
        log_scale.copy_(state["log_scale"].to(log_scale.device))
    batcher.rng.bit_generator.state = json.loads(state["batcher"]["rng"])
    batcher.order, batcher.cursor = state["batcher"]["order"].numpy(), int(state["batcher"]["cursor"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), json.loads(state["log"])
