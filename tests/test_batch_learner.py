"""The batched join-and-learn core without a cluster: labels, batch-size independence, restores.

The learner is fed [join watermark, event] rows as job.batching delivers them (arrival order, each
with the bounded-out-of-orderness watermark as it was when the event passed), in batches of varying
size, with dict-backed state handles in place of Flink's.
"""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from dict_state import new_state
from join_simulator import JoinSimulator
from reference_joiner import reference_join

from tools.generate import GeneratorConfig, generate
from udfs import batch_learner
from udfs.batch_learner import END_OF_INPUT, BatchJoinLearner, LearnerState
from udfs.join_logic import IMP_TIME, PENDING, ImpressionClickJoin
from udfs.learner_math import LEARNING_MODES, LearnerConfig
from udfs.records import IMPRESSION, TICK, click_event, impression_event

GEN = GeneratorConfig(n_impressions=3000, n_users=120, n_items=100, seed=5, window_s=60.0, max_disorder_s=2.0,
                      click_delay_median_s=8.0, requests_per_s=2.0)
WINDOW_MS, RETENTION_MS, DISORDER_MS = 60_000, 600_000, 3_000
CONFIG = LearnerConfig(dim=8)


@pytest.fixture(scope="module")
def stream():
    return generate(GEN)


@pytest.fixture(scope="module")
def rows(stream) -> list:
    """Both inputs merged in arrival order (each file's order, interleaved by event time), each event
    with the watermark from before it: newest event time so far minus the disorder bound minus 1."""
    events = [impression_event(r) for r in stream.impressions] + [click_event(r) for r in stream.clicks]
    events.sort(key=lambda e: e[-1])
    out, newest = [], -(2**63)
    for event in events:
        watermark = newest - DISORDER_MS - 1 if newest > -(2**63) else -(2**63) + 1
        out.append([watermark, event])
        newest = max(newest, event[-1])
    return out


def run(rows: list, batch_sizes: list[int], restore_every: int | None = None,
        config: LearnerConfig = CONFIG) -> tuple[list, list, LearnerState]:
    """Feed `rows` in batches; with `restore_every`, a fresh learner over the same state every n batches."""
    state = new_state()

    def learner() -> BatchJoinLearner:
        return BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), config, 30_000, 0, state)

    current = learner()
    examples, late = [], []
    position, calls = 0, 0
    while position < len(rows):
        size = batch_sizes[calls % len(batch_sizes)]
        out = current.process_batch(rows[position:position + size], now_ms=0)
        examples += out.examples
        late += out.late_clicks
        position += size
        calls += 1
        if restore_every and calls % restore_every == 0:
            current = learner()  # everything the old one knew must come back from state
    out = current.advance_to(END_OF_INPUT)
    return examples + out.examples, late + out.late_clicks, state


def test_labels_equal_the_reference(stream, rows):
    examples, late, _ = run(rows, [1, 7, 250, 33])
    reference = reference_join(stream.impressions, stream.clicks, WINDOW_MS)
    got = {e["impression_id"]: (e["label"], e["click_time"]) for e in examples}
    assert len(got) == len(examples), "an impression produced two examples"
    assert got == reference.labels
    assert len(late) == reference.late_clicks
    assert sum(label for label, _ in got.values()) > 50


@pytest.mark.parametrize("mode", LEARNING_MODES)
def test_batch_boundaries_change_nothing(rows, mode):
    config = LearnerConfig(dim=8, learning_mode=mode)
    one_by_one, _, _ = run(rows, [1], config=config)
    batched, _, _ = run(rows, [500, 3, 90], config=config)
    assert [(e["impression_id"], e["label"]) for e in one_by_one] == [(e["impression_id"], e["label"]) for e in batched]
    assert [e["score"] for e in one_by_one] == pytest.approx([e["score"] for e in batched], abs=1e-12)


def test_impression_mode_gives_the_same_labels_and_learns_negatives_when_shown(stream, rows):
    """Learning at impression time changes what the learner sees and when, not the labels."""
    at_impression = LearnerConfig(dim=8, learning_mode="impression")
    decided, late, _ = run(rows, [1, 7, 250, 33], config=LearnerConfig(dim=8, learning_mode="decided"))
    shown, shown_late, state = run(rows, [1, 7, 250, 33], config=at_impression)
    assert [(e["impression_id"], e["label"], e["click_time"]) for e in shown] == [
        (e["impression_id"], e["label"], e["click_time"]) for e in decided]
    assert shown_late == late
    assert [e["score"] for e in shown] != pytest.approx([e["score"] for e in decided])
    # Every kept impression is learned once as a negative, every positive once more.
    positives = sum(e["label"] for e in shown)
    global_updates = np.frombuffer(state.biases.data[batch_learner.GLOBAL_KEY])[2]
    assert global_updates == len(shown) + positives
    # A negative reaches the user's vector within the call that brings the impression.
    user = rows[0][1][3]
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), at_impression, 30_000, 0, new_state())
    learner.process_batch(rows[:1], now_ms=0)
    assert learner.state.users.get(user) is not None


@pytest.mark.parametrize("mode", LEARNING_MODES)
def test_a_restored_learner_continues_exactly_from_state(rows, mode):
    """All of the model and the join lives in the state handles: a learner rebuilt from them every few
    batches (what a restore from a checkpoint does) gives the same examples, scores and model."""
    config = LearnerConfig(dim=8, learning_mode=mode)
    straight, _, straight_state = run(rows, [40, 13, 101], config=config)
    restored, _, restored_state = run(rows, [40, 13, 101], restore_every=3, config=config)
    assert [(e["impression_id"], e["label"]) for e in straight] == [(e["impression_id"], e["label"]) for e in restored]
    assert [e["score"] for e in straight] == pytest.approx([e["score"] for e in restored], abs=1e-12)
    for name in ("users", "items", "biases"):
        assert getattr(straight_state, name).data == getattr(restored_state, name).data, name


def test_join_state_keeps_only_what_retention_needs(rows):
    """Mid-stream, state holds only entries within retention; a call writes at most two blocks (the
    impressions that arrived, as columns; the entries changed after their block, as a list), negatives
    decided by their deadline are not written again, nothing is written entry by entry, and at the end
    of the input nothing is left."""
    state = new_state()
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state)
    half = len(rows) // 2
    calls = 0
    for start in range(0, half, 50):
        learner.process_batch(rows[start:min(start + 50, half)], now_ms=0)
        calls += 1
        assert not state.entries.data, "an entry written one by one"
    decided_until = learner.meta["decided_until"]
    forgotten_by = decided_until - WINDOW_MS - RETENTION_MS  # impressions at or before this are forgotten
    blocks = [pickle.loads(data) for data in state.entry_blocks.data.values()]
    arrived = [stored for _, *stored in blocks if len(stored) == 3]
    changed = [entry for _, *stored in blocks if len(stored) == 1 for _, entry in stored[0]]
    assert arrived and changed
    assert len(arrived) <= calls and len(blocks) <= 2 * calls, "more than two blocks per call"
    assert all(expiry > decided_until for expiry, *_ in blocks), "a block outlived all its entries"
    # (retention timers are coarsened to forget buckets: an entry may stay in state one bucket longer)
    assert all(entry[0] is None or entry[0][IMP_TIME] > forgotten_by - batch_learner.FORGET_BUCKET_MS
               for entry in changed)
    block_entries = [entry for stored in arrived for _, entry in batch_learner._block_entries(stored)]
    assert any(entry[1] == PENDING and entry[0][IMP_TIME] + WINDOW_MS < decided_until for entry in block_entries), \
        "some negatives were decided without a write"
    clicks = sum(1 for _, event in rows[:half] if event[0] != IMPRESSION)
    assert len(changed) <= clicks, "entries written again beyond those changed by a click"
    learner.advance_to(END_OF_INPUT)
    assert state.entries.data == {} and state.entry_blocks.data == {}


def test_a_savepoint_with_entries_kept_one_by_one_restores_exactly(rows):
    """State from before changed entries went in blocks (an `entries` map state, id -> entry) restores to
    the same labels and model as a run straight through, and its entries move into a block."""
    straight_state = new_state()
    straight = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, straight_state)
    state = new_state()
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state)
    expected, got = [], []
    half = len(rows) // 2
    for start in range(0, half, 50):
        expected += straight.process_batch(rows[start:min(start + 50, half)], now_ms=0).examples
        got += learner.process_batch(rows[start:min(start + 50, half)], now_ms=0).examples
    # The changed-entry blocks as the older code kept them: one map entry each, newest version last.
    moved = 0
    for number, data in sorted(state.entry_blocks.data.items()):
        _, *stored = pickle.loads(data)
        if len(stored) == 1:
            del state.entry_blocks.data[number]
            for impression_id, entry in stored[0]:
                state.entries.data[impression_id] = pickle.dumps(entry)
                moved += 1
    assert moved
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state)
    assert not state.entries.data, "the entries kept one by one moved into a block"
    for start in range(half, len(rows), 50):
        expected += straight.process_batch(rows[start:start + 50], now_ms=0).examples
        got += learner.process_batch(rows[start:start + 50], now_ms=0).examples
    expected += straight.advance_to(END_OF_INPUT).examples
    got += learner.advance_to(END_OF_INPUT).examples
    assert [(e["impression_id"], e["label"]) for e in got] == [(e["impression_id"], e["label"]) for e in expected]
    assert [e["score"] for e in got] == pytest.approx([e["score"] for e in expected], abs=1e-12)
    assert state.users.data == straight_state.users.data


def test_a_restore_does_not_bring_back_forgotten_impressions():
    """An impression whose retention ended is forgotten, though its block may still be in state (other
    impressions of the block are younger): after a restore it stays forgotten, so the same id seen
    again is a new impression, not a duplicate; and a click on it seen again is a positive."""

    def impression(impression_id: str, t: int) -> list:
        return impression_event({"impression_id": impression_id, "request_id": "r", "user_id": "u",
                                 "item_id": "i", "position": 1, "event_time": t})

    def click(impression_id: str, t: int) -> list:
        return click_event({"impression_id": impression_id, "user_id": "u", "item_id": "i", "event_time": t})

    start = 1_000_000
    forgotten = start + WINDOW_MS + RETENTION_MS  # the watermark at which "old" is forgotten
    first = [[start - 1, impression("old", start)], [start - 1, impression("young", forgotten - 10)]]
    later = [[forgotten, impression("old", forgotten + 5)], [forgotten, click("old", forgotten + 6)]]

    def examples(restore: bool) -> list:
        state = new_state()
        learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state)
        out = learner.process_batch(first, now_ms=0).examples
        out += learner.process_batch([[forgotten, [TICK]]], now_ms=0).examples
        assert state.entry_blocks.data, "the block is still needed for the younger impression"
        if restore:
            learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state)
        out += learner.process_batch(later, now_ms=0).examples
        return [(e["impression_id"], e["label"], e["impression_time"]) for e in out]

    expected = [("old", 0, start), ("old", 1, forgotten + 5)]
    assert [e for e in examples(restore=False) if e[0] == "old"] == expected
    assert examples(restore=True) == examples(restore=False)


def test_snapshot_publishes_changed_entities_once(rows):
    state = new_state()
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state)
    learner.process_batch(rows[:2000], now_ms=1_000)
    records = learner.snapshot(now_ms=2_000)
    kinds = {r["entity_type"] for r in records}
    assert {"USER", "ITEM", "POSITION", "GLOBAL"} <= kinds
    assert len({(r["entity_type"], r["entity_id"]) for r in records}) == len(records)
    assert all(r["version"] == records[0]["version"] >= 2_000 for r in records)
    assert learner.snapshot(now_ms=3_000) == []  # nothing changed since
    # The version survives a restore and keeps growing.
    again = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state)
    again.process_batch(rows[2000:2500], now_ms=1_500)
    assert again.snapshot(now_ms=1_500)[0]["version"] == records[0]["version"] + 1


def test_an_entity_learned_again_after_a_snapshot_is_published_again(rows):
    """`dirty` is written once per entity between two snapshots (the learner remembers what it wrote);
    once a snapshot has published and cleared it, learning the same entity must mark it again."""
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, new_state())
    learner.process_batch(rows[:1000], now_ms=1_000)
    learner.process_batch(rows[1000:2000], now_ms=1_100)  # users of both calls: written to `dirty` once
    first = {r["entity_id"] for r in learner.snapshot(now_ms=2_000) if r["entity_type"] == "USER"}
    learner.process_batch(rows[2000:4000], now_ms=3_000)
    second = {r["entity_id"] for r in learner.snapshot(now_ms=4_000) if r["entity_type"] == "USER"}
    learned_again = {event[3] for _, event in rows[2000:4000] if event[0] == IMPRESSION} & first
    assert learned_again, "the second stretch should bring back users of the first"
    assert learned_again <= second


def test_item_loop_records_are_averaged_in(rows):
    state = new_state()
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state)
    learner.process_batch(rows[:500], now_ms=0)
    learner.snapshot(now_ms=1)
    item_id = next(iter(learner.model.item_rows))
    before = learner.model.items[learner.model.item_rows[item_id]].copy()
    remote = {"entity_type": "ITEM", "entity_id": item_id, "vector": [1.0] * CONFIG.dim,
              "vector_accum": [1e6] * CONFIG.dim, "bias": 2.0, "bias_accum": 5.0, "replica": 1,
              "created_at": 0, "version": 1, "watermark": 0, "updates": 3}
    learner.process_batch([[-(2**63) + 1, [2, remote]], [-(2**63) + 1, [2, {**remote, "replica": 0}]]], now_ms=10)
    after = learner.model.items[learner.model.item_rows[item_id]]
    dim = CONFIG.dim
    assert after[:dim] == pytest.approx((before[:dim] + 1.0) / 2)  # own replica's record ignored
    assert (after[dim:2 * dim] == 1e6).all()
    assert after[2 * dim] == pytest.approx((before[2 * dim] + 2.0) / 2)
    # Kept in state, but not republished: the replicas would echo each other's records forever.
    assert state.items.data[item_id] == after.tobytes()
    assert learner.snapshot(now_ms=20) == []


@pytest.mark.parametrize("seed", [1, 2])
def test_random_batching_keeps_labels(stream, rows, seed):
    rng = random.Random(seed)
    sizes = [rng.randint(1, 400) for _ in range(50)]
    examples, _, _ = run(rows, sizes, restore_every=rng.randint(2, 9))
    reference = reference_join(stream.impressions, stream.clicks, WINDOW_MS)
    assert {e["impression_id"]: (e["label"], e["click_time"]) for e in examples} == reference.labels


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_ids_seen_again_after_retention_behave_as_with_exact_timers(seed):
    """Retention timers are coarsened (forget buckets, udfs.batch_learner): ids that come back around
    the end of their retention, as duplicates, clicks or new impressions, still give exactly what the
    per-event join with one timer per retention gives, whatever the batches and restores."""
    rng = random.Random(seed)
    window, retention, disorder = 1_000, 2_000, 300
    events, t = [], 5_000_000
    for _ in range(3000):  # a pool of 40 ids over ~300 retentions: every id returns many times
        t += rng.randint(0, 300)
        impression_id, at = f"imp{rng.randrange(40)}", max(0, t - rng.randint(0, disorder - 1))
        if rng.random() < 0.6:
            events.append(impression_event({"impression_id": impression_id, "request_id": "r", "user_id": "u",
                                            "item_id": "i", "position": 1, "event_time": at}))
        else:
            events.append(click_event({"impression_id": impression_id, "user_id": "u", "item_id": "i",
                                       "event_time": at}))
    simulator = JoinSimulator(window, retention, disorder)
    rows, newest = [], -(2**63)
    for event in events:
        rows.append([newest - disorder - 1 if newest > -(2**63) else -(2**63) + 1, event])
        newest = max(newest, event[-1])
        (simulator.impression if event[0] == IMPRESSION else simulator.click)(tuple(event[1:]))
    simulator.finish()
    expected = sorted((imp[0], imp[-1], label, click_time) for imp, label, click_time in simulator.examples)
    expected_events = {}
    for emission in simulator.emissions:
        if emission[0] != "example":
            expected_events[emission[0]] = expected_events.get(emission[0], 0) + 1

    state = new_state()
    join = ImpressionClickJoin(window, retention)
    learner = BatchJoinLearner(join, CONFIG, 30_000, 0, state)
    got, got_events, position = [], {}, 0
    while True:
        size = rng.randint(1, 200)
        out = (learner.process_batch(rows[position:position + size], now_ms=0) if position < len(rows)
               else learner.advance_to(END_OF_INPUT))
        got += [(e["impression_id"], e["impression_time"], e["label"], e["click_time"]) for e in out.examples]
        for kind, count in out.join_events.items():
            got_events[kind] = got_events.get(kind, 0) + count
        if position >= len(rows):
            break
        position += size
        if rng.random() < 0.2:
            learner = BatchJoinLearner(join, CONFIG, 30_000, 0, state)
    assert len(expected) > 1000 and expected_events.get("duplicate_impression", 0) > 100
    assert sorted(got) == expected
    assert got_events == expected_events


def test_ticks_carry_the_watermark_to_a_quiet_shard(rows):
    """A shard without traffic gets ticks ([TICK] with the join watermark of their moment): they close
    its impressions' windows, and its costs are per event (ticks are not events)."""
    state = new_state()
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 60_000, state)
    head = rows[:300]
    first = learner.process_batch(head, now_ms=0)
    newest = max(event[-1] for _, event in head)
    pending = {event[1] for _, event in head if event[0] == IMPRESSION} - {e["impression_id"] for e in first.examples}
    assert pending, "the head of the stream should leave impressions whose window is open"
    # Past every retention by a whole forget bucket: the entries are gone from state too.
    ticks = [[newest + WINDOW_MS + RETENTION_MS + batch_learner.FORGET_BUCKET_MS, [TICK]] for _ in range(5)]
    out = learner.process_batch(ticks, now_ms=0)
    assert {e["impression_id"] for e in out.examples} == pending
    assert not learner.state.entries.data and not learner.state.entry_blocks.data
    assert learner.live_entries() == 0
    counted = sum(stats.cost_events for _, stats in first.partials + out.partials)
    assert counted == len(head)  # impressions and clicks; the ticks add nothing


def test_a_bounded_cache_changes_nothing(rows, monkeypatch):
    """The Python rows are only a cache of state: one that starts over after every call gives the same
    examples, scores and model as one that keeps everything."""
    straight, _, straight_state = run(rows, [40, 13, 101])
    monkeypatch.setattr(batch_learner, "MAX_CACHED_ROWS", 5)
    bounded, _, bounded_state = run(rows, [40, 13, 101])
    assert [(e["impression_id"], e["label"]) for e in straight] == [(e["impression_id"], e["label"]) for e in bounded]
    assert [e["score"] for e in straight] == pytest.approx([e["score"] for e in bounded], abs=1e-12)
    for name in ("users", "items", "biases"):
        assert getattr(straight_state, name).data == getattr(bounded_state, name).data, name


def test_cached_rows_do_not_outlive_the_state_ttl(rows):
    state = new_state()
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state,
                               state_ttl_ms=1_000)
    learner.process_batch(rows[:2500], now_ms=0)
    user = next(iter(state.users.data))
    assert np.frombuffer(state.users.data[user])[:CONFIG.dim].any()  # learned something
    del state.users.data[user]  # what Flink's TTL does to a user not written for 1 s
    learner.process_batch([], now_ms=499)
    assert user in learner.model.user_rows  # within half the TTL the cache holds
    learner.process_batch([], now_ms=500)
    assert learner.model.n_users == 0
    assert (learner.model.users[learner._user_row(user)] == learner.model.new_user_row()).all()


def test_the_worker_interpreter_collects_young_objects_rarely_and_freezes_start_up() -> None:
    import gc

    from udfs import interpreter

    saved = gc.get_threshold()
    interpreter._tuned = False
    try:
        interpreter.tune_garbage_collector()
        assert gc.get_threshold()[0] == interpreter.YOUNG_GENERATION_THRESHOLD
        assert gc.get_freeze_count() > 0
        gc.set_threshold(700, *gc.get_threshold()[1:])
        interpreter.tune_garbage_collector()  # once per worker: a second call changes nothing
        assert gc.get_threshold()[0] == 700
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)


def test_ftrl_state_travels_in_snapshots_for_a_hot_start(rows):
    """Snapshot records carry FTRL's z (bias_z): a hot start resumes each scalar's z exactly, also
    inside the L1 dead zone, where deriving it from the value would lose it."""
    from udfs.learner_kernel import ITEM_BIAS, ITEM_BIAS_Z
    from udfs.model_store import ModelStore

    config = LearnerConfig(dim=8, bias_optimizer="ftrl", ftrl_l1=2.0)
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), config, 30_000, 0, new_state())
    learner.process_batch(rows[: len(rows) // 2], now_ms=0)
    records = learner.snapshot(1_800_000_000_000)
    assert all(r["bias_z"] is not None for r in records if r["entity_type"] != "USER")
    resumed = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), config, 30_000, 0, new_state(),
                               initial_model=ModelStore().apply_all(records))
    items = [r["entity_id"] for r in records if r["entity_type"] == "ITEM"]
    dead_zone = 0
    for item_id in items:
        before = learner.model.items[learner.model.item_rows[item_id]]
        after = resumed.model.items[resumed._item_row(item_id)]
        assert after[ITEM_BIAS] == before[ITEM_BIAS] and after[ITEM_BIAS_Z] == before[ITEM_BIAS_Z]
        dead_zone += before[ITEM_BIAS] == 0.0 and before[ITEM_BIAS_Z] != 0.0
    assert dead_zone > 0  # the case a derived z would get wrong is there


def test_the_worker_interpreter_runs_blas_on_one_thread() -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    from udfs import interpreter

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    saved = blas_threads()
    assert saved, "numpy's BLAS is loaded, so threadpoolctl must see it"
    threadpool_limits(limits=2, user_api="blas")  # as OpenBLAS starts on a machine with two cores
    try:
        assert max(blas_threads()) == 2
        interpreter.limit_native_threads()
        assert blas_threads() == [1] * len(saved)
    finally:
        threadpool_limits(limits=max(saved), user_api="blas")


def test_metric_intervals_come_back_from_state(rows):
    """Open metric intervals are in state, one entry per interval: a learner rebuilt from state after every
    call closes the same intervals with the same counts and sums as one that ran straight through."""

    def partials(restore: bool) -> list:
        state = new_state()
        learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state)
        closed = []
        for start in range(0, len(rows), 97):
            closed += learner.process_batch(rows[start:start + 97], now_ms=0).partials
            if restore:
                learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state)
        closed += learner.advance_to(END_OF_INPUT).partials
        assert len(state.intervals.data) <= 1, "only the interval at the end of time stays open"
        return [(start, {name: value for name, value in stats.values().items() if not name.startswith("cost_")})
                for start, stats in closed]

    straight = partials(restore=False)
    assert len(straight) > 3 and sum(values["examples"] for _, values in straight) > 1000
    restored = partials(restore=True)
    assert [start for start, _ in restored] == [start for start, _ in straight]
    for (_, mine), (_, theirs) in zip(restored, straight, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-9, nan_ok=True)
