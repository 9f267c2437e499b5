"""`vsr1 report`: metric table, compact result JSON and plots for one or more prediction files.

    vsr1 report RUN/predictions.jsonl [OTHER/predictions.jsonl ...] [--out DIR] [--config F] [key=value ...]

Every run is scored with eval.evaluate.evaluate_rows (ground truth from the rows; definitions in
docs/metrics.md) and printed as one table row. Written to --out (default: <first run dir>/report):
- result.json: per run the paper metrics, the TVR view, metrics per turn limit, the soft-token
  profile and token counts;
- turns.png: VCMR R@1 (each IoU) and VR@1 vs the turn limit 1..T, computed by truncating the logged
  trajectories (exact: turn t does the same work whatever the limit, see agent/loop.py);
- soft_tokens.png: R@1 of the turn-1 refined query vs the number of soft tokens d (0 = the original
  query), from rows that logged per-depth ranks (agent.profile_depths), over the queries that refined
  at turn 1;
- tokens.png: generated text and latent tokens per query, by run.
"""
from __future__ import annotations

import sys
from pathlib import Path

from videosearch_r1.agent.trajectory import truncate_row
from videosearch_r1.config import ConfigError, load_config
from videosearch_r1.eval.evaluate import evaluate_rows, read_predictions
from videosearch_r1.utils import atomic_path, atomic_write_json, command_parser


# ----------------------------------------------------------------------------- per-run analysis
def run_label(path: Path, rows: list) -> tuple[str, str]:
    """(label, method): the method logged in the rows and the run directory name."""
    methods = sorted({r.get("method") for r in rows if isinstance(r, dict) and r.get("method")})
    method = "+".join(methods) or "?"
    name = path.parent.name if path.name == "predictions.jsonl" else path.stem
    return f"{method} ({name})", method


def per_turn(rows: list, ious, ks) -> dict[str, dict]:
    """Paper metrics at each turn limit 1..T (T = the most turns any row took)."""
    t_max = max((len(r.get("turns") or []) for r in rows if isinstance(r, dict)), default=0)
    out = {}
    for limit in range(1, t_max + 1):
        cut = [truncate_row(r, limit) if isinstance(r, dict) and isinstance(r.get("turns"), list) else r
               for r in rows]
        p = evaluate_rows(cut, iou_thresholds=ious, ks=ks)["paper"]
        out[str(limit)] = {"vcmr_r1": p["vcmr_r1"], "vr_r1": p["vr_r1"], "ver_acc": p["ver_acc"],
                           "miou": p["miou"], "text_tokens_per_query": p["text_tokens_per_query"],
                           "latent_tokens_per_query": p["latent_tokens_per_query"]}
    return out


def soft_token_profile(rows: list) -> dict:
    """R@1 (%) of the turn-1 refined query vs soft-token count, over queries with a turn-1 profile."""
    prof = []
    for r in rows:
        turns = r.get("turns") if isinstance(r, dict) else None
        if turns and isinstance(turns[0], dict) and turns[0].get("rank_after_by_depth"):
            prof.append(turns[0])
    if not prof:
        return {"n": 0, "r1": {}}
    depths = sorted({int(d) for t in prof for d in t["rank_after_by_depth"]})
    r1 = {"0": 100.0 * sum(t.get("rank_before") == 1 for t in prof) / len(prof)}
    for d in depths:
        r1[str(d)] = 100.0 * sum(t["rank_after_by_depth"].get(str(d)) == 1 for t in prof) / len(prof)
    return {"n": len(prof), "r1": r1}


def token_stats(rows: list) -> dict:
    """Mean generated tokens per query, and tokens carrying each refinement (latents / HQR rewrite)."""
    good = [r for r in rows if isinstance(r, dict) and isinstance(r.get("turns"), list)]
    ref = [t for r in good for t in r["turns"] if isinstance(t, dict) and t.get("refined")]
    n = len(good)
    return {"queries": n,
            "text_per_query": sum(r.get("text_tokens", 0) for r in good) / n if n else None,
            "latent_per_query": sum(r.get("latent_tokens", 0) for r in good) / n if n else None,
            "refinements": len(ref),
            "refine_tokens_per_refinement": sum(t.get("refine_tokens", 0) for t in ref) / len(ref) if ref else None}


def analyse(path: Path, ious, ks) -> dict:
    rows, labels = read_predictions(path)
    label, method = run_label(path, rows)
    result = evaluate_rows(rows, iou_thresholds=ious, ks=ks, labels=labels)
    return {"file": str(path), "label": label, "method": method, "n": result["n"],
            "counts": result["counts"], "paper": result["paper"], "tvr": result["tvr"],
            "messages": result["messages"][:20], "per_turn": per_turn(rows, ious, ks),
            "soft_tokens": soft_token_profile(rows), "tokens": token_stats(rows)}


# ----------------------------------------------------------------------------- table
def _f(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_table(runs: list[dict]) -> str:
    ious = list(runs[0]["paper"]["vcmr_r1"]) if runs else []
    head = ["run", "n"] + [f"R1@{t}" for t in ious] + ["mIoU", "VER", "VR@1", "VR@1(t1)", "turns",
                                                        "text tok", "latent tok", "refine tok"]
    body = []
    for r in runs:
        p, tk = r["paper"], r["tokens"]
        body.append([r["label"], str(r["n"])] + [_f(p["vcmr_r1"][t]) for t in ious]
                    + [_f(p["miou"]), _f(p["ver_acc"]), _f(p["vr_r1"]), _f(p["vr_r1_turn1"]),
                       _f(p["mean_turns"], 2), _f(p["text_tokens_per_query"]), _f(p["latent_tokens_per_query"]),
                       _f(tk["refine_tokens_per_refinement"])])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
    for r in runs:
        stops = "  ".join(f"{k} {v}" for k, v in r["paper"]["stop_reasons"].items())
        c = r["counts"]
        lines.append(f"{r['label']}: stop {stops}; unscorable rows {c['unscorable']} {c['unscorable_by_reason'] or ''}")
    lines.append("rates in %; R1@t = VCMR R@1 at IoU t (matched final answer on the GT video); "
                 "refine tok = tokens per refinement (SQR latents / HQR rewrite)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_all(runs: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = ["-", "--", ":", "-."]
    for i, r in enumerate(runs):
        limits = sorted(int(t) for t in r["per_turn"])
        if not limits:
            continue
        colour = f"C{i % 10}"  # one colour per run, one line style per IoU threshold
        for j, t in enumerate(r["paper"]["vcmr_r1"]):
            axes[0].plot(limits, [r["per_turn"][str(x)]["vcmr_r1"][t] or 0 for x in limits], marker="o",
                         color=colour, linestyle=styles[j % len(styles)], label=f"{r['label']} IoU {t}")
        axes[1].plot(limits, [r["per_turn"][str(x)]["vr_r1"] or 0 for x in limits], marker="o", color=colour,
                     label=r["label"])
    axes[0].set(xlabel="turn limit T", ylabel="VCMR R@1 (%)", title="grounded retrieval vs turns")
    axes[1].set(xlabel="turn limit T", ylabel="VR@1 (%)", title="final video = GT vs turns")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    _save(fig, out / "turns.png")
    written.append(out / "turns.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    for r in runs:
        prof = r["soft_tokens"]
        if prof["n"]:
            ds = sorted(int(d) for d in prof["r1"])
            ax.plot(ds, [prof["r1"][str(d)] for d in ds], marker="o", label=f"{r['label']} (n={prof['n']})")
    ax.set(xlabel="soft tokens d (0 = original query)", ylabel="R@1 of the refined query (%)",
           title="turn-1 refinement vs soft tokens")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no per-depth ranks logged\n(agent.profile_depths)", ha="center", va="center",
                transform=ax.transAxes)
    _save(fig, out / "soft_tokens.png")
    written.append(out / "soft_tokens.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(4, 1.5 * len(runs) + 2), 4))
    xs = range(len(runs))
    text = [r["tokens"]["text_per_query"] or 0 for r in runs]
    latent = [r["tokens"]["latent_per_query"] or 0 for r in runs]
    ax.bar(xs, text, label="text tokens")
    ax.bar(xs, latent, bottom=text, label="latent tokens")
    ax.set_xticks(list(xs), [r["label"] for r in runs], rotation=20, ha="right", fontsize=7)
    ax.set(ylabel="generated tokens per query", title="tokens per query by run")
    ax.legend(fontsize=7)
    _save(fig, out / "tokens.png")
    written.append(out / "tokens.png")
    plt.close(fig)
    return written


# ----------------------------------------------------------------------------- CLI
def report(paths: list[Path], out: Path, ious=(0.3, 0.5, 0.7), ks=(1, 5, 10, 100), plots: bool = True) -> dict:
    runs = [analyse(p, ious, ks) for p in paths]
    out.mkdir(parents=True, exist_ok=True)
    print(format_table(runs), flush=True)
    result = {"runs": runs, "settings": {"iou_thresholds": list(ious), "ks": list(ks)}}
    atomic_write_json(out / "result.json", result)
    written = plot_all(runs, out) if plots else []
    print(f"wrote {out / 'result.json'}" + "".join(f", {p.name}" for p in written), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("vsr1 report", __doc__)
    ap.add_argument("items", nargs="+", help="prediction files (predictions.jsonl), then optional key=value overrides")
    ap.add_argument("--out", default=None, help="output directory (default: <first run dir>/report)")
    ap.add_argument("--config", default=None, help="YAML config file (eval.iou_thresholds, eval.recall_ks)")
    ap.add_argument("--no-plots", action="store_true", help="table and result.json only")
    args = ap.parse_intermixed_args(argv)
    # a run file is an existing path; anything else with "=" is a config override
    paths = [Path(x) for x in args.items if Path(x).is_file()]
    overrides = [x for x in args.items if not Path(x).is_file() and "=" in x]
    missing = [x for x in args.items if not Path(x).is_file() and "=" not in x]
    if missing or not paths:
        print(f"vsr1 report: no such prediction file(s): {missing or args.items}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else paths[0].parent / "report"
    report(paths, out, tuple(cfg.eval.iou_thresholds), tuple(cfg.eval.recall_ks), plots=not args.no_plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
