"""Join operator: Flink shell around `udfs.join_logic`, keyed by impression_id."""

from __future__ import annotations

from collections.abc import Iterator

from pyflink.common import Row, Types
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import KeyedCoProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from udfs.encoding import RecordEncoder
from udfs.join_logic import (
    CLK_ID,
    CLK_ITEM,
    CLK_TIME,
    CLK_USER,
    LATE_CLICK,
    ORPHAN_CLICK,
    Effects,
    ImpressionClickJoin,
    JoinState,
)

# Row layout of a joined (not yet scored) example.
JOINED_FIELDS = (
    "impression_id",
    "request_id",
    "user_id",
    "item_id",
    "query",
    "position",
    "label",
    "impression_time",
    "click_time",
)


# Type objects are made per pipeline: PyFlink caches a Java object in them on first use, and a
# cached one cannot be pickled into the next job's functions (output tags carry their types).
def joined_type() -> TypeInformation:
    return Types.ROW_NAMED(
        list(JOINED_FIELDS),
        [Types.STRING()] * 5 + [Types.INT(), Types.INT(), Types.LONG(), Types.LONG()],
    )


def join_event_type() -> TypeInformation:
    """Join events (duplicates, early/late/orphan clicks) for the metrics operator."""
    return Types.ROW_NAMED(["kind", "event_time"], [Types.STRING(), Types.LONG()])


def click_record(click: tuple) -> dict:
    return {
        "impression_id": click[CLK_ID],
        "user_id": click[CLK_USER],
        "item_id": click[CLK_ITEM],
        "event_time": click[CLK_TIME],
    }


class JoinImpressionsClicks(KeyedCoProcessFunction):
    """Input 1: impressions, input 2: clicks; output: joined examples (+ side outputs)."""

    def __init__(
        self,
        window_ms: int,
        retention_ms: int,
        late_click_tag: OutputTag,
        orphan_click_tag: OutputTag,
        join_event_tag: OutputTag,
        encoder: RecordEncoder,
    ) -> None:
        self.logic = ImpressionClickJoin(window_ms, retention_ms)
        self.late_click_tag = late_click_tag
        self.orphan_click_tag = orphan_click_tag
        self.join_event_tag = join_event_tag
        self.encoder = encoder

    def open(self, runtime_context: RuntimeContext) -> None:
        # One pickled list per impression id: a single state access per event.
        self.state = runtime_context.get_state(ValueStateDescriptor("join", Types.PICKLED_BYTE_ARRAY()))
        group = runtime_context.get_metrics_group().add_group("freshrank").add_group("join")
        self.counters = {
            name: group.counter(name)
            for name in ("examples", "positives", "duplicate_impression", "duplicate_click",
                         "early_click", "late_click", "orphan_click")
        }

    def _load(self) -> JoinState | None:
        stored = self.state.value()
        return None if stored is None else JoinState(*stored)

    def _apply(self, state: JoinState | None, effects: Effects, ctx) -> Iterator:
        if effects.clear or state is None:
            self.state.clear()
        else:
            self.state.update([state.impression, state.status, state.label, state.held_clicks])
        timers = ctx.timer_service()
        for timestamp in effects.timers:
            timers.register_event_time_timer(timestamp)
        for impression, label, click_time in effects.examples:
            self.counters["examples"].inc()
            if label:
                self.counters["positives"].inc()
            yield Row(*impression[:6], label, impression[6], click_time)
        for kind, record in effects.events:
            self.counters[kind].inc()
            event_time = record[-1]
            if kind == LATE_CLICK:
                yield self.late_click_tag, self.encoder.encode("Click", click_record(record))
            elif kind == ORPHAN_CLICK:
                yield self.orphan_click_tag, self.encoder.encode("Click", click_record(record))
            yield self.join_event_tag, Row(kind, event_time)

    def process_element1(self, value, ctx) -> Iterator:
        state, effects = self.logic.on_impression(
            self._load(), tuple(value), ctx.timer_service().current_watermark()
        )
        yield from self._apply(state, effects, ctx)

    def process_element2(self, value, ctx) -> Iterator:
        state, effects = self.logic.on_click(self._load(), tuple(value), ctx.timer_service().current_watermark())
        yield from self._apply(state, effects, ctx)

    def on_timer(self, timestamp: int, ctx) -> Iterator:
        state, effects = self.logic.on_timer(self._load(), timestamp)
        yield from self._apply(state, effects, ctx)
