"""videosearch_r1: agentic video corpus moment retrieval with Soft Query Refinement.

Layout (one folder per stage of the system):
  config.py   one typed config tree (YAML + dotted overrides), saved into every run
  data/       typed records and the VERIFIED FIG JSONL loader
  video/      the video front door (PyAV decode with true timestamps) and the frame store
  synth/      the synthetic fine-grained VCMR world (`vsr1 synth`)
  models/     Qwen3-VL quirks in one place, tiny same-architecture checkpoints, hub resolution
  engine/     the search engine: embedder (with soft tokens), index, search API, HTTP service
  agent/      prompts + parser, policy with SQR, the multi-turn loop, inference and report
  eval/       metrics (pure functions) and `vsr1 evaluate`
"""
from videosearch_r1 import _torchvision_shim

_torchvision_shim.install()

__version__ = "0.1.0"
