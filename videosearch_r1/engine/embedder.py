"""The query/video embedder: any Qwen3-VL-Embedding checkpoint (hub id or local dir) as transformers'
Qwen3VLModel, with last-token pooling, L2 normalisation, and soft tokens (latent vectors) for SQR.

    emb = Embedder.from_pretrained("Qwen/Qwen3-VL-Embedding-2B")          # or a tiny local checkpoint
    q = emb.embed_texts(["a small red square jumps on a blue wall"])     # [B, D] float32, unit norm
    v = emb.embed_videos([load_clip(cfg, "synth", "vid3")])               # [B, D]
    r = emb.embed_soft(["a small red square ..."], latents)               # latents [B, N, He], differentiable

Prompt (as the official embedder): system = instruction (a period appended if it has no final
punctuation), user = the text or the video, then the generation prompt "<|im_start|>assistant\\n".
Videos use the canonical layout (models/qwen3vl.py) with the clip's true timestamps. The vector is the
post-norm last hidden state of the last real token (left padding; any padding side pools correctly),
optionally truncated to `dim` (Matryoshka), L2-normalised, float32.

Soft tokens: a batch of latents [B, N, He] is inserted into the query's input embeddings at one column
(left padding makes the tail of every row line up):
- "before_tail": right after the user text, before "<|im_end|>\\n<|im_start|>assistant\\n";
- "reference":   before the last 6 tokens, as the authors' code does (reference.md §2.2; with Qwen's
  5-token tail this lands before the last token of the query text).
Latents get attention mask 1 and positions continuing the text (tokens after them shift by N), so
N = 0 gives exactly the plain query's vector, and pooling reads the final template token.
Model weights are frozen unless `trainable=True`; `grad=True` keeps the graph (to the latents, and to
the weights when trainable). bf16 on GPU, fp32 on CPU by default.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

import videosearch_r1  # noqa: F401  (torchvision shim before transformers)
from videosearch_r1.models.qwen3vl import (configure_processor, prepare_model, render_chat,
                                           rope_positions, text_positions, video_kwargs)

SOFT_INSERT_MODES = ("before_tail", "reference")
REFERENCE_TAIL = 6  # the authors insert latents before the last 6 tokens (tail_len = 6)
GEN_TAIL = "<|im_end|>\n<|im_start|>assistant\n"  # what follows the user text in the prompt


@dataclass
class TextBatch:
    input_ids: torch.Tensor  # [B, L] left-padded
    attention_mask: torch.Tensor  # [B, L]
    truncated: int  # queries shortened to fit max_query_tokens


class Embedder:
    """Qwen3VLModel + processor; see the module docstring for the prompt, pooling and soft tokens."""

    def __init__(self, model, processor, device: str = "cpu", dtype=torch.float32,
                 instruction: str = "Represent the user's input.", soft_insert: str = "before_tail",
                 max_query_tokens: int = 128, dim: int = 0, batch_size: int = 32):
        if soft_insert not in SOFT_INSERT_MODES:
            raise ValueError(f"soft_insert must be one of {SOFT_INSERT_MODES}, got {soft_insert!r}")
        self.model, self.processor, self.device, self.dtype = model, processor, device, dtype
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.instruction = _with_period(instruction)
        self.soft_insert = soft_insert
        self.max_query_tokens = int(max_query_tokens)
        self.hidden_size = int(model.config.text_config.hidden_size)  # He
        if dim < 0 or dim > self.hidden_size:
            raise ValueError(f"dim must be in [0, {self.hidden_size}], got {dim}")
        self.dim = int(dim) or self.hidden_size  # D
        self.batch_size = max(1, int(batch_size))
        self.truncated_queries = 0  # running count of queries shortened to max_query_tokens
        self._tail_ids = self.tokenizer.encode(GEN_TAIL, add_special_tokens=False)
        self.source: str | None = None  # the checkpoint directory the weights were loaded from (from_pretrained)
        self._fingerprint: str | None = None

    @classmethod
    def from_pretrained(cls, path_or_id, device="auto", dtype="auto", instruction="Represent the user's input.",
                        soft_insert="before_tail", max_query_tokens=128, dim: int = 0, batch_size: int = 32,
                        video_cfg=None, trainable: bool = False, fast_vision: bool = True, cache_dir=None,
                        local_files_only: bool = False, revision=None) -> "Embedder":
        """Load a checkpoint (either Qwen3-VL layout: `model.`-prefixed as the hub ships, or a saved
        Qwen3VLModel) with AutoModel. `video_cfg` (default VideoConfig()) sets processor bounds that
        keep front-door frames unresized."""
        from transformers import AutoModel, AutoProcessor

        from videosearch_r1.config import VideoConfig
        from videosearch_r1.models.hub import resolve_checkpoint
        from videosearch_r1.utils import resolve_device, resolve_dtype

        path = resolve_checkpoint(str(path_or_id), cache_dir=cache_dir, local_files_only=local_files_only,
                                  revision=revision)
        device = resolve_device(device)
        torch_dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, device)
        model = AutoModel.from_pretrained(path, dtype=torch_dtype)
        if type(model).__name__ != "Qwen3VLModel":
            raise ValueError(f"{path_or_id}: expected a qwen3_vl checkpoint (Qwen3VLModel), got {type(model).__name__}")
        model.to(device)
        model.train(trainable)
        model.requires_grad_(trainable)
        if fast_vision:  # the one fast step (batched vision attention + linear patch embed), as engine training
            prepare_model(model)
        processor = configure_processor(AutoProcessor.from_pretrained(path), video_cfg or VideoConfig())
        emb = cls(model, processor, device=device, dtype=torch_dtype, instruction=instruction,
                  soft_insert=soft_insert, max_query_tokens=max_query_tokens, dim=dim, batch_size=batch_size)
        emb.source = str(path)
        if not trainable:
            emb.fingerprint()  # of the files as loaded now (a later rewrite of them must not change it)
        return emb

    @classmethod
    def from_config(cls, cfg, dataset: str | None = None, **overrides) -> "Embedder":
        """From the `engine` section (model = cfg.engine_model()) and the dataset's video budget."""
        e = cfg.engine
        kwargs = dict(device=e.device, dtype=e.dtype, instruction=e.instruction, soft_insert=e.soft_insert,
                      max_query_tokens=e.max_query_tokens, dim=e.dim, batch_size=e.batch_size,
                      video_cfg=cfg.video_cfg(dataset))
        kwargs.update(overrides)
        return cls.from_pretrained(cfg.engine_model(), **kwargs)

    def fingerprint(self) -> str:
        """What decides this embedder's vectors (videosearch_r1/fingerprint.py): the weight files' content
        (frozen weights loaded from a directory; else the parameters in memory), instruction and dim."""
        from videosearch_r1 import fingerprint as fp

        frozen = not any(p.requires_grad for p in self.model.parameters())
        if self._fingerprint is not None and frozen:
            return self._fingerprint
        if self.source and frozen:
            weights = fp.dir_digest(self.source)
        else:
            h = hashlib.sha256()
            for name, t in sorted(self.model.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
            weights = "state:" + h.hexdigest()[:fp.SHORT]
        out = engine_fingerprint(weights, self.instruction, self.dim)
        if frozen:
            self._fingerprint = out
        return out

    def save_pretrained(self, path) -> None:
        """Model (Qwen3VLModel layout) + processor; loads back with from_pretrained."""
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    # ------------------------------------------------------------------ prompts
    def _messages(self, content) -> list[dict]:
        return [{"role": "system", "content": self.instruction}, {"role": "user", "content": content}]

    def text_prompt(self, text: str) -> str:
        return render_chat(self.processor, self._messages([{"type": "text", "text": text}]))

    def video_prompt(self) -> str:
        return render_chat(self.processor, self._messages([{"type": "video"}]))

    def prepare_texts(self, texts: list[str]) -> TextBatch:
        """Tokenise queries (left padding). A query longer than max_query_tokens (whole prompt) is cut
        at the end of its text, keeping the template tail; counted in `truncated`."""
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"query {i} is empty or not a string: {t!r}")
        prompts = [self.text_prompt(t) for t in texts]
        lens = [len(x) for x in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        truncated = 0
        for i, n in enumerate(lens):
            if n > self.max_query_tokens:
                ids = self.tokenizer.encode(texts[i], add_special_tokens=False)
                keep = len(ids) - (n - self.max_query_tokens)
                if keep < 1:
                    raise ValueError(f"max_query_tokens={self.max_query_tokens} leaves no room for query {i}")
                while keep >= 1:  # decode/encode may merge differently at the cut: shrink until it fits
                    prompts[i] = self.text_prompt(self.tokenizer.decode(ids[:keep]))
                    if len(self.tokenizer.encode(prompts[i], add_special_tokens=False)) <= self.max_query_tokens:
                        break
                    keep -= 1
                truncated += 1
        enc = self.tokenizer(prompts, add_special_tokens=False, padding=True, padding_side="left",
                             return_tensors="pt")
        self.truncated_queries += truncated
        return TextBatch(enc["input_ids"], enc["attention_mask"], truncated)

    def prepare_videos(self, clips) -> dict:
        """Processor outputs for a batch of clips (frames + true timestamps), left padded."""
        prompt = self.video_prompt()
        return dict(self.processor(text=[prompt] * len(clips), **video_kwargs(clips), padding=True,
                                   padding_side="left", return_tensors="pt"))

    # ------------------------------------------------------------------ forward
    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last real token's state -> Matryoshka truncation -> L2 normalised float32 [B, D]."""
        length = mask.shape[1]
        last = length - 1 - mask.flip(1).long().argmax(1)
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()[:, : self.dim]
        return torch.nn.functional.normalize(h, dim=-1)

    def encode(self, inputs: dict, grad: bool = False) -> torch.Tensor:
        """Vectors [B, D] for processor outputs (text or video); differentiable when grad=True."""
        inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()
                  if k != "video_metadata"}
        if "pixel_values_videos" in inputs:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.dtype)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        if inputs.get("video_grid_thw") is not None or inputs.get("image_grid_thw") is not None:
            pos = rope_positions(self.model, inputs)
        else:
            pos = text_positions(inputs["attention_mask"])
        with torch.set_grad_enabled(grad):
            out = self.model(**inputs, position_ids=pos)
            return self._pool(out.last_hidden_state, inputs["attention_mask"])

    def insert_column(self, input_ids: torch.Tensor) -> int:
        """Column where latents go in a left-padded prompt batch [B, L] (see the module docstring)."""
        length = input_ids.shape[1]
        if self.soft_insert == "reference":
            return length - REFERENCE_TAIL
        tail = torch.tensor(self._tail_ids, device=input_ids.device)
        n = len(self._tail_ids)
        if not bool((input_ids[:, length - n:] == tail).all()):
            raise ValueError("query prompts do not end with the generation tail "
                             f"{GEN_TAIL!r}; cannot place soft tokens before it")
        return length - n

    def _soft_forward(self, batch: TextBatch, soft: torch.Tensor | None) -> torch.Tensor:
        ids = batch.input_ids.to(self.device)
        mask = batch.attention_mask.to(self.device)
        embeds = self.model.get_input_embeddings()(ids)
        if soft is not None and soft.shape[1] > 0:
            col = self.insert_column(ids)
            soft = soft.to(self.device, embeds.dtype)
            embeds = torch.cat([embeds[:, :col], soft, embeds[:, col:]], dim=1)
            ones = torch.ones(mask.shape[0], soft.shape[1], dtype=mask.dtype, device=mask.device)
            mask = torch.cat([mask[:, :col], ones, mask[:, col:]], dim=1)
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=text_positions(mask))
        return self._pool(out.last_hidden_state, mask)

    # ------------------------------------------------------------------ public API
    def embed_texts(self, texts: list[str], grad: bool = False) -> torch.Tensor:
        """[B, D] float32 unit vectors for text queries."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.prepare_texts(texts[i: i + self.batch_size])
            with torch.set_grad_enabled(grad):
                out.append(self._soft_forward(batch, None))
        return torch.cat(out) if out else torch.empty(0, self.dim)

    def embed_videos(self, clips, grad: bool = False) -> torch.Tensor:
        """[B, D] float32 unit vectors for clips (frames + true timestamps)."""
        out = [self.encode(self.prepare_videos(clips[i: i + self.batch_size]), grad=grad)
               for i in range(0, len(clips), self.batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.dim)

    def embed_soft(self, texts: list[str], soft, grad: bool = True) -> torch.Tensor:
        """[B, D] for queries with latents soft [B, N, He] inserted (N = 0: same as embed_texts)."""
        soft = torch.as_tensor(soft) if isinstance(soft, np.ndarray) else soft
        if soft.ndim != 3 or soft.shape[0] != len(texts) or soft.shape[2] != self.hidden_size:
            raise ValueError(f"soft tokens must have shape [B={len(texts)}, N, He={self.hidden_size}], "
                             f"got {list(soft.shape)}")
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.prepare_texts(texts[i: i + self.batch_size])
            with torch.set_grad_enabled(grad):
                out.append(self._soft_forward(batch, soft[i: i + self.batch_size]))
        return torch.cat(out) if out else torch.empty(0, self.dim)


def engine_fingerprint(weights: str, instruction: str, dim: int) -> str:
    """Embedder.fingerprint from its parts, for code that writes an index without loading the model (e.g.
    converted released embeddings): weights = fingerprint.dir_digest(checkpoint dir), instruction as
    configured, dim = the vector width (engine.dim, or the hidden size when that is 0)."""
    from videosearch_r1.fingerprint import digest

    return digest({"weights": weights, "instruction": _with_period(instruction), "dim": int(dim)})


def _with_period(instruction: str) -> str:
    s = instruction.strip()
    return s if not s or s[-1] in ".!?:;。" else s + "."
