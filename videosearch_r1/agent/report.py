"""`vsr1 report`: metric table, compact result JSON and plots for one or more prediction files.

    vsr1 report RUN/predictions.jsonl [OTHER/predictions.jsonl ...] [--common] [--out DIR] [--config F] [key=value ...]

Every run is scored with eval.evaluate.evaluate_rows (ground truth from the rows; definitions in
docs/metrics.md) and printed as one table row, with its query set (count and a short hash of the sorted
qids) and whether the run is complete (summary.json next to the file: `complete`, `queries`). When the
runs' query sets differ, or a run is incomplete, the table says so; `--common` scores every run on the
queries common to all runs only (and says so). Written to --out (default: <first run dir>/report):
- result.json: per run the paper metrics, the TVR view, metrics per turn limit, the soft-token
  profile, token counts and what refinement did to the GT's rank where the GT was not shown
  (refinement_effect; also a line under the table);
- turns.png: VCMR R@1 (each IoU) and VR@1 vs the turn limit 1..T, computed by truncating the logged
  trajectories (exact: turn t does the same work whatever the limit, see agent/loop.py);
- soft_tokens.png: R@1 of the turn-1 refined query vs the number of soft tokens d (0 = the original
  query), from rows that logged per-depth ranks (agent.profile_depths), over the queries that refined
  at turn 1;
- tokens.png: generated text and latent tokens per query, by run.
The plots stay readable in degenerate cases: one turn gives bars instead of one-point lines, and the
rate axes start at 0 with room above the largest value.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from videosearch_r1.agent.trajectory import truncate_row
from videosearch_r1.config import ConfigError, load_config
from videosearch_r1.eval.evaluate import evaluate_rows, read_predictions
from videosearch_r1.eval.traces import format_trace_checks, trace_checks
from videosearch_r1.utils import atomic_path, atomic_write_json, command_parser


# ----------------------------------------------------------------------------- per-run analysis
def run_label(path: Path, rows: list) -> tuple[str, str]:
    """(label, method): the method logged in the rows and the run directory name."""
    methods = sorted({r.get("method") for r in rows if isinstance(r, dict) and r.get("method")})
    method = "+".join(methods) or "?"
    name = path.parent.name if path.name == "predictions.jsonl" else path.stem
    return f"{method} ({name})", method


def per_turn(rows: list, ious, ks, labels=None) -> dict[str, dict]:
    """Paper metrics at each turn limit 1..T (T = the most turns any row took). A row whose turns cannot be
    cut (a turn record without its fields) is an error naming its file:line (`labels`)."""
    t_max = max((len(r.get("turns") or []) for r in rows if isinstance(r, dict)), default=0)
    out = {}
    for limit in range(1, t_max + 1):
        cut = []
        for i, r in enumerate(rows):
            try:
                cut.append(truncate_row(r, limit) if isinstance(r, dict) and isinstance(r.get("turns"), list) else r)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{labels[i] if labels else f'row {i + 1}'}: {e}") from None
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


def refinement_effect(rows: list) -> dict:
    """What refinement did where it had something to find: over the turns that refined while the shown video
    was not the GT (and the GT is indexed), the GT's corpus rank under the vector the turn searched with
    (rank_before) and under the refined one (rank_after): improved / same / worse, medians, and the share at
    rank 1 before and after. Independent of the verdicts (a wrong verdict only decides whether a turn refines)."""
    pairs = [(t["rank_before"], t["rank_after"]) for r in rows if isinstance(r, dict)
             for t in (r.get("turns") if isinstance(r.get("turns"), list) else [])
             if isinstance(t, dict) and t.get("refined") and not t.get("gt_shown")
             and isinstance(t.get("rank_before"), int) and isinstance(t.get("rank_after"), int)]
    if not pairs:
        return {"n": 0}
    from statistics import median

    n = len(pairs)
    return {"n": n, "improved": sum(a < b for b, a in pairs), "same": sum(a == b for b, a in pairs),
            "worse": sum(a > b for b, a in pairs), "median_before": float(median(b for b, _ in pairs)),
            "median_after": float(median(a for _, a in pairs)), "r1_before": 100.0 * sum(b == 1 for b, _ in pairs) / n,
            "r1_after": 100.0 * sum(a == 1 for _, a in pairs) / n}


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


def row_qid(row) -> str | None:
    """The qid of a readable row (as scored: str), or None."""
    if isinstance(row, dict) and isinstance(row.get("qid"), (str, int)) and not isinstance(row["qid"], bool):
        return str(row["qid"])
    return None


def qset_hash(qids) -> str:
    """A short hash naming a query set: the first 10 hex digits of sha256 over the sorted qids."""
    return hashlib.sha256("\n".join(sorted(qids)).encode()).hexdigest()[:10]


def run_status(path: Path, qids: set[str]) -> dict:
    """Completeness from the run's summary.json (vsr1 infer writes it): complete is True / False, or
    None when there is no readable summary next to the file; oracle: made under agent.oracle_verifier."""
    summ = path.parent / "summary.json"
    try:
        s = json.loads(summ.read_text())
        expected = s.get("queries")
        expected = expected if isinstance(expected, int) and not isinstance(expected, bool) else None
        complete = s.get("complete") is True and (expected is None or len(qids) >= expected)
        return {"complete": complete, "expected": expected, "summary": str(summ), "oracle": s.get("oracle_verifier") is True}
    except (OSError, ValueError, AttributeError):
        return {"complete": None, "expected": None, "summary": None, "oracle": False}


def load_run(path: Path) -> dict:
    rows, labels = read_predictions(path)
    qids = {q for q in map(row_qid, rows) if q is not None}
    return {"path": path, "rows": rows, "labels": labels, "qids": qids,
            "unreadable": sum(row_qid(r) is None for r in rows), **run_status(path, qids)}


def restrict(run: dict, keep: set[str]) -> dict:
    """The run with only the rows whose qid is in `keep` (unreadable rows have none: dropped too)."""
    idx = [i for i, r in enumerate(run["rows"]) if row_qid(r) in keep]
    return {**run, "rows": [run["rows"][i] for i in idx], "labels": [run["labels"][i] for i in idx],
            "qids": run["qids"] & keep, "dropped": len(run["rows"]) - len(idx)}


def analyse(run: dict, ious, ks) -> dict:
    path, rows = run["path"], run["rows"]
    label, method = run_label(path, rows)
    if run.get("oracle"):  # agent.oracle_verifier: its verdicts were the truth, so VER says nothing of the policy
        label += " [oracle verifier]"
    result = evaluate_rows(rows, iou_thresholds=ious, ks=ks, labels=run["labels"])
    qset = {"queries": len(run["qids"]), "hash": qset_hash(run["qids"]), "unreadable_rows": run["unreadable"],
            "complete": run["complete"], "expected": run["expected"], "summary": run["summary"],
            "dropped_rows": run.get("dropped", 0)}
    return {"file": str(path), "label": label, "method": method, "n": result["n"], "query_set": qset,
            "counts": result["counts"], "paper": result["paper"], "tvr": result["tvr"],
            "messages": result["messages"][:20], "per_turn": per_turn(rows, ious, ks, run["labels"]),
            "soft_tokens": soft_token_profile(rows), "tokens": token_stats(rows),
            "refinement": refinement_effect(rows), "trace_checks": trace_checks(rows)}


def query_set_notes(loaded: list[dict], common: set[str], restricted: bool) -> list[str]:
    """What the table must say about the runs' query sets and completeness."""
    sizes = [len(r["qids"]) for r in loaded]
    same = all(r["qids"] == loaded[0]["qids"] for r in loaded)
    notes = []
    if restricted:
        dropped = "/".join(str(len(r["rows"]) - sum(row_qid(x) in common for x in r["rows"])) for r in loaded)
        notes.append(f"query set: --common: every run scored on the {len(common)} queries common to all runs "
                     f"(hash {qset_hash(common)}); rows dropped per run: {dropped}")
    elif same:
        notes.append(f"query set: {'the runs have ' if len(loaded) > 1 else ''}{sizes[0]} queries "
                     f"(hash {qset_hash(loaded[0]['qids'])})" + (", identical" if len(loaded) > 1 else ""))
    else:
        notes.append(f"WARNING: the runs' query sets differ ({'/'.join(map(str, sizes))} queries, {len(common)} "
                     "common): their figures are not comparable; --common scores only the common queries")
    for r in loaded:
        name = r["path"].parent.name if r["path"].name == "predictions.jsonl" else r["path"].stem
        if r["complete"] is False:
            have = f"{len(r['qids'])} of {r['expected']} queries have rows" if r["expected"] is not None else \
                "complete is not true"
            notes.append(f"WARNING: run {name} is incomplete: {have} ({r['summary']})")
        elif r["complete"] is None:
            notes.append(f"note: run {name} has no summary.json: completeness unknown")
        if r["unreadable"]:
            notes.append(f"note: run {name} has {r['unreadable']} unreadable row(s) without a qid")
    return notes


# ----------------------------------------------------------------------------- table
def _f(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _verdict_cell(paper: dict) -> str:
    """Turn 1: % of GT-video turns accepted / % of wrong-video turns rejected; "-" without `verdicts`."""
    v = (paper.get("verdicts") or {}).get("turn1")
    return f"{_f(v['gt_accept_rate'])}/{_f(v['wrong_reject_rate'])}" if v else "-"


def format_table(runs: list[dict], notes: list[str] = ()) -> str:
    ious = list(runs[0]["paper"]["vcmr_r1"]) if runs else []
    head = ["run", "n", "qset", "complete"] + [f"R1@{t}" for t in ious] + [
        "mIoU", "VER", "acc/rej(t1)", "VR@1", "VR@1(t1)", "turns", "text tok", "latent tok", "refine tok"]
    body = []
    for r in runs:
        p, tk, qs = r["paper"], r["tokens"], r["query_set"]
        done = {True: "yes", False: "NO", None: "?"}[qs["complete"]]
        body.append([r["label"], str(r["n"]), qs["hash"], done] + [_f(p["vcmr_r1"][t]) for t in ious]
                    + [_f(p["miou"]), _f(p["ver_acc"]), _verdict_cell(p), _f(p["vr_r1"]), _f(p["vr_r1_turn1"]),
                       _f(p["mean_turns"], 2), _f(p["text_tokens_per_query"]), _f(p["latent_tokens_per_query"]),
                       _f(tk["refine_tokens_per_refinement"])])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
    for r in runs:
        stops = "  ".join(f"{k} {v}" for k, v in r["paper"]["stop_reasons"].items())
        c = r["counts"]
        lines.append(f"{r['label']}: stop {stops}; unscorable rows {c['unscorable']} {c['unscorable_by_reason'] or ''}")
        e = r.get("refinement") or {}
        if e.get("n"):
            lines.append(f"  refinement where the GT was not shown ({e['n']} turns): its corpus rank improved {e['improved']}, "
                         f"same {e['same']}, worse {e['worse']}; median {e['median_before']:g} -> {e['median_after']:g}; "
                         f"at rank 1 {e['r1_before']:.1f} % -> {e['r1_after']:.1f} %")
        if r.get("trace_checks"):  # synthetic checklist traces: the written checks, read back
            lines.append(format_trace_checks(r["trace_checks"]))
    lines.append("rates in %; R1@t = VCMR R@1 at IoU t (matched final answer on the GT video); "
                 "acc/rej(t1) = turn 1: GT video accepted / wrong video rejected; "
                 "refine tok = tokens per refinement (SQR latents / HQR rewrite); qset = hash of the sorted qids")
    return "\n".join(lines + list(notes))


# ----------------------------------------------------------------------------- plots
def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def rate_ylim(ax, values) -> None:
    """Rates in %: from 0, with room above the largest value (never a +-4 % band around one value)."""
    top = max([v for v in values if v is not None] or [0.0])
    ax.set_ylim(0, min(105.0, max(5.0, top * 1.15)))


def _bar_labels(ax, bars, fmt="{:.1f}") -> None:
    ax.bar_label(bars, labels=[fmt.format(b.get_height()) for b in bars], fontsize=7, padding=2)


def plot_turns(runs: list[dict], plt):
    """VCMR R@1 (each IoU) and VR@1 vs the turn limit: lines over 1..T, or bars when T == 1 for all."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    t_max = max((len(r["per_turn"]) for r in runs), default=0)
    ious = list(runs[0]["paper"]["vcmr_r1"]) if runs else []
    left, right = [], []  # every plotted value, for the y range
    if t_max <= 1:  # one turn: a grouped bar chart per run, not one point on an empty axis
        width = 0.8 / max(1, len(ious))
        for j, t in enumerate(ious):
            vals = [(r["per_turn"].get("1", {}).get("vcmr_r1", {}).get(t) or 0) for r in runs]
            left += vals
            _bar_labels(axes[0], axes[0].bar([i + (j - (len(ious) - 1) / 2) * width for i in range(len(runs))],
                                             vals, width, label=f"IoU {t}"))
        vals = [(r["per_turn"].get("1", {}).get("vr_r1") or 0) for r in runs]
        right += vals
        _bar_labels(axes[1], axes[1].bar(range(len(runs)), vals, 0.5, color=[f"C{i % 10}" for i in range(len(runs))]))
        for ax in axes:
            ax.set_xticks(range(len(runs)), [r["label"] for r in runs], rotation=15, ha="right", fontsize=7)
            ax.set_xlim(-0.75, len(runs) - 0.25)
        axes[0].set(ylabel="VCMR R@1 (%)", title="grounded retrieval (every run: 1 turn)")
        axes[1].set(ylabel="VR@1 (%)", title="final video = GT (every run: 1 turn)")
    else:
        styles = ["-", "--", ":", "-."]
        for i, r in enumerate(runs):
            limits = sorted(int(t) for t in r["per_turn"])
            colour = f"C{i % 10}"  # one colour per run, one line style per IoU threshold
            for j, t in enumerate(ious):
                ys = [r["per_turn"][str(x)]["vcmr_r1"][t] or 0 for x in limits]
                left += ys
                axes[0].plot(limits, ys, marker="o", color=colour, linestyle=styles[j % len(styles)],
                             label=f"{r['label']} IoU {t}")
            ys = [r["per_turn"][str(x)]["vr_r1"] or 0 for x in limits]
            right += ys
            axes[1].plot(limits, ys, marker="o", color=colour, label=r["label"])
        for ax in axes:
            ax.set_xticks(range(1, t_max + 1))
            ax.set_xlim(0.75, t_max + 0.25)
            ax.set_xlabel("turn limit T")
        axes[0].set(ylabel="VCMR R@1 (%)", title="grounded retrieval vs turns")
        axes[1].set(ylabel="VR@1 (%)", title="final video = GT vs turns")
    rate_ylim(axes[0], left)
    rate_ylim(axes[1], right)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
        if ax.get_legend_handles_labels()[0]:  # below the plot: never over a bar or a line
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return fig


def plot_soft_tokens(runs: list[dict], plt):
    """R@1 of the turn-1 refined query vs soft tokens d, per run with a logged profile."""
    fig, ax = plt.subplots(figsize=(5, 4))
    values, depths = [], set()
    for r in runs:
        prof = r["soft_tokens"]
        if prof["n"]:
            ds = sorted(int(d) for d in prof["r1"])
            depths.update(ds)
            values += [prof["r1"][str(d)] for d in ds]
            ax.plot(ds, [prof["r1"][str(d)] for d in ds], marker="o", label=f"{r['label']} (n={prof['n']})")
    ax.set(xlabel="soft tokens d (0 = original query)", ylabel="R@1 of the refined query (%)",
           title="turn-1 refinement vs soft tokens")
    ax.grid(alpha=0.3)
    rate_ylim(ax, values)
    if depths:
        ax.set_xticks(sorted(depths))
        ax.set_xlim(min(depths) - 0.5, max(depths) + 0.5)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    else:
        ax.set_xticks([])
        ax.text(0.5, 0.5, "no per-depth ranks logged\n(agent.profile_depths)", ha="center", va="center",
                transform=ax.transAxes)
    return fig


def plot_tokens(runs: list[dict], plt):
    """Generated text + latent tokens per query, one stacked bar per run."""
    fig, ax = plt.subplots(figsize=(max(4, 1.5 * len(runs) + 2), 4))
    xs = list(range(len(runs)))
    text = [r["tokens"]["text_per_query"] or 0 for r in runs]
    latent = [r["tokens"]["latent_per_query"] or 0 for r in runs]
    ax.bar(xs, text, 0.5, label="text tokens")
    bars = ax.bar(xs, latent, 0.5, bottom=text, label="latent tokens")
    ax.bar_label(bars, labels=[f"{a + b:.1f}" for a, b in zip(text, latent)], fontsize=7, padding=2)
    ax.set_xticks(xs, [r["label"] for r in runs], rotation=15, ha="right", fontsize=7)
    ax.set_xlim(-0.75, len(runs) - 0.25)
    ax.set_ylim(0, max(1.0, max((a + b for a, b in zip(text, latent)), default=0) * 1.25))
    ax.set(ylabel="generated tokens per query", title="tokens per query by run")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_all(runs: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, make in (("turns.png", plot_turns), ("soft_tokens.png", plot_soft_tokens), ("tokens.png", plot_tokens)):
        fig = make(runs, plt)
        _save(fig, out / name)
        plt.close(fig)
        written.append(out / name)
    return written


# ----------------------------------------------------------------------------- CLI
def report(paths: list[Path], out: Path, ious=(0.3, 0.5, 0.7), ks=(1, 5, 10, 100), plots: bool = True,
           common: bool = False) -> dict:
    """Score, print and write the report; `common` restricts every run to the queries all runs have."""
    loaded = [load_run(p) for p in paths]
    shared = set.intersection(*(r["qids"] for r in loaded))
    if common and not shared:
        raise ValueError("--common: no query is common to all runs")
    notes = query_set_notes(loaded, shared, restricted=common)
    runs = [analyse(restrict(r, shared) if common else r, ious, ks) for r in loaded]
    out.mkdir(parents=True, exist_ok=True)
    print(format_table(runs, notes), flush=True)
    result = {"runs": runs, "settings": {"iou_thresholds": list(ious), "ks": list(ks)},
              "query_sets": {"identical": all(r["qids"] == loaded[0]["qids"] for r in loaded),
                             "common": len(shared), "common_hash": qset_hash(shared), "restricted": common,
                             "notes": notes}}
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
    ap.add_argument("--common", action="store_true", help="score every run on the queries common to all runs")
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
    try:
        report(paths, out, tuple(cfg.eval.iou_thresholds), tuple(cfg.eval.recall_ks), plots=not args.no_plots,
               common=args.common)
    except (ValueError, OSError) as e:
        print(f"vsr1 report: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
