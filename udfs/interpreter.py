"""Settings for the TaskManager's embedded Python interpreter, made once per worker."""

from __future__ import annotations

import gc

from threadpoolctl import threadpool_limits

# Collect the youngest generation after this many net allocations (CPython's default is 700).
YOUNG_GENERATION_THRESHOLD = 10_000
_tuned = False


def tune_garbage_collector() -> None:
    """Make CPython's cycle collector cheap for a streaming worker (idempotent).

    The learner keeps hundreds of thousands of long-lived objects (join entries, cached rows) and
    makes many short-lived ones per batch, none of them in reference cycles: with the default
    thresholds the collector walks the young objects every 700 allocations and the long-lived ones
    again and again, a quarter of the learner's time in the standalone benchmark. Objects alive once
    the job has started (modules, PyFlink's machinery, the catalog) are frozen out of every
    collection; reference counting still frees whatever of them is dropped. Cycles are still found,
    only collected less often.
    """
    global _tuned
    if _tuned:
        return
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
    _tuned = True


def limit_native_threads() -> None:
    """One thread for numpy's BLAS (and any other native pool threadpoolctl knows) in this worker.

    OpenBLAS starts a thread per core and lets them spin after each call; the learner makes many
    small BLAS calls, so its idle helper burned 0.4-0.8 of a core (sampled per thread from
    /proc/PID/task: a thread unknown to the JVM, named after the task that first imported numpy),
    on a 2-core machine where the learner, the parse and the JVM already take both. Idempotent;
    threadpoolctl changes the limit at run time, so it holds for local runs and any cluster.
    """
    threadpool_limits(limits=1)
