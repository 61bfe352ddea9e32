"""Parse operator: raw input records in, validated events out, rejects to the dead letter."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from pyflink.common import Row
from pyflink.datastream import OutputTag, ProcessFunction

from udfs.encoding import RecordEncoder
from udfs.records import InvalidRecord, click_event, impression_event, parse_json


def dead_letter(source: str, reason: str, payload: str | bytes) -> dict[str, Any]:
    """A DeadLetter record (schemas/DeadLetter.avsc)."""
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    return {"source": source, "reason": reason, "payload": raw, "received_at": int(time.time() * 1000)}


TO_EVENT: dict[str, Callable[[dict[str, Any]], list]] = {
    "Impression": impression_event,
    "Click": click_event,
}


def shard_of(user_id: str, shards: list[str]) -> str:
    """The learner shard of a user: a stable hash (the same in every process, unlike `hash`)."""
    return shards[zlib.crc32(user_id.encode()) % len(shards)]


class ParseEvents(ProcessFunction):
    """Raw record -> Row(shard, event_time, event JSON) (job.batching); a bad record goes to
    `dead_letter_tag` with its reason."""

    def __init__(
        self,
        source: str,
        schema_name: str,
        dead_letter_tag: OutputTag,
        encoder: RecordEncoder,
        shards: list[str],
        decode: Callable[[str, Any], dict[str, Any]] = parse_json,
    ) -> None:
        self.source = source
        self.schema_name = schema_name
        self.dead_letter_tag = dead_letter_tag
        self.encoder = encoder
        self.shards = shards
        self.decode = decode
        self.to_event = TO_EVENT[schema_name]

    def open(self, runtime_context) -> None:
        group = runtime_context.get_metrics_group().add_group("freshrank").add_group(self.source)
        self.accepted = group.counter("accepted")
        self.rejected = group.counter("dead_letter")

    def process_element(self, value, ctx: ProcessFunction.Context) -> Iterator:
        try:
            record = self.decode(self.schema_name, value)
        except InvalidRecord as error:
            self.rejected.inc()
            yield self.dead_letter_tag, self.encoder.encode(
                "DeadLetter", dead_letter(self.source, str(error), value)
            )
            return
        self.accepted.inc()
        event_time = record["event_time"]
        yield Row(shard_of(record["user_id"], self.shards), event_time, orjson.dumps(self.to_event(record)).decode())
