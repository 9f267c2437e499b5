"""Load the authors' released policy checkpoints (mlvlab/VideoSearch-R1): their SQR modules live INSIDE the
model state dict, next to the Qwen3-VL weights, under these prefixes (reference.md §1):

    refine_projector.{0,1,3}.*              Linear(H->D), LayerNorm(D), [GELU], Linear(D->D)  -> readout.*
    refine_latent_input_projector.{0,1}.*   LayerNorm(D), Linear(D->H)                         -> to_policy.*
    refine_append_input_projector.{0,1}.*   LayerNorm(D), Linear(D->He)                        -> to_embedder.*
    refine_gate.*                           Linear(H->1): off in every released config (USE_REFINE_GATE=False);
                                            read, reported, never applied
    query_embedder_head.*                   Identity when He == D (2B: no tensors); a Linear is not supported

    Policy.from_pretrained(path, reference_layout=True)

Quirks that come with these weights (and are recorded in the converted sqr_config.json, so a policy
saved with `save_pretrained` reloads with them and no flags):
- the seed reads the PRE-norm hidden state at <REFINE> (`hidden_states[-1]` of the CausalLM output),
  while rollout steps read post-norm (reference §2.1 step 6)     -> seed_hidden = "pre_norm";
- the embedder inserts the soft tokens before the last 6 template tokens (`tail_len = 6`, i.e. before
  the query's last text token, reference §2.2)                    -> soft_insert = "reference"
  (the engine must be configured with engine.soft_insert=reference for these weights).
The main weights load through transformers as usual (the refine_* keys are reported as unexpected).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

REFERENCE_PREFIXES = ("refine_projector.", "refine_gate.", "refine_latent_input_projector.",
                      "refine_append_input_projector.", "query_embedder_head.")
_MAP = {  # theirs -> ours (weights and biases alike)
    "refine_projector.0": "readout.0", "refine_projector.1": "readout.1", "refine_projector.3": "readout.3",
    "refine_latent_input_projector.0": "to_policy.0", "refine_latent_input_projector.1": "to_policy.1",
    "refine_append_input_projector.0": "to_embedder.0", "refine_append_input_projector.1": "to_embedder.1",
}


def _weight_files(path: Path) -> list[Path]:
    """The checkpoint's weight files holding refine_* tensors (single file or via the shard index)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text()).get("weight_map", {})
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{index}: unreadable shard index: {e}") from None
            shards = sorted({f for k, f in weight_map.items() if k.startswith(REFERENCE_PREFIXES)})
            return [path / s for s in shards]
    return [p for p in (path / "model.safetensors", path / "pytorch_model.bin") if p.exists()][:1]


def _read(file: Path, only_keys: bool = False):
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as f:
            keys = [k for k in f.keys() if k.startswith(REFERENCE_PREFIXES)]
            return keys if only_keys else {k: f.get_tensor(k) for k in keys}
    state = torch.load(file, map_location="cpu", weights_only=True)
    keys = [k for k in state if k.startswith(REFERENCE_PREFIXES)]
    return keys if only_keys else {k: state[k] for k in keys}


def read_reference_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every refine_* / query_embedder_head.* tensor of the checkpoint at `path` (their names)."""
    path = Path(path)
    out: dict[str, torch.Tensor] = {}
    for file in _weight_files(path):
        if not file.exists():
            raise ValueError(f"{path}: shard {file.name} named by the index is missing")
        out.update(_read(file))
    return out


def has_reference_sqr(path: str | Path) -> bool:
    """True when the model weights at `path` carry the authors' refine_* tensors (reads key names only)."""
    path = Path(path)
    try:
        return any(_read(f, only_keys=True) for f in _weight_files(path) if f.exists())
    except Exception:  # an unreadable file is reported by the real load, not here
        return False


def convert_reference_state(theirs: dict[str, torch.Tensor], where: str = "checkpoint"):
    """Their tensors -> (SQRConfig, our state dict, notes). Raises ValueError naming what is wrong."""
    from videosearch_r1.agent.policy import SQRConfig

    notes = []
    ours = {}
    for key, value in theirs.items():
        if key.startswith(("refine_gate.", "query_embedder_head.")):
            continue
        stem, _, leaf = key.rpartition(".")
        if stem not in _MAP or leaf not in ("weight", "bias"):
            raise ValueError(f"{where}: unexpected reference SQR tensor {key!r}")
        ours[f"{_MAP[stem]}.{leaf}"] = value.float()
    needed = [f"{v}.{leaf}" for v in _MAP.values() for leaf in ("weight", "bias")]
    missing = [k for k in needed if k not in ours]
    if missing:
        raise ValueError(f"{where}: reference SQR tensors missing for {missing} (found {sorted(theirs)})")
    if any(k.startswith("query_embedder_head.") for k in theirs):
        raise ValueError(f"{where}: a query_embedder_head Linear (embedder hidden != retrieval dim) is not "
                         "supported; released 2B checkpoints use Identity")
    if any(k.startswith("refine_gate.") for k in theirs):
        notes.append("refine_gate present and ignored (USE_REFINE_GATE=False in every released config)")
    d, h = ours["readout.0.weight"].shape
    he = ours["to_embedder.1.weight"].shape[0]
    cfg = SQRConfig(hidden_size=int(h), latent_dim=int(d), embedder_hidden=int(he), seed_hidden="pre_norm",
                    soft_insert="reference", zero_init_readout=False, source="reference")
    return cfg, ours, notes


def load_reference_sqr(path: str | Path):
    """(SQRConfig, our state dict) from the authors' checkpoint directory `path`."""
    theirs = read_reference_tensors(path)
    if not theirs:
        raise ValueError(f"{path}: reference_layout=True but the model weights hold no refine_* tensors")
    cfg, ours, notes = convert_reference_state(theirs, where=str(path))
    for note in notes:
        print(f"[reference_ckpt] {path}: {note}")
    return cfg, ours


def save_reference_layout(model, processor, sqr_state: dict[str, torch.Tensor], path: str | Path,
                          gate: bool = True) -> Path:
    """Write a checkpoint in the authors' layout (HF files + refine_* tensors inside model.safetensors).

    For tests and conversions back: `sqr_state` is our SQRModules state dict.
    """
    from safetensors.torch import load_file, save_file

    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    file = path / "model.safetensors"
    if not file.exists():
        raise ValueError(f"{path}: save_reference_layout supports single-file checkpoints only")
    state = load_file(str(file))
    inverse = {v: k for k, v in _MAP.items()}
    for key, value in sqr_state.items():
        stem, _, leaf = key.rpartition(".")
        state[f"{inverse[stem]}.{leaf}"] = value.detach().to(torch.float32).contiguous().cpu()
    if gate:
        h = sqr_state["readout.0.weight"].shape[1]
        state["refine_gate.weight"] = torch.zeros(1, h)
        state["refine_gate.bias"] = torch.zeros(1)
    save_file(state, str(file), metadata={"format": "pt"})
    return path
