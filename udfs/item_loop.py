"""The Kafka loop between learner replicas: each one's item-side parameters, read back by the others.

At parallelism > 1 every replica learns the item-side parameters (items, positions, the global
bias, the text terms) of the examples it sees; the others average them in (gossip averaging,
udfs.batch_learner). A DataStream job has no cycles, so they travel through a topic of their own
(`TopicNames.item_loop`, internal to the job), which only the job writes and reads:

- each message holds one replica's item-side records of one snapshot, as many as fit in
  `MESSAGE_BYTES`, already in the form the learner reads (events, udfs.records: `[ITEM_PARAMS,
  record]` arrays joined by commas), after the publishing replica's number and a comma;
- the loop's fan-out (`FanOutItemParams`) passes a message's events on, undecoded, as one batch row
  to every other replica: one learner call per message, not one per record, and user vectors,
  which stay with their replica, never leave the learner that owns them.

JSON rather than the snapshot topic's Avro: the learner takes its rows as JSON events anyway, and
float64 values keep the averaging exact where Avro's floats would round them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
from pyflink.common import Row

from udfs.model_store import USER
from udfs.records import ITEM_PARAMS, NO_WATERMARK

log = logging.getLogger(__name__)

# At most this many bytes of events per message (one record larger than that goes alone): well under
# the producer's and broker's 1 MB defaults for a message; each message is one call of the other learners.
MESSAGE_BYTES = 512 * 1024


def loop_messages(records: list[dict[str, Any]], replica: int, max_bytes: int = MESSAGE_BYTES) -> list[bytes]:
    """The item-side records among a snapshot's `records` as loop messages of replica `replica`."""
    head = b"%d," % replica
    messages: list[bytes] = []
    events: list[bytes] = []
    size = 0
    for record in records:
        if record["entity_type"] == USER:
            continue
        event = orjson.dumps([ITEM_PARAMS, record], option=orjson.OPT_SERIALIZE_NUMPY)
        if events and size + len(event) > max_bytes:
            messages.append(head + b",".join(events))
            events, size = [], 0
        events.append(event)
        size += len(event) + 1
    if events:
        messages.append(head + b",".join(events))
    return messages


def message_parts(message: bytes | None) -> tuple[int, bytes] | None:
    """(publishing replica, events) of a loop message; None for bytes that are not one.

    The events are decoded once here, in the fan-out, so that the learners, which decode them as a
    batch, never see anything but item-side events: a malformed message reaching a learner would fail
    its call and restart the job from its checkpoint, onto the same message, again and again. Each
    record's content is the learner's to check (udfs.model_store.snapshot_problem), as for hot starts."""
    if not message:
        return None
    head, comma, events = message.partition(b",")
    if not comma or not head.isdigit() or not events.startswith(b"["):
        return None
    try:
        decoded = orjson.loads(b"[" + events + b"]")
    except orjson.JSONDecodeError:
        return None
    if not all(type(event) is list and len(event) == 2 and event[0] == ITEM_PARAMS for event in decoded):
        return None
    return int(head), events


class FanOutItemParams:
    """Loop message -> one batch row per other learner subtask, holding its events.

    A replica's own messages are not sent back to it: it would only skip their records, yet each row
    costs it a call. `shards[i]` is the routing key of subtask i, the replica numbered i (job.routing)."""

    def __init__(self, shards: list[str]) -> None:
        self.shards = shards
        self.skipped = 0

    def __call__(self, message: bytes) -> Iterator[Row]:
        parts = message_parts(message)
        if parts is None:  # the topic is the job's own: something else wrote to it
            self.skipped += 1
            if str(self.skipped).rstrip("0") == "1":  # 1, 10, 100, ...: cannot flood the log
                log.warning("item loop: skipped a message that is not a loop message (%d so far): %r",
                            self.skipped, (message or b"")[:80])
            return
        replica, events = parts
        for index, shard in enumerate(self.shards):
            if index != replica:
                yield Row(shard, NO_WATERMARK, events)
