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

from udfs.learner_math import ItemParams, ItemSide, LearnerConfig, UserCodec, sigmoid
from udfs.text_features import CODE_DIM, TextFeatures, TitleMap

USER, ITEM, POSITION, GLOBAL, TEXT = "USER", "ITEM", "POSITION", "GLOBAL", "TEXT"
ENTITY_TYPES = (USER, ITEM, POSITION, GLOBAL, TEXT)
# TEXT records: the query-title weight and the search bias (in `bias`, like GLOBAL), and the title map
# (`vector`: its weights, (dim+1) x CODE_DIM row-major; `vector_accum`: its statistics, gram then cross;
# `updates`: items fitted; see udfs.text_features.TitleMap).
TEXT_WEIGHT_ID, SEARCH_BIAS, TITLE_MAP = "query_title_weight", "search_bias", "title_map"
TEXT_IDS = (TEXT_WEIGHT_ID, SEARCH_BIAS, TITLE_MAP)
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
    if record.get("bias_z") is not None:
        problem = _number_problem("bias_z", record["bias_z"], positive=False)
        if problem is not None:
            return problem
    if kind == TEXT:
        return _text_problem(record, dim)
    vector = record["vector"]
    if kind in (USER, ITEM) and dim is not None and type(vector) is list and len(vector) != dim:
        return f"{kind} vector has {len(vector)} values, but the job's --dim is {dim}"
    # POSITION and GLOBAL records carry no vectors; a vector's accumulator is as long as the vector
    length = (len(vector) if type(vector) is list else None) if kind in (USER, ITEM) else 0
    accum = record["vector_accum"]
    if kind == USER and length and type(accum) is list and len(accum) == length + length * length:
        # a Newton user: the accumulator, then its posterior covariance
        accum_problem = (_vector_problem("vector_accum", accum[:length], length, positive=True)
                         or _covariance_problem(accum[length:], length))
    else:
        accum_problem = _vector_problem("vector_accum", accum, length, positive=True)
    return (_vector_problem("vector", vector, length, positive=False)
            or accum_problem
            or _number_problem("bias", record["bias"], positive=False)
            or _number_problem("bias_accum", record["bias_accum"], positive=kind != USER))


def _covariance_problem(values: list, dim: int) -> str | None:
    problem = _vector_problem("USER covariance", values, dim * dim, positive=False)
    if problem is None and not all(values[k * dim + k] > 0 for k in range(dim)):
        return "USER covariance has a diagonal value that is not positive"
    return problem


def _text_problem(record: dict[str, Any], dim: int | None) -> str | None:
    entity_id = record["entity_id"]
    if entity_id not in TEXT_IDS:
        return f"TEXT entity_id is {entity_id!r}, not one of {', '.join(TEXT_IDS)}"
    if entity_id != TITLE_MAP:
        return (_vector_problem("vector", record["vector"], 0, positive=False)
                or _number_problem("bias", record["bias"], positive=False)
                or _number_problem("bias_accum", record["bias_accum"], positive=True))
    vector = record["vector"]
    if type(vector) is list and len(vector) % CODE_DIM:
        return f"title map has {len(vector)} weights, not a multiple of {CODE_DIM}"
    width = len(vector) // CODE_DIM if type(vector) is list else None
    if dim is not None and width is not None and width != dim + 1:
        return f"title map is for dimension {width - 1}, but the job's --dim is {dim}"
    accum_length = None if width is None else CODE_DIM * CODE_DIM + width * CODE_DIM
    return (_vector_problem("vector", vector, None, positive=False)
            or _vector_problem("vector_accum", record["vector_accum"], accum_length, positive=False))


class ModelStore:
    """Newest version of every user, item, position and global parameter seen so far."""

    def __init__(self, text: TextFeatures | None = None) -> None:
        """`text`: query and title embeddings for the text terms and for items never learned (their
        vectors come from their titles through the learned title map); without it, text is ignored."""
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.text = text
        self._title_map: tuple[int, TitleMap] | None = None  # (version of its record, the map)
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
        return codec.from_snapshot(np.asarray(record["vector"], dtype=np.float64),
                                   np.asarray(record["vector_accum"], dtype=np.float64), record["updates"])

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
                    side.bias_of(record),
                    record["updates"],
                )
            elif entity_type == POSITION:
                side.positions[int(entity_id)] = side.bias_of(record)
            elif entity_type == GLOBAL:
                side.global_bias = side.bias_of(record)
            elif entity_type == TEXT and entity_id == TEXT_WEIGHT_ID:
                side.text_weight = side.bias_of(record)
            elif entity_type == TEXT and entity_id == SEARCH_BIAS:
                side.search_bias = side.bias_of(record)
        return side

    def title_map_array(self) -> np.ndarray | None:
        """The title map's state as `TitleMap.to_array` lays it out, or None without one."""
        record = self._get(TEXT, TITLE_MAP)
        if record is None:
            return None
        return np.concatenate([np.asarray(record["vector_accum"], dtype=np.float64),
                               np.asarray(record["vector"], dtype=np.float64), [float(record["updates"])]])

    def title_map(self) -> TitleMap | None:
        """The newest title map (rebuilt only when a newer record arrived)."""
        record = self._get(TEXT, TITLE_MAP)
        if record is None:
            return None
        if self._title_map is None or self._title_map[0] != record["version"]:
            title_map = TitleMap(len(record["vector"]) // CODE_DIM - 1)
            title_map.load_array(self.title_map_array())
            self._title_map = (record["version"], title_map)
        return self._title_map[1]

    # Serving -------------------------------------------------------------------------------
    def _item_params(self, item_id: str) -> tuple[Any, float] | None:
        """(vector, bias) of a learned item, else from its title through the title map, else None."""
        item = self._get(ITEM, item_id)
        if item is not None:
            return item["vector"], item["bias"]
        text = self.text
        if text is None or not text.has_title(item_id):
            return None
        title_map = self.title_map()
        if title_map is None or not title_map.ready:
            return None
        return title_map.predict(text.title_code(item_id))

    def _text_logit(self, similarity: float) -> float:
        if similarity != similarity:  # NaN: no query
            return 0.0
        weight, bias = self._get(TEXT, TEXT_WEIGHT_ID), self._get(TEXT, SEARCH_BIAS)
        return (weight["bias"] * similarity if weight else 0.0) + (bias["bias"] if bias else 0.0)

    def score(self, user_id: str, item_id: str, query: str | None = None) -> float | None:
        """Click probability without the position term (ranking decides the position); with `query`,
        a search request's. None for an item the model knows nothing of (no record, no usable title)."""
        return self.scores(user_id, [item_id], query)[0]

    def scores(self, user_id: str, item_ids: list[str], query: str | None = None) -> list[float | None]:
        """`score` of several items for one request, their text in one encoder call."""
        glob = self._get(GLOBAL, "global")
        user = self._get(USER, user_id)
        similarity = [math.nan] * len(item_ids)
        if query and self.text is not None:
            similarity = self.text.similarities([query] * len(item_ids), item_ids).tolist()
        out: list[float | None] = []
        for item_id, sim in zip(item_ids, similarity, strict=True):
            params = self._item_params(item_id)
            if params is None:
                out.append(None)
                continue
            vector, bias = params
            z = bias + (glob["bias"] if glob else 0.0) + self._text_logit(sim)
            if user is not None:
                z += float(np.dot(user["vector"], vector))
            out.append(sigmoid(z))
        return out

    def rank(self, user_id: str, candidates: Iterable[str], k: int = 10,
             query: str | None = None) -> list[tuple[str, float]]:
        """Top-k candidates by predicted click probability (for a search, pass its `query`); items the
        model knows nothing of rank last with NaN."""
        candidates = list(candidates)
        scored = []
        for item_id, score in zip(candidates, self.scores(user_id, candidates, query), strict=True):
            scored.append((item_id, -math.inf if score is None else score))
        best = heapq.nlargest(k, scored, key=lambda pair: pair[1])
        return [(item_id, math.nan if s == -math.inf else s) for item_id, s in best]
