"""The impression/click join state machine, driven through an event-time simulator of the Flink shell.

Table tests use W = 1_000 ms, retention 5_000 ms and a disorder bound of 100 ms with one watermark
over both inputs, so after a record the watermark is `newest event time - 101`; a step's expected
outputs include what timers fired when the watermark advanced after it.
"""

from __future__ import annotations

from collections import Counter

import pytest
from join_simulator import EXAMPLE, IMP, JoinSimulator, simulate
from reference_joiner import reference_join

from tools.generate import GeneratorConfig, generate
from udfs.join_logic import (
    DECIDED,
    DUPLICATE_CLICK,
    DUPLICATE_IMPRESSION,
    EARLY_CLICK,
    LATE_CLICK,
    ORPHAN_CLICK,
    PENDING,
    ImpressionClickJoin,
)

W, R, D = 1_000, 5_000, 100


def imp(impression_id: str, t: int) -> tuple:
    return (impression_id, "req-1", "u1", "sku1", None, 3, t)


def clk(impression_id: str, t: int) -> tuple:
    return (impression_id, "u1", "sku1", t)


def ex(impression_id: str, label: int, click_time: int | None = None) -> tuple:
    return (EXAMPLE, impression_id, label, click_time)


def run_steps(sim: JoinSimulator, steps: list[tuple]) -> None:
    for number, (op, arg, t, expected) in enumerate(steps):
        if op == "imp":
            got = sim.impression(imp(arg, t))
        elif op == "clk":
            got = sim.click(clk(arg, t))
        elif op == "wm":
            got = sim.advance_to(t)
        elif op == "end":
            got = sim.finish()
        else:
            raise ValueError(op)
        assert got == expected, f"step {number} {(op, arg, t)}: watermark {sim.watermark}"


CASES = {
    "positive emitted immediately": [
        ("imp", "a", 1_000, []),  # pending, deadline timer at 2_001; watermark 899
        ("clk", "a", 1_400, [ex("a", 1, 1_400)]),  # in-window click: positive at once, no watermark needed
        ("end", None, None, []),  # deadline timer finds it decided: no second example
    ],
    "negative at window end": [
        ("imp", "a", 1_000, []),  # deadline 1_000 + W + 1 = 2_001
        ("imp", "b", 2_101, []),  # watermark 2_000: a's window may still get a click at 2_000
        ("imp", "c", 2_102, [ex("a", 0)]),  # watermark 2_001 reaches a's deadline: negative
        ("end", None, None, [ex("b", 0), ex("c", 0)]),  # end of input closes every window
    ],
    "click exactly at imp.t + W is positive": [
        ("imp", "a", 1_000, []),
        ("clk", "a", 2_000, [ex("a", 1, 2_000)]),  # 2_000 == 1_000 + W: inside (inclusive)
        ("end", None, None, []),
    ],
    "click at imp.t + W + 1 is late": [
        ("imp", "a", 1_000, []),
        ("clk", "a", 2_001, [(LATE_CLICK, "a", 2_001)]),  # one ms past the window: late, at once
        ("imp", "z", 2_102, [ex("a", 0)]),  # watermark 2_001: a's negative stands
        ("end", None, None, [ex("z", 0)]),
    ],
    "click before the impression's time is late": [
        ("imp", "a", 1_000, []),
        ("clk", "a", 999, [(LATE_CLICK, "a", 999)]),  # before imp.t: outside [t, t + W]
        ("end", None, None, [ex("a", 0)]),
    ],
    "duplicate impression": [
        ("imp", "a", 1_000, []),
        ("imp", "a", 1_000, [(DUPLICATE_IMPRESSION, "a", 1_000)]),  # same id again: dropped, counted
        ("clk", "a", 1_500, [ex("a", 1, 1_500)]),
        ("imp", "a", 1_050, [(DUPLICATE_IMPRESSION, "a", 1_050)]),  # after the decision too
        ("end", None, None, []),  # exactly one example
    ],
    "duplicate impression after a negative": [
        ("imp", "a", 1_000, []),
        ("wm", None, 2_001, [ex("a", 0)]),  # negative
        ("imp", "a", 1_000, [(DUPLICATE_IMPRESSION, "a", 1_000)]),  # id still remembered (retention)
        ("end", None, None, []),
    ],
    "repeated click": [
        ("imp", "a", 1_000, []),
        ("clk", "a", 1_200, [ex("a", 1, 1_200)]),  # first in-window click decides
        ("clk", "a", 1_300, [(DUPLICATE_CLICK, "a", 1_300)]),  # in window again: duplicate
        ("clk", "a", 1_100, [(DUPLICATE_CLICK, "a", 1_100)]),  # earlier time, later arrival: still duplicate
        ("clk", "a", 2_500, [(LATE_CLICK, "a", 2_500)]),  # outside the window: late, not duplicate
        ("end", None, None, []),
    ],
    "click before impression: held, counted early, then joins": [
        ("clk", "a", 1_300, [(EARLY_CLICK, "a", 1_300)]),  # no impression yet: held, expiry timer 2_301
        ("imp", "a", 1_250, [ex("a", 1, 1_300)]),  # watermark 1_199 < 1_250 (in bound): joins the held click
        ("end", None, None, []),  # expiry timer finds the impression: no orphan
    ],
    "held clicks: first out of window, second joins": [
        ("clk", "a", 1_240, [(EARLY_CLICK, "a", 1_240)]),
        ("clk", "a", 1_300, [(EARLY_CLICK, "a", 1_300)]),
        ("clk", "a", 1_320, [(EARLY_CLICK, "a", 1_320)]),
        ("imp", "a", 1_250, [ex("a", 1, 1_300), (LATE_CLICK, "a", 1_240), (DUPLICATE_CLICK, "a", 1_320)]),
        ("end", None, None, []),
    ],
    "orphan click": [
        ("clk", "x", 1_000, [(EARLY_CLICK, "x", 1_000)]),  # held; a matching impression has t >= 1_000 - W
        ("imp", "b", 2_101, []),  # watermark 2_000: an impression at 1_000 could still come
        ("imp", "c", 2_102, [(ORPHAN_CLICK, "x", 1_000)]),  # watermark 2_001 = 1_000 + W + 1: orphan
        ("end", None, None, [ex("b", 0), ex("c", 0)]),
    ],
    "orphan click after the watermark passed its expiry": [
        ("wm", None, 5_000, []),
        ("clk", "x", 3_000, [(ORPHAN_CLICK, "x", 3_000)]),  # 3_000 + W + 1 <= 5_000: orphan at once, not early
        ("end", None, None, []),
    ],
    "late click leaves the negative": [
        ("imp", "a", 1_000, []),
        ("wm", None, 2_001, [ex("a", 0)]),  # negative at the deadline
        ("clk", "a", 2_500, [(LATE_CLICK, "a", 2_500)]),  # outside the window: late
        ("clk", "a", 1_500, [(LATE_CLICK, "a", 1_500)]),  # in the window but after the negative: late
        ("end", None, None, []),  # still exactly one example
    ],
    "impression after its window closed": [
        ("wm", None, 3_000, []),
        ("imp", "a", 1_000, [ex("a", 0)]),  # 1_000 + W + 1 <= 3_000: negative at once, no deadline timer
        ("imp", "a", 1_000, [(DUPLICATE_IMPRESSION, "a", 1_000)]),
        ("end", None, None, []),  # exactly one example
    ],
    "impression after its window closed joins a held click": [
        ("clk", "a", 1_500, [(EARLY_CLICK, "a", 1_500)]),  # held until 2_501
        ("wm", None, 2_200, []),  # a's window (if imp.t = 1_000) closed at 2_001, the click is still held
        ("imp", "a", 1_000, [ex("a", 1, 1_500)]),  # the held click decides: positive, not a negative
        ("end", None, None, []),
    ],
    "impression after the held click expired": [
        ("clk", "a", 1_500, [(EARLY_CLICK, "a", 1_500)]),
        ("wm", None, 2_501, [(ORPHAN_CLICK, "a", 1_500)]),  # click expired: orphan, state cleared
        ("imp", "a", 1_000, [ex("a", 0)]),  # window closed: negative at once
        ("end", None, None, []),
    ],
}


@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_join_steps(steps: list[tuple]) -> None:
    sim = JoinSimulator(W, R, D)
    run_steps(sim, steps)
    assert sim.watermark == 2**63 - 1
    assert sim.stored == {}, "all state is cleared once every timer has fired"
    assert all(n == 1 for n in Counter(e[0][0] for e in sim.examples).values()), "one example per impression"


def test_pending_state_and_timers() -> None:
    sim = JoinSimulator(W, R, D)
    sim.impression(imp("a", 1_000))
    state = sim.state("a")
    assert state is not None and state.status == PENDING and state.impression == imp("a", 1_000)
    assert sim.timers("a") == [2_001]  # the deadline
    sim.click(clk("a", 1_500))
    state = sim.state("a")
    assert state is not None and (state.status, state.label) == (DECIDED, 1)
    assert sim.timers("a") == [2_001, 1_000 + W + R]  # deadline (now a no-op) and the retention timer


def test_state_cleared_after_retention() -> None:
    sim = JoinSimulator(W, R, D)
    steps = [
        ("imp", "a", 1_000, []),
        ("clk", "a", 1_500, [ex("a", 1, 1_500)]),
        ("wm", None, 1_000 + W + R - 1, []),  # one ms before the retention timer
    ]
    run_steps(sim, steps)
    assert sim.state("a") is not None
    assert sim.click(clk("a", 1_600)) == [(DUPLICATE_CLICK, "a", 1_600)]  # still remembered
    assert sim.advance_to(1_000 + W + R) == []  # retention timer: cleared silently
    assert sim.state("a") is None and sim.stored == {}
    # Forgotten: a click for it now is an orphan (its expiry 1_700 + W + 1 is below the watermark).
    assert sim.click(clk("a", 1_700)) == [(ORPHAN_CLICK, "a", 1_700)]
    assert sim.state("a") is None
    # ... and a copy of the impression would be taken as a new one: the window is closed, so a negative.
    assert sim.impression(imp("a", 1_000)) == [ex("a", 0)]


def test_negative_state_cleared_after_retention() -> None:
    sim = JoinSimulator(W, R, D)
    sim.impression(imp("a", 1_000))
    assert sim.advance_to(2_001) == [ex("a", 0)]
    assert sim.state("a") is not None
    assert sim.advance_to(1_000 + W + R - 1) == [] and sim.state("a") is not None
    assert sim.advance_to(1_000 + W + R) == [] and sim.state("a") is None


def test_orphan_clears_state() -> None:
    sim = JoinSimulator(W, R, D)
    sim.click(clk("x", 1_000))
    sim.click(clk("x", 1_400))
    assert sim.state("x") is not None and len(sim.state("x").held_clicks) == 2
    assert sim.advance_to(2_001) == [(ORPHAN_CLICK, "x", 1_000)]  # only the first has expired
    assert [c[-1] for c in sim.state("x").held_clicks] == [1_400]
    assert sim.advance_to(2_401) == [(ORPHAN_CLICK, "x", 1_400)]
    assert sim.state("x") is None


def test_logic_deadline_and_window() -> None:
    logic = ImpressionClickJoin(W, R)
    assert logic.deadline(imp("a", 1_000)) == 2_001
    assert [logic.in_window(imp("a", 1_000), clk("a", t)) for t in (999, 1_000, 2_000, 2_001)] == [
        False, True, True, False,
    ]


def test_late_impression_is_decided_in_the_step_itself() -> None:
    """The step that sees an impression after its window closed emits the negative itself (the host
    need not fire a timer for it) and asks only for the retention timer."""
    logic = ImpressionClickJoin(W, R)
    state, effects = logic.on_impression(None, imp("a", 1_000), watermark=3_000)
    assert effects.examples == [(imp("a", 1_000), 0, None)]
    assert effects.timers == [1_000 + W + R] and effects.events == [] and not effects.clear
    assert (state.status, state.label) == (DECIDED, 0)
    # In time, it asks for its deadline instead.
    state, effects = logic.on_impression(None, imp("b", 1_000), watermark=2_000)
    assert effects.examples == [] and effects.timers == [2_001] and state.status == PENDING


# --- property test against the reference join -------------------------------------------------

CONFIGS = {
    # Windows close all through the stream; many clicks come after the window (delay > W) and many
    # arrive before their impression (delay < disorder).
    "tight": GeneratorConfig(
        n_impressions=20_000, seed=11, requests_per_s=5.0, window_s=30.0, max_disorder_s=5.0,
        click_delay_median_s=2.0, click_delay_sigma=1.5, duplicate_impression_rate=0.03,
        duplicate_click_rate=0.1, orphan_click_rate=0.05, late_click_rate=0.05,
    ),
    "default": GeneratorConfig(n_impressions=20_000),
}
INTERLEAVINGS = [
    ("by-time", 0, False),  # one watermark over the merged stream, as the brief defines it
    ("by-time", 0, True),
    ("impressions-first", 0, True),  # per-input watermarks (Flink's two-input rule) make these valid
    ("clicks-first", 0, True),
    ("random", 1, True),
    ("random", 2, True),
]


@pytest.fixture(scope="module", params=CONFIGS.keys())
def stream(request):
    cfg = CONFIGS[request.param]
    return cfg, generate(cfg)


def first_impression_times(data) -> dict[str, int]:
    first: dict[str, int] = {}
    for record in data.impressions:
        first.setdefault(record["impression_id"], record["event_time"])
    return first


def max_click_delay_ms(data) -> int:
    first = first_impression_times(data)
    return max(c["event_time"] - first[c["impression_id"]] for c in data.clicks if c["impression_id"] in first)


@pytest.mark.parametrize(("how", "seed", "per_input"), INTERLEAVINGS)
def test_simulated_join_matches_reference(stream, how: str, seed: int, per_input: bool) -> None:
    cfg, data = stream
    window_ms = int(cfg.window_s * 1000)
    disorder_ms = int(cfg.max_disorder_s * 1000)
    # Keep ids just long enough that every click still finds its impression (a click arrives while the
    # watermark is at most its time - 2), so late clicks are classified as late, never as orphans.
    retention_ms = max(max_click_delay_ms(data) - window_ms, 0) + 1
    sim = simulate(data.impressions, data.clicks, how, window_ms, retention_ms, disorder_ms, per_input, seed)
    ref = reference_join(data.impressions, data.clicks, window_ms)

    example_ids = [e[0][0] for e in sim.examples]
    assert len(example_ids) == len(set(example_ids)), "an impression got more than one example"
    assert sim.labels() == ref.labels
    counts = sim.counts()
    assert counts[DUPLICATE_IMPRESSION] == ref.duplicate_impressions
    assert counts[DUPLICATE_CLICK] == ref.duplicate_clicks
    assert counts[LATE_CLICK] == ref.late_clicks
    assert counts[ORPHAN_CLICK] == ref.orphan_clicks
    positives = sum(label for label, _ in ref.labels.values())
    assert positives + ref.duplicate_clicks + ref.late_clicks + ref.orphan_clicks == ref.clicks == sim.clicks_seen
    assert sim.stored == {}
    # The dirt was really there.
    assert ref.duplicate_impressions > 0 and ref.duplicate_clicks > 0 and ref.late_clicks > 0
    assert ref.orphan_clicks > 0 and positives > 0
    if how == "clicks-first":
        assert counts[EARLY_CLICK] == ref.clicks  # nothing can join before the impressions come
    if how == "impressions-first":
        assert counts[EARLY_CLICK] == ref.orphan_clicks  # only clicks with no impression at all are held


def test_reference_matches_generator_stats() -> None:
    """The reference is judged on its own too: against what the generator says it injected."""
    cfg = CONFIGS["default"]
    data = generate(cfg)
    ref = reference_join(data.impressions, data.clicks, int(cfg.window_s * 1000))
    stats = data.stats
    assert len(ref.labels) == stats["n_impressions"]
    assert ref.duplicate_impressions == stats["n_duplicate_impressions"]
    assert ref.orphan_clicks == stats["n_orphan_clicks"]
    assert ref.clicks == stats["n_genuine_clicks"] + stats["n_repeat_clicks"] + stats["n_late_clicks"] + stats[
        "n_orphan_clicks"
    ]
    # Every injected late click is late; a few genuine clicks (delay > W) and repeats are late as well.
    assert ref.late_clicks >= stats["n_late_clicks"]
    assert ref.duplicate_clicks <= stats["n_repeat_clicks"]


def test_short_retention_turns_very_late_clicks_into_orphans() -> None:
    """With the job's default retention (2 W) a click that arrives after the watermark passed
    imp.t + W + retention finds the id forgotten: it is held as early, then counted as an orphan instead
    of a late click (as join_logic documents). Labels are not affected; late + orphan still add up."""
    cfg = CONFIGS["tight"]
    data = generate(cfg)
    window_ms, disorder_ms = int(cfg.window_s * 1000), int(cfg.max_disorder_s * 1000)
    retention_ms = 2 * window_ms
    sim = simulate(data.impressions, data.clicks, "by-time", window_ms, retention_ms, disorder_ms)
    ref = reference_join(data.impressions, data.clicks, window_ms)
    assert sim.labels() == ref.labels
    counts = sim.counts()
    forgotten = counts[ORPHAN_CLICK] - ref.orphan_clicks
    assert forgotten > 0
    assert counts[LATE_CLICK] == ref.late_clicks - forgotten
    first_time = first_impression_times(data)
    # Such a click arrived after the watermark reached t + W + R, and the watermark is below the
    # arriving click's time minus 1, so its time is at least t + W + R + 2 ...
    orphaned_known = [(e[1], e[2]) for e in sim.emissions if e[0] == ORPHAN_CLICK and e[1] in first_time]
    assert len(orphaned_known) == forgotten
    assert all(t >= first_time[i] + window_ms + retention_ms + 2 for i, t in orphaned_known)
    # ... and no more of them than the clicks that late.
    possible = sum(
        1 for c in data.clicks
        if c["impression_id"] in first_time
        and c["event_time"] >= first_time[c["impression_id"]] + window_ms + retention_ms + 2
    )
    assert forgotten <= possible


def test_no_clicks_gives_one_negative_per_distinct_impression() -> None:
    data = generate(GeneratorConfig(n_impressions=500, seed=3))
    sim = simulate(data.impressions, [], "impressions-first", 1_800_000, 3_600_000, 5_000)
    distinct = {r["impression_id"] for r in data.impressions}
    assert sim.labels() == dict.fromkeys(distinct, (0, None))
    assert sim.counts()[EXAMPLE] == len(distinct)
    assert sim.counts()[DUPLICATE_IMPRESSION] == len(data.impressions) - len(distinct) > 0
    assert sim.ended[IMP] and sim.stored == {}
