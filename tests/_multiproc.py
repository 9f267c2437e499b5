"""Run the SFT and GRPO trainers in N CPU processes (torch.distributed gloo, spawned) for
tests/test_multiprocess.py: the same calls as the 1-process tests, on the tiny world that the parent
already built (its paths are passed in; nothing is rebuilt in the children).

    spawn(2, {"sft": (rows, sft_overrides), "grpo": grpo_overrides}, W.world())   # from a test
Each child sets RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (a free port) and ACCELERATE_USE_CPU, so the
trainers' own `make_accelerator` builds a gloo DDP run; train.output in the overrides is the run directory.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sft(cfg, rows, out):
    """train_policy exactly as tests/test_train_sft.py calls it."""
    import _world as W
    from videosearch_r1.train.sft_data import open_train_index
    from videosearch_r1.train.trainer import train_policy

    engine = open_train_index(cfg, "synth")
    return train_policy(cfg, W.policy(nonzero_latents=True), rows, out, W.clip_fn(cfg), embedder=engine.embedder,
                        video_vectors=engine, section=cfg.sft)


def run_grpo(cfg):
    """run_grpo exactly as tests/test_grpo_train.py calls it (scripted rollouts: a group's rewards differ)."""
    import _world as W
    from test_grpo_train import _policy
    from videosearch_r1.train.grpo import run_grpo as grpo

    return grpo(cfg, "synth", engine=W.engine(), policy=_policy(scripted=True))


def _worker(rank: int, world_size: int, port: int, paths: tuple[str, str], jobs: dict) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), ACCELERATE_USE_CPU="yes", GLOO_SOCKET_IFNAME="lo")
    import torch

    torch.set_num_threads(1)
    import _world as W

    built = W.World(Path(paths[0]), Path(paths[1]))
    W.world = lambda: built  # the parent's world (engine() / policy() read it)
    if "sft" in jobs:
        rows, overrides = jobs["sft"]
        cfg = built.cfg(*overrides)
        run_sft(cfg, rows, cfg.train.output)
    if "grpo" in jobs:
        run_grpo(built.cfg(*jobs["grpo"]))
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def spawn(world_size: int, jobs: dict, built) -> None:
    """Run `jobs` ({"sft": (rows, overrides), "grpo": overrides}) in world_size spawned gloo processes."""
    from torch.multiprocessing import start_processes

    start_processes(_worker, args=(world_size, free_port(), (str(built.workspace), str(built.policy_path)), jobs),
                    nprocs=world_size, start_method="spawn")
