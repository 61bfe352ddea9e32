"""Event-time join of impressions and clicks into labeled examples, as a per-impression state machine.

How it works (all times are event times in ms, W = attribution window):
- The first impression of an id is kept; later copies are duplicates (counted, dropped).
- A click with impression.t <= click.t <= impression.t + W makes a positive example as soon as
  both are seen. Only the first such click counts; later ones are duplicate clicks.
- An impression whose deadline (t + W) the watermark passes without such a click becomes a
  negative example. A click outside the window is a late click: side output, the negative stands.
- A click that arrives before its impression is held ("early"); if no impression arrives before
  the watermark passes click.t + W (the latest any matching impression's window could close),
  the click is an orphan.
- After a decision the impression id is remembered for `retention_ms` more, to drop duplicates
  and classify late clicks; after that the id is forgotten.

The logic is plain Python over plain state, the statement of the rules: `udfs.join_kernel` runs the
same rules compiled, for a whole batch over columns (tests/test_join_kernel.py holds the two to the
same examples, join events and learning order), `udfs.batch_learner` hosts it with Flink state, and
`udfs.join_learn` is the Flink shell around that.
"""

from __future__ import annotations

# Tuple layouts (schema field order, see udfs.records).
IMP_ID, IMP_REQUEST, IMP_USER, IMP_ITEM, IMP_QUERY, IMP_POSITION, IMP_TIME = range(7)
CLK_ID, CLK_USER, CLK_ITEM, CLK_TIME = range(4)

PENDING, DECIDED = 0, 1

# Join event kinds, counted by the metrics operator.
DUPLICATE_IMPRESSION = "duplicate_impression"
DUPLICATE_CLICK = "duplicate_click"
EARLY_CLICK = "early_click"
LATE_CLICK = "late_click"
ORPHAN_CLICK = "orphan_click"
JOIN_EVENT_KINDS = (DUPLICATE_IMPRESSION, DUPLICATE_CLICK, EARLY_CLICK, LATE_CLICK, ORPHAN_CLICK)


# Plain classes with __slots__, not dataclasses: the learner makes one of each per event, and a
# dataclass's default factories made that a visible share of its time.
class JoinState:
    """What the join remembers about one impression id."""

    __slots__ = ("impression", "status", "label", "held_clicks")

    def __init__(self, impression: tuple | None = None, status: int = PENDING, label: int = 0,
                 held_clicks: list[tuple] | None = None) -> None:
        self.impression = impression
        self.status = status
        self.label = label
        self.held_clicks = [] if held_clicks is None else held_clicks

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JoinState) and (self.impression, self.status, self.label, self.held_clicks) == (
            other.impression, other.status, other.label, other.held_clicks)

    def __repr__(self) -> str:
        return (f"JoinState(impression={self.impression!r}, status={self.status!r}, label={self.label!r}, "
                f"held_clicks={self.held_clicks!r})")


class Effects:
    """What one step of the join asks its host to do."""

    __slots__ = ("examples", "events", "timers", "clear")

    def __init__(self) -> None:
        self.examples: list[tuple] = []  # (impression tuple, label, click_time or None)
        self.events: list[tuple[str, tuple]] = []  # (kind, record)
        self.timers: list[int] = []
        self.clear = False


class ImpressionClickJoin:
    """The join rules for one key; holds configuration only, never per-key data."""

    def __init__(self, window_ms: int, retention_ms: int) -> None:
        self.window_ms = window_ms
        self.retention_ms = retention_ms

    def deadline(self, impression: tuple) -> int:
        """First watermark at which an impression without a click is a negative."""
        return impression[IMP_TIME] + self.window_ms + 1

    def in_window(self, impression: tuple, click: tuple) -> bool:
        start = impression[IMP_TIME]
        return start <= click[CLK_TIME] <= start + self.window_ms

    def _decide(self, state: JoinState, label: int, click_time: int | None, out: Effects) -> None:
        state.status = DECIDED
        state.label = label
        out.examples.append((state.impression, label, click_time))
        out.timers.append(state.impression[IMP_TIME] + self.window_ms + self.retention_ms)

    def on_impression(self, state: JoinState | None, impression: tuple, watermark: int) -> tuple[JoinState, Effects]:
        out = Effects()
        if state is None:
            state = JoinState()
        if state.impression is not None:
            out.events.append((DUPLICATE_IMPRESSION, impression))
            return state, out
        state.impression = impression
        for click in state.held_clicks:
            if not self.in_window(impression, click):
                out.events.append((LATE_CLICK, click))
            elif state.status == PENDING:
                self._decide(state, 1, click[CLK_TIME], out)
            else:
                out.events.append((DUPLICATE_CLICK, click))
        state.held_clicks = []
        if state.status == PENDING:
            deadline = self.deadline(impression)
            if watermark >= deadline:  # the impression itself came after its window closed
                self._decide(state, 0, None, out)
            else:
                out.timers.append(deadline)
        return state, out

    def on_click(self, state: JoinState | None, click: tuple, watermark: int) -> tuple[JoinState, Effects]:
        out = Effects()
        if state is None:
            state = JoinState()
        impression = state.impression
        if impression is None:
            expiry = click[CLK_TIME] + self.window_ms + 1
            if watermark >= expiry:
                out.events.append((ORPHAN_CLICK, click))
                out.clear = not state.held_clicks
            else:
                state.held_clicks.append(click)
                out.events.append((EARLY_CLICK, click))
                out.timers.append(expiry)
            return state, out
        if not self.in_window(impression, click):
            out.events.append((LATE_CLICK, click))
        elif state.status == PENDING:
            self._decide(state, 1, click[CLK_TIME], out)
        elif state.label == 1:
            out.events.append((DUPLICATE_CLICK, click))
        else:  # in the window by its time, but after the negative was emitted
            out.events.append((LATE_CLICK, click))
        return state, out

    def on_timer(self, state: JoinState | None, timestamp: int) -> tuple[JoinState | None, Effects]:
        out = Effects()
        if state is None:
            return None, out
        if state.impression is None:
            keep = []
            for click in state.held_clicks:
                if click[CLK_TIME] + self.window_ms + 1 <= timestamp:
                    out.events.append((ORPHAN_CLICK, click))
                else:
                    keep.append(click)
            state.held_clicks = keep
            out.clear = not keep
            return state, out
        if state.status == PENDING and timestamp >= self.deadline(state.impression):
            self._decide(state, 0, None, out)
        elif state.status == DECIDED and timestamp >= (
            state.impression[IMP_TIME] + self.window_ms + self.retention_ms
        ):
            out.clear = True
        return state, out
