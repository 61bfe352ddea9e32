"""Process checks for the daemons we start (broker, cluster): alive, command line, signals (psutil)."""

from __future__ import annotations

import psutil


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists
        return True


def command_line(pid: int) -> list[str]:
    """The arguments `pid` was started with ([] if it is gone or not ours to read)."""
    try:
        return psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def send_signal(pid: int, sig: int) -> None:
    """Signal `pid` if it still exists."""
    try:
        psutil.Process(pid).send_signal(sig)
    except psutil.NoSuchProcess:
        pass
