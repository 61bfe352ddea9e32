"""The job's learner core run in-process over a generated stream: for evaluations of the model itself.

`udfs.batch_learner.BatchJoinLearner` is what the job's learner operator runs; here it gets the
stream's events in event-time order with the join watermark trailing by the disorder bound, in
batches, over plain-dict state (udfs.memory_state). Labels equal the job's; scores equal a replay's
up to batch boundaries (which only move the text map's refits).
"""

from __future__ import annotations

import time
from typing import Any

from tools.generate import Stream
from udfs.batch_learner import END_OF_INPUT, BatchJoinLearner
from udfs.join_logic import ImpressionClickJoin
from udfs.learner_kernel import compile_kernel
from udfs.learner_math import LearnerConfig
from udfs.memory_state import memory_state
from udfs.records import NO_WATERMARK, click_event, impression_event
from udfs.text_features import TextFeatures

BATCH_EVENTS = 2000


def event_rows(stream: Stream, max_disorder_ms: int) -> list[list]:
    """[join watermark, event] rows in event-time order, the watermark trailing by the disorder bound."""
    events = [impression_event(r) for r in stream.impressions] + [click_event(r) for r in stream.clicks]
    events.sort(key=lambda event: event[-1])
    rows, newest = [], None
    for event in events:
        rows.append([NO_WATERMARK if newest is None else newest - max_disorder_ms - 1, event])
        newest = event[-1] if newest is None else max(newest, event[-1])
    return rows


def learn_offline(rows: list[list], config: LearnerConfig, window_ms: int, retention_ms: int,
                  embeddings: dict[str, list[float]] | None = None, text: TextFeatures | None = None,
                  use_title_map: bool = True) -> tuple[list[dict[str, Any]], float]:
    """The examples the learner core emits for these rows (in emission order), and the seconds it took."""
    compile_kernel()
    learner = BatchJoinLearner(ImpressionClickJoin(window_ms, retention_ms), config, 60_000, 0, memory_state(),
                               embeddings, text=text, use_title_map=use_title_map)
    examples: list[dict[str, Any]] = []
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH_EVENTS):
        examples += learner.process_batch(rows[start : start + BATCH_EVENTS], 0).examples
    examples += learner.advance_to(END_OF_INPUT).examples
    return examples, time.perf_counter() - started
