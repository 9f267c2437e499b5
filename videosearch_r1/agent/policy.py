"""The Qwen3-VL policy with its Soft Query Refinement (SQR) modules, loading/saving, and batched generation.

    policy = Policy.from_pretrained("runs/sft/checkpoint")        # model + processor + sqr.safetensors
    gen = policy.generate(["a red circle spins"], [clip], max_new_tokens=256)   # greedy, left padded
    gen.texts[0], gen.n_tokens[0]
    policy.save_pretrained("out/")                                  # HF files + sqr.safetensors + sqr_config.json

SQR modules (reference.md §1; H policy hidden, D latent dim, He embedder hidden), kept in fp32:
  readout      H -> D : Linear, LayerNorm, GELU, Linear (last Linear zero-initialised by default)
  to_policy    D -> H : LayerNorm, Linear (partial identity init)   feeds latents back into the policy
  to_embedder  D -> He: LayerNorm, Linear (partial identity init)   latents -> embedder soft tokens
They are saved BESIDE the HF checkpoint as `sqr.safetensors` + `sqr_config.json`, so loading needs no
flags. `reference_layout=True` loads the authors' checkpoints instead (modules inside the model state
dict; see reference_ckpt.py), including their pre-norm seed hidden state. Ours: post-norm everywhere.
A verification turn (generate): build_inputs makes the video pixels on the policy's device
(qwen3vl.fast_video_inputs, equal to the processor's), the prefill is bucketed by prompt length with a
visual-token cache (agent/prefill.py, agent/vision_cache.py; set_prefill), then decode.py's decode loop.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

import videosearch_r1  # noqa: F401  (torchvision shim before transformers)
from videosearch_r1.agent.decode import DecodeOptions, decode_options_for
from videosearch_r1.agent.prompts import REFINE_TOKEN, build_messages
from videosearch_r1.config import AgentConfig

if TYPE_CHECKING:
    from videosearch_r1.agent.decode import DecodeState

SQR_WEIGHTS = "sqr.safetensors"
SQR_CONFIG = "sqr_config.json"
SEED_HIDDEN = ("post_norm", "pre_norm")
SOFT_INSERT = ("before_tail", "reference")


class PolicyLoadError(ValueError):
    """A policy checkpoint that cannot be loaded as asked; the message names the path and the problem."""


# ------------------------------------------------------------------------------------ SQR modules
@dataclass(frozen=True)
class SQRConfig:
    hidden_size: int  # H: policy text hidden size
    latent_dim: int  # D: latent (retrieval-space) width
    embedder_hidden: int  # He: width of the embedder's input embeddings (soft tokens)
    seed_hidden: str = "post_norm"  # hidden state read at <REFINE>: "post_norm" (ours) | "pre_norm" (reference)
    soft_insert: str = "before_tail"  # where the embedder must insert these soft tokens (engine.soft_insert)
    refine_token: str = REFINE_TOKEN
    zero_init_readout: bool = True
    soft_scale: float = 1.0  # soft tokens = to_embedder(Z) x this (1.0: the reference; agent.soft_scale=embed: the engine's token RMS)
    source: str = "videosearch_r1"  # "videosearch_r1" | "reference" (converted from the authors' layout)

    def __post_init__(self):
        for name in ("hidden_size", "latent_dim", "embedder_hidden"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SQRConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.seed_hidden not in SEED_HIDDEN:
            raise ValueError(f"SQRConfig.seed_hidden must be one of {SEED_HIDDEN}, got {self.seed_hidden!r}")
        if self.soft_insert not in SOFT_INSERT:
            raise ValueError(f"SQRConfig.soft_insert must be one of {SOFT_INSERT}, got {self.soft_insert!r}")

    @classmethod
    def load(cls, path: Path) -> "SQRConfig":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise PolicyLoadError(f"{path}: cannot read SQR config: {e}") from None
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"format", "version"}
        if unknown:
            raise PolicyLoadError(f"{path}: unknown SQR config field(s) {sorted(unknown)}")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as e:
            raise PolicyLoadError(f"{path}: {e}") from None

    def to_json(self) -> str:
        return json.dumps({"format": "videosearch_r1.sqr", "version": 1, **asdict(self)}, indent=2) + "\n"


def _partial_identity_(linear: nn.Linear) -> None:
    """Weight = identity on the leading diagonal (rectangular allowed), bias 0 (reference §1)."""
    with torch.no_grad():
        linear.weight.zero_()
        n = min(linear.in_features, linear.out_features)
        linear.weight[torch.arange(n), torch.arange(n)] = 1.0
        if linear.bias is not None:
            linear.bias.zero_()


class SQRModules(nn.Module):
    """readout (H->D), to_policy (D->H), to_embedder (D->He); fp32, initialised as the reference."""

    def __init__(self, cfg: SQRConfig, seed: int = 0):
        super().__init__()
        h, d, he = cfg.hidden_size, cfg.latent_dim, cfg.embedder_hidden
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.readout = nn.Sequential(nn.Linear(h, d), nn.LayerNorm(d), nn.GELU(), nn.Linear(d, d))
            self.to_policy = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, h))
            self.to_embedder = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, he))
        if cfg.zero_init_readout:
            nn.init.zeros_(self.readout[3].weight)
            nn.init.zeros_(self.readout[3].bias)
        _partial_identity_(self.to_policy[1])
        _partial_identity_(self.to_embedder[1])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [.., H] -> [.., D]
        return self.readout(hidden.float())


# ------------------------------------------------------------------------------------ policy
class Generation(NamedTuple):
    texts: list[str]  # generated text up to (not incl.) the stop token; special tokens kept (<REFINE>, <think>)
    ids: list[list[int]]  # generated ids per row, including the stop token when one was produced
    n_tokens: list[int]  # generated text tokens per row (the stop token is not counted)
    has_refine: list[bool]  # a <REFINE> id among the generated text tokens
    prompt_len: int  # columns of the (left padded) prompt batch
    state: "DecodeState | None"  # KV cache + hidden states for sqr.rollout_from_state (keep_state=True)


def _resolve(path_or_id: str) -> Path:
    from videosearch_r1.models.hub import resolve_checkpoint

    return resolve_checkpoint(str(path_or_id))


class Policy:
    """A Qwen3VLForConditionalGeneration + its processor + SQR modules, on one device."""

    def __init__(self, model, processor, sqr: SQRModules, sqr_config: SQRConfig,
                 refine_token_id: int | None = None):
        """processor=None (benchmarks feeding processor outputs directly) needs `refine_token_id`; text
        methods (build_inputs, generate) then raise, the tensor paths (decode.py, sqr.py) work."""
        from videosearch_r1.models.qwen3vl import prepare_model

        self.model, self.processor, self.sqr, self.sqr_config = model, processor, sqr, sqr_config
        tok = getattr(processor, "tokenizer", None)
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        if tok is None:
            if refine_token_id is None:
                raise PolicyLoadError("a Policy without a processor needs refine_token_id")
            self.refine_token_id = int(refine_token_id)
            self.eos_token_ids = sorted(set(eos))
            pad = model.config.text_config.pad_token_id
        else:
            self.refine_token_id = tok.convert_tokens_to_ids(sqr_config.refine_token)
            if self.refine_token_id is None or self.refine_token_id == tok.unk_token_id:
                raise PolicyLoadError(f"tokenizer has no {sqr_config.refine_token} token")
            self.eos_token_ids = sorted(set(eos + ([tok.eos_token_id] if tok.eos_token_id is not None else [])))
            pad = tok.pad_token_id
        self.pad_token_id = pad if pad is not None else (self.eos_token_ids or [0])[0]
        text_hidden = model.config.text_config.hidden_size
        if sqr_config.hidden_size != text_hidden:
            raise PolicyLoadError(f"SQR hidden_size {sqr_config.hidden_size} != policy hidden {text_hidden}")
        prepare_model(model)  # the one fast step: batched vision attention + linear patch embed
        self.fast_video = True  # build_inputs: video pixels on the policy's device (False: the CPU processor)
        self.set_decode()
        self.set_prefill()

    def set_decode(self, attention: str = "auto", compile: bool = True, cuda_graph: bool = True,
                   blocks: bool = False) -> DecodeOptions:
        """Pick the decode path for the policy's current device (decode.decode_options_for): on CUDA by
        default matmul attention + CUDA graph + torch.compile, on CPU eager SDPA steps. `vsr1 infer` passes
        agent.decode_attention / agent.decode_compile / agent.cuda_graph / agent.compile_blocks (blocks: the
        norms and MLPs torch.compile'd for prefill and decode, CUDA only: qwen3vl.compile_blocks); call again
        after moving the model."""
        from videosearch_r1.models.qwen3vl import compile_blocks

        self.decode_options = decode_options_for(self.device, attention, compile, cuda_graph)
        compile_blocks(self.model, on=bool(blocks) and self.device.type == "cuda")
        return self.decode_options

    def set_prefill(self, tokens: int = AgentConfig.prefill_tokens, vision_cache_mb: int = AgentConfig.vision_cache_mb,
                    pad_slack: float = 0.0):
        """How a verification turn is prefilled (agent.prefill_tokens / agent.vision_cache_mb): tokens > 0:
        the bucketed prefill (agent/prefill.py; rows of equal length together, at most `tokens` per forward,
        no compute on padding) with a visual-token cache of `vision_cache_mb` MiB (0: none, each distinct
        video of a batch still encoded once); tokens = 0: one HF forward of the padded batch (the old path).
        Returns the PrefillPlan template (None for the old path)."""
        from videosearch_r1.agent.prefill import PrefillPlan
        from videosearch_r1.agent.vision_cache import VisionCache

        if tokens < 0 or vision_cache_mb < 0:
            raise ValueError(f"prefill tokens and vision cache MiB must be >= 0, got {tokens}, {vision_cache_mb}")
        self.vision_cache = VisionCache(int(vision_cache_mb) << 20) if tokens > 0 else None
        self.prefill_plan = PrefillPlan(max_tokens=int(tokens), pad_slack=pad_slack) if tokens > 0 else None
        return self.prefill_plan

    def video_keys(self, clips: list[Any]) -> list[str] | None:
        """Visual-token cache keys of `clips` (content + processor settings), None when no cache is in use."""
        from videosearch_r1.agent.vision_cache import clip_keys

        return clip_keys(clips, self.processor) if self.vision_cache is not None else None

    # ---- properties
    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.sqr_config.hidden_size

    @property
    def latent_dim(self) -> int:
        return self.sqr_config.latent_dim

    @property
    def embedder_hidden(self) -> int:
        return self.sqr_config.embedder_hidden

    # ---- loading / saving
    @classmethod
    def from_pretrained(cls, path_or_id: str, device: str = "auto", dtype: str = "auto",
                        reference_layout: bool = False, latent_dim: int = 0, embedder_hidden: int = 0,
                        attn_implementation: str = "sdpa", seed: int = 0, soft_scale: float = 1.0) -> "Policy":
        """Load model + processor (+ SQR modules beside them, or fresh ones if none are saved).

        latent_dim / embedder_hidden (0 = policy hidden) and soft_scale set up FRESH modules only; a saved
        sqr_config.json is authoritative (a conflicting explicit value is an error).
        reference_layout: read the authors' refine_* tensors from the model weights (reference_ckpt.py).
        """
        from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

        from videosearch_r1.agent import reference_ckpt
        from videosearch_r1.utils import resolve_device, resolve_dtype

        path = _resolve(path_or_id)
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        processor = AutoProcessor.from_pretrained(path)
        model = Qwen3VLForConditionalGeneration.from_pretrained(
            path, dtype=torch_dtype, attn_implementation=attn_implementation)
        _ensure_refine_token(model, processor)
        hidden = model.config.text_config.hidden_size
        if reference_layout:
            sqr_cfg, state = reference_ckpt.load_reference_sqr(path)
        elif (path / SQR_WEIGHTS).exists():
            from safetensors.torch import load_file

            if not (path / SQR_CONFIG).exists():
                raise PolicyLoadError(f"{path}: {SQR_WEIGHTS} without {SQR_CONFIG}")
            sqr_cfg = SQRConfig.load(path / SQR_CONFIG)
            for name, asked, saved in (("latent_dim", latent_dim, sqr_cfg.latent_dim),
                                       ("embedder_hidden", embedder_hidden, sqr_cfg.embedder_hidden)):
                if asked and asked != saved:
                    raise PolicyLoadError(f"{path}: {name}={asked} asked but the saved SQR modules have {saved}")
            state = load_file(str(path / SQR_WEIGHTS))
        else:
            if reference_ckpt.has_reference_sqr(path):
                raise PolicyLoadError(f"{path} holds the authors' refine_* weights inside the model; "
                                      "load it with reference_layout=True (agent.reference_layout=true)")
            sqr_cfg = SQRConfig(hidden_size=hidden, latent_dim=latent_dim or hidden,
                                embedder_hidden=embedder_hidden or hidden, soft_scale=float(soft_scale))
            state = None
        sqr = SQRModules(sqr_cfg, seed=seed)
        if state is not None:
            missing, unexpected = sqr.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise PolicyLoadError(f"{path}: SQR weights do not match the config: missing {missing}, "
                                      f"unexpected {unexpected}")
        model.to(dev).eval()
        sqr.to(dev).eval()
        return cls(model, processor, sqr, sqr_cfg)  # decode path: set_decode() defaults for `dev`

    def save_pretrained(self, path: str | Path) -> Path:
        """HF model + processor files, plus sqr.safetensors and sqr_config.json (written atomically)."""
        from safetensors.torch import save_file

        from videosearch_r1.utils import atomic_path, atomic_write_text

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)
        state = {k: v.detach().float().contiguous().cpu() for k, v in self.sqr.state_dict().items()}
        with atomic_path(path / SQR_WEIGHTS) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        atomic_write_text(path / SQR_CONFIG, self.sqr_config.to_json())
        return path

    # ---- inputs
    def prompt_texts(self, queries: list[str], clips: list[Any], method: str = "sqr") -> list[str]:
        from videosearch_r1.models.qwen3vl import render_chat

        return [render_chat(self.processor, build_messages(q, c, method)) for q, c in zip(queries, clips)]

    def build_inputs(self, queries: list[str], clips: list[Any], method: str = "sqr",
                     responses: list[str] | None = None) -> dict:
        """Left-padded processor batch on the policy's device: prompts (+ `responses` appended verbatim).
        Video pixels are made on the policy's device from the uint8 frames (qwen3vl.fast_video_inputs: the
        processor's own arithmetic, equal outputs) unless a clip would be resized; then the processor runs."""
        from videosearch_r1.models.qwen3vl import fast_video_inputs, video_kwargs

        if len(queries) != len(clips) or (responses is not None and len(responses) != len(queries)):
            raise ValueError(f"batch mismatch: {len(queries)} queries, {len(clips)} clips, "
                             f"{None if responses is None else len(responses)} responses")
        texts = self.prompt_texts(queries, clips, method)
        if responses is not None:
            texts = [t + r for t, r in zip(texts, responses)]
        self.processor.tokenizer.padding_side = "left"
        fast = fast_video_inputs(self.processor, texts, clips, self.device) if self.fast_video and clips else None
        if fast is not None:
            return fast
        batch = self.processor(text=texts, **video_kwargs(clips), padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def append_completions(self, inputs: dict, completions: list[list[int]]) -> dict:
        """prompt batch + completion ids (e.g. the sampled ids), right-padded: the sequences the policy
        actually produced, for log-probs or an SQR rollout. Completion tokens are text (type 0)."""
        b = inputs["input_ids"].shape[0]
        if len(completions) != b:
            raise ValueError(f"{len(completions)} completions for a batch of {b}")
        width = max([len(c) for c in completions] + [0])
        ids = torch.full((b, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros(b, width, dtype=torch.long)
        for i, c in enumerate(completions):
            ids[i, :len(c)] = torch.as_tensor(list(c), dtype=torch.long)
            mask[i, :len(c)] = 1
        out = dict(inputs)
        out["input_ids"] = torch.cat([inputs["input_ids"], ids.to(self.device)], dim=1)
        out["attention_mask"] = torch.cat([inputs["attention_mask"], mask.to(self.device)], dim=1)
        if inputs.get("mm_token_type_ids") is not None:
            types = inputs["mm_token_type_ids"]
            out["mm_token_type_ids"] = torch.cat([types, types.new_zeros(b, width)], dim=1)
        return out

    def positions(self, inputs: dict) -> torch.Tensor:
        """mRoPE position ids [3, B, L] of a processor batch."""
        from videosearch_r1.models.qwen3vl import rope_positions

        return rope_positions(self.model, inputs)

    # ---- generation
    @torch.no_grad()
    def generate(self, queries: list[str], clips: list[Any], max_new_tokens: int = 256,
                 temperature: float = 0.0, method: str = "sqr", keep_state: bool = False,
                 reserve: int = 16, seed: int | None = None, ignore_eos: bool = False, top_p: float = 1.0,
                 generator: torch.Generator | None = None) -> Generation:
        """One verification turn for a batch: greedy by default (temperature 0), left padding.
        Sampling (temperature > 0, top_p) draws from `generator` (on the policy's device), else from a
        fresh one seeded with `seed`: a seeded run repeats exactly (GRPO rollouts pass one generator).

        keep_state keeps the KV cache and per-token hidden states so an SQR rollout can continue
        from the generated <REFINE> without a second prefill (`reserve` cache columns for latents).
        """
        inputs = self.build_inputs(queries, clips, method)
        res = self.generate_ids(inputs, max_new_tokens, temperature=temperature, keep_state=keep_state,
                                reserve=reserve, seed=seed, ignore_eos=ignore_eos, top_p=top_p, generator=generator,
                                video_keys=self.video_keys(clips))
        return self._finish(res, inputs["input_ids"].shape[1])

    @torch.no_grad()
    def generate_ids(self, inputs: dict, max_new_tokens: int = 256, temperature: float = 0.0,
                     keep_state: bool = False, reserve: int = 16, seed: int | None = None,
                     ignore_eos: bool = False, top_p: float = 1.0, generator: torch.Generator | None = None,
                     video_keys: list[str] | None = None):
        """`generate` on a processor batch (left padded, on the policy's device): the same prefill
        (self.prefill_plan; `video_keys`, one per video, let the visual-token cache serve repeats) and decode
        path (self.decode_options), ids in and out, no text (bench/bench_agent.py times this). -> DecodeResult"""
        from videosearch_r1.agent.decode import generate_tokens

        gen = generator
        if gen is None and seed is not None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed)
        return generate_tokens(self.model, inputs, self.positions(inputs), max_new_tokens, self.eos_token_ids,
                               self.pad_token_id, temperature=temperature, generator=gen, options=self.decode_options,
                               keep_state=keep_state, reserve=reserve, ignore_eos=ignore_eos, top_p=top_p,
                               plan=self._plan(video_keys), banned_ids=sorted(self.placeholder_ids))

    @property
    def placeholder_ids(self) -> set[int]:
        """Ids the forward treats as vision placeholders (video / image pads, vision start / end): never
        generated (a completion holding one cannot be re-run as text: the model would expect features)."""
        c = self.model.config
        return {int(x) for x in (c.video_token_id, c.image_token_id, getattr(c, "vision_start_token_id", None),
                                 getattr(c, "vision_end_token_id", None)) if x is not None}

    def _plan(self, video_keys: list[str] | None):
        """This call's PrefillPlan (the policy's template + its cache and the batch's video keys), or None."""
        from dataclasses import replace

        if self.prefill_plan is None or self.model.training:  # training mode: the plain HF forward
            return None
        cache = self.vision_cache if video_keys is not None else None
        return replace(self.prefill_plan, cache=cache, video_keys=video_keys)

    def _finish(self, res, prompt_len: int) -> Generation:
        ids = res.ids.cpu().tolist()
        lengths, n_text = res.lengths.cpu().tolist(), res.n_text.cpu().tolist()
        tok = self.processor.tokenizer
        texts = [tok.decode(row[:n], skip_special_tokens=False) for row, n in zip(ids, n_text)]
        has_refine = [self.refine_token_id in row[:n] for row, n in zip(ids, n_text)]
        return Generation(texts, [row[:n] for row, n in zip(ids, lengths)], n_text, has_refine, prompt_len,
                          res.state)

    def soft_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents Z [B, N, D] -> the embedder's soft input tokens [B, N, He] (fp32): to_embedder(Z) x soft_scale."""
        soft = self.sqr.to_embedder(latents.float())
        return soft if self.sqr_config.soft_scale == 1.0 else soft * self.sqr_config.soft_scale


def _ensure_refine_token(model, processor) -> None:
    """Add <REFINE> as a special token if missing; grow (never shrink) the embeddings to fit it."""
    tok = processor.tokenizer
    if REFINE_TOKEN not in tok.get_vocab():
        tok.add_tokens([REFINE_TOKEN], special_tokens=True)
    need = max(tok.convert_tokens_to_ids(REFINE_TOKEN) + 1, len(tok))
    if need > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(need)
