"""The benches' steady-state rate: a slope over the middle of a run's source count, and its CPU per record."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from infra.processes import JIT_COMPILER_THREADS, thread_cpu_seconds
from tools.job_progress import MeasurementError, Sample, steady_rate


def _run(rate: float, total: int, startup_s: float = 5.0, every_s: float = 1.0) -> list[Sample]:
    """Counts as a fetcher refreshing every `every_s` would show them: slow at first (JIT, buffers
    filling), then `rate` per second; one process using 20 µs of CPU per record, 2 of them in its JIT compiler."""
    samples, at, records = [], 0.0, 0
    while records < total:
        at += every_s
        records = min(total, records + int((rate / 4 if at <= startup_s else rate) * every_s))
        samples.append(Sample(at, records, (records * 20e-6,), (records * 2e-6,)))
    return samples


def test_the_rate_is_the_slope_over_the_middle_of_the_run_not_its_start_or_end() -> None:
    samples = _run(10_000, 200_000)
    # The end of a bounded run waits for its last checkpoint with the count standing still.
    samples += [Sample(samples[-1].at_s + 3.0, 200_000, samples[-1].cpu_s, samples[-1].jit_cpu_s)]
    steady = steady_rate(samples, 200_000)
    assert steady.records_per_s == pytest.approx(10_000)
    assert steady.cpu_us_per_record == pytest.approx((20.0,))
    assert steady.jit_us_per_record == pytest.approx((2.0,))
    assert steady.points >= 4 and steady.span_s > 0
    whole_run = 200_000 / samples[-1].at_s
    assert whole_run < 0.9 * steady.records_per_s  # what the start-up and the end wait would have cost


def test_a_run_too_short_to_measure_is_an_error_not_a_figure() -> None:
    with pytest.raises(MeasurementError, match="too fast to measure"):
        steady_rate(_run(400_000, 200_000), 200_000)


def test_a_count_that_does_not_grow_is_an_error() -> None:
    standing = [Sample(float(t), 100, (0.0,)) for t in range(6)]
    with pytest.raises(MeasurementError):
        steady_rate(standing, 200)


def test_a_threads_cpu_time_is_found_by_its_name() -> None:
    me = os.getpid()
    main_thread = Path(f"/proc/{me}/comm").read_text().strip()  # the main thread has the process's name
    before = thread_cpu_seconds(me, (main_thread,))
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn CPU in this thread
        pass
    assert thread_cpu_seconds(me, (main_thread,)) - before >= 0.2
    assert thread_cpu_seconds(me, JIT_COMPILER_THREADS) == 0.0  # no JVM here
    assert thread_cpu_seconds(2**22 + 1, (main_thread,)) == 0.0  # no such process
