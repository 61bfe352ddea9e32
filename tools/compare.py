"""`freshrank evaluate`: freshrank's learning modes beside River and Vowpal Wabbit, on the same examples.

Every learner sees the same labeled examples in the same order with the same label delays, and is
judged by progressive validation (each example scored before it is learned from):
- freshrank: the job's learner core (udfs.batch_learner, in-process: tools.offline_learner) in each
  learning mode, `decided` (an example is learned once its label is decided: a negative when its
  window closes) and `impression` (learned as a negative when shown, corrected when its click
  arrives: fake-negative weighting), with AdaGrad, FTRL-Proximal on the scalar parameters, and
  FTRL-Proximal on scalars and vectors; as the job runs, it reads the catalog (item embeddings,
  titles through the text encoder); one more row shows the default mode on ids alone, the anchors'
  features;
- River: logistic regression and a factorisation machine on one-hot user, item, position and query;
- Vowpal Wabbit: logistic loss with user x item interactions (`-q ui`; its defaults otherwise).
The anchors learn as the `decided` mode does: an example's prediction when its impression arrives,
its update when its label would be known (its click; for a negative, the end of its window).

Printed: one table per stream (AUC, NE, logloss, calibration over all examples and after the warm-up,
examples/s of the learning itself), the event-time delay between an impression and its first effect
on the model (p50/p99) per freshrank mode, and a PNG of the learning curves. River and Vowpal Wabbit
are optional extras (`pip install 'freshrank[compare]'`); without them only freshrank's rows print.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from job.config import JobConfig
from tools.evaluate import auc, calibration, logloss, normalized_entropy, popularity_scores
from tools.generate import GeneratorConfig, generate
from tools.offline_learner import event_rows, learn_offline
from udfs.learner_math import LEARNING_MODES
from udfs.metrics_intervals import decision_time
from udfs.text_encoder import make_encoder
from udfs.text_features import TextFeatures

Example = dict[str, Any]
CURVE_POINTS = 20
# (row name, optimizer of the scalars, optimizer of the vectors)
OPTIMIZER_CHOICES = (("adagrad", "adagrad", "adagrad"), ("ftrl biases", "ftrl", "adagrad"), ("ftrl", "ftrl", "ftrl"))


def features(example: Example) -> dict[str, float]:
    """One-hot categorical features of an example, for the anchors."""
    out = {f"u={example['user_id']}": 1.0, f"i={example['item_id']}": 1.0, f"p={example['position']}": 1.0}
    if example.get("query"):
        out[f"q={example['query']}"] = 1.0
    return out


class RiverLearner:
    """A River classifier behind predict/learn on feature dicts."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, x: dict[str, float]) -> float:
        return float(self.model.predict_proba_one(x).get(True, 0.0))

    def learn(self, x: dict[str, float], label: int) -> None:
        self.model.learn_one(x, bool(label))


class VowpalWabbit:
    """pyvw with logistic loss; namespaces u (user), i (item), p (position), q (query words)."""

    def __init__(self, arguments: str) -> None:
        from vowpalwabbit import Workspace

        self.workspace = Workspace(f"{arguments} --loss_function logistic --link logistic --quiet")

    @staticmethod
    def _line(example: Example, label: int | None) -> str:
        query = "|q " + " ".join(_vw_token(w) for w in example["query"].split()) if example.get("query") else ""
        head = "" if label is None else ("1 " if label else "-1 ")
        return (f"{head}|u {_vw_token(example['user_id'])} |i {_vw_token(example['item_id'])} "
                f"|p p{example['position']} {query}")

    def predict(self, example: Example) -> float:
        return float(self.workspace.predict(self._line(example, None)))

    def learn(self, example: Example, label: int) -> None:
        self.workspace.learn(self._line(example, label))


def _vw_token(text: str) -> str:
    return "".join("_" if c in " :|\t\n" else c for c in str(text))


def anchors() -> dict[str, Callable[[], Any]]:
    """The anchor learners that are installed: name -> factory."""
    out: dict[str, Callable[[], Any]] = {}
    try:
        from river import facto, linear_model, optim
    except ImportError:
        pass
    else:
        out["River logistic regression"] = lambda: RiverLearner(linear_model.LogisticRegression(optim.SGD(0.05)))
        out["River factorisation machine"] = lambda: RiverLearner(facto.FMClassifier(
            n_factors=8, weight_optimizer=optim.SGD(0.05), latent_optimizer=optim.SGD(0.05), seed=1))
    try:
        import vowpalwabbit  # noqa: F401
    except ImportError:
        pass
    else:
        out["Vowpal Wabbit -q ui"] = lambda: VowpalWabbit("-q ui")
    return out


def delayed_schedule(examples: Sequence[Example], window_ms: int) -> list[tuple[int, int, int]]:
    """(event time, 0 = predict / 1 = learn, example index), in order: each example is predicted when
    its impression arrives and learned when its label would be known to a join (as the `decided` mode)."""
    events = []
    for index, e in enumerate(examples):
        events.append((e["impression_time"], 0, index))
        events.append((decision_time(e["label"], e["impression_time"], e["click_time"], window_ms), 1, index))
    heapq.heapify(events)
    return [heapq.heappop(events) for _ in range(len(events))]


def run_anchor(learner: Any, examples: Sequence[Example], schedule: list[tuple[int, int, int]]
               ) -> tuple[np.ndarray, float]:
    """Progressive scores of one anchor learner over the schedule, and the seconds it took."""
    scores = np.full(len(examples), np.nan)
    vw = isinstance(learner, VowpalWabbit)
    cached = [e if vw else features(e) for e in examples]
    started = time.perf_counter()
    for _, kind, index in schedule:
        if kind == 0:
            scores[index] = learner.predict(cached[index])
        else:
            learner.learn(cached[index], examples[index]["label"])
    return scores, time.perf_counter() - started


def metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    scores = np.clip(scores, 1e-7, 1 - 1e-7)
    return {"auc": auc(labels, scores), "ne": normalized_entropy(labels, scores), "logloss": logloss(labels, scores),
            "calibration": calibration(labels, scores)}


def learning_curve(labels: np.ndarray, scores: np.ndarray, points: int = CURVE_POINTS) -> list[float]:
    """AUC over consecutive equal-count chunks of the time-ordered examples."""
    chunks = np.array_split(np.arange(len(labels)), points)
    return [auc(labels[c], scores[c]) if len(c) else math.nan for c in chunks]


def feedback_delays(examples: Sequence[Example], window_ms: int, mode: str) -> tuple[float, float]:
    """p50/p99 event-time delay (s) between an impression and its first effect on the model."""
    if mode == "impression":  # learned in the call that brings the impression
        return 0.0, 0.0
    delays = np.array([decision_time(e["label"], e["impression_time"], e["click_time"], window_ms)
                       - e["impression_time"] for e in examples], dtype=np.float64) / 1000.0
    return float(np.percentile(delays, 50)), float(np.percentile(delays, 99))


def evaluate_stream(gen: GeneratorConfig, config: JobConfig) -> dict[str, Any]:
    """Every learner on one generated stream; returns rows of metrics and curves."""
    stream = generate(gen)
    rows = event_rows(stream, config.max_disorder_ms)
    embeddings = {item["item_id"]: item["embedding"] for item in stream.items if item.get("embedding")}
    encoder = make_encoder(config.text_encoder)
    text = TextFeatures(encoder, {item["item_id"]: item["title"] for item in stream.items}) if encoder else None
    results: dict[str, Any] = {"rows": {}, "curves": {}, "delays": {}}
    reference: list[Example] | None = None
    default = config.learner
    variants = [(f"freshrank {mode}, {name}", replace(default, learning_mode=mode, bias_optimizer=biases,
                                                       vector_optimizer=vectors), True)
                for mode, (name, biases, vectors) in itertools.product(LEARNING_MODES, OPTIMIZER_CHOICES)]
    variants.append((f"freshrank {default.learning_mode}, users by AdaGrad", replace(default, user_update="gradient"),
                     True))
    variants.append((f"freshrank {default.learning_mode}, ids only", default, False))
    for name, learner, catalog in variants:
        examples, seconds = learn_offline(rows, learner, config.window_ms, config.retention_ms,
                                          embeddings if catalog else None, text if catalog else None)
        examples.sort(key=lambda e: (e["impression_time"], e["impression_id"]))
        if reference is None:
            reference = examples
        labels = np.array([e["label"] for e in examples], dtype=np.float64)
        scores = np.array([e["score"] for e in examples])
        results["rows"][name] = _row(examples, labels, scores, config, len(examples) / seconds)
        results["curves"][name] = learning_curve(labels, scores)
        if catalog:
            results["delays"][name] = feedback_delays(examples, config.window_ms, learner.learning_mode)
    assert reference is not None
    _add_reference_rows(results, reference, config, stream.oracle)
    return results


def _add_reference_rows(results: dict[str, Any], examples: list[Example], config: JobConfig,
                        oracle: dict[str, float] | None) -> None:
    """The anchors, popularity and (with `oracle`) the oracle on time-ordered `examples`."""
    labels = np.array([e["label"] for e in examples], dtype=np.float64)
    schedule = delayed_schedule(examples, config.window_ms)
    for name, factory in anchors().items():
        print(f"  {name} ...")
        scores, seconds = run_anchor(factory(), examples, schedule)
        results["rows"][name] = _row(examples, labels, scores, config, len(examples) / seconds)
        results["curves"][name] = learning_curve(labels, scores)
    results["rows"]["popularity"] = _row(examples, labels, np.asarray(popularity_scores(examples)), config,
                                         math.nan)
    if oracle:
        known = [i for i, e in enumerate(examples) if e["impression_id"] in oracle]
        truth = np.array([oracle[examples[i]["impression_id"]] for i in known])
        results["rows"]["oracle"] = _row([examples[i] for i in known], labels[known], truth, config, math.nan)
        results["curves"]["oracle"] = learning_curve(labels[known], truth)
    results["examples"] = len(examples)


def evaluate_examples(examples: list[Example], config: JobConfig, oracle: dict[str, float] | None = None,
                      name: str = "freshrank (the replay's scores)") -> dict[str, Any]:
    """The anchors on a replay's labeled examples (its `examples/` output), beside the replay's own
    progressive scores; with `oracle` (impression id -> true click probability), the oracle's row."""
    examples = sorted(examples, key=lambda e: (e["impression_time"], e["impression_id"]))
    if not examples:
        raise ValueError("no labeled examples to evaluate")
    labels = np.array([e["label"] for e in examples], dtype=np.float64)
    scores = np.array([e["score"] for e in examples], dtype=np.float64)
    results: dict[str, Any] = {"rows": {name: _row(examples, labels, scores, config, math.nan)},
                               "curves": {name: learning_curve(labels, scores)}, "delays": {}}
    _add_reference_rows(results, examples, config, oracle)
    return results


def _row(examples: Sequence[Example], labels: np.ndarray, scores: np.ndarray, config: JobConfig,
         rate: float) -> dict[str, Any]:
    start = examples[0]["impression_time"] if examples else 0
    after = np.array([e["impression_time"] >= start + 2 * config.window_ms for e in examples])
    return {"all": metrics(labels, scores), "after": metrics(labels[after], scores[after]), "examples_per_s": rate}


def format_results(title: str, results: dict[str, Any]) -> str:
    lines = [f"{title}: {results['examples']:,} examples; progressive (each scored before it is learned)",
             f"{'':34s} {'all examples':^30s}  {'after warm-up':^30s}",
             f"{'':34s} {'AUC':>7s} {'NE':>7s} {'logloss':>7s} {'calib':>6s}  "
             f"{'AUC':>7s} {'NE':>7s} {'logloss':>7s} {'calib':>6s} {'examples/s':>11s}"]
    for name, row in results["rows"].items():
        a, b = row["all"], row["after"]
        rate = row["examples_per_s"]
        lines.append(f"{name:34s} {a['auc']:7.4f} {a['ne']:7.4f} {a['logloss']:7.4f} {a['calibration']:6.3f}  "
                     f"{b['auc']:7.4f} {b['ne']:7.4f} {b['logloss']:7.4f} {b['calibration']:6.3f} "
                     f"{'' if math.isnan(rate) else f'{rate:11,.0f}'}")
    if results["delays"]:
        lines.append("delay from an impression to its first effect on the model (event time, s): "
                     + "; ".join(f"{name}: p50 {p50:,.0f} p99 {p99:,.0f}"
                                 for name, (p50, p99) in results["delays"].items()))
    return "\n".join(lines)


def plot_curves(all_results: dict[str, dict[str, Any]], png: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(all_results), figsize=(6 * len(all_results), 4.5), squeeze=False)
    for ax, (title, results) in zip(axes[0], all_results.items(), strict=True):
        for name, curve in results["curves"].items():
            ax.plot(np.linspace(0, 100, len(curve)), curve, label=name, linestyle="--" if name == "oracle" else "-")
        ax.set_title(title)
        ax.set_xlabel("share of the stream (%)")
        ax.set_ylabel("progressive AUC")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def read_oracle(path: Path) -> dict[str, float]:
    """impression_id -> true click probability from an oracle.jsonl (`freshrank generate` writes one)."""
    import orjson

    oracle = {}
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
            oracle[str(record["impression_id"])] = float(record["p"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} line {number}: not an oracle record "
                             f'{{"impression_id": ..., "p": ...}} ({error})') from None
    return oracle


def run_evaluate_replay(out_dir: Path, replay_dir: Path, config: JobConfig, oracle_file: Path | None = None
                        ) -> dict[str, Any]:
    """The anchors on a replay's examples (`freshrank replay --out DIR`): prints the table, writes the PNG."""
    from job.replay import read_output

    examples = read_output(replay_dir, "examples")
    oracle = read_oracle(oracle_file) if oracle_file is not None else None
    print(f"{len(examples):,} examples from {replay_dir} ...")
    results = evaluate_examples(examples, config, oracle)
    print(format_results(str(replay_dir), results))
    png = plot_curves({str(replay_dir): results}, out_dir / "learning-curves.png")
    print(f"learning curves: {png}" if png else "learning curves: install the plots extra for the PNG")
    return results


def run_evaluate(out_dir: Path, seeds: Sequence[int], n_impressions: int, config: JobConfig, **stream_shape: Any
                 ) -> dict[int, dict[str, Any]]:
    """Evaluate on one generated stream per seed; prints the tables, writes the PNG, returns the results.

    `stream_shape` holds GeneratorConfig's skew and text fields (heavy users, Chinese share, ...).
    """
    all_results = {}
    for seed in seeds:
        print(f"seed {seed}: {n_impressions:,} impressions, window {config.window_s:g} s ...")
        gen = GeneratorConfig(n_impressions=n_impressions, seed=seed, window_s=config.window_s, **stream_shape)
        all_results[seed] = evaluate_stream(gen, config)
        print(format_results(f"seed {seed}", all_results[seed]))
        print()
    png = plot_curves({f"seed {seed}": results for seed, results in all_results.items()},
                      out_dir / "learning-curves.png")
    print(f"learning curves: {png}" if png else "learning curves: install the plots extra for the PNG")
    if not anchors():
        print("River and Vowpal Wabbit are not installed: pip install 'freshrank[compare]'")
    return all_results
