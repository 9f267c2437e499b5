"""Tiny same-architecture Qwen3-VL checkpoints, built offline: tokenizer, config, saved model + processor.

No hub here, so tests and the synthetic world use real transformers Qwen3-VL classes at toy sizes:
- `build_tokenizer`: a byte-level BPE trained on a built-in English text about the synthetic world
  (colours, shapes, sizes, actions, backgrounds, numbers, prompt words) plus `extra_texts`, wrapped as
  transformers' `Qwen2Tokenizer` with the Qwen chat special tokens and the official Qwen3-VL chat
  template (from trl, verbatim). Deterministic: same inputs, same files.
- `tiny_config`: a `Qwen3VLConfig` of the real architecture at size "tiny" (~0.3 M params, tests) or
  "small" (the synthetic engine), with token ids taken from the tokenizer.
- `make_tiny_checkpoint`: save model + processor so `from_pretrained` needs no flags.

    python -c "import videosearch_r1.models.tiny as t; print(t.make_tiny_checkpoint('/tmp/tiny-emb'))"
"""
from __future__ import annotations

import json
from pathlib import Path

import videosearch_r1  # noqa: F401  (torchvision shim before transformers)

CHAT_SPECIAL_TOKENS: list[str] = [
    "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>", "<think>", "</think>", "<tool_response>", "</tool_response>",
]
PAD_TOKEN = "<|endoftext|>"
REFINE_TOKEN = "<REFINE>"

# ---------------------------------------------------------------------------------- training text
_COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "cyan", "magenta", "white",
            "black", "grey", "gray", "brown", "teal", "violet"]
_SHAPES = ["circle", "square", "triangle", "star", "diamond", "hexagon", "ring", "cross", "rectangle",
           "ellipse", "disc", "box", "object", "shape"]
_SIZES = ["small", "large", "big", "tiny", "medium", "huge"]
_ACTIONS = ["enters", "leaves", "jumps", "spins", "grows", "shrinks", "moves", "changes colour",
            "changes color", "bounces", "slides", "rotates", "appears", "disappears", "stops", "turns",
            "enter", "leave", "jump", "spin", "grow", "shrink", "move", "change colour", "moving", "jumping",
            "spinning", "growing", "shrinking", "entering", "leaving", "changing"]
_DIRECTIONS = ["from the left", "from the right", "to the left", "to the right", "up", "down", "across",
               "in the middle", "at the top", "at the bottom", "in the corner", "slowly", "quickly", "twice"]
_BACKGROUNDS = ["wall", "stripes", "striped wall", "checker", "checkered wall", "checkerboard", "dots",
                "dotted wall", "plain wall", "background", "pattern", "grid"]
_PROMPT_TEXT = [
    "Represent the user's input.",
    "You are a video search agent. A search engine retrieved a video for the query.",
    "Watch the video and decide whether it matches the query. Think step by step.",
    "Answer with <answer>matched</answer> or <answer>not_matched</answer>.",
    "If it matches, give the moment as <start>12.5</start> <end>30.0</end> in seconds.",
    "If it does not match, emit <REFINE> to refine the search query.",
    "<think> The query asks for a small red circle, but the video shows a large blue square. </think>",
    "<answer>not_matched</answer> <REFINE>",
    "<think> The object in the video matches the query. </think> <answer>matched</answer> "
    "<start>3.0</start> <end>9.5</end>",
    "Query: Video: Find the moment when the event happens. The video is the first one retrieved.",
    "search_video query text turn candidate rank score time seconds second frame frames clip duration",
    "What happens in the video? Describe the object, its colour, its size and the wall behind it.",
    "user assistant system tool function name arguments json true false null",
]


def _world_text() -> list[str]:
    """A fixed, deterministic set of sentences covering the synthetic world's vocabulary."""
    lines = list(_PROMPT_TEXT)
    lines += ["system\nRepresent the user's input.\nuser\nassistant\n"] * 40  # chat roles: one token each
    for i, colour in enumerate(_COLOURS):
        for j, shape in enumerate(_SHAPES):
            size = _SIZES[(i + j) % len(_SIZES)]
            action = _ACTIONS[(i * 3 + j) % len(_ACTIONS)]
            where = _DIRECTIONS[(i + 2 * j) % len(_DIRECTIONS)]
            wall = _BACKGROUNDS[(2 * i + j) % len(_BACKGROUNDS)]
            wall_colour = _COLOURS[(i + j + 5) % len(_COLOURS)]
            lines.append(f"A {size} {colour} {shape} {action} {where} in front of a {wall_colour} {wall}.")
            lines.append(f"the {colour} {shape} {action} on the {wall}, then it {_ACTIONS[(i + j) % 12]}.")
    for n in range(0, 200):
        lines.append(f"{n} {n}.{n % 10} <{n}.{(n * 7) % 10} seconds> at {n} s, from {n} to {n + 5} seconds")
    return lines


# ---------------------------------------------------------------------------------- tokenizer
def _official_chat_template() -> str:
    """trl's copy of the official Qwen3-VL chat template, read as a file: importing trl's module would pull
    in `datasets` (absent on the GPU image), and only the template text is needed."""
    import importlib.util

    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("trl is not installed: it ships the Qwen3-VL chat template (pip install trl==1.16.0)")
    return (Path(list(spec.submodule_search_locations)[0]) / "chat_templates" / "qwen3_vl.jinja").read_text(encoding="utf-8")


def build_tokenizer(extra_texts: list[str] | None = None, vocab_size: int = 1024, refine_token: bool = False):
    """Offline byte-level BPE as a transformers Qwen2Tokenizer with Qwen chat tokens and template.

    The BPE uses the Qwen2 pre-tokenizer (the same split regex + byte level) so it tokenises the way the
    wrapper will. Special ids follow the learned vocab: <|endoftext|>, the chat tokens, then <REFINE>.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    from tokenizers import Regex
    qwen3_vl_chat_template = _official_chat_template()

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = _world_text() + [t for t in (extra_texts or []) if t]
    bpe.train_from_iterator(texts, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]

    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token=PAD_TOKEN, pad_token=PAD_TOKEN)
    specials = CHAT_SPECIAL_TOKENS + ([REFINE_TOKEN] if refine_token else [])
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.eos_token = "<|im_end|>"
    tok.pad_token = PAD_TOKEN
    tok.chat_template = qwen3_vl_chat_template
    tok.model_max_length = 32768
    return tok


# ---------------------------------------------------------------------------------- config
_SIZES_CFG = {
    # text: hidden, intermediate, layers, heads, kv heads, head_dim, mrope_section (sums to head_dim/2)
    # vision: depth, hidden, intermediate, heads, num_position_embeddings (a perfect square), deepstack
    "tiny": dict(text=(64, 128, 2, 4, 2, 16, [2, 3, 3]), vision=(2, 32, 64, 2, 64, [0, 1])),
    "small": dict(text=(256, 768, 4, 4, 2, 64, [12, 10, 10]), vision=(4, 256, 512, 4, 256, [1, 2])),
}


def tiny_config(tokenizer, size: str = "tiny"):
    """A Qwen3VLConfig of the real architecture at a toy size; all token ids from `tokenizer`."""
    from transformers import Qwen3VLConfig

    if size not in _SIZES_CFG:
        raise ValueError(f"unknown tiny model size {size!r}; known: {sorted(_SIZES_CFG)}")
    hidden, inter, layers, heads, kv, head_dim, mrope = _SIZES_CFG[size]["text"]
    v_depth, v_hidden, v_inter, v_heads, v_pos, deepstack = _SIZES_CFG[size]["vision"]
    assert sum(mrope) == head_dim // 2 and int(v_pos ** 0.5) ** 2 == v_pos and max(deepstack) < v_depth
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in CHAT_SPECIAL_TOKENS + [PAD_TOKEN]}
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim, max_position_embeddings=32768,
            pad_token_id=ids[PAD_TOKEN], bos_token_id=ids[PAD_TOKEN], eos_token_id=ids["<|im_end|>"],
            rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": mrope,
                             "mrope_interleaved": True},
        ),
        vision_config=dict(
            depth=v_depth, hidden_size=v_hidden, intermediate_size=v_inter, num_heads=v_heads, patch_size=16,
            temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=hidden, num_position_embeddings=v_pos,
            deepstack_visual_indexes=deepstack,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True, pad_token_id=ids[PAD_TOKEN], eos_token_id=ids["<|im_end|>"],
    )


# ---------------------------------------------------------------------------------- checkpoints
def make_tiny_checkpoint(path, kind: str = "embedder", size: str = "tiny", seed: int = 0, video_cfg=None,
                         extra_texts: list[str] | None = None) -> Path:
    """Write a randomly initialised tiny Qwen3-VL checkpoint + processor to `path` and return it.

    kind "embedder": the layout Qwen3-VL-Embedding ships (model_type qwen3_vl, weights under `model.`
    as saved by Qwen3VLForConditionalGeneration with tied embeddings); load it with AutoModel
    (Qwen3VLModel). kind "policy": Qwen3VLForConditionalGeneration with <REFINE> in the tokenizer.
    `video_cfg` (a VideoConfig) sets the processor's per-frame pixel bounds (default: VideoConfig()).
    """
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from videosearch_r1.config import VideoConfig
    from videosearch_r1.models.qwen3vl import build_processor

    if kind not in ("embedder", "policy"):
        raise ValueError(f"kind must be 'embedder' or 'policy', got {kind!r}")
    tok = build_tokenizer(extra_texts, refine_token=(kind == "policy"))
    config = tiny_config(tok, size)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    processor = build_processor(tok, video_cfg or VideoConfig())
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """`vsr1 make-tiny PATH [--kind policy|embedder] [--size tiny|small] [--seed N] [--dataset D]`."""
    import argparse

    from videosearch_r1.utils import config_from_args, parse_command

    p = argparse.ArgumentParser(prog="vsr1 make-tiny", description="Write a tiny random same-architecture "
                                "Qwen3-VL checkpoint (policy with <REFINE>, or embedder) for demos and tests.")
    p.add_argument("path")
    p.add_argument("--kind", choices=("policy", "embedder"), default="policy")
    p.add_argument("--size", choices=("tiny", "small"), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    args = parse_command(p, argv)
    cfg = config_from_args(args)
    out = make_tiny_checkpoint(args.path, kind=args.kind, size=args.size, seed=args.seed,
                               video_cfg=cfg.video_cfg(cfg.dataset))
    print(f"make-tiny: {args.kind} ({args.size}) -> {out}")
    return 0
