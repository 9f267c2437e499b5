"""Policy training: shared infrastructure (common), the row schema (rows), the trainer (trainer), and the
stage recipes (sft_data, sft; base and GRPO build on the same parts)."""
