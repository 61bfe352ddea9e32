"""A tiny event-time simulator that hosts `udfs.join_logic.ImpressionClickJoin` the way the Flink shell does.

It mirrors the join part of `udfs.join_learn.JoinLearnCore`: per-key state stored as a copied list (Flink pickles it),
cleared when the step asks for it or returns no state; event-time timers per key, deduplicated per
timestamp, fired in timestamp order whenever the watermark reaches them (timers registered at or
below the watermark fire at the next advance, as in Flink); outputs in `_apply` order: examples,
then join events.

Watermarks: a bounded-out-of-orderness watermark is `max event time seen - max_disorder_ms - 1`.
- `per_input_watermarks=False`: one watermark over both inputs (right when the two inputs are merged
  in event-time order, so the merged sequence has bounded disorder too);
- `per_input_watermarks=True` (what Flink does for a two-input operator): each input has its own
  watermark (MIN before its first record, MAX after its last) and the operator's is their minimum,
  so any interleaving of the two arrival sequences is valid, e.g. all impressions first.
The watermark advances after every record, the most eager schedule Flink could have.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from typing import Any

from udfs.join_logic import Effects, ImpressionClickJoin, JoinState
from udfs.records import click_event, click_of, impression_event, impression_of

MIN_WATERMARK = -(2**63)
MAX_WATERMARK = 2**63 - 1
IMP, CLK = "imp", "clk"
EXAMPLE = "example"


class JoinSimulator:
    def __init__(
        self, window_ms: int, retention_ms: int, max_disorder_ms: int, per_input_watermarks: bool = False
    ) -> None:
        self.logic = ImpressionClickJoin(window_ms, retention_ms)
        self.max_disorder_ms = max_disorder_ms
        self.per_input = per_input_watermarks
        self.stored: dict[str, list] = {}
        self.timer_heap: list[tuple[int, str]] = []
        self.timer_set: set[tuple[int, str]] = set()
        self.max_time: dict[str, int | None] = {IMP: None, CLK: None}
        self.ended = {IMP: False, CLK: False}
        self.forced = MIN_WATERMARK
        self.watermark = MIN_WATERMARK
        self.emissions: list[tuple] = []  # everything emitted, in order
        self.examples: list[tuple[tuple, int, int | None]] = []
        self.clicks_seen = 0

    # State store, as in udfs.join -------------------------------------------------------------
    def state(self, key: str) -> JoinState | None:
        stored = self.stored.get(key)
        if stored is None:
            return None
        impression, status, label, held = stored
        return JoinState(impression, status, label, list(held))

    def timers(self, key: str) -> list[int]:
        return sorted(ts for ts, k in self.timer_set if k == key)

    def _apply(self, key: str, state: JoinState | None, effects: Effects) -> list[tuple]:
        if effects.clear or state is None:
            self.stored.pop(key, None)
        else:
            self.stored[key] = [state.impression, state.status, state.label, list(state.held_clicks)]
        for timestamp in effects.timers:
            if (timestamp, key) not in self.timer_set:
                self.timer_set.add((timestamp, key))
                heapq.heappush(self.timer_heap, (timestamp, key))
        out = []
        for impression, label, click_time in effects.examples:
            self.examples.append((impression, label, click_time))
            out.append((EXAMPLE, impression[0], label, click_time))
        for kind, record in effects.events:
            out.append((kind, record[0], record[-1]))
        self.emissions.extend(out)
        return out

    # Watermark ----------------------------------------------------------------------------------
    def _input_watermark(self, which: str) -> int:
        if self.ended[which]:
            return MAX_WATERMARK
        newest = self.max_time[which]
        return MIN_WATERMARK if newest is None else newest - self.max_disorder_ms - 1

    def _current_watermark(self) -> int:
        if self.per_input:
            candidate = min(self._input_watermark(IMP), self._input_watermark(CLK))
        elif self.ended[IMP] and self.ended[CLK]:
            candidate = MAX_WATERMARK
        else:
            seen = [t for t in self.max_time.values() if t is not None]
            candidate = max(seen) - self.max_disorder_ms - 1 if seen else MIN_WATERMARK
        return max(self.watermark, self.forced, candidate)

    def _advance(self) -> list[tuple]:
        self.watermark = self._current_watermark()
        out = []
        while self.timer_heap and self.timer_heap[0][0] <= self.watermark:
            timestamp, key = heapq.heappop(self.timer_heap)
            self.timer_set.discard((timestamp, key))
            state, effects = self.logic.on_timer(self.state(key), timestamp)
            out.extend(self._apply(key, state, effects))
        return out

    # Inputs -------------------------------------------------------------------------------------
    def impression(self, impression: tuple) -> list[tuple]:
        key = impression[0]
        state, effects = self.logic.on_impression(self.state(key), impression, self.watermark)
        out = self._apply(key, state, effects)
        self.max_time[IMP] = max(self.max_time[IMP] or MIN_WATERMARK, impression[-1])
        return out + self._advance()

    def click(self, click: tuple) -> list[tuple]:
        key = click[0]
        self.clicks_seen += 1
        state, effects = self.logic.on_click(self.state(key), click, self.watermark)
        out = self._apply(key, state, effects)
        self.max_time[CLK] = max(self.max_time[CLK] or MIN_WATERMARK, click[-1])
        return out + self._advance()

    def advance_to(self, watermark: int) -> list[tuple]:
        """Force the watermark up to `watermark` (e.g. an idle input), firing due timers."""
        self.forced = max(self.forced, watermark)
        return self._advance()

    def end_input(self, which: str) -> list[tuple]:
        self.ended[which] = True
        return self._advance()

    def finish(self) -> list[tuple]:
        """End of both inputs: the watermark goes to MAX and every timer fires."""
        self.ended[IMP] = self.ended[CLK] = True
        return self._advance()

    # Results ------------------------------------------------------------------------------------
    def labels(self) -> dict[str, tuple[int, int | None]]:
        return {impression[0]: (label, click_time) for impression, label, click_time in self.examples}

    def counts(self) -> Counter:
        return Counter(emission[0] for emission in self.emissions)


def interleave(impressions: list[tuple], clicks: list[tuple], how: str, seed: int = 0) -> list[tuple[str, tuple]]:
    """One arrival sequence of both inputs, each input's own order kept.

    how: "impressions-first", "clicks-first", "random" (seeded coin flips weighted by what is left),
    or "by-time" (merge on the head records' event times, which keeps the disorder bound).
    """
    imps = [(IMP, imp) for imp in impressions]
    clks = [(CLK, clk) for clk in clicks]
    if how == "impressions-first":
        return imps + clks
    if how == "clicks-first":
        return clks + imps
    if how == "random":
        rng = random.Random(seed)
        return _merge(imps, clks, lambda i, j: rng.random() * (len(imps) - i + len(clks) - j) < len(imps) - i)
    if how == "by-time":
        return _merge(imps, clks, lambda i, j: imps[i][1][-1] <= clks[j][1][-1])
    raise ValueError(f"unknown interleaving {how!r}")


def _merge(imps: list, clks: list, take_impression) -> list:
    """Interleave two arrival sequences, keeping each one's order; `take_impression(i, j)` picks."""
    out, i, j = [], 0, 0
    while i < len(imps) or j < len(clks):
        if j == len(clks) or (i < len(imps) and take_impression(i, j)):
            out.append(imps[i])
            i += 1
        else:
            out.append(clks[j])
            j += 1
    return out


def simulate(
    impressions: list[dict[str, Any]],
    clicks: list[dict[str, Any]],
    how: str,
    window_ms: int,
    retention_ms: int,
    max_disorder_ms: int,
    per_input_watermarks: bool = True,
    seed: int = 0,
) -> JoinSimulator:
    """Run the join over schema dicts in one interleaving; each input ends after its last record."""
    sim = JoinSimulator(window_ms, retention_ms, max_disorder_ms, per_input_watermarks)
    sequence = interleave(
        [impression_of(impression_event(r)) for r in impressions], [click_of(click_event(r)) for r in clicks], how, seed
    )
    remaining = Counter(which for which, _ in sequence)
    for which, record in sequence:
        if which == IMP:
            sim.impression(record)
        else:
            sim.click(record)
        remaining[which] -= 1
        if remaining[which] == 0 and per_input_watermarks:
            sim.end_input(which)
    for which in (IMP, CLK):
        if remaining[which] == 0 and per_input_watermarks and not sim.ended[which]:
            sim.end_input(which)  # an input with no records at all
    sim.finish()
    return sim
