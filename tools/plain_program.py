"""The program a user would write instead of freshrank: one process, no Flink, no state backend.

It is the benchmark's honest baseline for the whole job, not just its learner: it reads the same
event files, checks the records, joins impressions with clicks in event time and learns with the
same `udfs.learner_math` code, all in plain Python with dicts. What it cannot do is what the job is
for: run unbounded over Kafka, keep state across restarts, scale past one core, or emit while
the data is still arriving. Whatever the job costs beyond this program is the price of those.

How a user would write it, and so how it is written:
- load both JSON Lines files (orjson), keep records whose schema fields are there with plausible
  types (a cheap hand check, not Avro validation), count and skip the rest;
- merge them by sorting on event time, impressions first on ties, so a click at its impression's
  own millisecond finds it;
- join with dicts: the first impression per id is kept, the first click within
  [impression.t, impression.t + W] in that order makes a positive at the click's time, an impression
  whose deadline the merged stream's event time passes becomes a negative (a heap of deadlines),
  a click without an impression is an orphan;
- score each impression when it arrives (progressive validation, as the job does), learn when its
  label is decided; user vectors are `UserCodec` rows in a dict, item side is one `ItemSide`;
- the job's cold-start rule (`udfs.join_learn`): positives of impressions in the first window are
  learned when their window closes, not at the click, because before then no negative can be
  known and learning positives alone drags every bias up (without it this program's progressive
  logloss is several times the job's on a cold start).

Like the reference joiner (`tests/reference_joiner.py`), a click is matched by impression id alone.
The one difference from the reference: among several in-window clicks on one impression, the
reference takes the first in the click file (arrival order), this program the earliest in event
time; they differ only in the positive's click time, and only when a repeated click arrives before
the original one.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import numpy as np
import orjson

from udfs.learner_math import ItemSide, LearnerConfig, OnlineRanker

_IMPRESSION, _CLICK = 0, 1


@dataclass
class PlainResult:
    """What one run of the plain program did, and how long it took (file reading included)."""

    examples: int
    positives: int
    seconds: float
    impressions_read: int  # lines of the impression file, duplicates and rejects included
    labels: dict[str, tuple[int, int | None]] = field(repr=False)  # impression_id -> (label, click_time)
    clicks_read: int = 0
    rejected: int = 0  # lines that were not JSON or failed the field check
    duplicate_impressions: int = 0
    duplicate_clicks: int = 0
    late_clicks: int = 0
    orphan_clicks: int = 0
    logloss: float = float("nan")  # mean progressive logloss (scores taken when the impression arrived)

    @property
    def impressions_per_s(self) -> float:
        return self.impressions_read / self.seconds if self.seconds > 0 else float("nan")


def _impression_row(record: object) -> tuple | None:
    """(event_time, kind, impression_id, user_id, item_id, position), or None if implausible."""
    try:
        t, pos = record["event_time"], record["position"]
        impression_id, user_id, item_id = record["impression_id"], record["user_id"], record["item_id"]
        query = record.get("query")
        # `type(...) is int` because JSON true/false load as bools, which are ints to isinstance.
        ok = (type(t) is int and t >= 0 and type(pos) is int and pos >= 1
              and type(impression_id) is str and impression_id and type(user_id) is str and user_id
              and type(item_id) is str and item_id and type(record["request_id"]) is str
              and (query is None or type(query) is str))
    except (KeyError, TypeError, AttributeError):
        return None
    return (t, _IMPRESSION, impression_id, user_id, item_id, pos) if ok else None


def _click_row(record: object) -> tuple | None:
    """(event_time, kind, impression_id), or None if implausible."""
    try:
        t, impression_id = record["event_time"], record["impression_id"]
        ok = (type(t) is int and t >= 0 and type(impression_id) is str and impression_id
              and type(record["user_id"]) is str and type(record["item_id"]) is str)
    except (KeyError, TypeError, AttributeError):
        return None
    return (t, _CLICK, impression_id) if ok else None


def _read_rows(path: Path, to_row: Callable[[object], tuple | None]) -> tuple[list[tuple], int, int]:
    """Rows of one JSON Lines file (compact tuples, so a million records fit), lines read, rejects."""
    rows: list[tuple] = []
    append, loads = rows.append, orjson.loads
    lines = rejected = 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            lines += 1
            try:
                row = to_row(loads(line))
            except orjson.JSONDecodeError:
                row = None
            if row is None:
                rejected += 1
            else:
                append(row)
    return rows, lines, rejected


def run_plain_program(impressions: Path, clicks: Path, window_ms: int, config: LearnerConfig) -> PlainResult:
    """Parse, join and learn over one impression file and one click file; see the module docstring."""
    started = time.perf_counter()
    impression_rows, impressions_read, rejected_impressions = _read_rows(impressions, _impression_row)
    click_rows, clicks_read, rejected_clicks = _read_rows(clicks, _click_row)
    # Python's sort is stable and impressions come first in the list, so on equal event times every
    # impression precedes every click without a second sort key.
    events = impression_rows + click_rows
    del impression_rows, click_rows
    events.sort(key=itemgetter(0))

    ranker = OnlineRanker(config, ItemSide(config))
    new_user = ranker.codec.new
    score, learn = ranker.score, ranker.score_then_learn
    users: dict[str, np.ndarray] = {}
    pending: dict[str, tuple] = {}  # impression_id -> (user_id, item_id, position, score), label undecided
    deferred: dict[str, tuple] = {}  # warm-up positives, (user_id, item_id, position), learned at their deadline
    warm_up_until: int | None = None
    impression_time: dict[str, int] = {}  # every kept impression, to tell duplicates and late clicks
    labels: dict[str, tuple[int, int | None]] = {}
    deadlines: list[tuple[int, str]] = []  # (impression.t + W, impression_id); stale entries are skipped
    heappush, heappop = heapq.heappush, heapq.heappop
    log = math.log
    loss = 0.0
    duplicate_impressions = duplicate_clicks = late_clicks = orphan_clicks = positives = 0

    def decide(impression_id: str, label: int, click_time: int | None, learn_now: bool = True) -> float:
        user_id, item_id, position, predicted = pending.pop(impression_id)
        if learn_now:
            learn(users[user_id], item_id, position, label)
        else:
            deferred[impression_id] = (user_id, item_id, position)
        labels[impression_id] = (label, click_time)
        return -log(max(predicted if label else 1.0 - predicted, 1e-15))

    def close(impression_id: str) -> float:
        """The impression's window has closed: a negative, or a warm-up positive learned now."""
        if impression_id in pending:
            return decide(impression_id, 0, None)
        positive = deferred.pop(impression_id, None)
        if positive is not None:
            learn(users[positive[0]], positive[1], positive[2], 1)
        return 0.0

    for event in events:
        t = event[0]
        # Close every window the merged stream's event time has passed (a click at exactly t + W is
        # still in time, hence the strict comparison): negatives, and warm-up positives learned now.
        while deadlines and deadlines[0][0] < t:
            loss += close(heappop(deadlines)[1])
        impression_id = event[2]
        if event[1] == _IMPRESSION:
            if impression_id in impression_time:
                duplicate_impressions += 1
                continue
            impression_time[impression_id] = t
            if warm_up_until is None:
                warm_up_until = t + window_ms
            user_id = event[3]
            user = users.get(user_id)
            if user is None:
                user = users[user_id] = new_user()
            pending[impression_id] = (user_id, event[4], event[5], score(user, event[4], event[5]))
            heappush(deadlines, (t + window_ms, impression_id))
        elif impression_id in pending:
            # Pending means its deadline has not passed and events come in time order, so the click
            # is inside [impression.t, impression.t + W].
            loss += decide(impression_id, 1, t, learn_now=impression_time[impression_id] >= warm_up_until)
            positives += 1
        elif impression_id in impression_time:
            start = impression_time[impression_id]
            if start <= t <= start + window_ms:
                duplicate_clicks += 1
            else:
                late_clicks += 1
        else:
            orphan_clicks += 1
    while deadlines:  # end of input: every window still open closes without a click
        loss += close(heappop(deadlines)[1])
    seconds = time.perf_counter() - started
    return PlainResult(
        examples=len(labels),
        positives=positives,
        seconds=seconds,
        impressions_read=impressions_read,
        labels=labels,
        clicks_read=clicks_read,
        rejected=rejected_impressions + rejected_clicks,
        duplicate_impressions=duplicate_impressions,
        duplicate_clicks=duplicate_clicks,
        late_clicks=late_clicks,
        orphan_clicks=orphan_clicks,
        logloss=loss / len(labels) if labels else float("nan"),
    )
