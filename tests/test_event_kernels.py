"""The compiled parse passes (udfs.avro_events for Kafka messages, udfs.json_events for JSON lines)
against the record parse.

A batch parse takes runs of records through its kernel and each record the kernel stops at through
the full path; whatever the records, the outcome must be the per-record parse's: the same events
(shard, event time, event JSON byte for byte), the same dead letters with the same reasons, in the
same order.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import orjson
import pytest
from operator_context import RuntimeContext
from samples import SAMPLES

from job.routing import user_routes
from udfs.avro_events import avro_event_kernel
from udfs.encoding import JsonLinesEncoder
from udfs.event_blocks import ShardBlocks
from udfs.event_lines import PackedRecords
from udfs.json_events import json_event_kernel
from udfs.parse import TO_EVENT, ParseEventBatches, ParseEvents
from udfs.records import parse_json, parse_wire
from udfs.wire import encode

DAY_MS = 86_400_000
DEAD = "dead-letter-tag"
SHARDS = ["s0", "s1", "s2"]
_TEXTS = ["", "a", "u-1", "cheap toys", "便宜玩具", "emoji 🛒", 'quote " and \\ backslash', "tab\tnewline\n",
          "\x00\x01\x1f\x7f", "\ufeffbom", "replacement \ufffd", "x" * 300, "é", "\u2028"]


def _text(rng: random.Random) -> str:
    return rng.choice(_TEXTS) + str(rng.randrange(10**rng.randrange(1, 8)))[: rng.randrange(8)]


def _record(schema: str, rng: random.Random, t0: int) -> dict:
    record = dict(SAMPLES[schema])
    for name in record:
        if name.endswith("_id") or name == "query":
            record[name] = _text(rng)
    if "query" in record and rng.random() < 0.3:
        record["query"] = None
    if rng.random() < 0.3:
        record["user_id"] = rng.choice(["u-1", "u-2", "用户", "heavy"])
    if "position" in record:
        record["position"] = rng.choice([1, 2, 7, 0, -3, 2**31 - 1, 2**31, 2**40, rng.randrange(1, 60)])
    record["event_time"] = t0 + rng.choice([0, rng.randrange(-10**6, 10**6), DAY_MS // 2, 3 * DAY_MS,
                                            -t0 - 5, 2**62 - t0, rng.randrange(10**9)])
    return record


def _corrupt(message: bytes, rng: random.Random) -> bytes | None:
    choice = rng.randrange(6)
    if choice == 0:
        return message[: rng.randrange(len(message))]
    if choice == 1:
        return message + bytes([rng.randrange(256)])
    if choice == 2:
        return None  # a tombstone
    at = rng.randrange(len(message))
    if choice == 3:
        at = rng.randrange(2, 10)  # the fingerprint: another writer schema
    flipped = bytearray(message)
    flipped[at] = rng.choice([0x00, 0x80, 0xFF, 0xC0, 0xED, 0xEF, rng.randrange(256)])
    return bytes(flipped)


def _messages(schema: str, n: int, seed: int) -> list[bytes | None]:
    rng = random.Random(seed)
    t0 = SAMPLES[schema]["event_time"]
    messages = []
    for _ in range(n):
        message = encode(schema, _record(schema, rng, t0))
        messages.append(_corrupt(message, rng) if rng.random() < 0.15 else message)
    return messages


def _json_variant(record: dict, rng: random.Random) -> str:
    """`record` as a JSON line, written as producers might: any key order, spaces, escapes."""
    items = list(record.items())
    rng.shuffle(items)
    record = dict(items)
    choice = rng.randrange(4)
    if choice == 0:
        return orjson.dumps(record).decode()
    if choice == 1:  # \uXXXX escapes, surrogate pairs for emoji
        return json.dumps(record, ensure_ascii=True).replace("/", "\\/")
    if choice == 2:
        return json.dumps(record, indent=rng.choice([None, 1]), separators=(" , ", " : ")).replace("\n", " ") + "\r"
    if record.get("query") is None:
        record.pop("query", None)  # a nullable field with a default may be left out
    return " " + json.dumps(record, ensure_ascii=False) + " "


def _broken_json(line: str, record: dict, rng: random.Random) -> str | None:
    """`line` (which writes `record`) made into something the kernel must leave to the record parse."""
    retyped = [  # a value of the wrong type, or a key the schema does not have
        {**record, "event_time": record["event_time"] + 0.5}, {**record, "event_time": 2**64},
        {**record, "item_id": None}, {**record, "user_id": 5}, {**record, "item_id": ["x"]},
        {**record, "impression_id": {"id": "x"}}, {**record, "surprise": 1}, {**record, "event_time": True},
    ]
    edits = [
        lambda: line[: rng.randrange(len(line))],
        lambda: None,
        lambda: "\ufeff" + line,
        lambda: line.replace('"event_time": ', '"event_time": 0').replace('"event_time":', '"event_time":0'),
        lambda: line.replace("{", '{"user_id": "dup", ', 1),  # a key twice: the last one counts
        lambda: line.replace("{", '{"item_id": "lone \\ud800", ', 1),
        lambda: line.replace("}", ", }"),
        lambda: line.rstrip()[:-1] + ",",  # no closing brace
        lambda: line.replace('"user_id"', '"user\\u005fid"'),
        lambda: "[" + line + "]",
        lambda: json.dumps(rng.choice(retyped), ensure_ascii=False),
    ]
    return rng.choice(edits)()


def _json_lines(schema: str, n: int, seed: int) -> list[str | None]:
    rng = random.Random(seed)
    t0 = SAMPLES[schema]["event_time"]
    lines = []
    for _ in range(n):
        record = _record(schema, rng, t0)
        line = _json_variant(record, rng)
        lines.append(_broken_json(line, record, rng) if rng.random() < 0.2 else line)
    return lines


def _outcome(outputs, events: list[str], dead: list[tuple[str, bytes]]) -> None:
    for out in outputs:
        if isinstance(out, tuple) and out[0] == DEAD:
            letter = orjson.loads(out[1])
            # (a bound quoted in a reason ages with the wall clock: milliseconds apart between the runs)
            dead.append((re.sub(r"the bound \d+", "the bound B", letter["reason"]), letter["payload"]))
        elif out[2] is not None:  # a block, Row(shard, event_time, events[, source_watermark]), not a watermark only
            block = orjson.loads(b"[" + out[2] + b"]")
            # as the parse's output lines (udfs.event_lines; the block's event time: tests/test_guard_rails.py)
            events.extend(f"{out[0]}\t{event[-1]}\t{orjson.dumps(event).decode()}" for event in block)


def _by_shard(events: list[str]) -> list[str]:
    """Each shard's events in their order (a block holds one shard's: their order across shards goes)."""
    return sorted(events, key=lambda event: event.split("\t")[0])


def _per_record(schema: str, messages: list, decode=parse_wire, routes=SHARDS) -> tuple[list[str], list, int]:
    parse = ParseEvents("impressions", schema, DEAD, JsonLinesEncoder(), routes, decode, DAY_MS)
    context = RuntimeContext()
    parse.open(context)
    events, dead = [], []
    for message in messages:
        _outcome(parse.process_element(message, None), events, dead)
    return _by_shard(events), dead, context.group.counters["accepted"].count


def _batched(schema: str, messages: list, rng: random.Random, decode=parse_wire,
             routes=SHARDS) -> tuple[list[str], list, int]:
    parse = ParseEventBatches("impressions", schema, DEAD, JsonLinesEncoder(), routes, decode, DAY_MS)
    context = RuntimeContext()
    parse.open(context)
    assert parse.compiled is not None  # the kernel runs, not the record-by-record fallback
    events, dead = [], []
    at = 0
    while at < len(messages):
        size = rng.choice([1, 2, 17, 500, len(messages)])
        batch = messages[at:at + size]
        _outcome(parse.process_element([batch, 7] if decode is parse_wire else [batch], None), events, dead)
        at += size
    return _by_shard(events), dead, context.group.counters["accepted"].count


@pytest.mark.parametrize("schema", ["Impression", "Click"])
def test_the_compiled_pass_gives_the_events_and_dead_letters_of_the_record_parse(schema: str) -> None:
    messages = _messages(schema, 4000, seed=len(schema))
    # A weighted routing table (job.routing): the kernel's bucket must be the record parse's
    routes = user_routes(SHARDS, lane_load=0.2)
    assert len(routes) > len(SHARDS)
    expected_events, expected_dead, expected_count = _per_record(schema, messages, routes=routes)
    for seed in range(3):
        assert _batched(schema, messages, random.Random(seed), routes=routes) == (
            expected_events, expected_dead, expected_count)
    # the stream holds every case: events on each shard, strings that need escaping, and rejects
    per_shard = Counter(event.split("\t")[0] for event in expected_events)
    assert set(per_shard) == set(SHARDS)
    assert per_shard["s0"] < 0.75 * min(per_shard["s1"], per_shard["s2"])  # shares 0.2, 0.4, 0.4
    assert any("\\u0000" in event for event in expected_events) and any("\\n" in event for event in expected_events)
    reasons = " ".join(reason for reason, _ in expected_dead)
    for why in ("tombstone", "unknown fingerprint", "beyond the bound", "event_time is negative", "corrupt",
                "byte order mark"):
        assert why in reasons
    if schema == "Impression":
        assert "position must be >= 1" in reasons
        assert any(orjson.loads(event.split("\t")[2])[6] == 2**40 for event in expected_events)


@pytest.mark.parametrize("schema", ["Impression", "Click"])
def test_the_compiled_json_pass_gives_the_events_and_dead_letters_of_the_record_parse(schema: str) -> None:
    lines = _json_lines(schema, 4000, seed=len(schema))
    expected = _per_record(schema, lines, parse_json)
    for seed in range(3):
        assert _batched(schema, lines, random.Random(seed), parse_json) == expected
    events, dead, _ = expected
    assert {event.split("\t")[0] for event in events} == set(SHARDS)
    assert any("\\u0000" in event for event in events) and any("🛒" in event for event in events)
    reasons = " ".join(reason for reason, _ in dead)
    for why in ("tombstone", "unknown field", "beyond the bound", "event_time is negative", "not valid JSON",
                "byte order mark", "does not match its schema"):
        assert why in reasons, why
    if schema == "Impression":  # a nullable field with a default, left out: null in the event
        assert any('"query"' not in line for line in lines if line) and any(
            orjson.loads(event.split("\t")[2])[5] is None for event in events)


@pytest.mark.parametrize("form", ["avro", "json"])
def test_a_kernel_stops_at_the_first_record_it_does_not_accept_as_is(form: str) -> None:
    t0 = SAMPLES["Click"]["event_time"]
    if form == "avro":
        kernel = avro_event_kernel("Click", SHARDS, TO_EVENT["Click"])
        good, bad = encode("Click", SAMPLES["Click"]), b"\xc3\x01garbage"
        far = encode("Click", {**SAMPLES["Click"], "event_time": t0 + 2 * DAY_MS})
    else:
        kernel = json_event_kernel("Click", SHARDS, TO_EVENT["Click"])
        good, bad = orjson.dumps(SAMPLES["Click"]).decode(), "{garbage"
        far = orjson.dumps({**SAMPLES["Click"], "event_time": t0 + 2 * DAY_MS}).decode()
    packed = PackedRecords([good, good, bad, good])
    stop, lines, count, progress, _ = kernel.parse(packed, 0, t0, 0, t0, DAY_MS)
    assert (stop, count, progress) == (2, 2, t0)
    line = lines[: len(lines) // 2]
    assert lines == line * 2 and line.endswith(b"\n")
    decode = parse_wire if form == "avro" else parse_json
    assert line.decode().rstrip("\n") == _per_record("Click", [good], decode)[0][0]
    assert kernel.parse(packed, 3, t0, 0, t0, DAY_MS)[:3] == (4, line, 1)
    # beyond the event-time bound: stop there, progress as it was
    assert kernel.parse(PackedRecords([far]), 0, t0, 0, t0, DAY_MS)[:4] == (0, b"", 0, t0)


@pytest.mark.parametrize("decode", [parse_json, parse_wire])
def test_a_batch_that_starts_with_a_tombstone_parses_as_its_records_do(decode) -> None:
    """Tombstones (None) anywhere in a batch, first included, next to text lines or messages."""
    record = SAMPLES["Click"]
    valid = orjson.dumps(record).decode() if decode is parse_json else encode("Click", record)
    batch = [None, valid, None, valid]
    expected = _per_record("Click", batch, decode)
    assert expected[2] == 2 and len(expected[1]) == 2
    assert _batched("Click", batch, random.Random(0), decode) == expected


def test_schemas_the_kernels_cannot_write_keep_the_record_parse() -> None:
    for make in (avro_event_kernel, json_event_kernel):
        assert make("Item", ["s0"], lambda record: [4, *record.values()]) is None  # an array field
        # an event that is not [kind, the fields in schema order] is not what a kernel writes
        assert make("Click", ["s0"], lambda record: [1, record["user_id"]]) is None


def test_shard_blocks_regroup_the_parse_lines_by_shard_in_order() -> None:
    blocks = ShardBlocks(["shard-0", "shard-12", "shard-1"])
    lines = b'shard-12\t5\t[0,"a"]\nshard-0\t7\t[1,"b\\tc"]\nshard-12\t-3\t[0,"d"]\n'
    assert blocks.blocks(lines) == [("shard-0", 7, 7, b'[1,"b\\tc"]'), ("shard-12", 5, -3, b'[0,"a"],[0,"d"]')]
    assert blocks.blocks(lines.rstrip(b"\n")) == blocks.blocks(lines)  # the last line's newline is optional
    assert blocks.blocks(b"") == []
    for bad in (b'shard-1\t1\t[0]\nshard-2\t1\t[0]', b'shard-1\t1\t[0]\nshard-1', b'shard-1\t1x\t[0]',
                b'shard-1\t\t[0]', b'shard-1\t12', b'\t\t\n\t\t\n\t\t\n\t\t\n'):
        with pytest.raises(ValueError, match="names no shard of this job"):
            blocks.blocks(bad)
