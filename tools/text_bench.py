"""Does reading text pay, and what does it cost? One run, one generated stream with text.

The stream: titles and queries in English and Chinese (half each), a third naming their category by
a synonym, a hidden relevance effect on clicks (a search showing an item of the query's category),
and a fifth of the catalog launched mid-stream.

Quality: the learner core (udfs.batch_learner, the code the job runs, in-process over plain dicts)
learns the same events in the same order four ways:
- items started from their id (hash-initialised vectors), no text;
- items started from the producer's catalog embedding (a fixed random projection), no text;
- the query-title term, items hash-initialised;
- the query-title term and the learned title map (new items start from their title).
and prints progressive AUCs after the warm-up (all examples, search requests only) and on the first
impressions of the items launched mid-stream, beside the popularity baseline and the oracle.

Cost: `freshrank replay` (Flink) of the same files with the text encoder off and on, impressions/s.
Nothing here asserts: it prints figures measured in the same run.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from job.config import JobConfig
from job.replay import run_replay
from tools.evaluate import auc, popularity_scores
from tools.generate import GeneratorConfig, Stream, generate, write_stream
from tools.offline_learner import event_rows, learn_offline
from udfs.text_encoder import make_encoder
from udfs.text_features import TextFeatures

FIRST_IMPRESSIONS = 20  # per launched item: its first impressions are what cold start is judged on


@dataclass(frozen=True)
class Variant:
    name: str
    text: bool  # the query-title term
    title_map: bool  # new items from their title through the learned map
    embeddings: bool  # items without a title start from the catalog embedding


VARIANTS = (
    Variant("no text, items from their id (hash)", False, False, False),
    Variant("no text, items from catalog embedding", False, False, True),
    Variant("query-title term, items from id", True, False, False),
    Variant("query-title term + title map", True, True, False),
)


def text_stream_config(n_impressions: int, seed: int) -> GeneratorConfig:
    return GeneratorConfig(n_impressions=n_impressions, seed=seed, chinese_share=0.5, synonym_share=0.3,
                           query_relevance=1.0, new_item_share=0.2)


def learn(stream: Stream, rows: list[list], config: JobConfig, variant: Variant,
          text: TextFeatures | None) -> tuple[list[dict[str, Any]], float]:
    embeddings = {item["item_id"]: item["embedding"] for item in stream.items} if variant.embeddings else None
    return learn_offline(rows, config.learner, config.window_ms, config.retention_ms, embeddings,
                         text if variant.text else None, variant.title_map)


def first_impressions(examples: list[dict[str, Any]], launches: dict[str, int], k: int) -> list[int]:
    """Indices (into time-ordered `examples`) of each launched item's first `k` examples."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for index, example in enumerate(examples):
        item_id = example["item_id"]
        if item_id in launches and seen[item_id] < k:
            seen[item_id] += 1
            out.append(index)
    return out


def _auc_of(examples: list[dict[str, Any]], scores: np.ndarray, index: list[int]) -> float:
    return auc([examples[i]["label"] for i in index], scores[index]) if index else math.nan


def quality(examples: list[dict[str, Any]], scores: np.ndarray, warm_from: int,
            launches: dict[str, int]) -> dict[str, float]:
    after = [i for i, e in enumerate(examples) if e["impression_time"] >= warm_from]
    searches = [i for i in after if examples[i]["query"]]
    new_items = first_impressions(examples, launches, FIRST_IMPRESSIONS)
    return {"auc_after_warm_up": _auc_of(examples, scores, after),
            "auc_search": _auc_of(examples, scores, searches),
            "auc_new_items": _auc_of(examples, scores, new_items)}


def _replay_rate(events: Path, run_dir: Path, config: JobConfig) -> float:
    started = time.perf_counter()
    run_replay(events / "impressions.jsonl", events / "clicks.jsonl", run_dir, config, items=events / "items.jsonl")
    return sum(1 for _ in open(events / "impressions.jsonl", "rb")) / (time.perf_counter() - started)


def run_text_bench(work_dir: Path, n_impressions: int, config: JobConfig, seed: int = 7,
                   flink: bool = True) -> dict[str, Any]:
    """Every measurement on one generated stream; prints one table and returns the figures."""
    stream = generate(text_stream_config(n_impressions, seed))
    encoder = make_encoder(config.text_encoder if config.text_encoder != "none" else "use")
    text = TextFeatures(encoder, {item["item_id"]: item["title"] for item in stream.items})
    rows = event_rows(stream, config.max_disorder_ms)
    launches = stream.stats["launches"]
    warm_from = min(r["event_time"] for r in stream.impressions) + 2 * config.window_ms
    figures: dict[str, Any] = {"impression records": len(stream.impressions), "launched_items": len(launches),
                               "encoder": type(encoder).__name__}
    reference = None
    for variant in VARIANTS:
        print(f"learning: {variant.name} ...")
        examples, seconds = learn(stream, rows, config, variant, text)
        examples.sort(key=lambda e: (e["impression_time"], e["impression_id"]))
        scores = np.array([e["score"] for e in examples])
        figures[variant.name] = {**quality(examples, scores, warm_from, launches),
                                 "impressions_per_s": len(stream.impressions) / seconds}
        reference = examples
    assert reference is not None
    figures["popularity"] = quality(reference, np.asarray(popularity_scores(reference)), warm_from, launches)
    oracle = np.array([stream.oracle.get(e["impression_id"], math.nan) for e in reference])
    figures["oracle"] = quality(reference, oracle, warm_from, launches)

    if flink:
        events = work_dir / f"text-events-{n_impressions}-{seed}"
        if not (events / "items.jsonl").exists():
            write_stream(stream, events)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        # Alternating, best of two each: the first replay of a process also pays the JVM's launch.
        for attempt in range(2):
            for name in ("none", config.text_encoder if config.text_encoder != "none" else "use"):
                print(f"Flink replay with --text-encoder {name} ({attempt + 1} of 2) ...")
                rate = _replay_rate(events, work_dir / f"run-{stamp}-{name}-{attempt}",
                                    replace(config, text_encoder=name))
                key = f"replay_impressions_per_s text_encoder={name}"
                figures[key] = max(figures.get(key, 0.0), rate)
    print()
    print(format_text_table(figures))
    return figures


def format_text_table(figures: dict[str, Any]) -> str:
    lines = [f"{figures['impression records']:,} impression records, {figures['launched_items']} items launched "
             "mid-stream; "
             f"encoder {figures['encoder']}; AUCs progressive (each example scored before it is learned)",
             f"{'':42s} {'AUC after':>10s} {'AUC':>8s} {'AUC new items':>14s} {'learner core':>13s}",
             f"{'':42s} {'warm-up':>10s} {'search':>8s} {f'(first {FIRST_IMPRESSIONS})':>14s} {'imp/s':>13s}"]
    for name in [v.name for v in VARIANTS] + ["popularity", "oracle"]:
        row = figures[name]
        rate = row.get("impressions_per_s")
        lines.append(f"{name:42s} {row['auc_after_warm_up']:10.4f} {row['auc_search']:8.4f} "
                     f"{row['auc_new_items']:14.4f} {'' if rate is None else f'{rate:13,.0f}'}")
    replays = {k: v for k, v in figures.items() if k.startswith("replay_impressions_per_s")}
    if replays:
        lines.append("")
        lines.append("freshrank replay (Flink, start-up included), impressions/s:")
        base = figures.get("replay_impressions_per_s text_encoder=none")
        for key, rate in replays.items():
            ratio = f"  ({rate / base:.2f}x of none)" if base else ""
            lines.append(f"  {key.split(' ', 1)[1]:24s} {rate:10,.0f}{ratio}")
    return "\n".join(lines)
