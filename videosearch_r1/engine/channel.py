"""`vsr1 engine channel`: how far can soft tokens move a query through this engine? (the SQR ceiling)

    vsr1 engine channel synth [--split test] [channel.steps=300 channel.queries=256 ...]
    vsr1 engine channel synth channel.scale=none channel.lr=0.05      # raw latents (environment.md §10)

For each query (a fixed random sample of channel.queries), optimise N = channel.n_latents soft tokens
directly against its ground-truth video, with the query text fixed: the latents go through the real
soft-token path (Embedder.embed_soft, engine.soft_insert), the loss is InfoNCE of the refined query
vector over the whole indexed corpus (temperature channel.temperature), Adam. VR@1 after that is an
upper bound for any refinement (SQR, a learned refiner) through this engine: no policy can produce
better soft tokens than ones fitted to the answer. An engine with a low ceiling cannot show SQR.

Latent scaling (channel.scale): "embed" parametrises soft = z * s, s = the RMS of one coordinate of the
engine's token embeddings, so z ~ N(0, 1) is the size of a real token and Adam's steps (lr in z units)
are relative to it; "none" optimises the soft tokens directly (the quickstart engine's token embeddings
have norm 0.16, so a raw Adam step of 0.05 per coordinate is far larger than a token; environment.md §10).
Initialisation (channel.init): "zeros" or "random" (z ~ N(0, 1)).

1. load the split's queries and the index (cfg.index_dir(DATASET)/SPLIT: `vsr1 index` builds it) and the
   engine's Embedder; queries whose video is missing from the index count as misses and are not optimised
2. corpus health: median cosine between a video and its nearest other video (near 1: collapsed space)
   and, for a synthetic world (world.json), the wrong top-1 videos by the detail they differ in from the
   ground truth, before and after fitting (which details the engine cannot see)
3. query batches of channel.batch_size, all queries of a batch optimised together (vectorised), ranks
   exact (1 + videos scoring higher) at step 0 and every channel.eval_every steps
4. print a table (plain query, latents at init, the VR@1 curve) and write <run_dir>/channel.json and
   <index_dir>/channel.json (atomic). A measurement: not resumable; rerun it.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

KS = (1, 5, 10)


def token_rms(embedder) -> float:
    """RMS of one coordinate of the engine's input token embeddings (the scale of a real token)."""
    w = embedder.model.get_input_embeddings().weight.detach().float()
    return float(w.pow(2).mean().sqrt())


def nearest_other_cosine(vectors: np.ndarray) -> float:
    """Median over videos of the cosine to the nearest other video of the corpus (NaN below 2 videos)."""
    if len(vectors) < 2:
        return float("nan")
    v = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    best = []
    for i in range(0, len(v), 1024):
        s = v[i:i + 1024] @ v.T
        s[torch.arange(s.shape[0]), torch.arange(i, i + s.shape[0])] = -2.0
        best.append(s.amax(1))
    return float(torch.cat(best).median())


def exact_ranks(q: torch.Tensor, corpus: torch.Tensor, rows: torch.Tensor, top1: bool = False):
    """[B] 1-based rank of row rows[b] for query b among corpus [N, D] (ties at earlier rows count ahead);
    with top1, also the [B] row of each query's best video."""
    s = q.float() @ corpus.T  # [B, N]
    gt = s.gather(1, rows[:, None])
    cols = torch.arange(corpus.shape[0], device=s.device)[None, :]
    ranks = 1 + ((s > gt) | ((s == gt) & (cols < rows[:, None]))).sum(1)
    return (ranks, s.argmax(1)) if top1 else ranks


# ----------------------------------------------------------------------------- synthetic worlds: what is confused
def _details(v: dict) -> dict:
    """The details a synthetic family's variants differ in (synth/world.py DETAILS), read from world.json."""
    segs = v["segments"]
    return {"colour": v["thing"]["colour"], "size": v["thing"]["size"], "shape": v["thing"]["shape"],
            "wall_colour": v["wall"]["colour"], "texture": v["wall"]["texture"], "companion": v["companion"],
            "target": segs[v["main"]]["arg"],
            "secondary": [s["action"] for i, s in enumerate(segs) if i != v["main"]]}


def differences(world: dict, a: str, b: str) -> list[str] | None:
    """How synthetic video `b` differs from `a`: ["other_family"], or the details a sibling differs in (possibly
    several); None when either is not in the world."""
    videos = world["videos"]
    if a not in videos or b not in videos:
        return None
    va, vb = videos[a], videos[b]
    if (va["split"], va["family"]) != (vb["split"], vb["family"]):
        return ["other_family"]
    da, db = _details(va), _details(vb)
    return [k for k in da if da[k] != db[k]]


def confusions(world: dict | None, gt_ids: list[str], top_ids: list[str]) -> dict | None:
    """For a synthetic world: wrong top-1 videos counted as "other family" or, for a sibling of the same
    family, by each detail in which it differs from the ground truth (a pair can count for two)."""
    if not world:
        return None
    out: dict[str, int] = {"wrong_top1": 0, "other_family": 0}
    for gt, top in zip(gt_ids, top_ids):
        diff = None if gt == top else differences(world, gt, top)
        if diff is None:
            continue
        out["wrong_top1"] += 1
        for k in diff:
            out[k] = out.get(k, 0) + 1
    return out


def load_world(cfg, dataset: str) -> dict | None:
    path = Path(cfg.dataset_root(dataset)) / "world.json"
    return json.loads(path.read_text()) if path.is_file() else None


def recall(ranks: list[int | None], n: int) -> dict:
    """VR@k (percent of all n queries; a None rank is a miss) and the mean rank of those ranked."""
    got = [r for r in ranks if r is not None]
    out = {f"VR@{k}": 100.0 * sum(r <= k for r in got) / max(1, n) for k in KS}
    out["mean_rank"] = float(np.mean(got)) if got else float("nan")
    return out


def optimise_batch(embedder, texts: list[str], rows: torch.Tensor, corpus: torch.Tensor, cc,
                   scale: float, gen: torch.Generator) -> tuple[dict[int, list[int]], list[float], list[float]]:
    """Fit channel.n_latents latents per query of one batch -> ({step: ranks, "top1": final top-1 rows},
    losses, mean latent norms)."""
    b, n, he = len(texts), cc.n_latents, embedder.hidden_size
    z0 = torch.zeros(b, n, he) if cc.init == "zeros" else torch.randn(b, n, he, generator=gen)
    z = torch.nn.Parameter(z0.to(embedder.device))
    opt = torch.optim.Adam([z], lr=cc.lr)
    curve, losses, norms = {}, [], []
    for step in range(cc.steps + 1):
        soft = z * scale
        q = embedder.embed_soft(texts, soft, grad=step < cc.steps)
        if step % max(1, cc.eval_every) == 0 or step == cc.steps:
            with torch.no_grad():
                ranks, top = exact_ranks(q.detach(), corpus, rows, top1=True)
                curve[step] = ranks.cpu().tolist()
                norms.append(float(soft.detach().norm(dim=-1).mean()))
        if step == cc.steps:
            curve["top1"] = top.cpu().tolist()
            break
        loss = F.cross_entropy(q.float() @ corpus.T / cc.temperature, rows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return curve, losses, norms


def run_channel(cfg, dataset: str, split: str, embedder=None, engine=None) -> dict:
    """Steps 1-3 of the module doc; returns the result dict (also what channel.json holds)."""
    from videosearch_r1.data.fig import load_split
    from videosearch_r1.engine.index import load_embedder
    from videosearch_r1.engine.search import SearchEngine
    from videosearch_r1.utils import progress

    cc = cfg.channel
    if cc.scale not in ("embed", "none") or cc.init not in ("zeros", "random"):
        raise ValueError(f"channel.scale must be embed|none and channel.init zeros|random; got {cc.scale!r}, "
                         f"{cc.init!r}")
    if cc.n_latents < 1 or cc.steps < 0 or cc.batch_size < 1:
        raise ValueError("need channel.n_latents >= 1, channel.steps >= 0, channel.batch_size >= 1")
    t0 = time.time()
    sp = load_split(cfg, dataset, split)
    embedder = embedder if embedder is not None else load_embedder(cfg, dataset)
    engine = engine if engine is not None else SearchEngine.load(cfg.index_dir(dataset) / split, embedder=embedder)
    field = cfg.dataset_cfg(dataset).query_field
    queries = list(sp.queries)
    if cc.queries and cc.queries < len(queries):
        pick = np.random.default_rng(cc.seed).choice(len(queries), size=cc.queries, replace=False)
        queries = [queries[i] for i in sorted(pick.tolist())]
    known = [q for q in queries if q.video_id in engine.row]
    if not known:
        raise ValueError(f"channel {dataset}/{split}: none of the {len(queries)} queries' videos is in the index "
                         f"{cfg.index_dir(dataset) / split} (rebuild it with `vsr1 index {dataset} --split {split}`)")
    corpus = torch.from_numpy(np.ascontiguousarray(engine.vectors, dtype=np.float32)).to(embedder.device)
    scale = token_rms(embedder) if cc.scale == "embed" else 1.0
    gen = torch.Generator().manual_seed(cc.seed)
    torch.manual_seed(cc.seed)

    with torch.no_grad():
        plain, plain_top = [], []
        for i in range(0, len(known), cc.batch_size):
            chunk = known[i:i + cc.batch_size]
            qv = embedder.embed_texts([getattr(q, field) for q in chunk])
            rows = torch.tensor([engine.row[q.video_id] for q in chunk], device=embedder.device)
            ranks, top = exact_ranks(qv.to(embedder.device), corpus, rows, top1=True)
            plain += ranks.cpu().tolist()
            plain_top += top.cpu().tolist()
    curve: dict = {}
    losses: list[list[float]] = []
    norms: list[list[float]] = []
    bar = progress(total=len(known), desc="channel", unit="query")
    for i in range(0, len(known), cc.batch_size):
        chunk = known[i:i + cc.batch_size]
        rows = torch.tensor([engine.row[q.video_id] for q in chunk], device=embedder.device)
        c, lo, no = optimise_batch(embedder, [getattr(q, field) for q in chunk], rows, corpus, cc, scale, gen)
        for step, r in c.items():
            curve.setdefault(step, []).extend(r)
        losses.append(lo)
        norms.append(no)
        bar.update(len(chunk))
    bar.close()
    n = len(queries)
    missing = [None] * (n - len(known))
    final_top = curve.pop("top1", [])
    steps = sorted(curve)
    best = [min(curve[s][j] for s in steps) for j in range(len(known))] if steps else []
    out = {
        "dataset": dataset, "split": split, "engine_model": cfg.engine_model(), "soft_insert": embedder.soft_insert,
        "queries": n, "optimised": len(known), "missing_gt": n - len(known), "videos": len(engine.ids),
        "engine_hidden": embedder.hidden_size, "token_rms": token_rms(embedder), "latent_scale": scale,
        "median_nearest_other_cosine": nearest_other_cosine(engine.vectors),
        "plain": recall(plain + missing, n),
        "curve": [{"step": s, **recall(curve[s] + missing, n),
                   "loss": float(np.mean([lo[s - 1] for lo in losses])) if s > 0 else None,
                   "latent_norm": float(np.mean([no[k] for no in norms]))} for k, s in enumerate(steps)],
        "config": asdict(cc), "seconds": time.time() - t0,
    }
    out["final"] = out["curve"][-1] if out["curve"] else None
    out["best_per_query"] = recall(best + missing, n)
    world = load_world(cfg, dataset)
    gts = [q.video_id for q in known]
    out["confusions"] = {"plain": confusions(world, gts, [engine.ids[r] for r in plain_top]),
                         "final": confusions(world, gts, [engine.ids[r] for r in final_top])} if world else None
    return out


def format_table(res: dict) -> str:
    head = (f"channel {res['dataset']}/{res['split']}: {res['queries']} queries ({res['missing_gt']} with a missing "
            f"video), {res['videos']} videos; engine hidden {res['engine_hidden']}, token RMS "
            f"{res['token_rms']:.4f}, latent scale {res['latent_scale']:.4f}, insert {res['soft_insert']}; "
            f"median nearest-other cosine {res['median_nearest_other_cosine']:.4f}")
    lines = [head, f"{'':>22} {'VR@1':>7} {'VR@5':>7} {'VR@10':>7} {'mean rank':>10} {'loss':>8} {'|latent|':>9}"]

    def row(name, r, loss=None, norm=None):
        lo = f"{loss:8.3f}" if loss is not None else f"{'':>8}"
        no = f"{norm:9.3f}" if norm is not None else f"{'':>9}"
        lines.append(f"{name:>22} {r['VR@1']:7.1f} {r['VR@5']:7.1f} {r['VR@10']:7.1f} {r['mean_rank']:10.2f} {lo} {no}")

    row("plain query", res["plain"])
    for c in res["curve"]:
        row("latents at init" if c["step"] == 0 else f"step {c['step']}", c, c["loss"], c["latent_norm"])
    row("best step per query", res["best_per_query"])
    lines.append(f"ceiling: VR@1 {res['plain']['VR@1']:.1f} -> {res['final']['VR@1']:.1f} with "
                 f"{res['config']['n_latents']} latents ({res['seconds']:.0f} s)")
    for name, c in (res.get("confusions") or {}).items():
        if c:
            lines.append(f"wrong top-1 ({name}): {c['wrong_top1']}; another family {c['other_family']}; a sibling "
                         "differing in " + (", ".join(f"{k} {v}" for k, v in c.items()
                                                       if k not in ("wrong_top1", "other_family")) or "-"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.utils import (atomic_write_json, command_parser, config_from_args, make_run_dir,
                                      parse_command)

    parser = command_parser("vsr1 engine channel", __doc__)
    parser.add_argument("dataset", help="dataset name (an entry under `datasets` in the config)")
    parser.add_argument("--split", default=None, help="the indexed split whose queries are checked "
                        "(default: config split)")
    args = parse_command(parser, argv)
    cfg = config_from_args(args, [f"dataset={args.dataset}"])
    split = args.split or cfg.split
    run_dir = make_run_dir(cfg, "engine-channel")
    try:
        res = run_channel(cfg, args.dataset, split)
    except (FileNotFoundError, ValueError) as e:
        print(f"vsr1 engine channel: {e}", file=sys.stderr)
        return 2
    print(format_table(res), flush=True)
    atomic_write_json(run_dir / "channel.json", res)
    atomic_write_json(Path(cfg.index_dir(args.dataset)) / split / "channel.json", res)
    print(f"  wrote {run_dir / 'channel.json'} and {cfg.index_dir(args.dataset) / split / 'channel.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
