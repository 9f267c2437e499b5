"""Inputs shared by the policy and SQR tests: three clips of different sizes, queries, livelier weights."""
import numpy as np
import torch

from videosearch_r1.video.decode import Clip, VideoInfo

QUERIES = ["a red circle spins", "the big blue square leaves to the left quickly", "grey"]


def make_clip(t, h, w, seed):
    rng = np.random.default_rng(seed)
    return Clip(frames=rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8), timestamps=np.arange(t) + 0.5,
                indices=np.arange(t, dtype=np.int64), info=VideoInfo("synthetic", float(t), 1.0, t, w, h))


CLIPS = [make_clip(4, 64, 64, 0), make_clip(6, 32, 64, 1), make_clip(2, 32, 32, 2)]


def liven(policy, seed=0):
    """Random tiny weights copy their input token forever; larger weights give varied greedy text."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.model.parameters():
            if p.ndim == 2:
                p.normal_(0, 4.0 / p.shape[1] ** 0.5, generator=g)
        policy.model.get_input_embeddings().weight.normal_(0, 1.0, generator=g)
        for p in policy.sqr.parameters():
            p.normal_(0, 0.3, generator=g)
    return policy
