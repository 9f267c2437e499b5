"""Make transformers' Qwen3-VL processors importable with a CPU torch and PyPI's CUDA torchvision.

PyPI has no CPU torchvision: its wheel's `_C.so` links `libtorch_cuda.so`, so on a CPU torch
`import torchvision` dies registering fake ops for `torchvision::nms` (the op was never defined).
transformers imports torchvision eagerly once it is installed, so every Qwen3-VL import would fail.

Fix: when torchvision is first imported, and only if torch is a CPU build and torchvision's `_C`
extension needs CUDA libraries, declare the two op schemas it expects. Pure-torch transforms (all
the processors use) work; torchvision's C++ ops (nms, video IO) stay unavailable, and nothing here
uses them. Installed from `videosearch_r1/__init__.py`; costs nothing until torchvision is imported.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

_LIB = None  # keep the torch.library.Library alive


def _needs_shim(spec) -> bool:
    import torch

    if torch.version.cuda is not None:  # a CUDA torch loads torchvision's _C fine
        return False
    locations = list(spec.submodule_search_locations or [])
    for loc in locations:
        for name in os.listdir(loc):
            if name.startswith("_C") and name.endswith(".so"):
                with open(os.path.join(loc, name), "rb") as f:
                    return b"libtorch_cuda" in f.read()
    return False


def _declare_ops() -> None:
    global _LIB
    import torch

    _LIB = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _LIB.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)  # one shot: find the real spec without us
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and _needs_shim(spec):
            _declare_ops()
        return spec


def install() -> None:
    if "torchvision" in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
