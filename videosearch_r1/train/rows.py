"""Training rows: the ONE JSONL schema that base pretraining, SFT and GRPO share, and the collate that
turns rows + clips into policy inputs.

    rows, problems = read_rows("sft_train.jsonl")                  # validated; problems name file:line:field
    batch = collate(policy, rows[:4], [clip_fn(r.video) for r in rows[:4]])
    batch.inputs, batch.labels, batch.refine_pos                    # tensors for the training forward

One row a line (UTF-8 JSON object):
    {"id": str,                   # unique within the file
     "dataset": str, "split": str,
     "video": str,                # id of the video SHOWN to the policy (<root>/videos/<id>.mp4)
     "kind": "verify" | "task",   # verify: prompts.build_messages(query, clip) (the agent's turn)
                                  # task: prompts.build_task_messages(query, clip) (a generic instruction)
     "query": str,                # the search query (verify) or the instruction (task)
     "target": str,               # the assistant text; verify rows follow prompts.format_target's grammar
     "positive": str | null,      # GT video id for InfoNCE (rows whose target ends with <REFINE>)
     "negatives": [str, ...]}     # InfoNCE negatives (never the positive)
Extra keys are allowed and kept in `TrainRow.meta` (e.g. "label", "gt_span", "source").

Collate: the prompt is rendered by the same builders and chat template as inference (render_chat,
canonical video layout, true timestamps), tokenised by the policy's processor; the target is tokenised
alone and appended with <|im_end|> (so no BPE merge crosses the boundary); rows are left padded.
Labels are the assistant tokens only (target + <|im_end|>); everything else is -100. Positions are
`qwen3vl.rope_positions` (no per-sample loop). Rows longer than `max_tokens` are dropped from the
batch and reported in `Batch.skipped` (the caller counts them).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from videosearch_r1.agent.prompts import REFINE_TOKEN, build_messages, build_task_messages, parse_output

KINDS = ("verify", "task")
END_OF_TURN = "<|im_end|>"
_FIELDS = ("id", "dataset", "split", "video", "kind", "query", "target", "positive", "negatives")


class RowError(ValueError):
    """A malformed training row; the message names file:line and the field."""


@dataclass(frozen=True)
class TrainRow:
    id: str
    dataset: str
    split: str
    video: str  # the video shown
    kind: str  # "verify" | "task"
    query: str  # query (verify) or instruction (task)
    target: str  # assistant text
    positive: str | None = None  # GT video for InfoNCE
    negatives: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False)  # extra keys, kept verbatim

    @property
    def has_refine(self) -> bool:
        """The target ends with <REFINE>: the row gets the InfoNCE term (when it has a positive)."""
        return self.target.rstrip().endswith(REFINE_TOKEN)

    @property
    def contrastive(self) -> bool:
        return self.has_refine and self.positive is not None and len(self.negatives) > 0

    def to_json(self) -> dict:
        out = {"id": self.id, "dataset": self.dataset, "split": self.split, "video": self.video, "kind": self.kind,
               "query": self.query, "target": self.target, "positive": self.positive,
               "negatives": list(self.negatives)}
        out.update(self.meta)
        return out


def row_from_json(obj: Any, where: str = "row") -> TrainRow:
    """Validate one decoded JSON object; RowError names `where` and the field."""
    if not isinstance(obj, dict):
        raise RowError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for name in ("id", "dataset", "split", "video", "kind", "query", "target"):
        v = obj.get(name)
        if not isinstance(v, str) or not v.strip():
            raise RowError(f"{where}: field {name!r} must be a non-empty string, got {v!r}")
    if obj["kind"] not in KINDS:
        raise RowError(f"{where}: field 'kind' must be one of {KINDS}, got {obj['kind']!r}")
    pos = obj.get("positive")
    if pos is not None and (not isinstance(pos, str) or not pos):
        raise RowError(f"{where}: field 'positive' must be a video id or null, got {pos!r}")
    negs = obj.get("negatives", [])
    if not isinstance(negs, list) or not all(isinstance(x, str) and x for x in negs):
        raise RowError(f"{where}: field 'negatives' must be a list of video ids, got {negs!r}")
    if pos is not None and pos in negs:
        raise RowError(f"{where}: field 'negatives' contains the positive {pos!r}")
    if obj["kind"] == "verify":
        parsed = parse_output(obj["target"])
        if not parsed.ok:
            raise RowError(f"{where}: field 'target' does not follow the output grammar: {'; '.join(parsed.errors)}")
    meta = {k: v for k, v in obj.items() if k not in _FIELDS}
    return TrainRow(obj["id"], obj["dataset"], obj["split"], obj["video"], obj["kind"], obj["query"],
                    obj["target"], pos, tuple(negs), meta)


def read_rows(path: str | Path, skip_bad: bool = False) -> tuple[list[TrainRow], list[str]]:
    """All rows of a JSONL file. A bad line raises RowError (file:line: field), or with skip_bad is left
    out and listed in the returned problems (the caller reports the count). Duplicate ids are errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training rows not found")
    rows, problems, seen = [], [], set()
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{i}"
            try:
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise RowError(f"{where}: not valid JSON ({e})") from None
                row = row_from_json(obj, where)
                if row.id in seen:
                    raise RowError(f"{where}: field 'id': duplicate id {row.id!r}")
            except RowError as e:
                if not skip_bad:
                    raise
                problems.append(str(e))
                continue
            seen.add(row.id)
            rows.append(row)
    return rows, problems


def write_rows(path: str | Path, rows: list[TrainRow]) -> Path:
    """Write rows as JSONL atomically (temp file + rename)."""
    from videosearch_r1.utils import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    return path


# ----------------------------------------------------------------------------- collate
class Batch(NamedTuple):
    inputs: dict  # input_ids / attention_mask / mm_token_type_ids [B, L] (left padded), pixels, grids,
    #               position_ids [3, B, L] (rope_positions)
    labels: torch.Tensor  # [B, L] target ids on assistant tokens, -100 elsewhere
    refine_pos: torch.Tensor  # [B] column of the last <REFINE> inside the target, -1 if none
    rows: list[TrainRow]  # the rows kept, in batch order
    skipped: list[tuple[str, str]]  # (row id, reason) dropped here (too long)
    n_tokens: int  # real tokens in the batch (prompt + target)


def messages_for(row: TrainRow, clip) -> list[dict]:
    return build_messages(row.query, clip, "sqr") if row.kind == "verify" else build_task_messages(row.query, clip)


def _split_pixels(enc: dict, n: int) -> list[torch.Tensor | None]:
    """Per-row pixel rows of a processor batch (one video per row, in order)."""
    grid = enc.get("video_grid_thw")
    if grid is None:
        return [None] * n
    sizes = [int(x) for x in grid.prod(-1)]
    return list(torch.split(enc["pixel_values_videos"], sizes))


def _encode(proc, prompts: list[str], clips: list, device) -> dict:
    """The processor's batch for the prompts; the video pixels made on `device` from the uint8 frames
    (qwen3vl.fast_video_inputs: equal to the processor's, which spends ~0.4 s of CPU on 32 small clips, the
    bulk of a small model's step) unless a clip needs resizing (then the processor, on the CPU)."""
    from videosearch_r1.models.qwen3vl import fast_video_inputs, video_kwargs

    fast = fast_video_inputs(proc, prompts, clips, device, text_device="cpu") if clips and device is not None else None
    if fast is None:
        return proc(text=prompts, **video_kwargs(clips), padding=True, padding_side="left", return_tensors="pt")
    return fast


def collate(policy, rows: list[TrainRow], clips: list, max_tokens: int = 0, device=None) -> Batch:
    """Rows + their clips -> a left-padded training batch (see the module docstring): ids, masks and
    positions on the CPU; the video pixels on `device` when given (made there from the frames), else CPU."""
    from videosearch_r1.models.qwen3vl import render_chat, rope_positions

    if len(rows) != len(clips):
        raise ValueError(f"{len(rows)} rows but {len(clips)} clips")
    proc = policy.processor
    tok = proc.tokenizer
    end_id = tok.convert_tokens_to_ids(END_OF_TURN)
    prompts = [render_chat(proc, messages_for(r, c)) for r, c in zip(rows, clips)]
    enc = _encode(proc, prompts, clips, device)
    pixels = _split_pixels(enc, len(rows))
    seqs, types, labels, refine, keep, skipped = [], [], [], [], [], []
    for i, row in enumerate(rows):
        real = enc["attention_mask"][i].bool()
        p_ids, p_types = enc["input_ids"][i][real], enc["mm_token_type_ids"][i][real]
        t_ids = torch.tensor(tok(row.target, add_special_tokens=False)["input_ids"] + [end_id], dtype=torch.long)
        n = len(p_ids) + len(t_ids)
        if max_tokens and n > max_tokens:
            skipped.append((row.id, f"{n} tokens > train.max_tokens={max_tokens}"))
            continue
        hits = (t_ids == policy.refine_token_id).nonzero()
        refine.append(len(p_ids) + int(hits[-1]) if len(hits) else -1)
        seqs.append(torch.cat([p_ids, t_ids]))
        types.append(torch.cat([p_types, torch.zeros_like(t_ids)]))
        labels.append(torch.cat([torch.full_like(p_ids, -100), t_ids]))
        keep.append(i)
    width = max([len(s) for s in seqs] + [0])
    b = len(seqs)
    ids = torch.full((b, width), policy.pad_token_id, dtype=torch.long)
    mask = torch.zeros(b, width, dtype=torch.long)
    tt = torch.zeros(b, width, dtype=torch.long)
    lab = torch.full((b, width), -100, dtype=torch.long)
    for j, (s, t, l) in enumerate(zip(seqs, types, labels)):
        ids[j, width - len(s):], mask[j, width - len(s):] = s, 1
        tt[j, width - len(s):], lab[j, width - len(s):] = t, l
    pad = torch.tensor([width - len(s) for s in seqs], dtype=torch.long)
    rpos = torch.tensor(refine, dtype=torch.long)
    rpos = torch.where(rpos >= 0, rpos + pad, rpos) if b else rpos
    inputs = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": tt}
    if b and pixels[0] is not None:
        inputs["pixel_values_videos"] = (enc["pixel_values_videos"] if len(keep) == len(rows)
                                         else torch.cat([pixels[i] for i in keep]))
        inputs["video_grid_thw"] = enc["video_grid_thw"][keep]
    if b:
        inputs["position_ids"] = rope_positions(policy.model.config, inputs)
    return Batch(inputs, lab, rpos, [rows[i] for i in keep], skipped, int(mask.sum()))
