"""The newest model materialized from snapshot records: for hot starts and for serving.

Snapshot records (schemas/ModelSnapshot.avsc) are deltas: each carries one entity at one version.
`ModelStore` keeps, per entity, the record with the highest version, so it can be fed records in
any order (files, a compacted topic) and converges to the newest model.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from udfs.learner_math import Bias, ItemParams, ItemSide, LearnerConfig, UserCodec, sigmoid

USER, ITEM, POSITION, GLOBAL = "USER", "ITEM", "POSITION", "GLOBAL"
ENTITY_TYPES = (USER, ITEM, POSITION, GLOBAL)
_INT_FIELDS = ("version", "updates", "watermark", "created_at", "replica")
_SNAPSHOT_FIELDS = ("version", "entity_type", "entity_id", "vector", "bias", "vector_accum", "bias_accum",
                    "updates", "watermark", "created_at", "replica")


class SnapshotError(ValueError):
    """A snapshot that cannot be resumed from; the message names the file and line and says why."""


def _number_problem(name: str, value: Any, positive: bool) -> str | None:
    if value is None:
        return f"{name} is null (JSON writes NaN as null)"
    if type(value) not in (int, float):  # not bool: True is an int to Python, not a parameter
        return f"{name} is {type(value).__name__}, not a number"
    if not math.isfinite(value):
        return f"{name} is {value!r}, not finite"
    if positive and not value > 0:
        return f"{name} is {value!r}: an AdaGrad accumulator must be > 0"
    return None


def _vector_problem(name: str, values: Any, length: int | None, positive: bool) -> str | None:
    if type(values) is not list:
        return f"{name} is {type(values).__name__}, not a list"
    if length is not None and len(values) != length:
        return f"{name} has {len(values)} values, expected {length}"
    for index, value in enumerate(values):
        problem = _number_problem(f"{name}[{index}]", value, positive)
        if problem is not None:
            return problem
    return None


def snapshot_problem(record: Any, dim: int | None = None) -> str | None:
    """Why `record` cannot be a ModelSnapshot record of a `dim`-dimensional model (None if it can).

    Hot starts and the item loop feed these values straight into the learner's float math: a null
    (how JSON writes NaN), an infinity, a zero accumulator or a vector of another dimension would turn
    the model into NaN or fail deep in numpy, so each is refused with its reason instead.
    """
    if not isinstance(record, dict):
        return f"not a snapshot record but a JSON {type(record).__name__}"
    missing = [name for name in _SNAPSHOT_FIELDS if name not in record]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    nulls = [name for name in _SNAPSHOT_FIELDS if record[name] is None]
    if nulls:
        return f"null in field(s): {', '.join(nulls)} (JSON writes NaN as null)"
    kind = record["entity_type"]
    if kind not in ENTITY_TYPES:
        return f"entity_type is {kind!r}, not one of {', '.join(ENTITY_TYPES)}"
    if type(record["entity_id"]) is not str or not record["entity_id"]:
        return f"entity_id is {record['entity_id']!r}, not a non-empty string"
    if kind == POSITION and not (record["entity_id"].isdigit() and int(record["entity_id"]) >= 1):
        return f"POSITION entity_id is {record['entity_id']!r}, not a position >= 1"
    for name in _INT_FIELDS:
        if type(record[name]) is not int:
            return f"{name} is {type(record[name]).__name__}, not an integer"
    vector = record["vector"]
    if kind in (USER, ITEM) and dim is not None and type(vector) is list and len(vector) != dim:
        return f"{kind} vector has {len(vector)} values, but the job's --dim is {dim}"
    # POSITION and GLOBAL records carry no vectors; a vector's accumulator is as long as the vector
    length = (len(vector) if type(vector) is list else None) if kind in (USER, ITEM) else 0
    return (_vector_problem("vector", vector, length, positive=False)
            or _vector_problem("vector_accum", record["vector_accum"], length, positive=True)
            or _number_problem("bias", record["bias"], positive=False)
            or _number_problem("bias_accum", record["bias_accum"], positive=kind != USER))


class ModelStore:
    """Newest version of every user, item, position and global parameter seen so far."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.watermark = -(2**63)
        self.created_at = 0

    def apply(self, record: dict[str, Any]) -> bool:
        """Take one snapshot record; return whether it was newer than what was held."""
        key = (record["entity_type"], record["entity_id"])
        held = self.records.get(key)
        if held is not None and held["version"] >= record["version"]:
            return False
        self.records[key] = record
        self.version = max(self.version, record["version"])
        self.watermark = max(self.watermark, record["watermark"])
        self.created_at = max(self.created_at, record["created_at"])
        return True

    def apply_all(self, records: Iterable[dict[str, Any]]) -> ModelStore:
        for record in records:
            self.apply(record)
        return self

    def __len__(self) -> int:
        return len(self.records)

    def _get(self, entity_type: str, entity_id: str) -> dict[str, Any] | None:
        return self.records.get((entity_type, entity_id))

    def user_ids(self) -> list[str]:
        return [entity_id for entity_type, entity_id in self.records if entity_type == USER]

    def user_vector(self, user_id: str) -> np.ndarray | None:
        record = self._get(USER, user_id)
        return None if record is None else np.asarray(record["vector"], dtype=np.float64)

    # Hot start -----------------------------------------------------------------------------
    def user_state(self, user_id: str, codec: UserCodec) -> np.ndarray | None:
        """The learner state of a user, as the learner keeps it in Flink state."""
        record = self._get(USER, user_id)
        if record is None:
            return None
        return codec.pack(
            np.asarray(record["vector"], dtype=np.float64),
            np.asarray(record["vector_accum"], dtype=np.float64),
            record["updates"],
        )

    def item_side(self, config: LearnerConfig, embeddings: dict[str, list[float]] | None = None) -> ItemSide:
        """Item-side parameters to resume learning from."""
        side = ItemSide(config, embeddings)
        for (entity_type, entity_id), record in self.records.items():
            if entity_type == ITEM:
                if len(record["vector"]) != config.dim:
                    raise ValueError(
                        f"snapshot has dimension {len(record['vector'])}, the job is configured for {config.dim}"
                    )
                side.items[entity_id] = ItemParams(
                    np.asarray(record["vector"], dtype=np.float64),
                    np.asarray(record["vector_accum"], dtype=np.float64),
                    Bias(record["bias"], record["bias_accum"]),
                    record["updates"],
                )
            elif entity_type == POSITION:
                side.positions[int(entity_id)] = Bias(record["bias"], record["bias_accum"], record["updates"])
            elif entity_type == GLOBAL:
                side.global_bias = Bias(record["bias"], record["bias_accum"], record["updates"])
        return side

    # Serving -------------------------------------------------------------------------------
    def score(self, user_id: str, item_id: str) -> float | None:
        """Click probability without the position term (ranking decides the position)."""
        item = self._get(ITEM, item_id)
        if item is None:
            return None
        glob = self._get(GLOBAL, "global")
        z = item["bias"] + (glob["bias"] if glob else 0.0)
        user = self._get(USER, user_id)
        if user is not None:
            z += float(np.dot(user["vector"], item["vector"]))
        return sigmoid(z)

    def rank(self, user_id: str, candidates: Iterable[str], k: int = 10) -> list[tuple[str, float]]:
        """Top-k candidates by predicted click probability; unknown items rank last with NaN."""
        scored = []
        for item_id in candidates:
            score = self.score(user_id, item_id)
            scored.append((item_id, -math.inf if score is None else score))
        best = heapq.nlargest(k, scored, key=lambda pair: pair[1])
        return [(item_id, math.nan if s == -math.inf else s) for item_id, s in best]
