"""Can the policy's language model learn the verification verdict from the SFT traces, given what is seen?
A learnability probe of the comparison alone (not a speed bench): the synthetic world's timelines (no video),
a world of its own (seed synth.seed + --world-seed-offset), per training query a matched pair (the GT) and a not-matched one (a sibling of the GT's family half the time,
another family's video otherwise); the text "Query: <fine query>" then the SFT trace of the pair
(train/sft_data.SynthTraces: "I see ... [The query asks for ...] <verdict>"), token CE on the trace with the
`small` policy's language model from scratch. Held-out, on that world's val + test queries: the share of rows
whose decisions are all right, teacher-forced: the verdict's first token ("From" = matched, "It" of "It does
not match"; chance 50 %), or for the checklist / query_first styles every "same" / "differs" and "seen" / "not seen" (the
verdict after them only reads them). So it measures comparing a perfect description with the query.

    python bench/probe_verdict.py --style restate --steps 600 --out probe_verdict_restate.json
    python bench/probe_verdict.py --style plain --steps 600 --out probe_verdict_plain.json
    python bench/probe_verdict.py --style plain --decision-weight 20 --out probe_verdict_plain_w20.json

--decision-weight W: the decision tokens weigh W times a trace token in the CE (a weighted mean): does the
one-bit decision fail to be learned because ~1 of ~40 target tokens carries it? --layers N: a deeper
language model (same width): is the comparison a matter of depth?

Measured 2026-12-01 on the 2-core CPU box: LOG.md (session 5: held-out partly the benchmark's test timelines;
session 6: the clean rerun, bench/results/probe_verdict_{checklist,plain}_cpu_2026-12-01b.json and
probe_verdict_query_first_cpu_2026-12-01.json; session 7: --decision-weight 20 changes nothing,
probe_verdict_plain_w20_cpu_2026-12-01c.json; --layers 8 learns it, 86.0 % at 1,000 steps against 68.2 % for
the 4-layer model, probe_verdict_plain_l8_cpu_2026-12-01c.json; session 8: `--style details` against the checklist
at 8 layers, implied verdict 91.9 vs 82.0 % at 750 steps, probe_verdict_{details,checklist}_l8_cpu_2026-12-01d.json).
Columns: every decision right (held-out) and the implied verdict (matched iff every decision prefers its
no-difference token), which compares styles with different numbers of checks.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import videosearch_r1  # noqa: F401  (torchvision shim before transformers)
from videosearch_r1.utils import atomic_write_json

VERDICT = {"matched": " From ", "not_matched": " It does not match"}
# the checklist's judgements: each is a decision of its own (the verdict after them only reads them)
# (checklist: "object a / b: same;" ... "event X: seen."; query_first: "object same;" ... "event seen.")
CHOICES = [(re.compile(r"(?:: |object |beside |wall )(same|differs)[;.]"), ("same", "differs")),
           (re.compile(r"(?:: |event )(seen|not seen)\."), ("seen", "not"))]


def pairs(world, split_names: set[str], rng: random.Random) -> list[tuple]:
    """(query, shown video id, label) per query of the splits: its GT, and a sibling or another family's video."""
    fams = [f for f in world.families if f.split in split_names]
    every = [v.video_id for f in fams for v in f.videos]
    out = []
    for f in fams:
        for v in f.videos:
            for q in v.queries:
                qn = SimpleNamespace(video_id=v.video_id, fig_desc=q.fig_desc, qid=f"{v.video_id}:{q.segment}")
                out.append((qn, v.video_id, "matched"))
                sibs = [s.video_id for s in f.videos if s.video_id != v.video_id]
                other = rng.choice(sibs) if sibs and rng.random() < 0.5 else rng.choice(
                    [x for x in every if not x.startswith(v.video_id.rsplit("v", 1)[0])] or every)
                out.append((qn, other, "not_matched"))
    return out


def _position(tok, text: str, at: int, ids: list[int]) -> int | None:
    """The index in `ids` (the tokens of `text`) of the first non-space token from character `at` on."""
    upto = tok.encode(text[:at].rstrip(), add_special_tokens=False)
    if ids[:len(upto)] != upto:  # not on a token boundary
        return None
    pos = len(upto)
    while pos < len(ids) and not tok.decode([ids[pos]]).strip():  # the tiny tokenizer's lone space token
        pos += 1
    return pos if pos < len(ids) else None


def encode(tok, traces, rows) -> list[dict]:
    """Token ids of "Query: q\\n" + trace, the loss start (trace tokens) and the decisions: [(position, right
    token, wrong token, the no-difference token)]: the verdict's first token, or for the checklist styles every
    same / differs and seen / not seen (the verdict then only reads them)."""
    def head(word: str) -> int:  # the first non-space token of " word" (as it follows ": " in a trace)
        return next(i for i in tok.encode(" " + word, add_special_tokens=False) if tok.decode([i]).strip())

    first = {w: head(w) for _, pair in CHOICES for w in pair}
    out = []
    for (q, shown, label) in rows:
        think, _ = traces.trace(q, shown, label)
        text = f"Query: {q.fig_desc}\nTrace: {think}"
        ids = tok.encode(text, add_special_tokens=False)
        start = len(tok.encode(f"Query: {q.fig_desc}\nTrace:", add_special_tokens=False))
        decisions = []
        if traces.style_name in ("checklist", "details", "query_first"):
            for rx, pair in CHOICES:
                for m in rx.finditer(text):
                    pos = _position(tok, text, m.start(1), ids)
                    word = m.group(1).split()[0]
                    other = pair[1] if word == pair[0] else pair[0]
                    if pos is not None:  # the last field: the token that says "no difference here"
                        decisions.append((pos, first[word], first[other], first[pair[0]]))
        else:
            at = text.find(VERDICT[label])
            pos = _position(tok, text, at, ids) if at >= 0 else None
            if pos is not None:
                other = VERDICT["not_matched" if label == "matched" else "matched"].split()[0]
                match_tok = ids[pos] if label == "matched" else head(other)
                decisions.append((pos, ids[pos], head(other), match_tok))
        if decisions:
            out.append({"ids": ids, "start": start, "decisions": decisions, "label": label})
    return out


def batch(items, pad_id: int, decision_weight: float = 1.0):
    """ids, attention mask, labels (-100 outside the trace) and per-label weights (decision_weight at decisions)."""
    n = max(len(x["ids"]) for x in items)
    ids = torch.full((len(items), n), pad_id)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    labels = torch.full((len(items), n), -100)
    weights = torch.zeros((len(items), n))
    for i, x in enumerate(items):
        t = torch.tensor(x["ids"])
        ids[i, :len(t)], mask[i, :len(t)] = t, 1
        labels[i, x["start"]:len(t)] = t[x["start"]:]
        weights[i, x["start"]:len(t)] = 1.0
        for p, *_ in x["decisions"]:
            weights[i, p] = decision_weight
    return ids, mask, labels, weights


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

    from videosearch_r1.config import load_config
    from videosearch_r1.models.tiny import make_tiny_checkpoint
    from videosearch_r1.synth.world import resolve, sample_world, world_json
    from videosearch_r1.train.sft_data import TRACE_STYLES, SynthTraces

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--style", choices=TRACE_STYLES, default="restate")  # restate | checklist | plain | query_first
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--families", type=int, default=300, help="train families of the default world (toy_gpu: 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decision-weight", type=float, default=1.0, help="CE weight of the decision tokens")
    ap.add_argument("--layers", type=int, default=0, help="language-model layers (0: the small policy's 4)")
    ap.add_argument("--world-seed-offset", type=int, default=31337,
                    help="the probe's world seed = synth.seed + this (0: the benchmark's own world, as measured on "
                         "2026-12-01, whose held-out pairs were its val + test timelines)")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    cfg = load_config(None, [f"synth.families.train={a.families}"])
    cfg.synth.seed += a.world_seed_offset  # a world of its own: the held-out pairs are never the benchmark's
    world = sample_world(resolve(cfg.synth))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "world.json").write_text(__import__("json").dumps(world_json(world)))
        traces = SynthTraces(Path(tmp) / "world.json", a.style)
        ckpt = make_tiny_checkpoint(f"{tmp}/policy", kind="policy", size="small",
                                    extra_texts=[v.caption for f in world.families for v in f.videos])
        model = Qwen3VLForConditionalGeneration.from_pretrained(ckpt)
        if a.layers:  # a deeper language model of the same width, from scratch like the default one
            conf = model.config
            conf.text_config.num_hidden_layers = a.layers
            if getattr(conf.text_config, "layer_types", None):
                conf.text_config.layer_types = [conf.text_config.layer_types[0]] * a.layers
            model = Qwen3VLForConditionalGeneration(conf)
        tok = AutoTokenizer.from_pretrained(ckpt)
    train = encode(tok, traces, pairs(world, {"train"}, rng))
    held = encode(tok, traces, pairs(world, {"val", "test"}, rng))
    lm = model.model.language_model
    print(f"probe verdict ({a.style}): {len(train)} train rows, {len(held)} held-out rows, "
          f"mean length {sum(len(x['ids']) for x in train) / len(train):.0f} tokens; language model "
          f"{len(lm.layers)} layers, {sum(p.numel() for p in lm.parameters()) / 1e6:.1f} M parameters", flush=True)
    opt = torch.optim.AdamW(model.model.language_model.parameters(), lr=a.lr, weight_decay=0.01)
    pad = tok.pad_token_id

    if any(right == wrong for x in train for _, right, wrong, _ in x["decisions"]):
        raise SystemExit("a decision's two answers share their first token")

    @torch.no_grad()
    def verdict_acc(items) -> tuple[float, float]:
        """(share of rows whose every decision prefers the right token to the wrong one, share of rows whose
        implied verdict is right: matched iff every decision prefers its no-difference token), teacher-forced.
        The second compares styles with different numbers of checks on what the verdict reads."""
        model.eval()
        hits = implied = 0
        for s in range(0, len(items), 64):
            chunk = items[s:s + 64]
            ids, mask, _, _ = batch(chunk, pad)
            logits = model(input_ids=ids, attention_mask=mask).logits
            for i, x in enumerate(chunk):
                prefer = [(right if logits[i, p - 1, right] > logits[i, p - 1, wrong] else wrong, right, same)
                          for p, right, wrong, same in x["decisions"]]
                hits += all(got == right for got, right, _ in prefer)
                implied += all(got == same for got, _, same in prefer) == (x["label"] == "matched")
        model.train()
        return 100.0 * hits / len(items), 100.0 * implied / len(items)

    rows, t0 = [], time.time()
    print(f"{'step':>6} {'loss':>7} {'train verdict':>14} {'held-out verdict':>17} {'implied verdict':>16} {'s':>6}")
    for step in range(1, a.steps + 1):
        chunk = rng.sample(train, a.batch)
        ids, mask, labels, weights = batch(chunk, pad, a.decision_weight)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100,
                             reduction="none")
        w = weights[:, 1:].reshape(-1)
        loss = (ce * w).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.eval_every == 0 or step == a.steps:
            (tr, _), (ho, ho_implied) = verdict_acc(train[:400]), verdict_acc(held)
            rows.append({"step": step, "loss": round(float(loss.detach()), 4), "train_verdict": round(tr, 1),
                         "heldout_verdict": round(ho, 1), "heldout_implied_verdict": round(ho_implied, 1),
                         "seconds": round(time.time() - t0, 1)})
            r = rows[-1]
            print(f"{step:>6} {r['loss']:>7.3f} {r['train_verdict']:>13.1f}% {r['heldout_verdict']:>16.1f}% "
                  f"{r['heldout_implied_verdict']:>15.1f}% {r['seconds']:>6.0f}", flush=True)
    if a.out:
        atomic_write_json(a.out, {"args": vars(a), "train_rows": len(train), "heldout_rows": len(held), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
