"""What a failed command tells its user: one `freshrank: error: ...` line instead of a traceback."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

# Exceptions whose message is already written for the user (ours, and the standard library's for
# files and values); anything else is described by its type and first line.
_PLAIN = (ValueError, FileExistsError, NotADirectoryError, PermissionError, ConnectionError, TimeoutError,
          RuntimeError)


class UsageError(ValueError):
    """The command was asked for something it cannot do as given (a clash of options, a used folder)."""


def run_reporting_errors(command: Callable[[], int], debug: bool, prog: str = "freshrank") -> int:
    """Run a command; a failure becomes one `PROG: error: ...` line and exit code 1 (the traceback
    itself with `debug`), an interrupt exit code 130."""
    try:
        return command()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(f"{prog}: error: {describe(error)}", file=sys.stderr)
        return 1


def describe(error: BaseException) -> str:
    """A one-line (or few-line) account of `error` for the command line."""
    if isinstance(error, FileNotFoundError):
        where = error.filename or str(error)
        return f"no such file or folder: {where}" if error.filename else str(error)
    name = type(error).__name__
    if name == "KafkaException":  # confluent_kafka, without importing it here
        kafka_error = error.args[0] if error.args else error
        return f"Kafka: {getattr(kafka_error, 'str', lambda: str(kafka_error))()}"
    if name == "Py4JJavaError":  # a Flink job or the JVM refused: the Java cause says why
        return f"Flink: {_java_cause(str(error))} (--debug shows the Java trace; Flink's log has the rest)"
    if isinstance(error, _PLAIN):
        return str(error) or name
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{name}: {first}" if first else name


def _java_cause(text: str) -> str:
    """The innermost `Caused by:` of a Java stack trace (or its first line)."""
    causes = re.findall(r"^Caused by: (.+)$", text, re.MULTILINE)
    if causes:
        return causes[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 and lines[0].startswith("An error occurred") else (lines[0] if lines else "")
