"""What a finished run shows its user: a summary table and a learning-curve plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from job.replay import read_output
from tools.evaluate import auc, popularity_scores, summarize


def final_metrics(out_dir: Path) -> dict[str, float]:
    """The cumulative (`*_total`) metrics of the last interval the job emitted."""
    metrics = read_output(out_dir, "metrics")
    if not metrics:
        return {}
    last_end = max(m["window_end"] for m in metrics)
    return {m["name"]: m["value"] for m in metrics if m["window_end"] == last_end}


def run_summary(out_dir: Path, wall_s: float, window_ms: int, oracle: dict[str, float] | None = None) -> dict[str, Any]:
    """Counts and quality of one run, from its output folder.

    Quality is also given after the warm-up: during the first windows of event time only positives
    can have been learned (negatives are decided a window late), so a cold model is off there.
    """
    examples = sorted(read_output(out_dir, "examples"), key=lambda e: e["impression_time"])
    summary = summarize(examples, oracle)
    if examples:
        warm_from = examples[0]["impression_time"] + 2 * window_ms
        steady = summarize([e for e in examples if e["impression_time"] >= warm_from], oracle)
        summary.update({f"steady_{k}": v for k, v in steady.items()})
    totals = final_metrics(out_dir)
    summary.update({
        "wall_s": wall_s,
        "examples_per_s": len(examples) / wall_s if wall_s else math.nan,
        "dead_letters": len(read_output(out_dir, "dead-letter")),
        "snapshot_records": len(read_output(out_dir, "snapshots")),
        **{k: totals.get(f"{k}_total", math.nan) for k in (
            "impressions", "clicks", "duplicate_impressions", "duplicate_clicks", "early_clicks",
            "late_clicks", "orphan_clicks", "click_coverage", "late_click_rate")},
    })
    return summary


def format_summary(s: dict[str, Any]) -> str:
    def f(x: Any) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "n/a"
        if isinstance(x, float) and not x.is_integer():
            return f"{x:,.4f}"
        return f"{int(x):,}"

    lines = [
        f"examples {f(s['n_examples'])}  positives {f(s['n_positives'])}  CTR {f(s['ctr'])}",
        f"impressions {f(s['impressions'])}  clicks {f(s['clicks'])}  dead letters {f(s['dead_letters'])}",
        f"duplicates: impressions {f(s['duplicate_impressions'])}, clicks {f(s['duplicate_clicks'])};"
        f"  early clicks {f(s['early_clicks'])}  late clicks {f(s['late_clicks'])}"
        f"  orphan clicks {f(s['orphan_clicks'])}",
        f"click coverage {f(s['click_coverage'])}  late-click rate {f(s['late_click_rate'])}",
        "",
        f"{'':12}{'AUC':>8}{'NE':>8}{'logloss':>9}",
        f"{'model':12}{f(s['model_auc']):>8}{f(s['model_ne']):>8}{f(s['model_logloss']):>9}"
        "   (progressive: scored when the impression arrived, before learning from it)",
        f"{'popularity':12}{f(s['popularity_auc']):>8}{f(s['popularity_ne']):>8}{f(s['popularity_logloss']):>9}",
    ]
    if "oracle_auc" in s:
        lines.append(f"{'oracle':12}{f(s['oracle_auc']):>8}{f(s['oracle_ne']):>8}{f(s['oracle_logloss']):>9}")
    if "steady_model_auc" in s:
        lines += ["", f"after the warm-up (examples from 2 windows after the first, {f(s['steady_n_examples'])}):"]
        for name in ("model", "popularity", "oracle"):
            if f"steady_{name}_auc" in s:
                lines.append(f"{name:12}{f(s[f'steady_{name}_auc']):>8}{f(s[f'steady_{name}_ne']):>8}"
                             f"{f(s[f'steady_{name}_logloss']):>9}")
    lines += [
        "",
        f"snapshot records {f(s['snapshot_records'])}  wall {s['wall_s']:.1f} s  "
        f"throughput {f(round(rate) if math.isfinite(rate := s['examples_per_s']) else None)} examples/s"
        " (job start-up included)",
    ]
    return "\n".join(lines)


def describe_plot(png: Path | None) -> str:
    """Where the learning curve went, or how to get one."""
    return f"learning curve: {png}" if png else "learning curve: not drawn (pip install 'freshrank[plots]')"


def plot_learning_curve(out_dir: Path, png: Path, oracle: dict[str, float] | None = None,
                        chunks: int = 20) -> Path | None:
    """AUC per consecutive slice of examples (in event time): model vs popularity (vs oracle); None
    when matplotlib (the `plots` extra) is not installed."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    examples = sorted(read_output(out_dir, "examples"), key=lambda e: e["impression_time"])
    labels = np.array([e["label"] for e in examples])
    curves = {"model (progressive)": np.array([e["score"] for e in examples]),
              "item popularity": np.array(popularity_scores(examples))}
    if oracle:
        curves["oracle"] = np.array([oracle.get(e["impression_id"], math.nan) for e in examples])
    edges = np.linspace(0, len(examples), chunks + 1).astype(int)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, scores in curves.items():
        ys = [auc(labels[a:b], scores[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        ax.plot(edges[1:], ys, marker="o", markersize=3, label=name)
    ax.set_xlabel("examples (event-time order)")
    ax.set_ylabel("AUC of the slice")
    ax.set_title("freshrank learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
