"""Input guard rails without a cluster: every bad record is rejected with a reason, nothing valid is lost.

Covers the event-time upper bound of the parse operator, dead-letter payload truncation, tombstones,
invalid UTF-8 and byte order marks, finite-value checks (catalog embeddings, item-loop records,
metric bins) and malformed catalog lines. Snapshot files are in test_model_store.py; the whole job
over poison records is in test_replay_flink.py.
"""

from __future__ import annotations

import copy
import io
import math
import re
import time

import fastavro
import numpy as np
import orjson
import pytest
from dict_state import new_state
from operator_context import RuntimeContext
from samples import SAMPLES

from clients.event_files import MalformedRecord, read_records
from job.catalog import catalog_from_file, read_catalog
from udfs.batch_learner import NO_WATERMARK, BatchJoinLearner
from udfs.encoding import JsonLinesEncoder
from udfs.join_logic import ImpressionClickJoin
from udfs.learner_math import LearnerConfig
from udfs.metrics_math import BinnedAUC
from udfs.parse import (
    DEAD_LETTER_MAX_BYTES,
    MAX_EVENT_TIME,
    ParseEventBatches,
    ParseEvents,
    dead_letter,
    event_time_bound,
    event_time_problem,
)
from udfs.records import ITEM_PARAMS, InvalidRecord, parse_json, parse_wire, validate_record
from udfs.schemas import parsed_schema, previous_schemas, raw_schema
from udfs.wire import MARKER, WireDecoder, encode, fingerprint

DAY_MS = 86_400_000
NOW_MS = 1_780_000_000_000  # a fixed "wall clock" for the pure functions
YEAR_9999_MS = 253_402_300_799_000
NEAR_2_63 = 2**63 - 1_000
KAFKA_MAX_REQUEST_SIZE = 1_048_576  # the producer default the dead-letter sink runs with


def impression(**changes) -> dict:
    return {**SAMPLES["Impression"], **changes}


def line(**changes) -> bytes:
    return orjson.dumps(impression(**changes))


def reason_of(schema: str, raw) -> str:
    with pytest.raises(InvalidRecord) as error:
        parse_json(schema, raw)
    return str(error.value)


# --- the event-time upper bound ----------------------------------------------------------------

def test_bound_before_the_first_event_is_the_wall_clock_plus_the_margin() -> None:
    assert event_time_bound(None, 0, NOW_MS, DAY_MS) == NOW_MS + DAY_MS


def test_bound_of_a_replay_behind_the_clock_is_its_own_progress() -> None:
    progress = NOW_MS - 300 * DAY_MS  # a historical file
    assert event_time_bound(progress, NOW_MS, NOW_MS, DAY_MS) == progress + DAY_MS
    assert event_time_problem(progress + DAY_MS, progress + DAY_MS, DAY_MS) is None
    assert event_time_problem(progress + DAY_MS + 1, progress + DAY_MS, DAY_MS) is not None


def test_bound_of_a_stream_ahead_of_the_clock_is_the_clock() -> None:
    # a sped-up stream whose event times run ahead of the wall clock
    assert event_time_bound(NOW_MS + 5 * DAY_MS, NOW_MS, NOW_MS, DAY_MS) == NOW_MS + DAY_MS


def test_progress_ages_with_the_wall_clock_so_a_paused_stream_is_not_shut_out() -> None:
    paused_since = NOW_MS - 3 * DAY_MS  # the last event came three days ago, when it was current
    bound = event_time_bound(paused_since, paused_since, NOW_MS, DAY_MS)
    assert bound == NOW_MS + DAY_MS
    assert event_time_problem(NOW_MS, bound, DAY_MS) is None


def test_far_future_event_times_are_refused_with_the_bound_in_the_reason() -> None:
    bound = event_time_bound(NOW_MS, NOW_MS, NOW_MS, DAY_MS)
    for event_time in (YEAR_9999_MS, NEAR_2_63, 2**63 - 1):
        reason = event_time_problem(event_time, bound, DAY_MS)
        assert reason is not None and str(bound) in reason and "--max-event-ahead 86400 s" in reason


def test_the_bound_never_leaves_room_for_overflow() -> None:
    assert event_time_bound(None, 0, NOW_MS, 2**63 - 1) == MAX_EVENT_TIME
    assert MAX_EVENT_TIME + 100 * 365 * DAY_MS < 2**63  # window, retention and deadlines still fit


DEAD = "dead-letter-tag"


def run_parse(values: list, max_event_ahead_ms: int = DAY_MS, max_bytes: int = DEAD_LETTER_MAX_BYTES,
              decode=parse_json) -> tuple[list, list[dict]]:
    """The parse operator's function over `values`, without Flink: (accepted rows, dead letters)."""
    parse = ParseEvents("impressions", "Impression", DEAD, JsonLinesEncoder(), ["s0"], decode,
                        max_event_ahead_ms, max_bytes)
    parse.open(RuntimeContext())
    accepted, dead = [], []
    for value in values:
        for out in parse.process_element(value, None):
            if isinstance(out, tuple) and out[0] == DEAD:
                dead.append(orjson.loads(out[1]))
            else:
                accepted.append(out)
    return accepted, dead


def test_parse_rejects_far_future_events_and_keeps_its_progress() -> None:
    t0 = SAMPLES["Impression"]["event_time"]  # 2023: a replay behind the clock
    values = [line(impression_id="a", event_time=t0), line(impression_id="future", event_time=YEAR_9999_MS),
              line(impression_id="overflow", event_time=NEAR_2_63),
              line(impression_id="b", event_time=t0 + DAY_MS // 2), line(impression_id="late", event_time=t0 - 5),
              line(impression_id="tomorrow", event_time=t0 + DAY_MS // 2 + DAY_MS + 60_000)]
    accepted, dead = run_parse(values)
    assert [row[1] for row in accepted] == [t0, t0 + DAY_MS // 2, t0 - 5]
    assert [orjson.loads(d["payload"])["impression_id"] for d in dead] == ["future", "overflow", "tomorrow"]
    assert all("beyond the bound" in d["reason"] for d in dead)
    # the rejected year-9999 event did not move the bound: the next day was still accepted (progress
    # ages with the wall clock, so the bound may have moved on by the milliseconds the test took)
    bound = int(dead[0]["reason"].split("beyond the bound ")[1].split(":")[0])
    assert t0 + DAY_MS <= bound < t0 + DAY_MS + 60_000


def test_the_first_event_is_bounded_by_the_wall_clock() -> None:
    now = int(time.time() * 1000)
    accepted, dead = run_parse([line(impression_id="first-far", event_time=now + 2 * DAY_MS),
                                line(impression_id="now", event_time=now)])
    assert [row[1] for row in accepted] == [now]
    assert len(dead) == 1 and "beyond the bound" in dead[0]["reason"]


def unaged(reason: str) -> str:
    return re.sub(r"the bound \d+", "the bound B", reason)


def events_of(row) -> list[tuple[str, list]]:
    """(shard, event) of each event in a parse's block row (None for none: a row with a watermark only)."""
    if row[2] is None:
        return []
    return [(row[0], event) for event in orjson.loads(b"[" + row[2] + b"]")]


def run_batch_parse(batches: list[list]) -> tuple[list, list[dict], int]:
    """The batch parse over `batches` of raw lines, without Flink: (events as (shard, event) in order,
    dead letters, the accepted counter)."""
    parse = ParseEventBatches("impressions", "Impression", DEAD, JsonLinesEncoder(), ["s0"], parse_json, DAY_MS)
    context = RuntimeContext()
    parse.open(context)
    accepted, dead = [], []
    for batch in batches:
        for out in parse.process_element([batch], None):
            if isinstance(out, tuple) and out[0] == DEAD:
                dead.append(orjson.loads(out[1]))
            else:
                accepted.extend(events_of(out))
    return accepted, dead, context.group.counters["accepted"].count


def test_a_batch_parse_accepts_and_rejects_exactly_what_the_record_parse_does() -> None:
    t0 = SAMPLES["Impression"]["event_time"]
    values = [line(impression_id="a", event_time=t0), b"not json",
              line(impression_id="future", event_time=YEAR_9999_MS),
              line(impression_id="b\tc", query="tab\tand\nnewline", event_time=t0 + 1), b"",
              line(impression_id="neg", position=-1), line(impression_id="d", event_time=t0 + DAY_MS // 2),
              orjson.dumps({**impression(impression_id="extra"), "surprise": 1}),
              line(impression_id="tomorrow", event_time=t0 + DAY_MS // 2 + DAY_MS + 60_000)]
    accepted, dead = run_parse(values)
    for split in ([values], [values[:3], values[3:7], values[7:]], [[value] for value in values]):
        batch_accepted, batch_dead, counted = run_batch_parse([[v.decode() for v in batch] for batch in split])
        assert batch_accepted == [event for row in accepted for event in events_of(row)]
        # (a bound quoted in a reason ages with the wall clock: milliseconds apart between the runs)
        assert [(unaged(d["reason"]), d["payload"]) for d in batch_dead] == [(unaged(d["reason"]), d["payload"])
                                                                              for d in dead]
        assert counted == len(accepted)
    # the record with a tab and a newline in its strings survived the batch's tab-separated form
    assert [orjson.loads(row[2])[1] for row in accepted] == ["a", "b\tc", "d"]
    assert len(dead) == 6


def test_no_block_lets_the_watermark_overtake_an_event_still_to_come() -> None:
    """The event-time watermark of a file run follows the blocks' event times (job.batching): a block must
    not carry a time that a per-event watermark would only reach after an event of a later block of the
    same batch (a shard's block holds events from all through the batch): at most the newest time before
    that event in the input, or the event's own. After a batch's last block the watermark may move to
    the newest event time so far, not less."""
    shards = ["s0", "s1", "s2"]
    parse = ParseEventBatches("impressions", "Impression", DEAD, JsonLinesEncoder(), shards, parse_json, DAY_MS)
    parse.open(RuntimeContext())
    rng = np.random.default_rng(5)
    t0 = SAMPLES["Impression"]["event_time"]
    times = t0 + np.cumsum(rng.integers(0, 50, 3000)) - rng.integers(0, 400, 3000)  # disorder within 400 ms
    lines = [line(impression_id=f"i{n}", user_id=f"u{rng.integers(0, 40)}", event_time=int(t)).decode()
             for n, t in enumerate(times)]
    newest_before = np.concatenate([[np.iinfo(np.int64).min], np.maximum.accumulate(times)[:-1]])
    at, newest_so_far, batches = 0, None, 0
    while at < len(lines):
        size = int(rng.choice([1, 3, 50, 400]))
        rows = list(parse.process_element([lines[at:at + size]], None))
        at += size
        assert rows and len({row[0] for row in rows}) == len(rows)  # one block per shard with events
        # per block: the least of its events' max(newest time before the event in the input, its own time)
        later = [min(max(newest_before[int(event[1][1:])], event[-1]) for _, event in events_of(row))
                 for row in rows]
        for k, row in enumerate(rows[:-1]):
            assert row[1] <= min(later[k + 1:])
        batch_newest = max(event[-1] for row in rows for _, event in events_of(row))
        newest_so_far = batch_newest if newest_so_far is None else max(newest_so_far, batch_newest)
        assert max(row[1] for row in rows) == rows[-1][1] == newest_so_far
        batches += len(rows) > 1
    assert batches > 10  # batches of several shards' blocks, or the test proves nothing


def test_a_batch_of_kafka_messages_parses_as_its_records_do_and_keeps_its_watermark() -> None:
    """Kafka batches (job.batching.message_batches): Avro messages, tombstones among them, and the
    source watermark the batch carries, handed on with its events."""
    t0 = SAMPLES["Impression"]["event_time"]
    values = [encode("Impression", impression(impression_id="a", event_time=t0)), None, b"\x00garbage",
              encode("Click", SAMPLES["Click"]), encode("Impression", impression(impression_id="b", position=-1)),
              encode("Impression", impression(impression_id="far", event_time=YEAR_9999_MS)),
              encode("Impression", impression(impression_id="c", event_time=t0 + 1))]
    accepted, dead = run_parse(values, decode=parse_wire)
    parse = ParseEventBatches("impressions", "Impression", DEAD, JsonLinesEncoder(), ["s0"], parse_wire, DAY_MS)
    parse.open(RuntimeContext())
    outs = list(parse.process_element([values, 12_345], None))
    batch_dead = [orjson.loads(out[1]) for out in outs if isinstance(out, tuple) and out[0] == DEAD]
    rows = [out for out in outs if not (isinstance(out, tuple) and out[0] == DEAD)]
    assert len(rows) == 1 and rows[0][3] == 12_345
    assert events_of(rows[0]) == [event for row in accepted for event in events_of(row)]
    assert [event[1] for _, event in events_of(rows[0])] == ["a", "c"]
    assert [unaged(d["reason"]) for d in batch_dead] == [unaged(d["reason"]) for d in dead]
    assert len(dead) == 5 and "tombstone" in dead[0]["reason"]
    # a batch without one valid record, or without messages (ticks only), still hands on its watermark
    for messages in ([None, b"x"], [], None):
        outs = [out for out in parse.process_element([messages, 99], None) if not isinstance(out, tuple)]
        assert [(events_of(row), row[3]) for row in outs] == [([], 99)]


# --- dead-letter payloads ----------------------------------------------------------------------

def test_dead_letter_keeps_a_bounded_payload_and_the_original_size() -> None:
    record = dead_letter("clicks", "too big", b"x" * 1_000_000)
    assert record["payload"] == b"x" * DEAD_LETTER_MAX_BYTES
    assert record["payload_size"] == 1_000_000
    assert len(encode("DeadLetter", record)) < DEAD_LETTER_MAX_BYTES + 1024
    small = dead_letter("clicks", "small", "é")
    assert (small["payload"], small["payload_size"]) == ("é".encode(), 2)
    assert dead_letter("clicks", "cut", b"abcdef", max_bytes=4)["payload"] == b"abcd"


def test_a_message_close_to_one_megabyte_gives_a_dead_letter_the_sink_can_send() -> None:
    huge = b"\xc3\x01" + fingerprint(raw_schema("Impression")) + b"\xff" * (KAFKA_MAX_REQUEST_SIZE - 100)
    _, dead = run_parse([huge], decode=parse_wire)
    assert len(dead) == 1 and dead[0]["payload_size"] == len(huge)
    wire = encode("DeadLetter", dict(dead[0], payload=huge[:DEAD_LETTER_MAX_BYTES]))
    assert len(wire) < KAFKA_MAX_REQUEST_SIZE // 10


def test_a_huge_reason_is_cut_too() -> None:
    fields = {f"unknown_{i}": 1 for i in range(50_000)}
    raw = orjson.dumps({**impression(), **fields})
    _, dead = run_parse([raw], max_bytes=1000)
    assert dead[0]["payload_size"] == len(raw) and len(dead[0]["payload"]) == 1000
    assert "unknown field(s)" in dead[0]["reason"] and len(dead[0]["reason"]) < 3000


def test_dead_letters_written_before_payload_size_still_decode() -> None:
    (old,) = previous_schemas("DeadLetter")
    assert "payload_size" not in [f["name"] for f in old["fields"]]
    body = io.BytesIO()
    record = {k: v for k, v in SAMPLES["DeadLetter"].items() if k != "payload_size"}
    fastavro.schemaless_writer(body, fastavro.parse_schema(copy.deepcopy(old)), record)
    message = MARKER + fingerprint(old) + body.getvalue()
    assert WireDecoder("DeadLetter").decode(message) == dict(record, payload_size=-1)


# --- tombstones, UTF-8, byte order marks -------------------------------------------------------

def test_tombstones_are_rejected_with_a_reason() -> None:
    assert "tombstone" in reason_of("Impression", None)
    with pytest.raises(InvalidRecord, match="tombstone"):
        parse_wire("Click", None)
    accepted, dead = run_parse([None, line()], decode=parse_wire)
    assert "tombstone" in dead[0]["reason"] and dead[0]["payload_size"] == 0


def test_invalid_utf8_and_a_leading_bom_are_rejected_with_a_reason() -> None:
    assert "not valid UTF-8" in reason_of("Impression", line(user_id="u-X").replace(b"u-X", b"u-\xff"))
    assert "byte order mark" in reason_of("Impression", b"\xef\xbb\xbf" + line())
    assert "byte order mark" in reason_of("Impression", "\ufeff" + line().decode())


@pytest.mark.parametrize("field", ["impression_id", "request_id", "user_id", "item_id"])
@pytest.mark.parametrize("bad,what", [("\ufeff", "byte order mark"), ("\ufffd", "invalid UTF-8"),
                                      ("\ud800", "invalid UTF-8")])
def test_ids_with_a_bom_or_invalid_utf8_are_rejected(field: str, bad: str, what: str) -> None:
    record = impression(**{field: bad + "u1"})
    with pytest.raises(InvalidRecord, match=f"Impression.{field} contains .*{what}"):
        validate_record("Impression", record)
    if bad != "\ud800":  # JSON text cannot carry a lone surrogate; orjson refuses it as not UTF-8
        assert what in reason_of("Impression", orjson.dumps(record))  # the fast path too
        with pytest.raises(InvalidRecord, match=what):
            parse_wire("Impression", encode("Impression", record))


def test_invalid_utf8_inside_an_avro_string_is_rejected() -> None:
    good = encode("Click", dict(SAMPLES["Click"], user_id="u-X"))
    with pytest.raises(InvalidRecord, match="utf-8"):
        parse_wire("Click", good.replace(b"u-X", b"u-\xff"))


def test_clean_records_still_pass_both_paths() -> None:
    assert parse_json("Impression", line(query="Grüße – ok")) == impression(query="Grüße – ok")
    assert parse_wire("Impression", encode("Impression", impression())) == impression()


# --- finite values -----------------------------------------------------------------------------

@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e7, -2e6, 1e300])
def test_item_embeddings_must_be_finite_and_sane(value: float) -> None:
    item = dict(SAMPLES["Item"], embedding=[0.5, value, 1.0])
    with pytest.raises(InvalidRecord, match=r"Item.embedding\[1\] is .*finite with \|x\| <= 1e\+06"):
        validate_record("Item", item)
    with pytest.raises(InvalidRecord, match="finite"):
        parse_wire("Item", encode("Item", item))


def test_embeddings_at_the_limit_are_fine() -> None:
    item = dict(SAMPLES["Item"], embedding=[1e6, -1e6, 0.0])
    assert validate_record("Item", item) == item


def test_a_nan_score_does_not_crash_the_auc_bins() -> None:
    auc = BinnedAUC()
    assert auc.bin_of(math.nan) == auc.bin_of(0.5)
    auc.add(math.nan, 1)
    auc.add(0.1, 0)
    assert auc.value() == 1.0


def _learner() -> BatchJoinLearner:
    return BatchJoinLearner(ImpressionClickJoin(60_000, 600_000), LearnerConfig(dim=4), 30_000, 0, new_state())


def _item_record(**changes) -> dict:
    return {"version": 5, "entity_type": "ITEM", "entity_id": "sku", "vector": [0.5, 0.5, 0.5, 0.5],
            "bias": 0.25, "vector_accum": [0.2] * 4, "bias_accum": 0.2, "updates": 3, "watermark": 0,
            "created_at": 1, "replica": 1, **changes}


@pytest.mark.parametrize("bad", [
    {"vector": [0.5, None, 0.5, 0.5]},  # how a NaN arrives through the JSON of the item loop
    {"vector": [0.5, math.inf, 0.5, 0.5]},
    {"bias": math.nan},
    {"vector_accum": [0.2, 0.0, 0.2, 0.2]},
    {"vector": [0.5] * 7, "vector_accum": [0.2] * 7},
    {"entity_type": "ITEM", "vector": "oops"},
])
def test_non_finite_item_loop_records_are_skipped_and_counted(bad: dict, caplog) -> None:
    learner = _learner()
    learner.process_batch([[NO_WATERMARK, [ITEM_PARAMS, _item_record(entity_id="warm")]]], 2)
    before = learner.model.items[learner._item_row("sku")].copy()
    with caplog.at_level("WARNING", logger="freshrank.batch_learner"):
        learner.process_batch([[NO_WATERMARK, [ITEM_PARAMS, _item_record(**bad)]]], 3)
    after = learner.model.items[learner._item_row("sku")]
    assert np.array_equal(before, after) and np.isfinite(after).all()
    assert learner.meta["item_loop_skipped"] == 1
    assert "item loop: skipped record ITEM:sku" in caplog.text
    # a good record is still merged afterwards
    learner.process_batch([[NO_WATERMARK, [ITEM_PARAMS, _item_record()]]], 4)
    merged = learner.model.items[learner._item_row("sku")]
    assert np.allclose(merged[:4], (before[:4] + 0.5) / 2)


# --- the catalog -------------------------------------------------------------------------------

def test_malformed_catalog_lines_become_rejects_naming_file_and_line(tmp_path) -> None:
    good = [dict(SAMPLES["Item"], item_id=f"it-{i}", embedding=[float(i), 1.0]) for i in range(3)]
    lines = [orjson.dumps(good[0]), b'{"item_id": "it-x", "title": ', orjson.dumps(good[1]),
             b'{"item_id": "it-inf", "title": "t", "category": "c", "embedding": [1.0, Infinity]}',
             orjson.dumps(dict(good[2], item_id="it-big", embedding=[1e9, 0.0])),
             orjson.dumps(dict(good[2], item_id="\ufeffit-bom")),
             b"\xef\xbb\xbf" + orjson.dumps(good[2]), b"\xff\xfe garbage", b"", orjson.dumps(good[2])]
    catalog = tmp_path / "items.jsonl"
    catalog.write_bytes(b"\n".join(lines) + b"\n")

    catalog_read, rejects = catalog_from_file(catalog)
    embeddings = catalog_read.embeddings

    assert embeddings == {item["item_id"]: item["embedding"] for item in good}
    reasons = {int(r["reason"].split(" line ")[1].split(":")[0]): r["reason"] for r in rejects}
    assert sorted(reasons) == [2, 4, 5, 6, 7, 8]
    assert all(r["reason"].startswith(f"{catalog} line ") and r["source"] == "items" for r in rejects)
    assert "not valid JSON" in reasons[2] and "not valid JSON" in reasons[4]
    assert "finite with |x| <= 1e+06" in reasons[5]
    assert "Item.item_id contains a byte order mark" in reasons[6]
    assert "starts with a UTF-8 byte order mark" in reasons[7]
    assert "not valid UTF-8" in reasons[8]
    payloads = {r["payload"] for r in rejects}
    assert lines[1] in payloads and lines[7] in payloads


def test_a_corrupt_avro_catalog_keeps_its_good_records_and_the_other_files(tmp_path) -> None:
    items = [dict(SAMPLES["Item"], item_id=f"it-{i}", embedding=[1.0, float(i)]) for i in range(200)]
    items[3] = dict(items[3], embedding=[1.0, math.inf])
    folder = tmp_path / "catalog"
    folder.mkdir()
    with open(folder / "a.avro", "wb") as handle:
        fastavro.writer(handle, parsed_schema("Item"), items, sync_interval=100)
    data = (folder / "a.avro").read_bytes()
    (folder / "a.avro").write_bytes(data[: len(data) - 40])  # the last block is cut off
    (folder / "b.jsonl").write_bytes(orjson.dumps(dict(SAMPLES["Item"], item_id="it-b")) + b"\n")

    catalog_read, rejects = catalog_from_file(folder)
    embeddings = catalog_read.embeddings

    reasons = [r["reason"] for r in rejects]
    assert any("a.avro record 4: Item.embedding[1] is inf" in r for r in reasons)
    assert any("a.avro after record" in r and "corrupt Avro container" in r for r in reasons)
    assert "it-0" in embeddings and "it-3" not in embeddings and "it-b" in embeddings
    assert len(rejects) == 2


def test_read_records_names_file_and_line_of_a_malformed_line(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": \n')
    with pytest.raises(MalformedRecord, match=f"{path} line 3: not valid JSON"):
        list(read_records(path))
    seen = []
    assert list(read_records(path, seen.append)) == [{"a": 1}]
    assert [bad.where for bad in seen] == [f"{path} line 3"]


def test_catalog_from_topic_messages_reject_tombstones() -> None:
    good = encode("Item", SAMPLES["Item"])
    bad = encode("Item", dict(SAMPLES["Item"], item_id="it-2", embedding=[math.nan]))
    catalog, rejects = read_catalog([None, good, bad], lambda m: parse_wire("Item", m),
                                    lambda m: b"" if m is None else bytes(m))
    assert list(catalog.embeddings) == ["it-1"] and list(catalog.titles) == ["it-1"]
    assert "tombstone" in rejects[0]["reason"] and "finite" in rejects[1]["reason"]
