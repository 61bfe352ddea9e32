"""Quoting for the Flink SQL that the job writes (connector DDL): option values are data, never SQL.

Every value interpolated into a statement goes through these helpers, so a topic name, bootstrap
address, transactional-id prefix or Kafka property value with a quote in it stays one literal
instead of ending it (and opening the statement to whatever follows).
"""

from __future__ import annotations

from collections.abc import Mapping


def sql_string(value: object) -> str:
    """`value` as a Flink SQL string literal: in single quotes, each single quote doubled."""
    text = str(value)
    if "\x00" in text:  # no SQL literal can carry it; it is never a meaningful option value
        raise ValueError(f"NUL character in an SQL string value: {text!r}")
    return "'" + text.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """`name` as a quoted Flink SQL identifier: in backticks, each backtick doubled."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier: {name!r}")
    return "`" + name.replace("`", "``") + "`"


def sql_with_options(options: Mapping[str, object]) -> str:
    """The body of a `WITH (...)` clause: `'key' = 'value'` pairs, keys and values quoted."""
    return ",\n".join(f"{sql_string(key)} = {sql_string(value)}" for key, value in options.items())
