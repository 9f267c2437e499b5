"""Models: Qwen3-VL quirks in one place (qwen3vl.py), tiny same-architecture checkpoints (tiny.py),
checkpoint resolution from a local directory or the Hugging Face Hub (hub.py)."""
