"""Waiting for something local to happen (a broker to answer, a job to run, a process to exit): one
helper over tenacity, so every wait has a bound, a poll interval and an error that says what was awaited."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_fixed

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, interval_s: float = 0.2, *,
               timeout_error: Callable[[], Exception] | None = None) -> T:
    """Call `condition` every `interval_s` until it returns something truthy, and return that.

    After `timeout_s` the wait ends with `timeout_error()` (built then, so it can carry fresh log
    lines), or a TimeoutError. An exception raised by `condition` ends the wait at once: conditions
    raise for states that can no longer turn out well (a job that failed, a process that died).
    """

    def give_up(state: RetryCallState) -> T:
        if timeout_error is not None:
            raise timeout_error()
        raise TimeoutError(f"not done after {timeout_s:g} s")

    retrying = Retrying(retry=retry_if_result(lambda value: not value), stop=stop_after_delay(timeout_s),
                        wait=wait_fixed(interval_s), retry_error_callback=give_up, reraise=True)
    return retrying(condition)
