"""Kafka client properties (security.protocol, SASL, TLS files, ...) for every Kafka client of a run.

`freshrank` talks to Kafka through two client libraries:

- the job's Flink Kafka connectors (sources, exactly-once sinks, the item loop), which are the Java
  client: they get `java_properties()` (`KafkaSource.builder().set_property`, the SQL sinks'
  `'properties.<key>'` options);
- confluent-kafka (librdkafka) for everything in Python: `topics create` (admin), `produce`, the item
  catalog reader and dead-letter producer of `run`, `rank`/`serve-demo` (snapshot consumer), the demo's
  and bench's readers: they get `librdkafka_properties()`, merged into their config by `client_config`.

Both take the same names for the common security settings (`security.protocol`, `sasl.mechanism`,
`ssl.keystore.location`, `ssl.keystore.password`, `ssl.key.password`,
`ssl.endpoint.identification.algorithm`, ...). Where they differ, scope a key with a prefix:
`java.<key>` reaches only the Java client (e.g. `java.sasl.jaas.config`, `java.ssl.truststore.location`),
`librdkafka.<key>` only librdkafka (e.g. `librdkafka.sasl.username`, `librdkafka.ssl.ca.location`).
Keys that librdkafka rejects (`JAVA_ONLY_KEYS`) must carry the `java.` prefix, so that a Java
properties file is not silently half-applied. Keys freshrank sets itself (`RESERVED_KEYS`: the
bootstrap servers, group and transactional ids, isolation level, ...) are refused: the job's
guarantees rest on them.

`merge_kafka_properties` is the one place that builds the merged dict from properties files (Java
properties format) and `key=value` items (later ones win).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

JAVA_PREFIX = "java."
LIBRDKAFKA_PREFIX = "librdkafka."

# Set by freshrank (or derived from its options) in every client that needs them.
RESERVED_KEYS = frozenset({
    "bootstrap.servers",  # --bootstrap
    "group.id", "group.instance.id",  # --group-id, and per-reader groups
    "transactional.id", "transaction.timeout.ms",  # the exactly-once sinks' transactions
    "isolation.level",  # readers see committed records only
    "enable.auto.commit",
    "key.serializer", "value.serializer", "key.deserializer", "value.deserializer",
})

# Java client settings that librdkafka refuses ("No such configuration property", or "Java
# TrustStores/JAAS are not supported"): they must be written as `java.<key>`.
JAVA_ONLY_KEYS = frozenset({
    "sasl.jaas.config",
    "sasl.login.callback.handler.class",
    "sasl.client.callback.handler.class",
    "ssl.truststore.location", "ssl.truststore.password", "ssl.truststore.type", "ssl.truststore.certificates",
    "ssl.keystore.type", "ssl.keystore.key", "ssl.keystore.certificate.chain",
    "ssl.protocol", "ssl.enabled.protocols",
})

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


class KafkaPropertiesError(ValueError):
    """A properties file or `key=value` item that cannot be used; the message names where."""


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """(first line number, logical line) of Java properties text: comments and blank lines dropped,
    a line ending in an odd number of backslashes joined with the next (its leading blanks dropped)."""
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        if pending:
            line = line.lstrip(" \t\f")
        elif not line.strip(" \t\f") or line.lstrip(" \t\f")[0] in "#!":
            continue
        else:
            start = number
            line = line.lstrip(" \t\f")
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            pending.append(line[:-1])
            continue
        yield start, "".join(pending) + line
        pending = []
    if pending:
        yield start, "".join(pending)


def _unescape(text: str, where: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2:i + 6]
            if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise KafkaPropertiesError(f"{where}: malformed \\uXXXX escape")
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _split_key(line: str) -> tuple[str, str]:
    """Java's rule: the key ends at the first unescaped '=', ':' or blank; then blanks, at most one
    '=' or ':', blanks again, and the rest is the value."""
    i = 0
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        if line[i] in "=: \t\f":
            break
        i += 1
    key, rest = line[:i], line[i:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return key, rest


def parse_properties(text: str, source: str = "<properties>") -> dict[str, str]:
    """Java-properties-format text (`key=value` or `key: value` lines, `#`/`!` comments, backslash
    continuations and escapes) as a dict; a later line of the same key wins."""
    properties: dict[str, str] = {}
    for number, line in _logical_lines(text):
        where = f"{source}:{number}"
        raw_key, raw_value = _split_key(line)
        key = _unescape(raw_key, where)
        if not key:
            raise KafkaPropertiesError(f"{where}: a property line needs a key (`key=value`)")
        properties[key] = _unescape(raw_value, where)
    return properties


def read_properties_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The properties of a Java properties file (UTF-8)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise KafkaPropertiesError(f"cannot read Kafka properties file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise KafkaPropertiesError(f"Kafka properties file {path} is not UTF-8: {error}") from None
    return parse_properties(text, str(path))


def parse_property(item: str) -> tuple[str, str]:
    """`key=value` (a `--kafka-property` item) as (key, value); the value is kept as typed."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise KafkaPropertiesError(f"--kafka-property {item!r}: expected key=value")
    return key, value


def _check(key: str, where: str) -> None:
    bare = key
    for prefix in (JAVA_PREFIX, LIBRDKAFKA_PREFIX):
        if key.startswith(prefix):
            bare = key[len(prefix):]
            if not bare:
                raise KafkaPropertiesError(f"{where}: {key!r} names no property after the prefix")
    if bare in RESERVED_KEYS:
        hint = " (use --bootstrap)" if bare == "bootstrap.servers" else ""
        raise KafkaPropertiesError(f"{where}: {bare} is set by freshrank and cannot be overridden{hint}")
    if key in JAVA_ONLY_KEYS:
        raise KafkaPropertiesError(
            f"{where}: {key} is a Java client setting that librdkafka (the Python clients) refuses: write it "
            f"as {JAVA_PREFIX}{key} and give the Python clients their own settings with the {LIBRDKAFKA_PREFIX} "
            "prefix (e.g. librdkafka.sasl.username, librdkafka.ssl.ca.location)")


def merge_kafka_properties(
    files: Iterable[str | os.PathLike[str]] = (), items: Iterable[str] = ()
) -> dict[str, str]:
    """The run's Kafka client properties: every file in order, then every `key=value` item (later wins).

    Keys keep their `java.`/`librdkafka.` scope; `java_properties` and `librdkafka_properties` give each
    client library its view. Raises KafkaPropertiesError naming the file and line (or item) at fault.
    """
    merged: dict[str, str] = {}
    for path in files:
        for key, value in read_properties_file(path).items():
            _check(key, str(path))
            merged[key] = value
    for item in items:
        key, value = parse_property(item)
        _check(key, f"--kafka-property {key}")
        merged[key] = value
    return merged


def _view(properties: Mapping[str, str] | None, own: str, other: str) -> dict[str, str]:
    """Unscoped keys, then this library's scoped ones (which win over an unscoped key of the same name)."""
    view: dict[str, str] = {}
    scoped: dict[str, str] = {}
    for key, value in (properties or {}).items():
        if key.startswith(own):
            scoped[key[len(own):]] = value
        elif not key.startswith(other):
            view[key] = value
    view.update(scoped)
    return view


def java_properties(properties: Mapping[str, str] | None) -> dict[str, str]:
    """What the Java client (the job's Flink Kafka sources and sinks) gets."""
    return _view(properties, JAVA_PREFIX, LIBRDKAFKA_PREFIX)


def librdkafka_properties(properties: Mapping[str, str] | None) -> dict[str, str]:
    """What confluent-kafka (librdkafka) clients get: producer, consumers, admin."""
    return _view(properties, LIBRDKAFKA_PREFIX, JAVA_PREFIX)


def client_config(bootstrap: str, properties: Mapping[str, str] | None = None, **settings: object) -> dict[str, object]:
    """A confluent-kafka client config: `bootstrap.servers`, the caller's `settings` (pass dotted names as
    `**{"isolation.level": ...}`), then the run's librdkafka properties over them."""
    return {"bootstrap.servers": bootstrap, **settings, **librdkafka_properties(properties)}


def _escape(text: str, key: bool) -> str:
    out = []
    for i, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char in "\t\n\r\f":
            out.append("\\" + {"\t": "t", "\n": "n", "\r": "r", "\f": "f"}[char])
        elif (key and char in "=: #!") or (not key and i == 0 and char == " "):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def properties_text(properties: Mapping[str, str]) -> str:
    """`properties` in Java properties format (read back identically by `parse_properties`)."""
    return "".join(f"{_escape(key, True)}={_escape(value, False)}\n" for key, value in properties.items())


def write_properties_file(properties: Mapping[str, str], path: str | os.PathLike[str]) -> Path:
    """Write `properties` for a child process (`--kafka-properties FILE`) readable by its owner only
    (0600): they may hold passwords, which a command line would show to every user (`ps`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(properties_text(properties))
    return path
