"""GRPO training curves from a run's metrics.jsonl: every reward function, the total, KL and entropy.

    python -m videosearch_r1.train.grpo_report RUNS/grpo-synth/metrics.jsonl [--out curves.png]
    series = grpo_series(rows)          # {"reward/format": [(step, value), ...], "kl": [...], ...}

Plots one panel per reward function (its mean over the step's trajectories, as logged by train/grpo.py),
one for the weighted total, one for KL to the reference and one for the policy entropy (per sampled
token); a dashed line is the moving average over `--smooth` steps. Writes a PNG (default: beside the
metrics file, grpo_curves.png) and prints the first / last values of each series.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

CURVES = ("kl", "entropy", "latent_infonce", "latent_gaussian", "found", "turns_per_trajectory")


def grpo_series(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """The plotted series: every `reward/*` key, then CURVES, each as (step, value) where logged.

    >>> grpo_series([{"step": 1, "reward/iou": 0.5, "kl": 0.0}, {"step": 2, "reward/iou": 0.7}])
    {'reward/iou': [(1, 0.5), (2, 0.7)], 'kl': [(1, 0.0)]}
    """
    keys = sorted({k for r in rows for k in r if k.startswith("reward/") and k != "reward/std_in_group"},
                  key=lambda k: (k == "reward/total", k))
    keys += [k for k in CURVES if any(k in r for r in rows)]
    out = {}
    for k in keys:
        pts = [(int(r["step"]), float(r[k])) for r in rows if r.get(k) is not None and "step" in r]
        if pts:
            out[k] = pts
    return out


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values.

    >>> moving_average([1.0, 3.0, 5.0], 2)
    [1.0, 2.0, 4.0]
    """
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_curves(series: dict[str, list[tuple[int, float]]], out: Path, smooth: int = 10) -> Path:
    """One panel per series, written atomically to `out` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from videosearch_r1.utils import atomic_path

    if not series:
        raise ValueError("no GRPO series to plot (is this a `vsr1 train grpo` metrics.jsonl?)")
    n = len(series)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, pts) in zip(axes.flat, series.items()):
        steps, vals = zip(*pts)
        ax.plot(steps, vals, lw=0.8, alpha=0.6)
        if len(vals) > 2:
            ax.plot(steps, moving_average(list(vals), max(1, smooth)), "--", lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    from videosearch_r1.utils import read_jsonl_resumable

    ap = argparse.ArgumentParser(prog="python -m videosearch_r1.train.grpo_report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metrics", help="a GRPO run's metrics.jsonl")
    ap.add_argument("--out", default=None, help="PNG path (default: grpo_curves.png beside the metrics)")
    ap.add_argument("--smooth", type=int, default=10, help="moving-average window (steps)")
    args = ap.parse_args(argv)
    path = Path(args.metrics)
    if not path.is_file():
        print(f"grpo_report: {path} not found", file=sys.stderr)
        return 2
    series = grpo_series(read_jsonl_resumable(path))
    try:
        out = plot_curves(series, Path(args.out) if args.out else path.parent / "grpo_curves.png", args.smooth)
    except ValueError as e:
        print(f"grpo_report: {path}: {e}", file=sys.stderr)
        return 2
    for name, pts in series.items():
        print(f"{name:28s} step {pts[0][0]:>5d}: {pts[0][1]:+.4f}   step {pts[-1][0]:>5d}: {pts[-1][1]:+.4f}")
    print(f"curves: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
