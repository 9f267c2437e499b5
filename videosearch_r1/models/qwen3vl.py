"""Every Qwen3-VL quirk of transformers 5.24 in one module (processor sizing, true timestamps, chat
layout, mRoPE positions, batched vision attention).

    processor = build_processor(tokenizer, cfg.video_cfg("synth"))
    text = render_chat(processor, [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q}]}])
    inputs = processor(text=[text], **video_kwargs([clip]), return_tensors="pt")
    pos = rope_positions(model, inputs)               # [3, B, L], same as get_rope_index, no per-sample loop

Quirks handled here (see environment.md §2, §8):
- Video pixel bounds (`size={"shortest_edge","longest_edge"}`) count ALL frames (t*h*w), and with
  `cap_pixels_per_frame=True` the per-frame cap is `max_video_tokens * 32**2`. The video front door
  (video/decode.py) already sized frames to multiples of 32 within the per-frame bounds, so the
  processor's bounds are set so that those frames pass through unchanged for every frame count: the
  per-frame cap is max_pixels with 4/3 slack (the bound check counts round(T/2)*2 frames, Python's
  half-to-even round: T=3 counts as 4, T=7 as 8), the total budget allows max_frames + 1 such frames, and the lower bound
  is one 32x32 per frame (a total lower bound cannot express a per-frame minimum).
- `<t seconds>` markers are `frames_indices[i] / fps`, averaged over each 2-frame temporal patch.
  VideoMetadata has no field for arbitrary times, so we pass fps=1.0 and frames_indices = the clip's
  true presentation times in seconds (floats): the markers are then exactly the clip's times, also for
  variable frame rates, a non-zero start, and clips longer than 64 s. `do_sample_frames=False`.
- The official template writes `<|vision_start|><|video_pad|><|vision_end|>`; 5.24 expands only
  `<|video_pad|>`, nesting the markers. `render_chat` writes a bare `<|video_pad|>` (canonical layout:
  `<t seconds><|vision_start|>pads<|vision_end|>` per temporal patch).
- `get_rope_index` loops over the batch in Python; `rope_positions` computes the same ids vectorised.
- The sdpa/eager vision attention runs one call per 2-frame chunk; `enable_fast_vision_attention`
  batches equal-length chunks into one SDPA call (identical outputs).
- `mm_encoder_outputs` (5.24) lets the forward take precomputed video features: `encode_videos` /
  `video_encoder_outputs` split and rebuild them per video (the visual-token cache, agent/vision_cache.py).
- `fast_video_inputs`: the processor's batch with the pixels made on the GPU from uint8 frames (its own
  rescale/normalise/patchify + `replace_video_token`), when `resize_target` says no resize happens.
- Training on CUDA: torch 2.11's cuDNN SDPA backward returns NaN in dQ when a mask is passed, the length is
  64 mod 128 and a query row is fully masked (left padding; pytorch/pytorch#196678): `guard_sdpa_backward`.
- The fast step, one call for every use: `prepare_model(model)` (batched vision attention + the patch
  embedding as a matmul) and `model_inputs(model, batch)` (forward kwargs with rope_positions).
"""
from __future__ import annotations

import math
import types

import numpy as np

import videosearch_r1  # noqa: F401  (torchvision shim before transformers)

VIDEO_TRIPLE = "<|vision_start|><|video_pad|><|vision_end|>"
VIDEO_PAD = "<|video_pad|>"
FACTOR = 32  # patch 16 x spatial merge 2: frame sides are multiples of this
_ODD_FRAME_SLACK = 4 / 3  # worst case of round(T/2)*2 / T over T >= 2 (T=3 counts as 4 frames)


# ---------------------------------------------------------------------------------- processor
def processor_sizes(video_cfg) -> dict:
    """Video/image processor size settings that keep front-door frames (sides multiples of 32,
    min_pixels <= h*w <= max_pixels per frame) exactly as they are, for any frame count."""
    per_frame_cap = math.ceil(video_cfg.max_pixels * _ODD_FRAME_SLACK / FACTOR ** 2)  # in 32x32 tokens
    max_frames = max(int(video_cfg.max_frames), 2) + 1
    return dict(
        # the lower bound counts all frames too, so no per-frame minimum can be expressed: the front door
        # enforces min_pixels (best effort), and the processor only refuses to go below one 32x32 per frame
        video_size={"shortest_edge": 2 * FACTOR ** 2,
                    "longest_edge": per_frame_cap * FACTOR ** 2 * max_frames},
        max_video_tokens=per_frame_cap,
        image_size={"shortest_edge": int(video_cfg.min_pixels), "longest_edge": int(video_cfg.max_pixels)},
    )


def build_processor(tokenizer, video_cfg):
    """A Qwen3VLProcessor around `tokenizer` whose pixel bounds keep the front door's frames unchanged."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    sizes = processor_sizes(video_cfg)
    video = Qwen3VLVideoProcessor(
        size=sizes["video_size"], cap_pixels_per_frame=True, max_video_tokens=sizes["max_video_tokens"],
        patch_size=16, temporal_patch_size=2, merge_size=2, do_sample_frames=False, fps=float(video_cfg.fps),
        min_frames=2, max_frames=max(int(video_cfg.max_frames), 2),
    )
    image = Qwen2VLImageProcessor(size=sizes["image_size"], patch_size=16, temporal_patch_size=2, merge_size=2,
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])  # as Qwen3-VL ships
    return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                            chat_template=tokenizer.chat_template)


def configure_processor(processor, video_cfg):
    """Apply `video_cfg`'s bounds to an existing (e.g. hub-loaded) Qwen3VLProcessor, in place."""
    sizes = processor_sizes(video_cfg)
    vp = processor.video_processor
    vp.size = dict(sizes["video_size"])
    vp.cap_pixels_per_frame = True
    vp.max_video_tokens = sizes["max_video_tokens"]
    vp.do_sample_frames = False
    processor.image_processor.size = dict(sizes["image_size"])
    return processor


# ---------------------------------------------------------------------------------- videos
def video_kwargs(clips) -> dict:
    """Processor kwargs for pre-sampled clips: frames + metadata giving the clips' TRUE timestamps.

    `clips`: objects with frames [T, H, W, 3] uint8 (H, W multiples of 32), timestamps [T] seconds,
    and optionally info (num_frames, fps). Metadata: fps=1.0 and frames_indices = timestamps, so the
    processor's `<t seconds>` (= index / fps, averaged per 2-frame patch) are the true times.
    """
    from transformers.video_utils import VideoMetadata

    videos, metas = [], []
    for i, clip in enumerate(clips):
        frames = np.asarray(clip.frames)
        ts = np.asarray(clip.timestamps, dtype=np.float64)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"clip {i}: frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        t, h, w = frames.shape[:3]
        if t < 2 or ts.shape != (t,):
            raise ValueError(f"clip {i}: need >= 2 frames and one timestamp per frame, got {t} frames, "
                             f"{ts.shape[0] if ts.ndim else 0} timestamps")
        if h % FACTOR or w % FACTOR:
            raise ValueError(f"clip {i}: frame size {h}x{w} is not a multiple of {FACTOR} (use the video front door)")
        info = getattr(clip, "info", None)
        metas.append(VideoMetadata(
            total_num_frames=int(getattr(info, "num_frames", t) or t), fps=1.0, width=w, height=h,
            duration=float(getattr(info, "duration", ts[-1]) or ts[-1]), video_backend="pyav",
            frames_indices=[float(x) for x in ts]))
        videos.append(frames)
    return {"videos": videos, "video_metadata": metas, "do_sample_frames": False}


def patch_times(timestamps) -> list[float]:
    """The time the processor prints for each 2-frame temporal patch (odd count: last frame repeated)."""
    ts = [float(x) for x in timestamps]
    if len(ts) % 2:
        ts.append(ts[-1])
    return [(ts[i] + ts[i + 1]) / 2 for i in range(0, len(ts), 2)]


# ---------------------------------------------------------------------------------- chat
def render_chat(processor, messages, add_generation_prompt: bool = True, **template_kwargs) -> str:
    """The official Qwen3-VL template, with each video triple replaced by a bare <|video_pad|>."""
    tok = getattr(processor, "tokenizer", processor)
    template = getattr(processor, "chat_template", None) or tok.chat_template
    text = tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                   add_generation_prompt=add_generation_prompt, **template_kwargs)
    return text.replace(VIDEO_TRIPLE, VIDEO_PAD)


# ---------------------------------------------------------------------------------- mRoPE positions
def rope_positions(model, inputs, return_deltas: bool = False):
    """3-D mRoPE position ids [3, B, L] for a processor batch; equal to `model.get_rope_index`.

    Vectorised over the batch (no per-sample Python loop; one host sync to validate the layout).
    Text tokens advance every axis by 1; each visual run (one image, or one 2-frame patch of a
    video) gets (start + t, start + h, start + w) over its merged grid and then advances the start by
    max(h, w). Padding positions are 0. With `return_deltas`, also the rope deltas [B, 1]
    (max position + 1 - number of real tokens), which generation with a cache needs.
    """
    import torch

    input_ids = inputs["input_ids"]
    b, length = input_ids.shape
    dev = input_ids.device
    mask = inputs.get("attention_mask")
    valid = mask.bool() if mask is not None else torch.ones(b, length, dtype=torch.bool, device=dev)
    types = inputs.get("mm_token_type_ids")
    types = torch.zeros_like(input_ids) if types is None else types.to(dev)
    config = getattr(model, "config", model)
    merge = config.vision_config.spatial_merge_size

    advance = valid.long()  # text: +1 per real token
    offs = torch.zeros(3, b, length, dtype=torch.long, device=dev)  # (t, h, w) offsets inside a visual run
    grids = {1: inputs.get("image_grid_thw"), 2: inputs.get("video_grid_thw")}
    checks = []
    for modality, grid in grids.items():
        sel = valid & (types == modality)
        if grid is None or len(grid) == 0:
            checks.append((sel.sum(), torch.zeros((), dtype=torch.long, device=dev), sel.sum(), 0))
            continue
        g = grid.to(dev).long()
        if modality == 2:  # a video is one run per temporal patch (separated by timestamp text)
            g = g.repeat_interleave(g[:, 0], dim=0)
            g[:, 0] = 1
        t, h, w = g[:, 0], g[:, 1] // merge, g[:, 2] // merge
        n = t * h * w
        run = torch.repeat_interleave(torch.arange(len(n), device=dev), n)
        k = torch.arange(int(run.numel()), device=dev) - torch.repeat_interleave(n.cumsum(0) - n, n)
        hr, wr = h[run], w[run]
        starts = sel & ~torch.nn.functional.pad(sel, (1, 0))[:, :-1]  # first token of each run
        checks.append((sel.sum(), n.sum(), starts.sum(), len(n)))
        if int(n.sum()) != int(sel.sum()):
            break  # reported below
        advance[sel] = torch.where(k == n[run] - 1, torch.maximum(hr, wr), torch.zeros_like(k))
        offs[0][sel] = k // (hr * wr)
        offs[1][sel] = (k // wr) % hr
        offs[2][sel] = k % wr
    for (have, want, runs, n_runs), name in zip(checks, ("image", "video")):
        have, want, runs = int(have), int(want), int(runs)
        if have != want or runs != n_runs:
            raise ValueError(f"{name} placeholders do not match the grids: {have} tokens in {runs} runs, "
                             f"grids give {want} tokens in {n_runs} runs")
    start = advance.cumsum(1) - advance  # exclusive prefix sum per sample
    pos = (start.unsqueeze(0) + offs) * valid.unsqueeze(0)
    if not return_deltas:
        return pos
    deltas = pos.amax(dim=(0, 2)) + 1 - valid.sum(1)
    return pos, deltas.unsqueeze(1)


def text_positions(attention_mask):
    """Positions [3, B, L] of a text-only batch (left or right padding): 0, 1, ... over real tokens."""
    pos = (attention_mask.long().cumsum(1) - 1).clamp(min=0) * attention_mask.long()
    return pos.unsqueeze(0).expand(3, -1, -1)


# ---------------------------------------------------------------------------------- vision attention
def _batched_vision_attention(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None,
                              **kwargs):
    """Qwen3VLVisionAttention.forward with one SDPA call per distinct chunk length (not per chunk)."""
    import torch
    from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb_vision
    from transformers.utils.generic import is_flash_attention_requested

    dropout = self.attention_dropout if self.training else 0.0
    if (self.config._attn_implementation != "sdpa" or is_flash_attention_requested(self.config)
            or dropout > 0 or kwargs.get("output_attentions")):
        return self._unbatched_forward(hidden_states, cu_seqlens, position_embeddings=position_embeddings,
                                       max_seqlen=max_seqlen, **kwargs)
    seq = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)  # [seq, heads, dim]
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    out = q.new_empty(q.shape)
    for size in sorted(set(lengths)):
        chunks = [i for i, n in enumerate(lengths) if n == size]
        if len(chunks) == len(lengths):
            idx = slice(None)
        else:
            first = cu_seqlens[:-1][torch.tensor(chunks, device=cu_seqlens.device)].long()
            idx = (first[:, None] + torch.arange(size, device=first.device)[None, :]).reshape(-1)
        qb, kb, vb = (x[idx].reshape(len(chunks), size, self.num_heads, -1).transpose(1, 2) for x in (q, k, v))
        o = torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, scale=self.scaling)
        out[idx] = o.transpose(1, 2).reshape(-1, self.num_heads, o.shape[-1])
    return self.proj(out.reshape(seq, -1))


def enable_fast_vision_attention(model) -> int:
    """Batch the vision tower's per-chunk attention (sdpa only; other backends keep their path).
    Patches each Qwen3VLVisionAttention instance; returns how many were patched. Idempotent."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionAttention

    count = 0
    for module in model.modules():
        if isinstance(module, Qwen3VLVisionAttention) and not hasattr(module, "_unbatched_forward"):
            module._unbatched_forward = module.forward
            module.forward = types.MethodType(_batched_vision_attention, module)
            count += 1
    return count


def _linear_patch_embed(self, hidden_states):
    """Qwen3VLVisionPatchEmbed.forward as one matmul: its Conv3d has kernel == stride == the patch, so it
    is a linear map of each flattened patch (same result up to float rounding; ~4x faster fwd+bwd on CPU)."""
    import torch

    w = self.proj.weight  # [E, C, T, P, P]
    return torch.nn.functional.linear(hidden_states.to(w.dtype).reshape(-1, w[0].numel()), w.reshape(w.shape[0], -1), self.proj.bias)


def enable_linear_patch_embed(model) -> int:
    """Patch every vision patch embedding of `model`."""
    import types

    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionPatchEmbed

    mods = [m for m in model.modules() if isinstance(m, Qwen3VLVisionPatchEmbed)]
    for m in mods:
        m.forward = types.MethodType(_linear_patch_embed, m)
    return len(mods)


# ---------------------------------------------------------------------------------- compiled blocks (inference)
def compile_blocks(model, on: bool = True, backend: str = "inductor") -> int:
    """Every RMSNorm and MLP of the text model and the vision tower runs torch.compile'd (dynamic shapes: one
    compile for every prompt length), so inductor fuses what eager runs as separate kernels (the norm's float32
    upcast, square, mean, rsqrt, scale and cast back; the SwiGLU / GELU products): about a quarter of a 2B-shaped
    prefill's device time was such elementwise work (docs/benchmarks.md). Used by inference on CUDA
    (agent.compile_blocks: `vsr1 infer`, the GRPO rollout copy; bench_verify's `blocks` path) and measured for
    training steps in bench_sft's `blocks` variant (not a trainer setting). on=False puts the eager forwards back
    (the compiled ones are kept for the next switch). Copy a model before this, never after: a deep copy would
    keep calling the original modules' compiled forwards. Returns how many modules run compiled now."""
    import torch

    n = 0
    for m in model.modules():
        kind = type(m).__name__
        if not (kind.endswith("RMSNorm") or kind.endswith("MLP")):
            continue
        if on:
            if not hasattr(m, "_vsr1_eager_forward"):
                m._vsr1_eager_forward = m.forward
            if not hasattr(m, "_vsr1_compiled_forward"):
                m._vsr1_compiled_forward = torch.compile(m._vsr1_eager_forward, dynamic=True, backend=backend)
            m.forward = m._vsr1_compiled_forward
            n += 1
        elif hasattr(m, "_vsr1_eager_forward"):
            m.forward = m._vsr1_eager_forward
    return n


# ---------------------------------------------------------------------------------- the fast step
def guard_sdpa_backward() -> bool:
    """Before training on CUDA: turn the cuDNN SDPA backend off for this process (the flash / memory-efficient
    kernels serve instead). torch 2.11's cuDNN attention backward returns NaN in dQ on H100/H200 when an
    attn_mask is passed, the sequence length is 64 mod 128 and a query row's logsumexp is very low, as for a
    left-padded row (pytorch/pytorch#196678). Measured here (LOG.md, 2026-12-01): about a third of the GRPO
    steps had a non-finite gradient; anomaly mode named ScaledDotProductCudnnAttentionBackward0; with the
    backend off, 0 of 40 steps. Returns whether it was turned off (False without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return False
    torch.backends.cuda.enable_cudnn_sdp(False)
    return True


def prepare_model(model, linear_patch_embed: bool = True) -> dict:
    """The fast step for every use of a Qwen3-VL model (SFT, GRPO, indexing, inference), applied once:
    the vision attention batched per chunk length (`enable_fast_vision_attention`) and the patch
    embedding as one matmul (`enable_linear_patch_embed`). Pair it with `model_inputs` (mRoPE positions
    without the per-sample loop). Idempotent; returns how many modules were patched."""
    n_attn = enable_fast_vision_attention(model)
    n_patch = 0
    if linear_patch_embed and not getattr(model, "_vsr1_linear_patch_embed", False):
        n_patch = enable_linear_patch_embed(model)
        model._vsr1_linear_patch_embed = True
    return {"vision_attention": n_attn, "patch_embed": n_patch}


def model_inputs(model, inputs: dict, fast: bool = True) -> dict:
    """Keyword arguments for `model(...)` / `model.model(...)` from a processor batch (input_ids or
    inputs_embeds, attention_mask, pixels, grids, mm_token_type_ids). fast=True adds the mRoPE
    `position_ids` from `rope_positions` (vectorised); fast=False leaves them to HF's get_rope_index."""
    keys = ("input_ids", "inputs_embeds", "attention_mask", "pixel_values_videos", "video_grid_thw",
            "pixel_values", "image_grid_thw", "mm_token_type_ids")
    out = {k: inputs[k] for k in keys if inputs.get(k) is not None}
    if fast:
        out["position_ids"] = inputs["position_ids"] if inputs.get("position_ids") is not None \
            else rope_positions(model, inputs)
    return out


def vision_keepalive(model, inputs: dict):
    """0.0 with a graph through the whole vision tower when `inputs` carry no pixels, else None.

    A batch without video skips the vision tower; under ZeRO-3 / FSDP the ranks whose batch has video
    then wait forever for this rank's share of the vision parameters (and DDP's gradient buckets differ).
    Adding `0 * vision_keepalive(...)` to the loss runs a dummy 2-frame 32x32 video (grid 1x2x2) through
    the tower and the mergers, so every rank does the same vision work and gets (zero) vision gradients."""
    import torch

    if inputs.get("pixel_values_videos") is not None or inputs.get("pixel_values") is not None:
        return None
    visual = model.model.visual
    vc = model.config.vision_config
    merge = vc.spatial_merge_size
    dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2
    param = next(visual.parameters())
    pixels = torch.zeros(merge * merge, dim, dtype=param.dtype, device=param.device)
    grid = torch.tensor([[1, merge, merge]], dtype=torch.long, device=param.device)
    out = visual(pixels, grid_thw=grid, return_dict=True)
    total = out.pooler_output.float().sum()
    for feat in out.deepstack_features or []:
        total = total + feat.float().sum()
    return total * 0.0


# ---------------------------------------------------------------------------------- video features
def encode_videos(model, pixel_values_videos, video_grid_thw) -> list:
    """The vision tower on a batch of videos, split per video: [(embeds [n_i, H], (deepstack [n_i, H], ...))].
    Exactly what `Qwen3VLModel.get_video_features` computes (same call), in a per-video layout that
    `video_encoder_outputs` turns back into the forward's `mm_encoder_outputs`."""
    out = model.model.get_video_features(pixel_values_videos, video_grid_thw, return_dict=True)
    levels = [list(level) for level in (out.deepstack_features or [])]
    return [(emb, tuple(level[i] for level in levels)) for i, emb in enumerate(out.pooler_output)]


def video_encoder_outputs(features: list) -> dict | None:
    """Per-video features (as `encode_videos` returns, in the prompt's video order) -> the `mm_encoder_outputs`
    keyword of `Qwen3VLModel.forward` (5.24: replaces pixel_values_videos; deepstack features included)."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    if not features:
        return None
    n_levels = len(features[0][1])
    return {"video": BaseModelOutputWithDeepstackFeatures(
        pooler_output=tuple(f[0] for f in features),
        deepstack_features=[tuple(f[1][k] for f in features) for k in range(n_levels)])}


def video_patch_rows(model, video_grid_thw) -> list[int]:
    """Rows of `pixel_values_videos` per video (t * h * w patches)."""
    return [int(x) for x in video_grid_thw.prod(-1).tolist()]


def video_token_counts(model, video_grid_thw) -> list[int]:
    """Placeholder tokens per video (t * h * w / merge^2)."""
    merge = model.config.vision_config.spatial_merge_size
    return [n // merge ** 2 for n in video_patch_rows(model, video_grid_thw)]


# ---------------------------------------------------------------------------------- fast video inputs
def resize_target(video_processor, t: int, h: int, w: int) -> tuple[int, int]:
    """(height, width) the video processor resizes a T x h x w clip to: the arithmetic of
    Qwen3VLVideoProcessor.resize in 5.24 (per-frame cap from max_video_tokens, then smart_resize)."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    vp = video_processor
    size = vp.size if isinstance(vp.size, dict) else vp.size.__dict__
    lo, hi = int(size["shortest_edge"]), int(size["longest_edge"])
    factor = vp.patch_size * vp.merge_size
    max_pixels = hi
    if getattr(vp, "cap_pixels_per_frame", False):
        per_frame = max(min(vp.max_video_tokens * factor * factor, hi // t), int(lo * 1.05))
        max_pixels = per_frame * t
    return tuple(smart_resize(height=h, width=w, num_frames=t, factor=factor, temporal_factor=vp.temporal_patch_size,
                              min_pixels=lo, max_pixels=max_pixels))


def video_pixels(video_processor, frames, device):
    """One clip's `pixel_values_videos` rows, computed on `device` by the processor's own rescale/normalise
    and patchify (the resize is skipped: callers check resize_target is the clip's own size)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device, non_blocking=True)
    return clips_pixels(video_processor, x[None])


def clips_pixels(video_processor, clips):
    """`pixel_values_videos` rows of B equal-shape clips [B, T, H, W, 3] uint8 (a tensor, on any device),
    concatenated in order: what video_pixels gives for each, made in one call."""
    vp = video_processor
    x = clips.permute(0, 1, 4, 2, 3).contiguous()  # [B, T, 3, H, W]
    x = vp.rescale_and_normalize(x, vp.do_rescale, vp.rescale_factor, vp.do_normalize, vp.image_mean, vp.image_std)
    patches = vp.patchify(x, patch_size=vp.patch_size, merge_size=vp.merge_size,
                          temporal_patch_size=vp.temporal_patch_size)[0]
    return patches.reshape(-1, patches.shape[-1])


def fast_video_inputs(processor, texts: list[str], clips, device, text_device=None) -> dict | None:
    """The processor's batch for `texts` (each with one bare <|video_pad|> per clip, in order) and pre-sized
    clips, with the video pixels made on `device` from the uint8 frames (the CPU processor spends ~1 s per
    64-frame 448x448 clip), once per distinct frames array (repeats are copies of its rows). Same ids, mask,
    token types, grids and pixel values as `processor(...)` (tests/test_prefill.py). None when a clip would be
    resized (the caller then runs the processor). The ids, mask, token types and grids go to `text_device`
    (default: `device`; "cpu" for a caller that slices them on the CPU: no round trip through the GPU)."""
    import torch

    vp = processor.video_processor
    kw = video_kwargs(clips)
    grids = []
    for frames in kw["videos"]:
        t, h, w = frames.shape[:3]
        if resize_target(vp, t, h, w) != (h, w):
            return None
        tps = vp.temporal_patch_size
        grids.append([-(-t // tps), h // vp.patch_size, w // vp.patch_size])
    grid = torch.tensor(grids, dtype=torch.long)
    videos = {"video_grid_thw": grid, "video_metadata": kw["video_metadata"]}
    expanded, v = [], 0
    for text in texts:
        parts = text.split(processor.video_token)
        out = parts[0]
        for part in parts[1:]:
            if v >= len(clips):
                raise ValueError(f"{v + 1} or more video placeholders in the texts for {len(clips)} clips")
            out += processor.replace_video_token(videos, v) + part
            v += 1
        expanded.append(out)
    if v != len(clips):
        raise ValueError(f"{v} video placeholders in the texts for {len(clips)} clips")
    tok = processor.tokenizer(expanded, padding=True, return_tensors="pt")
    ids = tok["input_ids"]
    types = torch.zeros_like(ids)
    types[ids == processor.image_token_id] = 1
    types[ids == processor.video_token_id] = 2
    made: dict[int, object] = {}  # one pixel tensor per distinct frames array (a GRPO group shows one clip G times)
    for f in kw["videos"]:
        if id(f) not in made:
            made[id(f)] = video_pixels(vp, f, device)
    pixels = torch.cat([made[id(f)] for f in kw["videos"]]) if clips else None
    td = device if text_device is None else text_device
    out = {"input_ids": ids.to(td), "attention_mask": tok["attention_mask"].to(td),
           "mm_token_type_ids": types.to(td), "video_grid_thw": grid.to(td)}
    if pixels is not None:
        out["pixel_values_videos"] = pixels
    return out
