"""The agent: prompts + parser (prompts.py), the policy with its SQR modules (policy.py), fast decoding
(decode.py), the SQR latent rollout (sqr.py), the authors' checkpoint layout (reference_ckpt.py), and the
multi-turn loop / inference / report built on them. Import submodules directly (no heavy imports here)."""
