"""numba compilation with an on-disk cache, shared by the compiled kernels (learner, join, Avro)."""

from __future__ import annotations

import numba


def cached_njit(function):
    """`njit` with an on-disk cache, so a second process loads the machine code instead of compiling.

    numba caches next to the source (`__pycache__`) or, if that is read-only, in the user-wide cache
    directory; when neither is writable it refuses `cache=True` at decoration time (RuntimeError), and
    then the kernel is compiled in every process instead of failing the import.
    """
    # Not nogil: in PyFlink's thread mode other operators' threads can hold the interpreter lock while
    # blocked on Flink's network buffers, so a kernel that releases it may never get it back (seen:
    # the job hung in the first call).
    try:
        return numba.njit(cache=True)(function)
    except RuntimeError:
        return numba.njit()(function)


def cached_cfunc(signature):
    """`cfunc` with the on-disk cache of `cached_njit`: a native entry point over raw pointers, for ctypes."""
    def compile_(function):
        try:
            return numba.cfunc(signature, cache=True)(function)
        except RuntimeError:
            return numba.cfunc(signature)(function)
    return compile_
