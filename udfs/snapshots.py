"""Model snapshots: the records a learner publishes, and how their versions grow.

Every `snapshot_interval_ms` of wall-clock time (and once more when the input ends) the learner
(`udfs.join_learn`) publishes every entity it changed since its last snapshot under one new version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # only the annotation: the plain logic here loads without pyflink
    from pyflink.datastream import RuntimeContext

from udfs.learner_math import Bias, ItemParams
from udfs.model_store import ITEM

END_OF_INPUT = 2**63 - 1  # Flink's final watermark at the end of bounded input

def subtask_index(runtime_context: RuntimeContext) -> int:
    """This subtask's index; PyFlink 2.2's wrapper still calls a method Flink 2.x moved to TaskInfo."""
    try:
        return runtime_context.get_index_of_this_subtask()
    except AttributeError:
        return runtime_context._runtime_context.getTaskInfo().getIndexOfThisSubtask()


def subtask_count(runtime_context: RuntimeContext) -> int:
    """How many parallel subtasks this operator has (see `subtask_index` for the fallback)."""
    try:
        return runtime_context.get_number_of_parallel_subtasks()
    except AttributeError:
        return runtime_context._runtime_context.getTaskInfo().getNumberOfParallelSubtasks()

def next_version(previous: int, now_ms: int) -> int:
    """Versions are wall-clock based so they keep growing across restarts, and strictly increase."""
    return max(previous + 1, now_ms)

def snapshot_record(
    version: int,
    entity_type: str,
    entity_id: str,
    vector: np.ndarray | None,
    accum: np.ndarray | None,
    bias: Bias | None,
    updates: int,
    watermark: int,
    created_at: int,
    replica: int,
) -> dict[str, Any]:
    """A ModelSnapshot record (schemas/ModelSnapshot.avsc), Python types only."""
    return {
        "version": version,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "vector": [] if vector is None else vector.tolist(),
        "bias": 0.0 if bias is None else float(bias.value),
        "vector_accum": [] if accum is None else accum.tolist(),
        "bias_accum": 0.0 if bias is None else float(bias.accum),
        "updates": int(updates),
        "watermark": int(watermark),
        "created_at": created_at,
        "replica": replica,
    }

def item_record(version: int, item_id: str, item: ItemParams, common: dict[str, Any]) -> dict[str, Any]:
    return snapshot_record(version, ITEM, item_id, item.vector, item.accum, item.bias, item.updates, **common)
