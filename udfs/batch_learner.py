"""The batched join-and-learn core of one learner subtask, over plain state handles.

One call per batch (`process_batch`): the batch's events, each with the join watermark it carries
(see job.batching), go through the join in arrival order; every event-time decision due at or before
an event's watermark is taken before that event, exactly as a per-event operator's timers would fire.
The join runs compiled over columns (udfs.join_kernel: the rules of udfs.join_logic), with ids mapped
to entry slots here before the call and its results turned into records after it. The learning steps
it produces (score an impression when it arrives; score-then-learn an example when its label is
decided) run in order in one compiled call (udfs.learner_kernel), so every example is scored before
it is learned and sees every update before it.

State. Everything lives in Flink state, under the subtask's one shard key (job.routing):
- `entry_blocks`: block number -> join entries (udfs.join_logic.JoinState fields, the
  impression-time score, whether a warm-up positive still has to be learned, the entry's sequence
  number, which orders timers of the same time) as they stood at the end of one call: one state write
  per call, not one per entry. A call writes up to two blocks: the impressions that arrived in it (as
  columns), and the entries that changed after their own block was written (a click, a deferred
  positive learned) or that hold clicks without an impression. After a restore an id's version in the
  newest block wins. A block is removed once every entry in it is over (its impression's retention, or
  its held clicks' windows); nothing is removed entry by entry, nor written for a negative decided by
  its deadline: `decided_until` in `meta` tells what is over (a PENDING entry whose deadline is at or
  before it was emitted as a negative; one whose retention ended by then was forgotten, retention
  timers being coarsened to forget buckets of FORGET_BUCKET_MS, and an id seen again in between is
  already treated as new; held clicks whose window ended by then were emitted as orphans);
- `entries`: impression id -> an entry, one by one: how changed entries were kept before they went
  in blocks; read (and moved into a block) when restoring such a savepoint;
- `users`, `items`: id -> the entity's float64 row bytes (udfs.learner_kernel layouts);
- `biases`: position -> bias row bytes, GLOBAL_KEY for the global bias, TEXT_KEY for the two text
  terms (query-title weight, search bias) and TITLE_MAP_KEY for the learned title map;
- `dirty`: entities changed since the last snapshot; `meta`: version, watermarks, warm-up;
  `intervals`: interval start -> the stats of an open metric interval (a replay whose clicks are read
  ahead of its impressions keeps many open: each call writes only those it changed);
- `catalog`: item id -> (title, embedding) of the items published while the job runs (the catalog
  read at start travels with the job itself).
Python dicts and arrays are only a cache of that state: every change of a batch is written back
before the call returns, so a checkpoint (taken between calls) holds all of it. After a restore the
caches start empty and fill from state.
"""

from __future__ import annotations

import heapq
import logging
import pickle
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import itemgetter
from typing import Any, Protocol

import numpy as np
import orjson

from udfs.click_stall import ClickStallGuard
from udfs.join_kernel import (
    C_CLICK_BASE,
    C_DECIDED_UNTIL,
    C_EVENTS,
    C_EXAMPLES,
    C_FORGOTTEN,
    C_LISTED,
    C_NEXT_SEQ,
    C_OPS,
    C_RELEASED,
    C_WARM_UP_SET,
    C_WARM_UP_UNTIL,
    C_WATERMARK,
    E_ADVANCE,
    E_KIND,
    E_TIME,
    EV_NONE,
    EVENT_WIDTH,
    J_DUPLICATE_IMPRESSION,
    J_EARLY_CLICK,
    J_LATE_CLICK,
    J_ORPHAN_CLICK,
    S_CHANGED,
    S_DEFERRED,
    S_HAS_IMP,
    S_HAS_SCORE,
    S_IMP_EVENT,
    S_IMP_TIME,
    S_LABEL,
    S_LISTED,
    S_LIVE,
    S_NEW,
    S_SCORE_OP,
    S_SEQ,
    S_STATUS,
    X_CLICK_TIME,
    X_HAS_CLICK_TIME,
    X_IMPRESSION_TIME,
    X_LABEL,
    X_REF,
    X_SCORE_OP,
    JoinColumns,
)
from udfs.join_logic import (
    CLK_TIME,
    DECIDED,
    IMP_ITEM,
    IMP_POSITION,
    IMP_QUERY,
    IMP_REQUEST,
    IMP_TIME,
    IMP_USER,
    JOIN_EVENT_KINDS,
    PENDING,
    ImpressionClickJoin,
)
from udfs.learner_kernel import (
    BIAS_ACCUM,
    BIAS_UPDATES,
    BIAS_VALUE,
    BIAS_WIDTH,
    BIAS_Z,
    ITEM_BIAS,
    ITEM_BIAS_ACCUM,
    ITEM_BIAS_Z,
    ITEM_UPDATES,
    OP_QUERY_HINT,
    OP_SCORE,
    OP_WIDTH,
    TEXT_SEARCH,
    TEXT_WEIGHT,
    ModelArrays,
)
from udfs.learner_math import IMPRESSION_MODE, LearnerConfig
from udfs.metrics_intervals import IntervalBuckets, IntervalStats
from udfs.model_guard import GuardConfig, ModelGuard, arrivals
from udfs.model_store import (
    GLOBAL,
    ITEM,
    POSITION,
    SEARCH_BIAS,
    TEXT,
    TEXT_WEIGHT_ID,
    TITLE_MAP,
    USER,
    ModelStore,
    snapshot_problem,
)
from udfs.records import CATALOG_ITEM, CLICK, IMPRESSION, ITEM_PARAMS, TICK, records_from_columns
from udfs.snapshots import next_version
from udfs.text_features import TextFeatures, TitleMap

log = logging.getLogger("freshrank.batch_learner")

# The Python rows are a cache of Flink state, bounded so a learner that sees millions of users over
# weeks keeps a steady footprint (~0.5 kB a row at dim 32): past this many, the cache starts over
# between two calls (everything is in state by then) and refills from state as entities come back.
MAX_CACHED_ROWS = 200_000
GLOBAL_KEY = 0  # positions are >= 1, so keys below 1 of `biases` are free for the shared parameters
TEXT_KEY = -1
TITLE_MAP_KEY = -2
# The title map is refitted after this many learned examples, from the items learned since the last
# fit that have learned from at least FIT_MIN_UPDATES examples (fresher vectors are mostly their start).
FIT_EVERY = 2000
FIT_MIN_UPDATES = 10
FIT_MAX_ITEMS = 10_000
# Decided entries wait for the end of their retention in buckets of this many ms of forget time, not in
# the deadline heap (udfs.join_kernel: the retention heap, popped a whole bucket at a time).
FORGET_BUCKET_MS = 60_000
NO_WATERMARK = -(2**63)
END_OF_INPUT = 2**63 - 1


class MapStateLike(Protocol):
    def get(self, key: Any) -> Any: ...
    def put_all(self, entries: dict) -> None: ...
    def remove(self, key: Any) -> None: ...
    def items(self) -> Iterable[tuple[Any, Any]]: ...
    def clear(self) -> None: ...


class ValueStateLike(Protocol):
    def value(self) -> Any: ...
    def update(self, value: Any) -> None: ...


@dataclass
class LearnerState:
    """The state handles of one learner subtask (Flink's, or dict-backed ones in tests)."""

    entries: MapStateLike
    entry_blocks: MapStateLike
    users: MapStateLike
    items: MapStateLike
    biases: MapStateLike
    dirty: MapStateLike
    meta: ValueStateLike
    intervals: MapStateLike
    catalog: MapStateLike


@dataclass
class BatchOutput:
    """What one call produced, as plain records for the Flink shell to encode; the examples as columns
    (LabeledExample field -> values, in decision order), which the encoders write in one compiled pass
    (udfs.json_batch, udfs.avro_batch), without a dict per example."""

    example_columns: dict[str, Sequence] = field(default_factory=dict)
    late_clicks: list[dict[str, Any]] = field(default_factory=list)
    orphan_clicks: list[dict[str, Any]] = field(default_factory=list)
    partials: list[tuple[int, IntervalStats]] = field(default_factory=list)  # closed metric intervals
    watermark: int = NO_WATERMARK  # the join watermark after the call
    join_events: dict[str, int] = field(default_factory=dict)  # counts by kind, for Flink counters

    @property
    def examples(self) -> list[dict[str, Any]]:
        """The examples as records (for tools and tests: the job encodes the columns)."""
        return records_from_columns(self.example_columns)


def click_record(click: tuple) -> dict[str, Any]:
    impression_id, user_id, item_id, event_time = click
    return {"impression_id": impression_id, "user_id": user_id, "item_id": item_id, "event_time": event_time}


class BatchJoinLearner:
    """Join + progressive-validation learning for the events of one learner subtask."""

    def __init__(self, join: ImpressionClickJoin, config: LearnerConfig, metrics_interval_ms: int, replica: int,
                 state: LearnerState, embeddings: dict[str, list[float]] | None = None,
                 initial_model: ModelStore | None = None, click_stall_limit_ms: int = 0,
                 click_stall_report_ms: int = 30_000, state_ttl_ms: int = 0,
                 guard: GuardConfig | None = None, text: TextFeatures | None = None,
                 use_title_map: bool = True) -> None:
        self.join = join
        self.text = text
        self.use_title_map = use_title_map  # off: the text terms only (for comparisons)
        self.title_map = TitleMap(config.dim)
        # Query hint vectors by query, for the title map's weights they were computed with (a refit, a
        # restore and a merge each replace the weights array, which starts the cache over).
        self._hints: dict[str, np.ndarray] = {}
        self._hints_for: np.ndarray | None = None
        # Items started in this call: written to state even if not learned yet, because a start from the
        # title map depends on when it happened (the map keeps learning), so it cannot be redone later.
        self.started_items: set[str] = set()
        # Keys this learner wrote to `dirty` since the last published snapshot: an entity learned in
        # many calls between two snapshots is written there once (starts empty after a restore, which
        # only writes a key again).
        self.dirty_written: set[str] = set()
        self.config = config
        self.replica = replica
        self.state = state
        self.initial_model = initial_model
        self.init_side = (initial_model or ModelStore()).item_side(config, embeddings)
        self.model = ModelArrays(config)
        # A cached row must not outlive its state's TTL (it would bring an expired entity back): the
        # cache starts over at least every half TTL.
        self.cache_lifetime_ms = state_ttl_ms // 2 if state_ttl_ms > 0 else None
        self.cache_since_ms: int | None = None
        # The join entries (udfs.join_kernel): id -> slot, and per slot its id and impression tuple;
        # held clicks by handle (the kernel knows clicks by handle only).
        self.columns = JoinColumns(join.window_ms, join.retention_ms, FORGET_BUCKET_MS,
                                   config.learning_mode == IMPRESSION_MODE)
        self.slot_of: dict[str, int] = {}
        self.slot_ids: list[str | None] = []
        self.slot_impressions: list[list | None] = []  # the impression events (udfs.records layout)
        self.held: dict[int, tuple] = {}
        self.next_handle = 0
        self.blocks: list[tuple[int, int]] = []  # heap of (when its last retention ends, block number)
        meta = state.meta.value()
        self.meta: dict[str, Any] = pickle.loads(meta) if meta is not None else {
            "version": initial_model.version if initial_model else 0,
            "watermark": NO_WATERMARK,
            "max_event_time": NO_WATERMARK,
            # A hot-started model needs no warm-up; a cold one learns first-window positives late.
            "warm_up_until": NO_WATERMARK if initial_model else None,
        }
        self.click_stall = ClickStallGuard(click_stall_limit_ms, click_stall_report_ms, self.meta)
        self.guard = ModelGuard(guard or GuardConfig(), self.meta.setdefault("guard", {}))
        self.buckets = IntervalBuckets(metrics_interval_ms)
        self.buckets.closed_until = self.meta.get("metrics_closed_until", self.buckets.closed_until)
        for start, data in state.intervals.items():
            self.buckets.open[start] = pickle.loads(data)
        self._restore_entries()
        for item_id, data in state.catalog.items():
            self._add_to_catalog(item_id, *pickle.loads(data))
        self._global_loaded = False
        self.costs = {"join": 0.0, "learn": 0.0, "state": 0.0}

    # Restore ------------------------------------------------------------------------------------
    def _restore_entries(self) -> None:
        """Join entries and their timers come back from state (timers are derived from the entries): the
        blocks oldest first, so an entry's newest version wins, then the entries an older savepoint kept
        one by one over them (see the module doc)."""
        decided_until = self.meta.get("decided_until", NO_WATERMARK)
        restored: dict[str, list] = {}
        for block, data in sorted(self.state.entry_blocks.items()):  # oldest first: the newest version wins
            expiry, *stored = pickle.loads(data)
            self.blocks.append((expiry, block))
            for impression_id, fields in _block_entries(stored):
                if self._outlives(fields, decided_until):
                    restored[impression_id] = fields
                else:  # over: forgotten, or its held clicks were orphans
                    restored.pop(impression_id, None)
        heapq.heapify(self.blocks)
        legacy = {impression_id: pickle.loads(data) for impression_id, data in self.state.entries.items()}
        if legacy:  # entries kept one by one (a savepoint from before): over the blocks, then into one
            restored.update(legacy)
            self._write_changed_block(list(legacy.items()))
            self.state.entries.clear()
            self.state.meta.update(pickle.dumps(self.meta))  # its block number is taken
        # Entries from before sequence numbers (a legacy savepoint) get them in restore order.
        next_seq = self.meta.get("next_seq", 0)
        columns, window = self.columns, self.join.window_ms
        due: list[tuple[int, int]] = []
        forget: list[int] = []
        for impression_id, fields in restored.items():
            impression, status, label, held, score, deferred, *seq = fields
            if not seq:
                seq, next_seq = [next_seq], next_seq + 1
            if status == PENDING and impression is not None and self.join.deadline(impression) <= decided_until:
                status, label = DECIDED, 0  # its deadline passed: the negative was emitted, not written back
            slot = self._slot(impression_id)
            slots = columns.slots
            slots[slot, [S_LIVE, S_HAS_IMP, S_IMP_TIME, S_STATUS, S_LABEL, S_DEFERRED, S_HAS_SCORE, S_SEQ]] = (
                1, impression is not None, 0 if impression is None else impression[IMP_TIME], status, label,
                bool(deferred), score is not None, seq[0])
            columns.scores[slot] = 0.0 if score is None else score
            self.slot_impressions[slot] = None if impression is None else [IMPRESSION, *impression]
            for click in held:
                handle = self.next_handle
                self.next_handle += 1
                self.held[handle] = tuple(click)
                columns.hold(slot, handle, click[CLK_TIME])
                due.append((click[CLK_TIME] + window + 1, slot))
            if impression is not None and (status == PENDING or deferred):
                due.append((self.join.deadline(impression), slot))
            if status == DECIDED and impression is not None:
                forget.append(slot)
        columns.load_timers(due, forget)
        self.meta["next_seq"] = next_seq

    def _slot(self, impression_id: str) -> int:
        """The slot of an id, a new one if it has none."""
        slot = self.slot_of.get(impression_id)
        if slot is None:
            slot = self.slot_of[impression_id] = self.columns.new_slot()
            if slot == len(self.slot_ids):
                self.slot_ids.append(impression_id)
                self.slot_impressions.append(None)
            else:
                self.slot_ids[slot] = impression_id
        return slot

    def live_entries(self) -> int:
        """How many join entries this learner holds (ids within retention and held clicks)."""
        return len(self.slot_of)

    def _add_to_catalog(self, item_id: str, title: str, embedding: list[float] | None) -> None:
        if title and self.text is not None:
            self.text.add_titles({item_id: title})
        if embedding:
            self.init_side.add_embedding(item_id, [float(x) for x in embedding])

    def forget_time(self, impression: tuple) -> int:
        """The watermark at which the join forgets an impression (its retention timer)."""
        return impression[IMP_TIME] + self.join.window_ms + self.join.retention_ms

    def _over_at(self, fields: list) -> int:
        """The watermark at which a stored entry is over: its impression forgotten, or (clicks without an
        impression) the last of its held clicks an orphan."""
        impression, held = fields[0], fields[3]
        if impression is not None:
            return self.forget_time(impression)
        return max((click[CLK_TIME] for click in held), default=NO_WATERMARK) + self.join.window_ms + 1

    def _outlives(self, fields: list, decided_until: int) -> bool:
        return self._over_at(fields) > decided_until

    def _write_changed_block(self, entries: list[tuple[str, list]]) -> None:
        """Entries (id, stored fields) as one block, removed when the last of them is over."""
        self._write_block(max(map(self._over_at, (fields for _, fields in entries))), [entries])

    def _write_block(self, expiry: int, stored: list) -> None:
        number = self.meta["next_block"] = self.meta.get("next_block", 0) + 1
        self.state.entry_blocks.put_all({number: pickle.dumps((expiry, *stored), protocol=pickle.HIGHEST_PROTOCOL)})
        heapq.heappush(self.blocks, (expiry, number))

    # Model rows ---------------------------------------------------------------------------------
    def _user_row(self, user_id: str) -> int:
        row = self.model.user_rows.get(user_id)
        if row is not None:
            return row
        stored = self.state.users.get(user_id)
        if stored is not None:
            values = self.model.codec.from_bytes(stored)
        else:
            restored = self.initial_model.user_state(user_id, self.model.codec) if self.initial_model else None
            values = restored if restored is not None else self.model.new_user_row()
        return self.model.add_user(user_id, values)

    def _item_row(self, item_id: str) -> int:
        row = self.model.item_rows.get(item_id)
        if row is not None:
            return row
        stored = self.state.items.get(item_id)
        if stored is not None:
            values = self.model.upgraded(np.frombuffer(stored, dtype=np.float64).copy(), self.model.items.shape[1])
        else:
            params = self.init_side.items.get(item_id)
            if params is None:
                values = self._new_item(item_id)
                self.started_items.add(item_id)
            else:
                bias = params.bias
                values = np.concatenate([params.vector, params.accum,
                                         [bias.value, bias.accum, bias.z, float(params.updates)]])
        return self.model.add_item(item_id, values)

    def _new_item(self, item_id: str) -> np.ndarray:
        """A first-seen item: from its title through the learned title map once that has learned from
        enough items, else from its catalog embedding or its id (udfs.learner_math.ItemSide)."""
        text = self.text
        if text is not None and self.use_title_map and self.title_map.ready and text.has_title(item_id):
            vector, bias = self.title_map.predict(text.title_code(item_id))
            row = self.model.new_item_row(vector)
            row[ITEM_BIAS] = bias
            row[ITEM_BIAS_Z] = self.config.ftrl_z(bias, row[ITEM_BIAS_ACCUM])
            return row
        return self.model.new_item_row(*self.init_side.initial_state(item_id))

    def query_hints(self, queries: list[str]) -> np.ndarray:
        """(n, dim): each query's place in item space by the title map (udfs.learner_kernel OP_QUERY_HINT)."""
        weights = self.title_map.weights
        if self._hints_for is not weights or len(self._hints) > MAX_CACHED_ROWS:
            self._hints, self._hints_for = {}, weights
        hints = self._hints
        missing = [query for query in dict.fromkeys(queries) if query not in hints]
        if missing:
            assert self.text is not None  # hints are only made with a text encoder
            for query, code in zip(missing, self.text.query_codes(missing), strict=True):
                # One query at a time: a product's rounding must not depend on which queries share a
                # call, or a restored learner (with an empty cache) would drift from the one before it.
                hints[query] = self.title_map.predict_vectors(code[None, :])[0]
        return np.array([hints[query] for query in queries]).reshape(len(queries), self.config.dim)

    def _position_row(self, position: int) -> int:
        row = self.model.position_rows.get(position)
        if row is not None:
            return row
        stored = self.state.biases.get(position)
        if stored is not None:
            values = self.model.upgraded(np.frombuffer(stored, dtype=np.float64).copy(), BIAS_WIDTH)
        else:
            term = self.init_side.positions.get(position)
            values = (self.model.new_bias_row() if term is None
                      else np.array([term.value, term.accum, float(term.updates), term.z]))
        return self.model.add_position(position, values)

    def _load_global(self) -> None:
        if self._global_loaded:
            return
        stored = self.state.biases.get(GLOBAL_KEY)
        if stored is not None:
            self.model.global_bias[:] = self.model.upgraded(np.frombuffer(stored, dtype=np.float64), BIAS_WIDTH)
        elif self.initial_model is not None:
            glob = self.init_side.global_bias
            self.model.global_bias[:] = [glob.value, glob.accum, float(glob.updates), glob.z]
        stored = self.state.biases.get(TEXT_KEY)
        if stored is not None:
            self.model.text[:] = [self.model.upgraded(row, BIAS_WIDTH) for row in
                                  np.frombuffer(stored, dtype=np.float64).reshape(len(self.model.text), -1)]
        elif self.initial_model is not None:
            side = self.init_side
            for row, term in ((TEXT_WEIGHT, side.text_weight), (TEXT_SEARCH, side.search_bias)):
                self.model.text[row] = [term.value, term.accum, float(term.updates), term.z]
        stored = self.state.biases.get(TITLE_MAP_KEY)
        if stored is not None:
            self.title_map.load_array(np.frombuffer(stored, dtype=np.float64))
        elif self.initial_model is not None and self.initial_model.title_map_array() is not None:
            self.title_map.load_array(self.initial_model.title_map_array())
        self._global_loaded = True

    # One batch ---------------------------------------------------------------------------------
    def process_batch(self, rows: list, now_ms: int) -> BatchOutput:
        """Run one batch of [join watermark, event] rows (arrival order) and write the state back."""
        started = time.perf_counter()
        self._load_global()
        run = _BatchRun(self)
        run.join(run.prepare(rows, now_ms), rows)
        out = run.finish(started, time.perf_counter())
        self._bound_cache(now_ms)
        return out

    def _bound_cache(self, now_ms: int) -> None:
        if self.cache_since_ms is None:
            self.cache_since_ms = now_ms
        expired = self.cache_lifetime_ms is not None and now_ms - self.cache_since_ms >= self.cache_lifetime_ms
        if expired:
            self.cache_since_ms = now_ms
        if expired or self.model.n_users > MAX_CACHED_ROWS:
            self.model.forget_users()
        if expired or self.model.n_items > MAX_CACHED_ROWS:
            self.model.forget_items()

    def advance_to(self, watermark: int) -> BatchOutput:
        """Take every decision due up to `watermark` without new events (the end of the input)."""
        started = time.perf_counter()
        self._load_global()
        run = _BatchRun(self)
        run.join(np.array([[EV_NONE, 0, 0, watermark]], dtype=np.int64), [])
        return run.finish(started, time.perf_counter())

    # Snapshots ----------------------------------------------------------------------------------
    def snapshot(self, now_ms: int) -> list[dict[str, Any]]:
        """Every entity changed since the last published snapshot, under one new version (ModelSnapshot
        records); none if nothing changed or the stability guard holds the version back (udfs.model_guard:
        its entities stay changed, so a later version publishes them)."""
        keys = [key for key, _ in self.state.dirty.items()]
        if not keys:
            return []
        self._load_global()
        meta = self.meta
        version = next_version(meta["version"], now_ms)
        common = {"version": version, "watermark": int(meta["watermark"]), "created_at": now_ms,
                  "replica": self.replica}
        dim = self.config.dim
        records = []
        for key in keys:
            kind, _, entity_id = key.partition(":")
            if kind == "U":
                row = self.model.users[self._user_row(entity_id)]
                records.append(_record(common, USER, entity_id, row[:dim], self.model.codec.optimizer_state(row),
                                       0.0, 0.0, row[2 * dim]))
            elif kind == "I":
                row = self.model.items[self._item_row(entity_id)]
                records.append(_record(common, ITEM, entity_id, row[:dim], row[dim:2 * dim], row[ITEM_BIAS],
                                       row[ITEM_BIAS_ACCUM], row[ITEM_UPDATES], row[ITEM_BIAS_Z]))
            elif kind == "P":
                row = self.model.positions[self._position_row(int(entity_id))]
                records.append(_record(common, POSITION, entity_id, None, None, row[BIAS_VALUE], row[BIAS_ACCUM],
                                       row[BIAS_UPDATES], row[BIAS_Z]))
            elif kind == "T":
                for entity_id, row in ((TEXT_WEIGHT_ID, self.model.text[TEXT_WEIGHT]),
                                       (SEARCH_BIAS, self.model.text[TEXT_SEARCH])):
                    records.append(_record(common, TEXT, entity_id, None, None, row[BIAS_VALUE], row[BIAS_ACCUM],
                                           row[BIAS_UPDATES], row[BIAS_Z]))
            elif kind == "M":
                title_map = self.title_map
                statistics = np.concatenate([title_map.gram.ravel(), title_map.cross.ravel()])
                records.append(_record(common, TEXT, TITLE_MAP, title_map.weights.ravel(), statistics, 0.0, 0.0,
                                       title_map.items_fitted))
            else:
                row = self.model.global_bias
                records.append(_record(common, GLOBAL, "global", None, None, row[BIAS_VALUE], row[BIAS_ACCUM],
                                       row[BIAS_UPDATES], row[BIAS_Z]))
        problem = self.guard.problem(records)
        if problem is not None:
            held = self.guard.held
            if str(held).rstrip("0") == "1":  # 1, 10, 100, ...: a long hold cannot flood the log
                log.warning("model guard: version %d held back (%s); %d held so far", version, problem, held)
            self.state.meta.update(pickle.dumps(meta))
            return []
        meta["version"] = version
        self.state.dirty.clear()
        self.dirty_written = set()
        self.state.meta.update(pickle.dumps(meta))
        return records


def _record(common: dict[str, Any], entity_type: str, entity_id: str, vector: np.ndarray | None,
            accum: np.ndarray | None, bias: float, bias_accum: float, updates: float,
            bias_z: float | None = None) -> dict[str, Any]:
    return {
        **common,
        "entity_type": entity_type,
        "entity_id": entity_id,
        # numpy copies, not lists: the guard checks them and the encoders write them in numpy, without
        # a Python float per value (a user's record carries its covariance: ~1,100 values)
        "vector": np.array(() if vector is None else vector, dtype=np.float64),
        "vector_accum": np.array(() if accum is None else accum, dtype=np.float64),
        "bias": float(bias),
        "bias_accum": float(bias_accum),
        "updates": int(updates),
        "bias_z": None if bias_z is None else float(bias_z),
    }


# Fields of an impression event (udfs.records.impression_event).
_USER, _ITEM, _QUERY, _POSITION = (itemgetter(IMP_USER + 1), itemgetter(IMP_ITEM + 1), itemgetter(IMP_QUERY + 1),
                                   itemgetter(IMP_POSITION + 1))
_REQUEST_AT = IMP_REQUEST + 1
# LabeledExample fields taken from the impression event (its element), in the schema's order (the rest follow them).
_EXAMPLE_EVENT_FIELDS = [("impression_id", 1), ("request_id", IMP_REQUEST + 1), ("user_id", IMP_USER + 1),
                         ("item_id", IMP_ITEM + 1), ("query", IMP_QUERY + 1), ("position", IMP_POSITION + 1)]


def _rows(keys: list, cached: dict, load: Any) -> list[int]:
    """The model rows of `keys`: from the cache, else loaded (from state, or new)."""
    rows = list(map(cached.get, keys))
    if None in rows:
        rows = [load(key) if row is None else row for key, row in zip(keys, rows, strict=True)]
    return rows


class _BatchRun:
    """The bookkeeping of one call: the compiled join, learning operations in order, and what changed."""

    def __init__(self, learner: BatchJoinLearner) -> None:
        self.learner = learner
        self.ops = np.zeros((0, OP_WIDTH), dtype=np.int64)  # udfs.learner_kernel op rows
        self.op_texts: tuple[list[str | None], list[str]] = ([], [])  # each op's query and item id, for the text terms
        self.hint_queries: list[str] = []  # the query of each OP_QUERY_HINT op, by its hint row
        self.hinted_requests: set[tuple[str, str]] = set()  # (user, request): one hint per search
        self.hints_on = (learner.text is not None and learner.use_title_map and learner.title_map.ready
                         and learner.config.query_hint_weight > 0)
        self.searches_learned = False
        # Arriving [impressions, clicks] for the guard: near the join watermark, and by bucket further ahead.
        self.arrivals_now = [0, 0]
        self.arrivals_ahead: dict[int, list[int]] = {}
        self.events = 0  # impressions and clicks in the batch: what the stage costs are per
        self.rows: list = []
        self.op_of = np.zeros(0, dtype=np.int64)  # the kernel's op index -> index in `ops` (hints go in between)
        self.touched_users: set[str] = set()
        self.touched_items: set[str] = set()
        self.touched_positions: set[int] = set()
        self.global_changed = False
        # What the Kafka loop merged: written back to state, but not republished (only learning is, or
        # the replicas would echo each other's records forever, even without traffic).
        self.merged_items: set[str] = set()
        self.merged_positions: set[int] = set()
        self.merged_global = False
        self.merged_text = False
        self.merged_title_map = False
        self.title_map_fitted = False
        self.catalog: dict[str, bytes] = {}  # items published while the job runs, for state
        self.out = BatchOutput()
        self.loop_staleness: list[int] = []

    # Join ---------------------------------------------------------------------------------------
    def prepare(self, rows: list, now_ms: int) -> np.ndarray:
        """The batch as kernel events (udfs.join_kernel E_* columns): ids mapped to slots, and before each
        event the watermark to advance to, if any (the click-stall guard may hold it back). Item-side
        records and catalog items are taken here, in arrival order."""
        learner = self.learner
        guard = learner.click_stall
        slot_of, new_slot = learner.slot_of, learner._slot
        watermark = learner.meta["watermark"]
        flat: list[int] = []
        add = flat.extend
        last = None
        for row_watermark, event in rows:
            kind = event[0]
            if kind == TICK and len(event) > 1:  # a tick of an unbounded run brings the clicks' watermark
                guard.observe(event[1], now_ms)
                last = None
            advance = NO_WATERMARK
            if row_watermark != last:
                last = row_watermark
                decide_until = guard.effective(row_watermark, now_ms)
                if decide_until > watermark:
                    watermark = advance = decide_until
            if kind == IMPRESSION or kind == CLICK:  # EV_IMPRESSION, EV_CLICK
                slot = slot_of.get(event[1])
                add((kind, new_slot(event[1]) if slot is None else slot, event[-1], advance))
                continue
            add((EV_NONE, 0, 0, advance))
            if kind == ITEM_PARAMS:
                self.merge_item_params(event[1], now_ms)
            elif kind == CATALOG_ITEM:
                _, item_id, title, embedding = event
                learner._add_to_catalog(item_id, title, embedding)
                self.catalog[item_id] = pickle.dumps((title, embedding), protocol=pickle.HIGHEST_PROTOCOL)
            # TICK: its watermark was all it carried
        events = np.array(flat, dtype=np.int64).reshape(-1, EVENT_WIDTH)
        joined = events[:, E_KIND] != EV_NONE
        self.events = int(np.count_nonzero(joined))
        # The join watermark each event arrives at: the latest advance before it.
        watermarks = np.maximum.accumulate(np.maximum(events[:, E_ADVANCE], learner.meta["watermark"]))
        self.arrivals_now, self.arrivals_ahead = arrivals(events[joined, E_TIME], events[joined, E_KIND],
                                                          watermarks[joined])
        return events

    def join(self, events: np.ndarray, rows: list) -> None:
        """Run the compiled join over the batch, then turn what it reports into learning ops, join events
        and the held clicks' bookkeeping."""
        learner = self.learner
        meta = learner.meta
        columns = learner.columns
        sc = columns.scalars
        sc[C_WATERMARK] = meta["watermark"]
        sc[C_DECIDED_UNTIL] = meta.get("decided_until", NO_WATERMARK)
        warm_up = meta["warm_up_until"]
        sc[C_WARM_UP_SET], sc[C_WARM_UP_UNTIL] = (0, 0) if warm_up is None else (1, warm_up)
        sc[C_NEXT_SEQ] = meta.get("next_seq", 0)
        click_base = sc[C_CLICK_BASE] = learner.next_handle
        learner.next_handle += len(events)
        columns.run(events)
        meta["watermark"] = int(sc[C_WATERMARK])
        meta["decided_until"] = int(sc[C_DECIDED_UNTIL])
        if sc[C_WARM_UP_SET]:
            meta["warm_up_until"] = int(sc[C_WARM_UP_UNTIL])
        meta["next_seq"] = int(sc[C_NEXT_SEQ])
        self.rows = rows

        self._learning_ops(rows)

        # Join events: counted, and late and orphan clicks to their outputs.
        held = learner.held
        out = self.out
        buckets = learner.buckets
        for kind_index, ref in columns.events_out[: sc[C_EVENTS]].tolist():
            kind = JOIN_EVENT_KINDS[kind_index]
            if kind_index == J_DUPLICATE_IMPRESSION:
                record = rows[ref][1][1:]
            else:
                record = tuple(rows[ref - click_base][1][1:]) if ref >= click_base else held[ref]
                if kind_index == J_EARLY_CLICK:
                    held[ref] = record
                elif kind_index == J_LATE_CLICK:
                    out.late_clicks.append(click_record(record))
                elif kind_index == J_ORPHAN_CLICK:
                    out.orphan_clicks.append(click_record(record))
            out.join_events[kind] = out.join_events.get(kind, 0) + 1
            stats, _ = buckets.bucket(record[-1])
            stats.events[kind] += 1
        for handle in columns.released[: sc[C_RELEASED]].tolist():
            held.pop(handle, None)

    # Learn --------------------------------------------------------------------------------------
    def _learning_ops(self, rows: list) -> None:
        """The kernel's learning steps as op rows of udfs.learner_kernel (entity rows looked up, a search's
        query hint before its impression's own op), and what they change."""
        learner = self.learner
        columns = learner.columns
        n = int(columns.scalars[C_OPS])
        if not n:
            return
        kernel_ops = columns.ops[:n]
        impressions = learner.slot_impressions
        events = [rows[ref][1] if ref >= 0 else impressions[-ref - 1] for ref in kernel_ops[:, 1].tolist()]
        users = list(map(_USER, events))
        items = list(map(_ITEM, events))
        positions = list(map(_POSITION, events))
        queries = list(map(_QUERY, events))
        model = learner.model
        user_rows = _rows(users, model.user_rows, learner._user_row)
        item_rows = _rows(items, model.item_rows, learner._item_row)
        position_rows = _rows(positions, model.position_rows, learner._position_row)
        kinds = kernel_ops[:, 0]
        ops = np.column_stack((kinds, user_rows, item_rows, position_rows, kernel_ops[:, 2]))
        learned = (kinds != OP_SCORE).tolist()
        if any(learned):
            self.global_changed = True
            self.touched_users.update(compress(users, learned))
            self.touched_items.update(compress(items, learned))
            self.touched_positions.update(compress(positions, learned))
            self.searches_learned = any(compress(queries, learned))
        hint_at = self._hints(kernel_ops[:, 3], events, users, user_rows, queries) if self.hints_on else []
        if hint_at:  # hint ops go in before the ops at these indexes
            hint_rows = [(OP_QUERY_HINT, user_rows[k], h, 0, 0) for h, k in enumerate(hint_at)]
            ops = np.insert(ops, hint_at, hint_rows, axis=0)
            for k in reversed(hint_at):
                queries.insert(k, None)
                items.insert(k, "")
        self.op_of = np.arange(n) + np.searchsorted(np.array(hint_at, dtype=np.int64), np.arange(n), side="right")
        self.ops = ops
        self.op_texts = (queries, items)

    def _hints(self, arrivals: np.ndarray, events: list, users: list[str], user_rows: list[int],
               queries: list[str | None]) -> list[int]:
        """The ops before which a query hint goes: a search's first impression in this call. The user's
        vector learns from the query once per request in the call (a request split over two calls counts
        twice: rare, and only its weight changes)."""
        hint_at = []
        for k in np.flatnonzero(arrivals).tolist():
            query = queries[k]
            if not query:
                continue
            key = (users[k], events[k][_REQUEST_AT])
            if key in self.hinted_requests:
                continue
            self.hinted_requests.add(key)
            hint_at.append(k)
            self.hint_queries.append(query)
            self.touched_users.add(users[k])
        return hint_at

    def merge_item_params(self, record: dict[str, Any], now_ms: int) -> None:
        """Kafka loop: average another replica's item-side record into this replica (gossip averaging;
        accumulators take the maximum, so merging never makes steps larger; not marked dirty: only
        learning republishes)."""
        learner = self.learner
        problem = snapshot_problem(record, learner.config.dim)
        if problem is not None:  # one NaN averaged in would spread to every replica through the loop
            self._skip_loop_record(record, problem)
            return
        if record["replica"] == learner.replica:
            return
        kind = record["entity_type"]
        if kind == ITEM:
            row = learner.model.items[learner._item_row(record["entity_id"])]
            dim = learner.config.dim
            row[:dim] = (row[:dim] + np.asarray(record["vector"])) / 2
            row[dim:2 * dim] = np.maximum(row[dim:2 * dim], np.asarray(record["vector_accum"]))
            bias_at, accum_at, z_at = ITEM_BIAS, ITEM_BIAS_ACCUM, ITEM_BIAS_Z
            self.merged_items.add(record["entity_id"])
        elif kind == POSITION:
            position = int(record["entity_id"])
            row = learner.model.positions[learner._position_row(position)]
            bias_at, accum_at, z_at = BIAS_VALUE, BIAS_ACCUM, BIAS_Z
            self.merged_positions.add(position)
        elif kind == GLOBAL:
            row = learner.model.global_bias
            self.merged_global = True
            bias_at, accum_at, z_at = BIAS_VALUE, BIAS_ACCUM, BIAS_Z
        elif kind == TEXT and record["entity_id"] == TITLE_MAP:
            self._merge_title_map(record)
            self.loop_staleness.append(now_ms - record["created_at"])
            return
        elif kind == TEXT and record["entity_id"] in (TEXT_WEIGHT_ID, SEARCH_BIAS):
            row = learner.model.text[TEXT_WEIGHT if record["entity_id"] == TEXT_WEIGHT_ID else TEXT_SEARCH]
            self.merged_text = True
            bias_at, accum_at, z_at = BIAS_VALUE, BIAS_ACCUM, BIAS_Z
        else:
            return
        row[bias_at] = (row[bias_at] + record["bias"]) / 2
        row[accum_at] = max(row[accum_at], record["bias_accum"])
        row[z_at] = learner.config.ftrl_z(row[bias_at], row[accum_at])
        self.loop_staleness.append(now_ms - record["created_at"])

    def _merge_title_map(self, record: dict[str, Any]) -> None:
        """Another replica's title map: weights and statistics averaged into this replica's."""
        title_map = self.learner.title_map
        weights = np.asarray(record["vector"], dtype=np.float64)
        statistics = np.asarray(record["vector_accum"], dtype=np.float64)
        gram_size = title_map.gram.size
        if weights.size != title_map.weights.size or statistics.size != gram_size + title_map.cross.size:
            self._skip_loop_record(record, "title map of another dimension")
            return
        title_map.weights = (title_map.weights + weights.reshape(title_map.weights.shape)) / 2
        title_map.gram = (title_map.gram + statistics[:gram_size].reshape(title_map.gram.shape)) / 2
        title_map.cross = (title_map.cross + statistics[gram_size:].reshape(title_map.cross.shape)) / 2
        title_map.items_fitted = max(title_map.items_fitted, int(record["updates"]))
        self.merged_title_map = True

    def _skip_loop_record(self, record: Any, problem: str) -> None:
        """Count a loop record that cannot be merged (in `meta`, so in Flink state) and log it; the log
        thins out to powers of ten, so a replica that keeps publishing bad records cannot flood it."""
        meta = self.learner.meta
        skipped = meta["item_loop_skipped"] = meta.get("item_loop_skipped", 0) + 1
        if str(skipped).rstrip("0") == "1":  # 1, 10, 100, ...
            entity = f"{record.get('entity_type')}:{record.get('entity_id')}" if isinstance(record, dict) else "?"
            log.warning("item loop: skipped record %s (%s); %d skipped so far", entity, problem, skipped)

    # Finish: run the learning, emit, write back -------------------------------------------------
    def finish(self, started: float, joined: float) -> BatchOutput:
        learner = self.learner
        meta = learner.meta
        scores = None
        if len(self.ops):
            similarity = None
            if learner.text is not None:
                queries, items = self.op_texts
                similarity = learner.text.similarities(queries, items)
            hints = None
            if self.hint_queries:  # the queries in item space, by the map as it was before this call's fit
                hints = learner.query_hints(self.hint_queries)
            scores = learner.model.run(self.ops, similarity, hints)
        self._fit_title_map()
        learned = time.perf_counter()

        self.final_scores = scores if scores is not None else np.zeros(0)
        columns = learner.columns
        n_examples = int(columns.scalars[C_EXAMPLES])
        decided = columns.examples[:n_examples]
        example_scores = columns.example_scores[:n_examples].copy()
        by_op = decided[:, X_SCORE_OP] >= 0  # scored in this call, else a score kept in its entry
        example_scores[by_op] = self.final_scores[self.op_of[decided[by_op, X_SCORE_OP]]]
        labels = decided[:, X_LABEL]
        self.out.example_columns = self._example_columns(decided, example_scores)
        out = self.out
        buckets = learner.buckets
        window_ms = learner.join.window_ms
        if n_examples:
            impression_times = decided[:, X_IMPRESSION_TIME]
            decided_at = np.where(labels == 1, decided[:, X_CLICK_TIME], impression_times + window_ms + 1)
            newest = int(np.where(labels == 1, decided_at, impression_times).max())
            meta["max_event_time"] = max(meta["max_event_time"], newest)
            # Metrics count each example in the interval of the event time its label became known.
            starts = np.maximum(decided_at, buckets.closed_until) // buckets.interval_ms * buckets.interval_ms
            for start in np.unique(starts).tolist():
                chosen = starts == start
                buckets.bucket(start)[0].add_examples(example_scores[chosen], labels[chosen])
        until = meta["warm_up_until"]
        learner.guard.arrive(self.arrivals_now, self.arrivals_ahead, meta["watermark"])
        if until is not None and meta["watermark"] >= until + window_ms:  # past a cold start's warm-up
            learner.guard.observe(example_scores, labels)
        if self.loop_staleness:
            stats, _ = buckets.bucket(max(meta["watermark"], 0))
            for staleness in self.loop_staleness:
                stats.add_loop_staleness(staleness)

        # Dirty for the next snapshot: learned entities.
        new_dirty = {f"U:{u}" for u in self.touched_users}
        new_dirty.update(f"I:{i}" for i in self.touched_items)
        new_dirty.update(f"P:{p}" for p in self.touched_positions)
        if self.global_changed:
            new_dirty.add("G")
        if self.searches_learned:
            new_dirty.add("T")
        if self.title_map_fitted:
            new_dirty.add("M")
        self._write_back(new_dirty)
        written = time.perf_counter()

        out.watermark = meta["watermark"]
        costs = learner.costs
        costs["join"] += (joined - started) * 1e6
        costs["learn"] += (learned - joined) * 1e6
        costs["state"] += (written - learned) * 1e6
        stats, _ = buckets.bucket(max(meta["watermark"], 0))
        stats.add_costs(costs, self.events)
        learner.costs = dict.fromkeys(costs, 0.0)
        out.partials = buckets.pop_until(meta["watermark"])
        meta["metrics_closed_until"] = buckets.closed_until
        touched = buckets.take_touched()
        for start, _ in out.partials:
            learner.state.intervals.remove(start)
        learner.state.intervals.put_all({start: pickle.dumps(buckets.open[start], protocol=pickle.HIGHEST_PROTOCOL)
                                         for start in touched if start in buckets.open})
        learner.state.meta.update(pickle.dumps(meta))
        return out

    def _example_columns(self, decided: np.ndarray, scores: np.ndarray) -> dict[str, Sequence]:
        """The labeled examples of this call as LabeledExample columns, in decision order."""
        if not len(decided):
            return {}
        rows, impressions = self.rows, self.learner.slot_impressions
        events = [rows[ref][1] if ref >= 0 else impressions[-ref - 1] for ref in decided[:, X_REF].tolist()]
        fields = list(zip(*events, strict=True))  # the events as columns, in one pass in C
        columns: dict[str, Sequence] = {name: fields[at] for name, at in _EXAMPLE_EVENT_FIELDS}
        columns["label"] = decided[:, X_LABEL]
        columns["score"] = scores
        columns["impression_time"] = fields[IMP_TIME + 1]
        has_click = decided[:, X_HAS_CLICK_TIME]
        columns["click_time"] = ([None] * len(events) if not has_click.any() else
                                 [time if has else None for time, has in
                                  zip(decided[:, X_CLICK_TIME].tolist(), has_click.tolist(), strict=True)])
        columns["model_version"] = np.full(len(events), self.learner.meta["version"], dtype=np.int64)
        return columns

    def _fit_title_map(self) -> None:
        """Refit the title map every FIT_EVERY learned examples, on the items learned since the last fit."""
        learner = self.learner
        if learner.text is None or not learner.use_title_map:
            return
        # What the next fit uses is kept in `meta` (Flink state), so a restored learner fits the same.
        pending = learner.meta.setdefault("fit", {"learned": 0, "items": set()})
        if len(pending["items"]) < FIT_MAX_ITEMS:
            pending["items"].update(self.touched_items)
        pending["learned"] += int(np.count_nonzero((self.ops[:, 0] != OP_SCORE) & (self.ops[:, 0] != OP_QUERY_HINT)))
        if pending["learned"] < FIT_EVERY:
            return
        model, text, dim = learner.model, learner.text, learner.config.dim
        fitted = []
        for item_id in sorted(pending["items"]):
            if text.has_title(item_id):
                row = learner._item_row(item_id)  # learned, so in the cache or in state
                if model.items[row, ITEM_UPDATES] >= FIT_MIN_UPDATES:
                    fitted.append((item_id, row))
        if fitted:
            rows = model.items[[row for _, row in fitted]]
            targets = np.concatenate([rows[:, :dim], rows[:, ITEM_BIAS : ITEM_BIAS + 1]], axis=1)
            learner.title_map.fit(text.title_codes([item_id for item_id, _ in fitted]), targets)
            self.title_map_fitted = True
        pending["items"] = set()
        pending["learned"] = 0

    def _write_back(self, new_dirty: set[str]) -> None:
        learner = self.learner
        state = learner.state
        model = learner.model
        self._settle_slots()
        decided_until = learner.meta.get("decided_until", NO_WATERMARK)
        blocks = learner.blocks
        while blocks and blocks[0][0] <= decided_until:
            state.entry_blocks.remove(heapq.heappop(blocks)[1])
        if self.touched_users:
            users = list(self.touched_users)
            stored = model.codec.stored(model.users[[model.user_rows[u] for u in users]])
            state.users.put_all(dict(zip(users, map(np.ndarray.tobytes, stored), strict=True)))
        items = self.touched_items | self.merged_items | learner.started_items
        learner.started_items = set()
        if items:
            state.items.put_all({i: model.items[model.item_rows[i]].tobytes() for i in items})
        biases = {p: model.positions[model.position_rows[p]].tobytes()
                  for p in self.touched_positions | self.merged_positions}
        if self.global_changed or self.merged_global:
            biases[GLOBAL_KEY] = model.global_bias.tobytes()
        if self.searches_learned or self.merged_text:
            biases[TEXT_KEY] = model.text.tobytes()
        if self.title_map_fitted or self.merged_title_map:
            biases[TITLE_MAP_KEY] = learner.title_map.to_array().tobytes()
        if biases:
            state.biases.put_all(biases)
        new_dirty -= learner.dirty_written
        if new_dirty:
            state.dirty.put_all(dict.fromkeys(new_dirty, b""))
            learner.dirty_written |= new_dirty
        if self.catalog:
            state.catalog.put_all(self.catalog)
        # `meta` goes last, in finish (it holds the metric intervals' bookkeeping too)


    def _settle_slots(self) -> None:
        """The end of a call for the join entries: the impressions and scores of those it changed kept, their
        state written, the entries it forgot removed from state and their slots freed."""
        learner = self.learner
        columns = learner.columns
        sc, slots, ids = columns.scalars, columns.slots, learner.slot_ids
        impressions = learner.slot_impressions
        forgotten = columns.forgotten[: sc[C_FORGOTTEN]]
        listed = columns.listed[: sc[C_LISTED]].copy()
        if len(listed):
            view = slots[listed]
            live = view[:, S_LIVE] == 1
            arrived = live & (view[:, S_IMP_EVENT] >= 0)
            rows = self.rows
            for slot, event in zip(listed[arrived].tolist(), view[arrived, S_IMP_EVENT].tolist(), strict=True):
                impressions[slot] = rows[event][1]
            for slot in listed[live & (view[:, S_HAS_IMP] == 0)].tolist():  # forgotten, then held clicks again
                impressions[slot] = None
            scored = live & (view[:, S_SCORE_OP] >= 0)
            if scored.any():
                ops = self.op_of[view[scored, S_SCORE_OP]]
                columns.scores[listed[scored]] = self.final_scores[ops]
                slots[listed[scored], S_HAS_SCORE] = 1
            changed = live & (view[:, S_CHANGED] == 1)
            arrived_block = changed & (view[:, S_NEW] == 1) & (view[:, S_HAS_IMP] == 1)
            slots[listed, S_SCORE_OP] = -1
            slots[listed, S_IMP_EVENT] = -1
            slots[listed, S_CHANGED] = 0
            slots[listed, S_NEW] = 0
            slots[listed, S_LISTED] = 0
            self._write_entries(listed[arrived_block], listed[changed & ~arrived_block])
        if len(forgotten):
            gone = np.unique(forgotten[:, 0])
            freed = gone[slots[gone, S_LIVE] == 0].tolist()
            slot_of = learner.slot_of
            for slot in freed:
                del slot_of[ids[slot]]
                ids[slot] = None
                impressions[slot] = None
            columns.release_slots(freed)

    def _write_entries(self, arrived: np.ndarray, changed: np.ndarray) -> None:
        """This call's new entries with an impression as one block (columns); the other changed entries as
        another (a list)."""
        learner = self.learner
        columns = learner.columns
        ids, impressions = learner.slot_ids, learner.slot_impressions
        if len(arrived):
            rows = columns.slots[arrived]
            expiry = int(rows[:, S_IMP_TIME].max()) + learner.join.window_ms + learner.join.retention_ms
            # The impressions as one JSON text: one C call, where pickling thousands of small lists was not.
            learner._write_block(expiry, [orjson.dumps([impressions[s] for s in arrived.tolist()]),
                                          np.ascontiguousarray(rows[:, _BLOCK_COLUMNS]).tobytes(),
                                          columns.scores[arrived].tobytes()])
        if len(changed):
            entries = []
            for slot, (status, label, deferred, seq, has_score) in zip(
                    changed.tolist(), columns.slots[changed][:, _BLOCK_COLUMNS].tolist(), strict=True):
                held = [learner.held[handle] for handle in columns.held_handles(slot)]
                score = float(columns.scores[slot]) if has_score else None
                impression = impressions[slot]
                entries.append((ids[slot], [None if impression is None else tuple(impression[1:]), status, label,
                                            held, score, bool(deferred), seq]))
            learner._write_changed_block(entries)


# A block's entries as columns: [status, label, deferred, sequence number, has a score] per entry.
_BLOCK_COLUMNS = [S_STATUS, S_LABEL, S_DEFERRED, S_SEQ, S_HAS_SCORE]


def _block_entries(stored: list) -> Iterable[tuple[str, list]]:
    """(id, [impression, status, label, held clicks, score, deferred, sequence number]) of a block's entries
    (blocks written before they were columns: (id, the same without the sequence number))."""
    if len(stored) == 1:
        yield from stored[0]
        return
    events, columns, scores = stored  # the impressions as events (udfs.records.impression_event), JSON
    events = orjson.loads(events)
    columns = np.frombuffer(columns, dtype=np.int64).reshape(len(events), len(_BLOCK_COLUMNS)).tolist()
    for event, (status, label, deferred, seq, has_score), score in zip(
            events, columns, np.frombuffer(scores, dtype=np.float64).tolist(), strict=True):
        yield event[1], [tuple(event[1:]), status, label, [], score if has_score else None, bool(deferred), seq]
