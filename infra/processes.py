"""The daemons we start (broker, cluster): process checks and signals (psutil), their logs, their Java."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


def pin_to_cpus(pid: int, cpus: set[int]) -> None:
    """Run every thread of `pid` on `cpus` only, and so the threads they start later (a new thread
    inherits its creator's mask). The process's own mask would move only its first thread: a JVM's
    other threads, its compiler, collector and task threads, would stay free."""
    pinned: set[int] = set()
    while True:  # a thread started while we go through the list is pinned in the next pass
        try:
            threads = {thread.id for thread in psutil.Process(pid).threads()}
        except psutil.NoSuchProcess:
            return
        if threads <= pinned:
            return
        for tid in threads - pinned:
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:  # the thread ended meanwhile
                pass
        pinned |= threads


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes used so far (those gone count 0)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


# HotSpot's JIT compiler threads ("C2 CompilerThread0", "C1 CompilerThread1"; Linux keeps 15 characters).
JIT_COMPILER_THREADS = ("C1 CompilerThre", "C2 CompilerThre")


def thread_cpu_seconds(pid: int, name_prefixes: tuple[str, ...]) -> float:
    """User + system CPU seconds so far of the threads of `pid` whose name starts with one of
    `name_prefixes` (Linux /proc; 0 for a process that is gone). Threads that ended are not counted."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            if not name.startswith(name_prefixes):
                continue
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after the name, which may hold spaces
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def last_lines(text: str, lines: int) -> str:
    """The last `lines` lines of a command's output, for error messages."""
    return "\n".join(text.splitlines()[-lines:])


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a daemon's log file, for error messages ("(no log)" if unreadable)."""
    try:
        return last_lines(path.read_text(errors="replace"), lines)
    except OSError:
        return "(no log)"


def java_bin() -> Path:
    """The folder of the `java` the daemons run on: JAVA_HOME's, else the one on PATH (resolved)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return Path(java_home) / "bin"
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("`java` not found on PATH or in JAVA_HOME (Kafka 4 and Flink 2.2 need Java 17)")
    return Path(java).resolve().parent
