"""The benchmark's plain single-process program joins like the reference (its learner math is
udfs.learner_math, tested in test_learner_math)."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from reference_joiner import reference_join

from tools.generate import GeneratorConfig, Stream, generate, write_stream
from tools.plain_program import run_plain_program
from udfs.learner_math import LearnerConfig

WINDOW_MS = 60_000
SMALL = GeneratorConfig(n_impressions=4000, n_users=150, n_items=120, seed=11, window_s=60.0, max_disorder_s=2.0,
                        click_delay_median_s=8.0, requests_per_s=2.0)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stream, dict[str, Path]]:
    stream = generate(SMALL)
    return stream, write_stream(stream, tmp_path_factory.mktemp("small"))


def test_labels_and_counts_equal_the_reference(small: tuple[Stream, dict[str, Path]]) -> None:
    stream, files = small
    result = run_plain_program(files["impressions"], files["clicks"], WINDOW_MS, LearnerConfig())
    reference = reference_join(stream.impressions, stream.clicks, WINDOW_MS)
    assert result.labels == reference.labels
    assert result.examples == len(reference.labels) == SMALL.n_impressions
    assert result.positives == sum(label for label, _ in reference.labels.values())
    assert result.impressions_read == len(stream.impressions)
    assert result.clicks_read == len(stream.clicks)
    assert result.rejected == 0
    assert {
        "duplicate_impressions": result.duplicate_impressions,
        "duplicate_clicks": result.duplicate_clicks,
        "late_clicks": result.late_clicks,
        "orphan_clicks": result.orphan_clicks,
        "clicks": result.clicks_read,
    } == reference.counts()
    assert result.seconds > 0
    assert math.isfinite(result.logloss) and result.logloss > 0  # every example was scored and learned


def test_skewed_dirtier_stream_same_labels_click_time_earliest_in_event_time(tmp_path: Path) -> None:
    """Labels always match; the click time differs only where a repeated click arrived first.

    The reference takes the first in-window click in file (arrival) order, the plain program the
    earliest in event time; with enough repeated clicks and disorder both cases occur.
    """
    config = GeneratorConfig(n_impressions=30_000, n_users=400, n_items=300, seed=5, window_s=60.0,
                             max_disorder_s=5.0, click_delay_median_s=8.0, requests_per_s=2.0,
                             duplicate_click_rate=0.3, heavy_users=3)
    stream = generate(config)
    files = write_stream(stream, tmp_path)
    result = run_plain_program(files["impressions"], files["clicks"], WINDOW_MS, LearnerConfig())
    reference = reference_join(stream.impressions, stream.clicks, WINDOW_MS)
    assert result.labels.keys() == reference.labels.keys()
    impression_time = {r["impression_id"]: r["event_time"] for r in stream.impressions}
    click_times: dict[str, set[int]] = {}
    for click in stream.clicks:
        click_times.setdefault(click["impression_id"], set()).add(click["event_time"])
    earlier = 0
    for impression_id, (label, click_time) in reference.labels.items():
        plain_label, plain_click_time = result.labels[impression_id]
        assert plain_label == label
        if label and plain_click_time != click_time:
            start = impression_time[impression_id]
            assert start <= plain_click_time < click_time <= start + WINDOW_MS
            assert plain_click_time in click_times[impression_id]
            earlier += 1
    assert earlier > 0  # the stream does exercise the difference


def test_implausible_records_are_counted_and_skipped(small: tuple[Stream, dict[str, Path]], tmp_path: Path) -> None:
    stream, files = small
    bad_impressions = [
        b"not json",
        orjson.dumps({**stream.impressions[0], "impression_id": "imp-bad-position", "position": 0}),
        orjson.dumps({**stream.impressions[0], "impression_id": "imp-bad-time", "event_time": "soon"}),
        orjson.dumps({**stream.impressions[0], "impression_id": "imp-bool", "position": True}),
        orjson.dumps({k: v for k, v in stream.impressions[0].items() if k != "user_id"}),
        orjson.dumps([1, 2, 3]),
    ]
    bad_clicks = [orjson.dumps({**stream.clicks[0], "event_time": -1}), b"{}"]
    impressions = tmp_path / "impressions.jsonl"
    clicks = tmp_path / "clicks.jsonl"
    impressions.write_bytes(files["impressions"].read_bytes() + b"\n".join(bad_impressions) + b"\n")
    clicks.write_bytes(b"\n".join(bad_clicks) + b"\n" + files["clicks"].read_bytes())
    result = run_plain_program(impressions, clicks, WINDOW_MS, LearnerConfig())
    assert result.rejected == len(bad_impressions) + len(bad_clicks)
    assert result.impressions_read == len(stream.impressions) + len(bad_impressions)
    assert result.labels == reference_join(stream.impressions, stream.clicks, WINDOW_MS).labels
