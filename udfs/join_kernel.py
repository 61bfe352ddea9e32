"""The join of `udfs.join_logic`, compiled: one batch of events through every join entry in one native call.

`udfs.join_logic.ImpressionClickJoin` states the rules per impression id in plain Python; this module
runs the same rules for a whole batch over columns, so the per-event cost is a few array reads
instead of a dozen Python calls and objects. A test holds the two to the same labels, join events and
learning order on random streams (tests/test_join_kernel.py).

Entries live in slots: row `s` of `JoinColumns.slots` (the S_* columns) is one impression id's join
state. The Python side (udfs.batch_learner) maps ids to slots before a call and keeps what the kernel
cannot hold (the ids, impression tuples, held click tuples); the kernel refers to events by their index
in the batch and to entries by slot, and knows nothing of strings. A slot keeps its id until the call
in which its entry is forgotten ends: then it is free for another id.

Timers are two heaps: deadlines (an impression's t + W + 1, a held click's t + W + 1) ordered by
(time, entry sequence number), so ties pop in the order the entries were made, the same after a
restore; and retention ends in buckets of `bucket_ms` (coarse: a decided entry whose retention has
ended is treated as forgotten when its id comes up, so labels are those of exact timers).

What a call reports (the Python side turns it into learning ops, examples and state writes):
- ops      [OP kind, ref, label, arrival]: learning steps in order; ref >= 0 is the batch event of the
           impression, ref < 0 the impression of slot -ref-1 as it stood before the call; arrival
           marks an impression's own score-on-arrival op (a search's query hint goes before it);
- examples [ref, label, click time, has click time, impression time, score op]: the labeled examples
           in decision order; the score is that of `score op` if >= 0, else `example_scores[i]` (a stored score);
- join events [kind (index into join_logic.JOIN_EVENT_KINDS), ref]: ref is the batch event of a
           duplicate impression, else a click handle (`click_base` + batch index for the batch's clicks);
- forgotten [slot, keyed]: entries forgotten (keyed: S_KEYED, which the learner no longer sets, since
           changed entries go to state in blocks);
- released: handles of held clicks no longer held; listed: the slots changed in this call.
"""

from __future__ import annotations

import ctypes

import numba
import numpy as np

from udfs.join_logic import DECIDED, PENDING
from udfs.learner_kernel import OP_LEARN, OP_LEARN_FN, OP_SCORE, grown_rows
from udfs.native import cached_cfunc, cached_njit
from udfs.records import CLICK, IMPRESSION

# Slot columns.
S_LIVE, S_HAS_IMP, S_IMP_TIME, S_STATUS, S_LABEL, S_DEFERRED, S_KEYED, S_GEN = range(8)
S_HELD, S_SCORE_OP, S_HAS_SCORE, S_IMP_EVENT, S_LISTED, S_CHANGED, S_NEW, S_SEQ = range(8, 16)
SLOT_WIDTH = 16
# Event columns and kinds.
E_KIND, E_SLOT, E_TIME, E_ADVANCE = range(4)
EVENT_WIDTH = 4
EV_IMPRESSION, EV_CLICK, EV_NONE = IMPRESSION, CLICK, 2  # the event kinds of udfs.records
assert EV_NONE not in (EV_IMPRESSION, EV_CLICK)
# Scalars carried from call to call, and the counts a call reports.
(C_WATERMARK, C_DECIDED_UNTIL, C_WARM_UP_UNTIL, C_WARM_UP_SET, C_DUE, C_FORGET, C_POOL_FREE, C_POOL_TOP,
 C_NEXT_SEQ, C_CLICK_BASE, C_OPS, C_EXAMPLES, C_EVENTS, C_FORGOTTEN, C_RELEASED, C_LISTED, C_ERROR) = range(17)
SCALARS = 17
# Join event kinds: indexes into udfs.join_logic.JOIN_EVENT_KINDS.
J_DUPLICATE_IMPRESSION, J_DUPLICATE_CLICK, J_EARLY_CLICK, J_LATE_CLICK, J_ORPHAN_CLICK = range(5)
OP_COLUMNS, EXAMPLE_COLUMNS = 4, 6
X_REF, X_LABEL, X_CLICK_TIME, X_HAS_CLICK_TIME, X_IMPRESSION_TIME, X_SCORE_OP = range(EXAMPLE_COLUMNS)
ERROR_CAPACITY = 1

_SCORE, _LEARN, _LEARN_FN = 0, 1, 2
assert (OP_SCORE, OP_LEARN, OP_LEARN_FN) == (_SCORE, _LEARN, _LEARN_FN)
assert (PENDING, DECIDED) == (0, 1)


@cached_njit
def _less(heap, a, b, width):
    for column in range(width):
        if heap[a, column] != heap[b, column]:
            return heap[a, column] < heap[b, column]
    return False


@cached_njit
def _swap(heap, a, b):
    for column in range(heap.shape[1]):
        heap[a, column], heap[b, column] = heap[b, column], heap[a, column]


@cached_njit
def _push(heap, n, key_width, c0, c1, c2, c3):
    """Push a row onto a binary min-heap of n rows (ordered by its first `key_width` columns); returns n + 1."""
    heap[n, 0] = c0
    heap[n, 1] = c1
    heap[n, 2] = c2
    if heap.shape[1] > 3:
        heap[n, 3] = c3
    child = n
    while child > 0:
        parent = (child - 1) // 2
        if not _less(heap, child, parent, key_width):
            break
        _swap(heap, child, parent)
        child = parent
    return n + 1


@cached_njit
def _pop(heap, n, key_width):
    """Move the smallest row to index n - 1 (read it there) and restore the heap of n - 1 rows."""
    last = n - 1
    _swap(heap, 0, last)
    parent = 0
    while True:
        left = 2 * parent + 1
        if left >= last:
            break
        child = left
        if left + 1 < last and _less(heap, left + 1, left, key_width):
            child = left + 1
        if not _less(heap, child, parent, key_width):
            break
        _swap(heap, child, parent)
        parent = child
    return last


@cached_njit
def _ref(slots, s):
    event = slots[s, S_IMP_EVENT]
    return event if event >= 0 else -(s + 1)


@cached_njit
def _mark_changed(slots, s, sc, listed):
    slots[s, S_CHANGED] = 1
    if slots[s, S_LISTED] == 0:
        slots[s, S_LISTED] = 1
        listed[sc[C_LISTED]] = s
        sc[C_LISTED] += 1


@cached_njit
def _release_held(slots, s, pool, sc, released):
    node = slots[s, S_HELD]
    while node >= 0:
        released[sc[C_RELEASED]] = pool[node, 0]
        sc[C_RELEASED] += 1
        following = pool[node, 2]
        pool[node, 2] = sc[C_POOL_FREE]
        sc[C_POOL_FREE] = node
        node = following
    slots[s, S_HELD] = -1


@cached_njit
def _forget(slots, s, pool, sc, forgotten, released):
    forgotten[sc[C_FORGOTTEN], 0] = s
    forgotten[sc[C_FORGOTTEN], 1] = slots[s, S_KEYED]
    sc[C_FORGOTTEN] += 1
    _release_held(slots, s, pool, sc, released)
    generation = slots[s, S_GEN] + 1
    listed = slots[s, S_LISTED]
    slots[s, :] = 0
    slots[s, S_GEN] = generation
    slots[s, S_LISTED] = listed
    slots[s, S_HELD] = -1
    slots[s, S_SCORE_OP] = -1
    slots[s, S_IMP_EVENT] = -1


@cached_njit
def _expired(slots, s, watermark, kept_ms):
    return (slots[s, S_STATUS] == DECIDED and slots[s, S_HAS_IMP] == 1
            and slots[s, S_IMP_TIME] + kept_ms <= watermark)


@cached_njit
def _add_op(ops, sc, kind, ref, label, arrival):
    n = sc[C_OPS]
    ops[n, 0] = kind
    ops[n, 1] = ref
    ops[n, 2] = label
    ops[n, 3] = arrival
    sc[C_OPS] = n + 1
    return n


@cached_njit
def _decide(slots, scores, s, label, click_time, has_click_time, sc, due, forget_heap, ops, examples,
            example_scores, window, kept_ms, bucket_ms, impression_mode):
    """join_logic._decide and what BatchJoinLearner does with the example (its learning op)."""
    slots[s, S_STATUS] = DECIDED
    slots[s, S_LABEL] = label
    sc[C_FORGET] = _push(forget_heap, sc[C_FORGET], 1, (slots[s, S_IMP_TIME] + kept_ms) // bucket_ms, s,
                         slots[s, S_GEN], 0)
    ref = _ref(slots, s)
    warm_up = (impression_mode == 0 and sc[C_WARM_UP_SET] == 1 and slots[s, S_IMP_TIME] < sc[C_WARM_UP_UNTIL])
    if label == 1 and warm_up:  # a first-window positive waits for its deadline, when its negatives are learned
        slots[s, S_DEFERRED] = 1
        sc[C_DUE] = _push(due, sc[C_DUE], 2, slots[s, S_IMP_TIME] + window + 1, slots[s, S_SEQ], s, slots[s, S_GEN])
        op = _add_op(ops, sc, _SCORE, ref, 0, 0)
    elif impression_mode == 1:
        if label == 1:
            op = _add_op(ops, sc, _LEARN_FN, ref, 1, 0)
        elif slots[s, S_SCORE_OP] >= 0 or slots[s, S_HAS_SCORE] == 1:
            op = -1  # learned as a negative when shown
        else:
            op = _add_op(ops, sc, _SCORE, ref, 0, 0)
    else:
        op = _add_op(ops, sc, _LEARN, ref, label, 0)
    n = sc[C_EXAMPLES]
    examples[n, 0] = ref
    examples[n, 1] = label
    examples[n, 2] = click_time
    examples[n, 3] = has_click_time
    examples[n, 4] = slots[s, S_IMP_TIME]
    if slots[s, S_SCORE_OP] >= 0:
        examples[n, 5] = slots[s, S_SCORE_OP]
    elif slots[s, S_HAS_SCORE] == 1:
        examples[n, 5] = -1
        example_scores[n] = scores[s]
    else:
        examples[n, 5] = op
    sc[C_EXAMPLES] = n + 1


@cached_njit
def _join_event(events_out, sc, kind, ref):
    n = sc[C_EVENTS]
    events_out[n, 0] = kind
    events_out[n, 1] = ref
    sc[C_EVENTS] = n + 1


@cached_njit
def _advance(watermark, slots, scores, sc, due, forget_heap, pool, ops, examples, example_scores, events_out,
             forgotten, released, listed, window, kept_ms, bucket_ms, impression_mode):
    sc[C_WATERMARK] = watermark
    if watermark > sc[C_DECIDED_UNTIL]:
        sc[C_DECIDED_UNTIL] = watermark
    while sc[C_DUE] > 0 and due[0, 0] <= watermark:
        last = _pop(due, sc[C_DUE], 2)
        sc[C_DUE] = last
        timestamp, s, generation = due[last, 0], due[last, 2], due[last, 3]
        # A timer of an entry since forgotten, or whose retention ended before it (exact timers would
        # have forgotten it first).
        if slots[s, S_GEN] != generation or slots[s, S_LIVE] == 0 or _expired(slots, s, timestamp - 1, kept_ms):
            continue
        has_impression = slots[s, S_HAS_IMP] == 1
        if slots[s, S_DEFERRED] == 1 and has_impression and timestamp >= slots[s, S_IMP_TIME] + window + 1:
            _add_op(ops, sc, _LEARN, _ref(slots, s), 1, 0)
            slots[s, S_DEFERRED] = 0
        by_deadline = slots[s, S_STATUS] == PENDING and has_impression
        decided = False
        clear = False
        if not has_impression:  # held clicks whose every possible impression window has closed are orphans
            node, previous = slots[s, S_HELD], -1
            while node >= 0:
                following = pool[node, 2]
                if pool[node, 1] + window + 1 <= timestamp:
                    _join_event(events_out, sc, J_ORPHAN_CLICK, pool[node, 0])
                    released[sc[C_RELEASED]] = pool[node, 0]
                    sc[C_RELEASED] += 1
                    if previous < 0:
                        slots[s, S_HELD] = following
                    else:
                        pool[previous, 2] = following
                    pool[node, 2] = sc[C_POOL_FREE]
                    sc[C_POOL_FREE] = node
                else:
                    previous = node
                node = following
            clear = slots[s, S_HELD] < 0
        elif slots[s, S_STATUS] == PENDING and timestamp >= slots[s, S_IMP_TIME] + window + 1:
            _decide(slots, scores, s, 0, 0, 0, sc, due, forget_heap, ops, examples, example_scores, window, kept_ms,
                    bucket_ms, impression_mode)
            decided = True
        if clear:
            _forget(slots, s, pool, sc, forgotten, released)
        elif not (by_deadline and decided):
            # A negative decided by its deadline is not written back: `decided_until` tells it apart.
            _mark_changed(slots, s, sc, listed)
    # Retention ends, by whole buckets the watermark has passed.
    decided_until = sc[C_DECIDED_UNTIL]
    while sc[C_FORGET] > 0 and (forget_heap[0, 0] + 1) * bucket_ms - 1 <= decided_until:
        last = _pop(forget_heap, sc[C_FORGET], 1)
        sc[C_FORGET] = last
        s, generation = forget_heap[last, 1], forget_heap[last, 2]
        if slots[s, S_GEN] == generation and slots[s, S_LIVE] == 1 and _expired(slots, s, decided_until, kept_ms):
            _forget(slots, s, pool, sc, forgotten, released)


@cached_njit
def _live(slots, s, sc, pool, forgotten, released, kept_ms):
    """The entry of an arriving event's slot: a new one if there is none or its retention has ended."""
    if slots[s, S_LIVE] == 1 and _expired(slots, s, sc[C_DECIDED_UNTIL], kept_ms):
        _forget(slots, s, pool, sc, forgotten, released)
    if slots[s, S_LIVE] == 0:
        slots[s, S_LIVE] = 1
        slots[s, S_NEW] = 1
        slots[s, S_SEQ] = sc[C_NEXT_SEQ]
        sc[C_NEXT_SEQ] += 1


@cached_njit
def join_batch(events, slots, scores, due, forget_heap, pool, sc, ops, examples, example_scores, events_out,
               forgotten, released, listed, window, retention, bucket_ms, impression_mode):
    """Run a batch of events (E_* columns) in order; see the module doc for what it reports."""
    kept_ms = window + retention
    for i in range(events.shape[0]):
        advance = events[i, E_ADVANCE]
        if advance > sc[C_WATERMARK]:
            _advance(advance, slots, scores, sc, due, forget_heap, pool, ops, examples, example_scores, events_out,
                     forgotten, released, listed, window, kept_ms, bucket_ms, impression_mode)
        kind = events[i, E_KIND]
        if kind == EV_NONE:
            continue
        s = events[i, E_SLOT]
        t = events[i, E_TIME]
        _live(slots, s, sc, pool, forgotten, released, kept_ms)
        watermark = sc[C_WATERMARK]
        if kind == EV_IMPRESSION:
            if sc[C_WARM_UP_SET] == 0:
                sc[C_WARM_UP_UNTIL] = t + window
                sc[C_WARM_UP_SET] = 1
            if slots[s, S_HAS_IMP] == 1:
                _join_event(events_out, sc, J_DUPLICATE_IMPRESSION, i)
                continue
            slots[s, S_HAS_IMP] = 1
            slots[s, S_IMP_TIME] = t
            slots[s, S_IMP_EVENT] = i
            if slots[s, S_HAS_SCORE] == 0:  # scored on arrival (impression mode: learned as a negative at once)
                slots[s, S_SCORE_OP] = _add_op(ops, sc, _LEARN_FN if impression_mode == 1 else _SCORE, i, 0, 1)
            node = slots[s, S_HELD]
            while node >= 0:
                click_time = pool[node, 1]
                if not (t <= click_time <= t + window):
                    _join_event(events_out, sc, J_LATE_CLICK, pool[node, 0])
                elif slots[s, S_STATUS] == PENDING:
                    _decide(slots, scores, s, 1, click_time, 1, sc, due, forget_heap, ops, examples, example_scores,
                            window, kept_ms, bucket_ms, impression_mode)
                else:
                    _join_event(events_out, sc, J_DUPLICATE_CLICK, pool[node, 0])
                node = pool[node, 2]
            _release_held(slots, s, pool, sc, released)
            if slots[s, S_STATUS] == PENDING:
                deadline = t + window + 1
                if watermark >= deadline:  # the impression itself came after its window closed
                    _decide(slots, scores, s, 0, 0, 0, sc, due, forget_heap, ops, examples, example_scores, window,
                            kept_ms, bucket_ms, impression_mode)
                else:
                    sc[C_DUE] = _push(due, sc[C_DUE], 2, deadline, slots[s, S_SEQ], s, slots[s, S_GEN])
            _mark_changed(slots, s, sc, listed)
        else:  # a click
            handle = sc[C_CLICK_BASE] + i
            if slots[s, S_HAS_IMP] == 0:
                expiry = t + window + 1
                if watermark >= expiry:
                    _join_event(events_out, sc, J_ORPHAN_CLICK, handle)
                    if slots[s, S_HELD] < 0:
                        _forget(slots, s, pool, sc, forgotten, released)
                else:
                    node = sc[C_POOL_FREE]
                    if node >= 0:
                        sc[C_POOL_FREE] = pool[node, 2]
                    else:
                        node = sc[C_POOL_TOP]
                        sc[C_POOL_TOP] += 1
                    pool[node, 0] = handle
                    pool[node, 1] = t
                    pool[node, 2] = -1
                    tail = slots[s, S_HELD]  # held clicks keep their arrival order
                    if tail < 0:
                        slots[s, S_HELD] = node
                    else:
                        while pool[tail, 2] >= 0:
                            tail = pool[tail, 2]
                        pool[tail, 2] = node
                    _join_event(events_out, sc, J_EARLY_CLICK, handle)
                    sc[C_DUE] = _push(due, sc[C_DUE], 2, expiry, slots[s, S_SEQ], s, slots[s, S_GEN])
                    _mark_changed(slots, s, sc, listed)
            else:
                start = slots[s, S_IMP_TIME]
                if not (start <= t <= start + window):
                    _join_event(events_out, sc, J_LATE_CLICK, handle)
                elif slots[s, S_STATUS] == PENDING:
                    _decide(slots, scores, s, 1, t, 1, sc, due, forget_heap, ops, examples, example_scores, window,
                            kept_ms, bucket_ms, impression_mode)
                    _mark_changed(slots, s, sc, listed)
                elif slots[s, S_LABEL] == 1:
                    _join_event(events_out, sc, J_DUPLICATE_CLICK, handle)
                else:  # in the window by its time, but after the negative was emitted
                    _join_event(events_out, sc, J_LATE_CLICK, handle)


_P, _N = ctypes.c_void_p, ctypes.c_int64
_I64P = numba.types.CPointer(numba.types.int64)
_F64P = numba.types.CPointer(numba.types.float64)
_I64 = numba.types.int64
_SIGNATURE = numba.types.void(_I64P, _I64, _I64P, _I64, _F64P, _I64P, _I64, _I64P, _I64, _I64P, _I64, _I64P,
                              _I64P, _I64P, _F64P, _I64P, _I64P, _I64P, _I64P, _I64, _I64, _I64, _I64, _I64)


@cached_cfunc(_SIGNATURE)
def _join_native(events_p, n_events, slots_p, n_slots, scores_p, due_p, due_rows, forget_p, forget_rows, pool_p,
                 pool_rows, sc_p, ops_p, examples_p, example_scores_p, events_out_p, forgotten_p, released_p,
                 listed_p, out_rows, window, retention, bucket_ms, impression_mode):
    # Raw pointers through ctypes, as udfs.learner_kernel._run_ops_native and for the same reason: numba's
    # array holders take the interpreter lock on release, which hangs under PyFlink's thread mode.
    sc = numba.carray(sc_p, (SCALARS,))
    # Capacity: every row the call can add must fit (JoinColumns.run sizes the arrays; a bug there
    # must not write out of bounds).
    need_due = sc[C_DUE] + 2 * n_events
    need_forget = sc[C_FORGET] + n_events + sc[C_DUE]
    need_out = 3 * n_events + 2 * sc[C_DUE] + sc[C_POOL_TOP] + n_slots + 16
    if need_due > due_rows or need_forget > forget_rows or sc[C_POOL_TOP] + n_events > pool_rows or need_out > out_rows:
        sc[C_ERROR] = ERROR_CAPACITY
        return
    join_batch(numba.carray(events_p, (n_events, EVENT_WIDTH)), numba.carray(slots_p, (n_slots, SLOT_WIDTH)),
               numba.carray(scores_p, (n_slots,)), numba.carray(due_p, (due_rows, 4)),
               numba.carray(forget_p, (forget_rows, 3)), numba.carray(pool_p, (pool_rows, 3)), sc,
               numba.carray(ops_p, (out_rows, OP_COLUMNS)), numba.carray(examples_p, (out_rows, EXAMPLE_COLUMNS)),
               numba.carray(example_scores_p, (out_rows,)), numba.carray(events_out_p, (out_rows, 2)),
               numba.carray(forgotten_p, (out_rows, 2)), numba.carray(released_p, (out_rows,)),
               numba.carray(listed_p, (out_rows,)), window, retention, bucket_ms, impression_mode)


_NATIVE_CALL = ctypes.PYFUNCTYPE(None, _P, _N, _P, _N, _P, _P, _N, _P, _N, _P, _N, _P, _P, _P, _P, _P, _P, _P, _P, _N,
                                 _N, _N, _N, _N)(_join_native.address)


class JoinColumns:
    """Every join entry of one learner as columns, and the timers; one `run` per batch."""

    def __init__(self, window_ms: int, retention_ms: int, bucket_ms: int, impression_mode: bool) -> None:
        self.window_ms, self.retention_ms, self.bucket_ms = window_ms, retention_ms, bucket_ms
        self.impression_mode = impression_mode
        self.slots = self._new_slots(16)
        self.scores = np.zeros(16)
        self.n_slots = 0  # slots in use (live, or forgotten in the call now ending); free ones below in `free`
        self.free: list[int] = []
        self.due = np.zeros((16, 4), dtype=np.int64)
        self.forget_heap = np.zeros((16, 3), dtype=np.int64)
        self.pool = np.zeros((16, 3), dtype=np.int64)
        self.scalars = np.zeros(SCALARS, dtype=np.int64)
        self.scalars[C_POOL_FREE] = -1
        self.ops = np.zeros((16, OP_COLUMNS), dtype=np.int64)
        self.examples = np.zeros((16, EXAMPLE_COLUMNS), dtype=np.int64)
        self.example_scores = np.zeros(16)
        self.events_out = np.zeros((16, 2), dtype=np.int64)
        self.forgotten = np.zeros((16, 2), dtype=np.int64)
        self.released = np.zeros(16, dtype=np.int64)
        self.listed = np.zeros(16, dtype=np.int64)

    @staticmethod
    def _new_slots(rows: int) -> np.ndarray:
        slots = np.zeros((rows, SLOT_WIDTH), dtype=np.int64)
        slots[:, S_HELD] = -1
        slots[:, S_SCORE_OP] = -1
        slots[:, S_IMP_EVENT] = -1
        return slots

    def new_slot(self) -> int:
        if self.free:
            return self.free.pop()
        slot = self.n_slots
        self.n_slots += 1
        if slot >= self.slots.shape[0]:
            grown = self._new_slots(2 * self.slots.shape[0])
            grown[: self.slots.shape[0]] = self.slots
            self.slots = grown
            self.scores = grown_rows(self.scores, grown.shape[0])
        return slot

    def release_slots(self, slots: list[int]) -> None:
        """Free `slots`, in order (the last freed is the first `new_slot` reuses)."""
        self.free.extend(slots)

    def hold(self, slot: int, handle: int, click_time: int) -> None:
        """A held click restored from state, appended to the slot's held clicks."""
        sc = self.scalars
        self.pool = grown_rows(self.pool, int(sc[C_POOL_TOP]) + 1)
        node = int(sc[C_POOL_FREE])
        if node >= 0:
            sc[C_POOL_FREE] = self.pool[node, 2]
        else:
            node = int(sc[C_POOL_TOP])
            sc[C_POOL_TOP] += 1
        self.pool[node] = (handle, click_time, -1)
        tail = int(self.slots[slot, S_HELD])
        if tail < 0:
            self.slots[slot, S_HELD] = node
        else:
            while self.pool[tail, 2] >= 0:
                tail = int(self.pool[tail, 2])
            self.pool[tail, 2] = node

    def held_handles(self, slot: int) -> list[int]:
        handles, node = [], int(self.slots[slot, S_HELD])
        while node >= 0:
            handles.append(int(self.pool[node, 0]))
            node = int(self.pool[node, 2])
        return handles

    def load_timers(self, due: list[tuple[int, int]], forget: list[int]) -> None:
        """The timers of restored entries, into empty heaps: (time, slot) deadlines and the slots of decided
        entries waiting for their retention to end. (Sorted rows are a valid heap; pure numpy, because a
        numba function called with arrays from Python hangs under PyFlink's thread mode.)"""
        sc, slots = self.scalars, self.slots
        assert sc[C_DUE] == 0 and sc[C_FORGET] == 0, "timers are loaded once, into a new learner"
        if due:
            times, rows = np.array(due, dtype=np.int64).reshape(-1, 2).T
            heap = np.stack([times, slots[rows, S_SEQ], rows, slots[rows, S_GEN]], axis=1)
            heap = heap[np.lexsort((heap[:, 1], heap[:, 0]))]
            self.due = grown_rows(self.due, len(heap))
            self.due[: len(heap)] = heap
            sc[C_DUE] = len(heap)
        if forget:
            rows = np.array(forget, dtype=np.int64)
            kept = self.window_ms + self.retention_ms
            heap = np.stack([(slots[rows, S_IMP_TIME] + kept) // self.bucket_ms, rows, slots[rows, S_GEN]], axis=1)
            heap = heap[np.argsort(heap[:, 0], kind="stable")]
            self.forget_heap = grown_rows(self.forget_heap, len(heap))
            self.forget_heap[: len(heap)] = heap
            sc[C_FORGET] = len(heap)

    def run(self, events: np.ndarray) -> None:
        """Run a batch of events (int64, shape (n, EVENT_WIDTH)); results in the output arrays, counts in
        `scalars` (C_OPS ... C_LISTED), all reset at the start of the call."""
        events = np.ascontiguousarray(events, dtype=np.int64)
        n = events.shape[0]
        # The kernel cannot raise: what it indexes by is checked here, before it touches anything.
        if events.ndim != 2 or events.shape[1] != EVENT_WIDTH:
            raise ValueError(f"events must have shape (n, {EVENT_WIDTH}), got {events.shape}")
        slots = events[events[:, E_KIND] != EV_NONE, E_SLOT]
        if not np.isin(events[:, E_KIND], (EV_IMPRESSION, EV_CLICK, EV_NONE)).all() or (
                len(slots) and not (0 <= slots.min() and slots.max() < self.n_slots)):
            raise ValueError("event kind or slot out of range")
        sc = self.scalars
        sc[C_OPS:C_ERROR + 1] = 0
        due, forget, pool_top = int(sc[C_DUE]), int(sc[C_FORGET]), int(sc[C_POOL_TOP])
        self.due = grown_rows(self.due, due + 2 * n)
        self.forget_heap = grown_rows(self.forget_heap, forget + n + due)
        self.pool = grown_rows(self.pool, pool_top + n)
        out_rows = 3 * n + 2 * due + pool_top + self.slots.shape[0] + 16
        if out_rows > self.ops.shape[0]:
            self.ops = grown_rows(self.ops, out_rows)
            self.examples = grown_rows(self.examples, out_rows)
            self.example_scores = grown_rows(self.example_scores, out_rows)
            self.events_out = grown_rows(self.events_out, out_rows)
            self.forgotten = grown_rows(self.forgotten, out_rows)
            self.released = grown_rows(self.released, out_rows)
            self.listed = grown_rows(self.listed, out_rows)
        rows = events if n else np.zeros((1, EVENT_WIDTH), dtype=np.int64)  # a valid address even when empty
        _NATIVE_CALL(rows.ctypes.data, n, self.slots.ctypes.data, self.slots.shape[0], self.scores.ctypes.data,
                     self.due.ctypes.data, self.due.shape[0], self.forget_heap.ctypes.data, self.forget_heap.shape[0],
                     self.pool.ctypes.data, self.pool.shape[0], sc.ctypes.data, self.ops.ctypes.data,
                     self.examples.ctypes.data, self.example_scores.ctypes.data, self.events_out.ctypes.data,
                     self.forgotten.ctypes.data, self.released.ctypes.data, self.listed.ctypes.data,
                     self.ops.shape[0], self.window_ms, self.retention_ms, self.bucket_ms,
                     1 if self.impression_mode else 0)
        if sc[C_ERROR]:
            raise RuntimeError("join kernel: output arrays too small (a bug in JoinColumns.run's sizing)")
