"""Tiny same-architecture Qwen3-VL (models/tiny.py) and the Qwen3-VL quirks module (models/qwen3vl.py)."""
import re

import av
import numpy as np
import pytest
import torch

from videosearch_r1.config import VideoConfig
from videosearch_r1.models import tiny
from videosearch_r1.models.qwen3vl import (build_processor, configure_processor, enable_fast_vision_attention,
                                           render_chat, rope_positions, video_kwargs)
from videosearch_r1.video.decode import Clip, VideoInfo, decode, frame_size

SYNTH_VIDEO = VideoConfig(fps=1.0, max_frames=32, min_pixels=32 * 32, max_pixels=96 * 64)


def make_clip(times, height, width, seed=0) -> Clip:
    rng = np.random.default_rng(seed)
    t = len(times)
    frames = rng.integers(0, 256, (t, height, width, 3), dtype=np.uint8)
    info = VideoInfo(path="mem", duration=float(times[-1]) + 0.5, fps=2.0, num_frames=4 * t, width=width,
                     height=height)
    return Clip(frames=frames, timestamps=np.asarray(times, dtype=np.float64),
                indices=np.arange(t, dtype=np.int64) * 4, info=info)


def video_messages(text="a small red circle jumps"):
    return [{"role": "system", "content": "Represent the user's input."},
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def tok():
    return tiny.build_tokenizer()


@pytest.fixture(scope="module")
def proc(tok):
    return build_processor(tok, SYNTH_VIDEO)


# ----------------------------------------------------------------------------- tokenizer / config
def test_tokenizer_specials_template_and_determinism(tok):
    from trl.chat_template_utils import qwen3_vl_chat_template

    assert tok.chat_template == qwen3_vl_chat_template  # verbatim: trl recognises it by exact string
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    for t in tiny.CHAT_SPECIAL_TOKENS:
        assert tok.encode(t, add_special_tokens=False) == [tok.convert_tokens_to_ids(t)]
    assert tiny.REFINE_TOKEN not in tok.get_vocab()
    text = "A large cyan hexagon changes colour on a checkered wall at <12.5 seconds>."
    assert tok.decode(tok.encode(text)) == text
    # the world's words are single tokens (the BPE was trained on them)
    assert len(tok.encode(" hexagon", add_special_tokens=False)) == 1
    again = tiny.build_tokenizer()
    assert again.get_vocab() == tok.get_vocab() and again.encode(text) == tok.encode(text)
    ref = tiny.build_tokenizer(refine_token=True)
    rid = ref.convert_tokens_to_ids(tiny.REFINE_TOKEN)
    assert ref.encode("x <REFINE>", add_special_tokens=False)[-1] == rid and len(ref) == len(tok) + 1
    extra = tiny.build_tokenizer(extra_texts=["zanzibarian zanzibarian zanzibarian"] * 50)
    assert len(extra.encode(" zanzibarian", add_special_tokens=False)) < len(
        tok.encode(" zanzibarian", add_special_tokens=False))


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_config_ids_and_shapes(tok, size):
    cfg = tiny.tiny_config(tok, size)
    for name, t in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                    ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]:
        assert getattr(cfg, name) == tok.convert_tokens_to_ids(t)
    tc, vc = cfg.text_config, cfg.vision_config
    assert tc.vocab_size == len(tok) and tc.pad_token_id == tok.pad_token_id
    assert sum(tc.rope_parameters["mrope_section"]) * 2 == tc.head_dim
    assert vc.out_hidden_size == tc.hidden_size and vc.patch_size == 16
    assert round(vc.num_position_embeddings ** 0.5) ** 2 == vc.num_position_embeddings
    if size == "tiny":
        from transformers import Qwen3VLForConditionalGeneration

        n = sum(p.numel() for p in Qwen3VLForConditionalGeneration(cfg).parameters())
        assert 0.1e6 < n < 0.5e6
    else:
        assert (tc.hidden_size, tc.num_hidden_layers, tc.head_dim, vc.depth, vc.hidden_size) == (256, 4, 64, 4, 256)


@pytest.mark.parametrize("kind", ["policy", "embedder"])
def test_checkpoint_roundtrip_identical_outputs(tmp_path, kind):
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor, Qwen3VLForConditionalGeneration

    path = tiny.make_tiny_checkpoint(tmp_path / kind, kind=kind, seed=3, video_cfg=SYNTH_VIDEO)
    proc = AutoProcessor.from_pretrained(path)
    assert (tiny.REFINE_TOKEN in proc.tokenizer.get_vocab()) == (kind == "policy")
    text = render_chat(proc, video_messages())
    inputs = proc(text=[text], **video_kwargs([make_clip([0.0, 1.0, 2.0, 3.0], 64, 96)]), return_tensors="pt")
    # rebuild in memory from the same inputs (determinism) and compare with the saved one
    mem_tok = tiny.build_tokenizer(refine_token=(kind == "policy"))
    assert mem_tok.get_vocab() == proc.tokenizer.get_vocab()
    torch.manual_seed(3)
    mem = Qwen3VLForConditionalGeneration(tiny.tiny_config(mem_tok, "tiny")).eval()
    with torch.no_grad():
        if kind == "policy":
            loaded = AutoModelForImageTextToText.from_pretrained(path).eval()
            assert torch.equal(mem(**inputs).logits, loaded(**inputs).logits)
        else:
            loaded = AutoModel.from_pretrained(path).eval()
            assert type(loaded).__name__ == "Qwen3VLModel"
            assert torch.equal(mem.model(**inputs).last_hidden_state, loaded(**inputs).last_hidden_state)
    again = tiny.make_tiny_checkpoint(tmp_path / "again", kind=kind, seed=3, video_cfg=SYNTH_VIDEO)
    for f in sorted(p.name for p in path.iterdir()):
        assert (path / f).read_bytes() == (again / f).read_bytes(), f


# ----------------------------------------------------------------------------- processor quirks
def _frame_sizes(vcfg):
    return sorted({frame_size(h, w, vcfg.min_pixels, vcfg.max_pixels) for h, w in
                   [(64, 96), (96, 64), (240, 320), (720, 1280), (272, 640), (144, 176), (1080, 1080), (20, 30)]})


@pytest.mark.parametrize("vcfg", [SYNTH_VIDEO, VideoConfig()], ids=["synth", "default"])
def test_processor_keeps_front_door_frames(tok, vcfg):
    proc = build_processor(tok, vcfg)
    counts = [2, 3, 5, 7, 8, 11, 13] + ([vcfg.max_frames] if vcfg.max_frames <= 32 else [])
    for h, w in _frame_sizes(vcfg):
        for t in counts:
            clip = make_clip(np.arange(t, dtype=float), h, w)
            out = proc.video_processor(**video_kwargs([clip]), return_tensors="pt")
            assert out["video_grid_thw"].tolist() == [[(t + 1) // 2, h // 16, w // 16]], (h, w, t)


def test_configure_processor_fixes_hub_defaults(tok):
    """A processor with the hub's video defaults (total-pixel bounds) resizes small clips; configured, it keeps them."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    hub_like = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(patch_size=16), tokenizer=tok,
                                video_processor=Qwen3VLVideoProcessor(cap_pixels_per_frame=True))
    kw = video_kwargs([make_clip(np.arange(8, dtype=float), 64, 96)])
    assert hub_like.video_processor(**kw)["video_grid_thw"].tolist() != [[4, 4, 6]]
    configure_processor(hub_like, SYNTH_VIDEO)
    assert hub_like.video_processor(**kw)["video_grid_thw"].tolist() == [[4, 4, 6]]


def test_processor_keeps_64_frames_at_the_pixel_cap(tok):
    vcfg = VideoConfig()
    proc = build_processor(tok, vcfg)
    h, w = frame_size(1080, 1920, vcfg.min_pixels, vcfg.max_pixels)
    for t in (63, 64):
        clip = make_clip(np.arange(t, dtype=float), h, w)
        out = proc.video_processor(**video_kwargs([clip]), return_tensors="pt")
        assert out["video_grid_thw"].tolist() == [[(t + 1) // 2, h // 16, w // 16]]


def _markers(tok, ids):
    return re.findall(r"<([0-9.]+) seconds>", tok.decode(ids))


@pytest.mark.parametrize("times", [
    [0.25, 1.25, 2.25, 3.25, 4.25, 5.25],  # regular
    [0.13, 0.9, 3.71, 3.9, 10.05],  # irregular, odd count (last frame repeated)
    list(np.linspace(0.7, 88.3, 32)),  # a clip longer than 64 s, 32 frames spread over it
    list(np.arange(64) * 1.37 + 0.4),  # 64 frames covering 88 s
], ids=["regular", "irregular-odd", "long-88s", "64-frames"])
def test_rendered_timestamps_are_true_times(tok, proc, times):
    clip = make_clip(times, 32, 32)
    text = render_chat(proc, video_messages())
    ids = proc(text=[text], **video_kwargs([clip]), return_tensors="pt")["input_ids"][0]
    ts = list(times) + ([times[-1]] if len(times) % 2 else [])
    expected = [f"{(ts[i] + ts[i + 1]) / 2:.1f}" for i in range(0, len(ts), 2)]
    assert _markers(tok, ids) == expected
    assert float(expected[-1]) > 60 or max(times) < 60


def test_decoded_long_video_markers_match_decoded_times(tmp_path, tok, proc):
    """End to end through the real front door: a 70 s mp4, sampled to 32 frames."""
    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=2)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(140):
            img = np.full((64, 64, 3), (i * 7) % 256, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    clip = decode(path, SYNTH_VIDEO)
    assert clip.timestamps[-1] > 64
    ids = proc(text=[render_chat(proc, video_messages())], **video_kwargs([clip]), return_tensors="pt")["input_ids"][0]
    ts = clip.timestamps
    assert _markers(tok, ids) == [f"{(ts[i] + ts[i + 1]) / 2:.1f}" for i in range(0, len(ts), 2)]


def test_render_chat_canonical_layout(tok, proc):
    text = render_chat(proc, video_messages("hello"))
    official = tok.apply_chat_template(video_messages("hello"), tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|video_pad|><|vision_end|>" in official
    assert text == official.replace("<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>")
    assert text.endswith("hello<|im_end|>\n<|im_start|>assistant\n")
    ids = proc(text=[text], **video_kwargs([make_clip([0.0, 1.0, 2.0, 3.0], 32, 64)]))["input_ids"][0]
    dec = tok.decode(ids)  # two patches, each "<t seconds><|vision_start|>pads<|vision_end|>", not nested
    assert dec.count("<|vision_start|>") == 2 and "<|vision_start|><0" not in dec
    assert re.search(r"<0\.5 seconds><\|vision_start\|>(<\|video_pad\|>){2}<\|vision_end\|><2\.5 seconds>", dec)
    with pytest.raises(ValueError, match="multiple of 32"):
        video_kwargs([make_clip([0.0, 1.0], 48, 64)])


# ----------------------------------------------------------------------------- positions / attention
def test_rope_positions_and_fast_vision_attention_match_hf(tok, proc):
    from transformers import Qwen3VLForConditionalGeneration

    tok.padding_side = "left"
    msgs = [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "a red circle jumps"}]}],
            [{"role": "user", "content": "only text, a bit longer than the others are"}],
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}, {"type": "video"}]}]]
    texts = [render_chat(proc, m) for m in msgs]
    clips = [make_clip([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 64, 96), make_clip([0.0, 2.0, 4.0, 6.0], 32, 64)]
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    inputs = proc(text=texts, images=[image], **video_kwargs(clips), return_tensors="pt", padding=True)
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(tiny.tiny_config(tok, "tiny")).eval()
    ref, ref_delta = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"],
        video_grid_thw=inputs["video_grid_thw"], attention_mask=inputs["attention_mask"])
    pos, delta = rope_positions(model, inputs, return_deltas=True)
    assert torch.equal(pos, ref) and torch.equal(delta, ref_delta)
    assert (inputs["attention_mask"][:, 0] == 0).any()  # left padding was exercised
    with torch.no_grad():
        base = model(**inputs).logits
        assert enable_fast_vision_attention(model) == 2 and enable_fast_vision_attention(model) == 0
        fast = model(**inputs).logits  # unequal chunk lengths: grouped path
        fast_pos = model(**inputs, position_ids=pos).logits
        one = {k: v for k, v in proc(text=texts[:1], **video_kwargs(clips[:1]), return_tensors="pt").items()}
        single = model(**one).logits  # equal chunks: one SDPA call
    assert torch.equal(base, fast) and torch.equal(base, fast_pos)
    model_slow = Qwen3VLForConditionalGeneration(tiny.tiny_config(tok, "tiny")).eval()
    model_slow.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model_slow(**one).logits, single)
    bad = dict(inputs)
    bad["video_grid_thw"] = inputs["video_grid_thw"][:1]
    with pytest.raises(ValueError, match="video placeholders do not match"):
        rope_positions(model, bad)


def test_make_tiny_cli_writes_a_loadable_policy(tmp_path):
    import json as _json

    from videosearch_r1.agent.policy import Policy
    from videosearch_r1.cli import main as cli_main

    out = tmp_path / "pol"
    assert cli_main(["make-tiny", str(out), "--kind", "policy", f"workspace={tmp_path}"]) == 0
    assert _json.loads((out / "config.json").read_text())["model_type"] == "qwen3_vl"
    policy = Policy.from_pretrained(str(out), device="cpu")
    assert policy.refine_token_id is not None
