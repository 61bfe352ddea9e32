"""Kafka client properties (parsing, merging, scoping), SQL quoting, topic retention, private state dirs
and the job configuration of local and `flink run` submissions: no broker, no Flink job."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from clients.kafka_properties import (
    KafkaPropertiesError,
    client_config,
    java_properties,
    librdkafka_properties,
    merge_kafka_properties,
    parse_properties,
    parse_property,
    properties_text,
    read_properties_file,
    write_properties_file,
)
from clients.topics import DEFAULT_TOPICS, topic_configs
from job import flink_env
from job.errors import UsageError
from job.options import kafka_properties_of
from job.sql import sql_identifier, sql_string, sql_with_options
from tools.cli import build_parser

# --- parsing -------------------------------------------------------------------------------------------


def test_java_properties_format() -> None:
    text = "\n".join([
        "# a comment",
        "! another comment",
        "",
        "security.protocol=SASL_SSL",
        "  sasl.mechanism : SCRAM-SHA-512  ",  # ':' separator, blanks around it, trailing blanks kept
        "ssl.ca.location /etc/ssl/ca.pem",  # a blank separates too
        "java.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\",  # continued
        '    username="app" \\',
        '    password="p=ss#word";',
        r"path=C:\\certs\\ca.pem",
        r"key\ with\=odd\:chars=v",
        r"unicode=caf\u00e9",
        "empty=",
        "security.protocol=SSL",  # a later line wins
    ])
    assert parse_properties(text) == {
        "security.protocol": "SSL",
        "sasl.mechanism": "SCRAM-SHA-512  ",
        "ssl.ca.location": "/etc/ssl/ca.pem",
        "java.sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                                 'username="app" password="p=ss#word";',
        "path": r"C:\certs\ca.pem",
        "key with=odd:chars": "v",
        "unicode": "café",
        "empty": "",
    }


def test_parse_errors_name_the_source_and_line(tmp_path: Path) -> None:
    with pytest.raises(KafkaPropertiesError, match=r"client.properties:2: .*key"):
        parse_properties("a=1\n=value\n", "client.properties")
    with pytest.raises(KafkaPropertiesError, match=r":1: malformed \\uXXXX"):
        parse_properties(r"a=\u12", "x")
    with pytest.raises(KafkaPropertiesError, match="cannot read Kafka properties file"):
        read_properties_file(tmp_path / "missing.properties")


def test_kafka_property_items() -> None:
    assert parse_property("sasl.password=a=b ") == ("sasl.password", "a=b ")  # value as typed
    assert parse_property(" client.id =x") == ("client.id", "x")
    for bad in ("no-equals", "=value", ""):
        with pytest.raises(KafkaPropertiesError, match="expected key=value"):
            parse_property(bad)


# --- merging and scoping ---------------------------------------------------------------------------------


def test_files_then_items_later_wins(tmp_path: Path) -> None:
    first = tmp_path / "a.properties"
    first.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nclient.id=first\n")
    second = tmp_path / "b.properties"
    second.write_text("client.id=second\nlibrdkafka.sasl.username=app\n")
    merged = merge_kafka_properties([first, second], ["client.id=typed", "librdkafka.sasl.password=s3cret"])
    assert merged == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "client.id": "typed",
                      "librdkafka.sasl.username": "app", "librdkafka.sasl.password": "s3cret"}
    assert merge_kafka_properties() == {}


def test_each_client_library_gets_its_view() -> None:
    merged = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "java.sasl.jaas.config": "jaas;",
        "java.ssl.truststore.location": "/t.jks",
        "librdkafka.sasl.username": "app",
        "librdkafka.ssl.ca.location": "/ca.pem",
        "librdkafka.sasl.mechanism": "SCRAM-SHA-256",  # a scoped key wins over the unscoped one
    }
    assert java_properties(merged) == {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                                       "sasl.jaas.config": "jaas;", "ssl.truststore.location": "/t.jks"}
    assert librdkafka_properties(merged) == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
                                             "sasl.username": "app", "ssl.ca.location": "/ca.pem"}
    assert client_config("h:1", merged, **{"isolation.level": "read_committed", "log_level": 3}) == {
        "bootstrap.servers": "h:1", "isolation.level": "read_committed", "log_level": 3,
        **librdkafka_properties(merged)}
    assert java_properties(None) == librdkafka_properties(None) == {}


@pytest.mark.parametrize("item, message", [
    ("bootstrap.servers=x:1", "use --bootstrap"),
    ("java.isolation.level=read_uncommitted", "set by freshrank"),
    ("librdkafka.group.id=g", "set by freshrank"),
    ("transactional.id=t", "set by freshrank"),
    ("sasl.jaas.config=x", "java.sasl.jaas.config"),  # librdkafka would refuse it
    ("ssl.truststore.location=/t.jks", "java.ssl.truststore.location"),
    ("java.=x", "names no property"),
])
def test_refused_keys(item: str, message: str) -> None:
    with pytest.raises(KafkaPropertiesError, match=message):
        merge_kafka_properties(items=[item])


def test_refused_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ops.properties"
    path.write_text("sasl.jaas.config=x\n")
    with pytest.raises(KafkaPropertiesError, match="ops.properties"):
        merge_kafka_properties([path])


def test_java_only_keys_are_accepted_by_the_java_client_only() -> None:
    """The confluent-kafka client refuses what JAVA_ONLY_KEYS lists and takes the common keys."""
    from confluent_kafka import KafkaException, Producer

    from clients.kafka_properties import JAVA_ONLY_KEYS

    with pytest.raises(KafkaException):
        Producer({"bootstrap.servers": "127.0.0.1:1", "sasl.jaas.config": "x"})
    assert "sasl.jaas.config" in JAVA_ONLY_KEYS
    common = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "u",
              "sasl.password": "p", "ssl.endpoint.identification.algorithm": "none"}
    Producer(client_config("127.0.0.1:1", common))  # constructs: every key known to librdkafka


def test_properties_file_for_a_child_round_trips_and_is_private(tmp_path: Path) -> None:
    properties = {"security.protocol": "SSL", "java.sasl.jaas.config": 'M required password="a\\b";',
                  "odd key=:#!": " leading blank\tand\nnewline", "librdkafka.ssl.key.password": "#!x"}
    assert parse_properties(properties_text(properties)) == properties
    path = write_properties_file(properties, tmp_path / "child" / "kafka.properties")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_properties_file(path) == properties


def test_cli_merges_files_env_and_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "env.properties"
    env_file.write_text("client.id=from-env\nsecurity.protocol=SSL\n")
    typed_file = tmp_path / "typed.properties"
    typed_file.write_text("client.id=from-file\n")
    monkeypatch.setenv("FRESHRANK_KAFKA_PROPERTIES", str(env_file))
    parser = build_parser()
    args = parser.parse_args(["topics", "create", "--kafka-property", "client.id=typed"])
    assert kafka_properties_of(args) == {"client.id": "typed", "security.protocol": "SSL"}  # env file, then item
    args = parser.parse_args(["run", "--kafka-properties", str(typed_file)])
    assert kafka_properties_of(args) == {"client.id": "from-file"}  # a typed file replaces the env's
    for command in (["produce"], ["rank", "--user", "u", "--candidates", "a"], ["serve-demo"], ["demo", "--kafka"],
                    ["bench", "--kafka"]):
        args = parser.parse_args([*command, "--kafka-property", "a.b=c"])
        assert kafka_properties_of(args) == {"security.protocol": "SSL", "client.id": "from-env", "a.b": "c"}
    args = parser.parse_args(["produce", "--kafka-property", "bootstrap.servers=x"])
    with pytest.raises(UsageError, match="use --bootstrap"):
        kafka_properties_of(args)


# --- SQL quoting -----------------------------------------------------------------------------------------


def test_sql_literals_and_identifiers() -> None:
    assert sql_string("it's") == "'it''s'"
    assert sql_string("a'); DROP TABLE x; --") == "'a''); DROP TABLE x; --'"
    assert sql_string(900000) == "'900000'"
    assert sql_identifier("sink_`x") == "`sink_``x`"
    assert sql_with_options({"topic": "t'1", "properties.sasl.jaas.config": 'M required password="p\'w";'}) == (
        "'topic' = 't''1',\n'properties.sasl.jaas.config' = 'M required password=\"p''w\";'")
    with pytest.raises(ValueError):
        sql_string("a\x00b")
    with pytest.raises(ValueError):
        sql_identifier("")


def test_sink_ddl_keeps_a_quote_in_a_value_inside_its_literal() -> None:
    """Flink's own SQL parser reads the quoted options back exactly (no job runs)."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    options = {"connector": "blackhole", "x.topic": "ev'il', 'connector' = 'filesystem"}
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {sql_identifier('q')} (v BYTES) WITH (\n{sql_with_options(options)}\n)")
    ddl = t_env.execute_sql("SHOW CREATE TABLE q").collect()
    with ddl:
        text = next(iter(ddl))[0]
    assert "'x.topic' = 'ev''il'', ''connector'' = ''filesystem'" in text
    assert "'connector' = 'blackhole'" in text


# --- topic retention --------------------------------------------------------------------------------------


def test_retention_defaults_to_forever_and_the_snapshot_topic_is_never_deleted_by_time() -> None:
    configs = topic_configs()
    for key, topic in DEFAULT_TOPICS.as_dict().items():
        # the learners' internal loop is read from its end: an hour is plenty
        assert configs[topic]["retention.ms"] == ("3600000" if key == "item_loop" else "-1")
        assert configs[topic]["cleanup.policy"] == ("compact" if key == "snapshots" else "delete")
    week = 7 * 86_400_000
    configs = topic_configs(retention_ms=week)
    assert {configs[t]["retention.ms"] for k, t in DEFAULT_TOPICS.as_dict().items() if k != "snapshots"} == {
        str(week)}
    assert configs[DEFAULT_TOPICS.snapshots]["retention.ms"] == "-1"
    for bad in (0, -2):
        with pytest.raises(ValueError, match="forever"):
            topic_configs(retention_ms=bad)


def test_topics_create_option() -> None:
    args = build_parser().parse_args(["topics", "create", "--retention-ms", "3600000"])
    assert args.retention_ms == 3_600_000
    assert build_parser().parse_args(["topics", "create"]).retention_ms == -1


# --- Flink settings: loopback, web submit, state dirs --------------------------------------------------------


def test_local_runs_bind_to_loopback_and_cluster_submissions_carry_no_cluster_keys() -> None:
    settings = flink_env.flink_settings()
    local = flink_env.job_settings(settings, local=True)
    for key in ("rest.bind-address", "rest.address", "jobmanager.bind-host", "taskmanager.bind-host"):
        assert local[key] in ("localhost", "127.0.0.1"), key
    # A free port each and the MiniCluster's own slots: not the standalone cluster's.
    assert not {"rest.port", "jobmanager.rpc.port", "taskmanager.numberOfTaskSlots"} & set(local)
    assert local["web.submit.enable"] == "false" and local["web.cancel.enable"] == "false"
    cluster = flink_env.job_settings(settings)
    assert not [key for key in cluster if key.startswith(flink_env.CLUSTER_KEY_PREFIXES)]


def test_local_runs_get_the_network_buffers_that_let_the_upstream_run_ahead_of_the_learner() -> None:
    # 32 KB buffers (Flink's default, 10 per channel) made the batch window block mid-row whenever the
    # learner was busy (docs/performance-log.md); a MiniCluster reads its network settings from the job's.
    settings = flink_env.flink_settings()
    local = flink_env.job_settings(settings, local=True)
    for key in ("taskmanager.memory.segment-size", "taskmanager.memory.network.min",
                "taskmanager.memory.network.max"):
        assert local[key] == settings[key], key
    assert local["taskmanager.memory.segment-size"] == "1mb"
    # Under `flink run` they are the cluster's (its TaskManagers read them from config.yaml).
    assert "taskmanager.memory.segment-size" not in flink_env.job_settings(settings)


def test_state_dirs_are_private_and_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = flink_env.state_dirs()
    root = tmp_path / ".freshrank"
    assert default == {flink_env.CHECKPOINT_DIR_KEY: (root / "checkpoints").as_uri(),
                       flink_env.SAVEPOINT_DIR_KEY: (root / "checkpoints" / "savepoints").as_uri()}
    for folder in (root, root / "checkpoints", root / "checkpoints" / "savepoints"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder

    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    chosen = flink_env.state_dirs(loose)
    assert chosen[flink_env.CHECKPOINT_DIR_KEY] == loose.as_uri()
    assert chosen[flink_env.SAVEPOINT_DIR_KEY] == (loose / "savepoints").as_uri()
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700  # tightened
    assert flink_env.state_dirs(f"file://{tmp_path}/uri")[flink_env.CHECKPOINT_DIR_KEY] == (tmp_path / "uri").as_uri()
    assert flink_env.state_dirs("s3://bucket/ck") == {flink_env.CHECKPOINT_DIR_KEY: "s3://bucket/ck",
                                                      flink_env.SAVEPOINT_DIR_KEY: "s3://bucket/ck/savepoints"}
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        flink_env.private_dir(tmp_path / "file")


def test_checkpoint_dir_option_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for command in (["replay", "--impressions", "i", "--clicks", "c", "--out", "o"], ["run"], ["demo"], ["bench"]):
        assert build_parser().parse_args([*command, "--checkpoint-dir", "/x"]).checkpoint_dir == "/x"
    monkeypatch.setenv("FRESHRANK_CHECKPOINT_DIR", "/from-env")
    assert build_parser().parse_args(["run"]).checkpoint_dir == "/from-env"


def test_child_jobs_get_properties_as_a_file_and_the_checkpoint_dir(tmp_path: Path) -> None:
    """`demo --kafka` / `bench --kafka` start `freshrank run` with the properties in an owner-only file
    (never their values on the command line) and their checkpoint dir."""
    from job.config import JobConfig
    from tools.kafka_demo import job_properties_file, run_args

    assert job_properties_file({}, tmp_path) is None
    path = job_properties_file({"librdkafka.sasl.password": "s3cret"}, tmp_path)
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    args = run_args("h:1", "-x", JobConfig(), group_id="g", job_name="j", checkpoint_interval_s=1.0,
                    kafka_properties_file=path, checkpoint_dir=tmp_path / "ck")
    assert "s3cret" not in " ".join(args)
    parsed = build_parser().parse_args(args)
    assert parsed.kafka_properties == [str(path.resolve())] and parsed.checkpoint_dir == str(tmp_path / "ck")
    assert kafka_properties_of(parsed) == {"librdkafka.sasl.password": "s3cret"}


def test_a_local_run_starts_its_jvm_with_the_taskmanager_jvm_options(tmp_path: Path) -> None:
    # A local run's MiniCluster is the gateway JVM: it must run as the cluster's TaskManagers do.
    options = flink_env.flink_settings()[flink_env.TASKMANAGER_JVM_OPTIONS_KEY].split()
    assert options
    assert flink_env.TASKMANAGER_JVM_OPTIONS_KEY not in flink_env.job_settings(flink_env.flink_settings(), local=True)
    program = ("from job.flink_env import make_environment\n"
               "make_environment()\n"
               "import os\n"
               "assert 'JVM_ARGS' not in os.environ, 'JVM_ARGS left behind for later JVMs'\n"
               "from pyflink.java_gateway import get_gateway\n"
               "runtime = get_gateway().jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()\n"
               "print('\\n'.join(runtime.getInputArguments()))\n")
    env = {key: value for key, value in os.environ.items() if key not in ("JVM_ARGS", "PYFLINK_GATEWAY_PORT")}
    done = subprocess.run([sys.executable, "-c", program], cwd=flink_env.IMPORT_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(options) <= set(done.stdout.split("\n")), done.stdout
