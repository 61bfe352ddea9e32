"""Nothing a run starts listens beyond loopback; state dirs are owner-only; Kafka client properties
(here SASL/PLAIN) reach every Kafka client of a run.

Listening sockets are read from /proc/net/tcp{,6} (state LISTEN) and matched by inode to the file
descriptors of the processes a run starts (the process tree of the command, or the cluster's daemons),
sampled while they run.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients.topics import TopicNames
from infra.ports import free_port
from tools.generate import GeneratorConfig, generate, write_stream
from tools.kafka_demo import read_topic

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


# --- listening sockets of a set of processes ---------------------------------------------------------------


def _address(hex_address: str, family: int) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc prints the address as 32-bit words in host (little-endian) byte order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw)


def listening_sockets() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every TCP socket in state LISTEN (IPv4 and IPv6)."""
    found = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path(f"/proc/net/{name}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            address, port = fields[1].split(":")
            found[int(fields[9])] = (_address(address, family), int(port, 16))
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:["):-1]))
    except OSError:  # the process has exited
        pass
    return inodes


def process_tree(roots: Iterable[int]) -> set[int]:
    """`roots` and all their descendants (from the parent pids in /proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += children.get(pid, [])
    return tree


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:100]
    except OSError:
        return "?"


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass(frozen=True)
class Listener:
    pid: int
    command: str
    address: str
    port: int


class ListenWatcher:
    """Samples, in a thread, the listening sockets of the processes `roots()` names and their descendants."""

    def __init__(self, roots: Callable[[], Iterable[int]], interval_s: float = 0.2) -> None:
        self.roots = roots
        self.interval_s = interval_s
        self.seen: set[Listener] = set()
        self.samples: dict[Listener, int] = {}  # how many samples saw each listener
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="listen-watcher", daemon=True)

    def sample(self) -> None:
        sockets = listening_sockets()
        for pid in process_tree(self.roots()):
            for inode in socket_inodes(pid) & sockets.keys():
                address, port = sockets[inode]
                listener = Listener(pid, _command(pid), address, port)
                self.seen.add(listener)
                self.samples[listener] = self.samples.get(listener, 0) + 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ListenWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def not_on_loopback(self) -> list[Listener]:
        return sorted((s for s in self.seen if not is_loopback(s.address)), key=lambda s: (s.pid, s.port))

    def serving_beyond_loopback(self) -> list[Listener]:
        """Listeners beyond loopback seen in two samples or more (alive for at least one interval).

        Once in seven full CI runs a JVM socket on `::` showed up in a single 0.2 s sample, and never
        again: the pattern of a free-port probe (bind a ServerSocket to port 0 on the wildcard address,
        read its port, close it), which Flink and PyFlink use to pick ports. A socket that lives for
        microseconds serves nothing; one that lasts a sampling interval is a server and fails the test.
        The single-sample ones are kept in `not_on_loopback()` for the record.
        """
        return [s for s in self.not_on_loopback() if self.samples.get(s, 0) >= 2]

    def ports(self) -> set[int]:
        return {s.port for s in self.seen}


def test_socket_helpers_see_a_listener_and_its_address() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as any_interface, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as loopback:
        any_interface.bind(("::", 0))
        any_interface.listen()
        loopback.bind(("127.0.0.1", 0))
        loopback.listen()
        ports = any_interface.getsockname()[1], loopback.getsockname()[1]
        watcher = ListenWatcher(lambda: [os.getpid()])
        watcher.sample()
        once = {s.port for s in watcher.serving_beyond_loopback()}
        watcher.sample()
        twice = {s.port for s in watcher.serving_beyond_loopback()}
    by_port = {s.port: s.address for s in watcher.seen}
    assert by_port[ports[0]] == "::"
    assert by_port[ports[1]] == "127.0.0.1"
    not_on_loopback = {s.port for s in watcher.not_on_loopback()}  # other tests' listeners may be there too
    assert ports[0] in not_on_loopback and ports[1] not in not_on_loopback
    assert ports[0] not in once and ports[0] in twice and ports[1] not in twice  # a server lasts two samples
    assert is_loopback("::1") and is_loopback("::ffff:127.0.0.1") and not is_loopback("0.0.0.0")


# --- a local run (MiniCluster) ----------------------------------------------------------------------------


# What the MiniCluster logs once its REST endpoint is up: the address it reports is what is checked.
_REST_LINE = re.compile(rb"Rest endpoint listening at ([^\s:]+):(\d+)")


def _rest_config(log_dir: Path, deadline: float, alive: Callable[[], bool]) -> tuple[str, dict]:
    """(host, GET /config) of the MiniCluster whose log is in `log_dir`, once its REST endpoint answers
    (it logs its address before its leader is known, and answers 503 until then)."""
    last_error: Exception | None = None
    while time.monotonic() < deadline and alive():
        for log in sorted(log_dir.glob("*.log")):
            found = _REST_LINE.findall(log.read_bytes())
            if found:
                host, port = found[-1][0].decode(), int(found[-1][1])
                try:
                    with urllib.request.urlopen(f"http://{host}:{port}/config", timeout=5) as response:
                        return host, json.loads(response.read())
                except OSError as error:  # urllib.error.HTTPError/URLError included
                    last_error = error
        time.sleep(0.2)
    raise AssertionError(f"no answering REST endpoint in the logs of {log_dir} (last error: {last_error})")


@pytest.mark.flink
def test_a_local_replay_listens_on_loopback_only_and_keeps_state_private(tmp_path: Path) -> None:
    stream = generate(GeneratorConfig(n_impressions=6000, n_users=80, n_items=60, seed=5))
    files = write_stream(stream, tmp_path / "events")
    log_dir = tmp_path / "flink-log"
    env = {**os.environ, "FLINK_LOG_DIR": str(log_dir)}
    env.pop("FRESHRANK_CHECKPOINT_DIR", None)
    command = [sys.executable, "-m", "tools.cli", "replay", "--impressions", str(files["impressions"]),
               "--clicks", str(files["clicks"]), "--out", str(tmp_path / "out"), "--dim", "8"]
    with open(tmp_path / "replay.log", "wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with ListenWatcher(lambda: [process.pid]) as watcher:
            host, config = _rest_config(log_dir, time.monotonic() + 120, lambda: process.poll() is None)
            code = process.wait(300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, (tmp_path / "replay.log").read_text()[-3000:]
    assert host in ("localhost", "127.0.0.1")
    assert config["features"]["web-submit"] is False and config["features"]["web-cancel"] is False
    # The Py4J gateway and its callback server, the REST endpoint, the blob server ...
    assert len(watcher.seen) >= 3, watcher.seen
    assert watcher.serving_beyond_loopback() == [], watcher.not_on_loopback()
    # Checkpoints under the working directory's .freshrank/, owner-only.
    for folder in (tmp_path / ".freshrank", tmp_path / ".freshrank" / "checkpoints"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


# --- Kafka: the broker and a job over SASL -----------------------------------------------------------------

SASL_USER, SASL_PASSWORD = "app", "app-secret"
# Flink's Kafka SQL connector jar shades the Kafka client: its JAAS login module has the shaded name.
SHADED_PLAIN_LOGIN = "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.plain.PlainLoginModule"


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@pytest.mark.kafka
@pytest.mark.flink
def test_kafka_run_over_sasl_listens_on_loopback_only(tmp_path: Path) -> None:
    """A broker with an extra SASL_PLAINTEXT listener; topics, producer, the job (sources, sinks, catalog
    reader) and the readers all authenticate with properties from one file; no socket beyond loopback."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from infra.kafka_broker import KafkaBroker
    from tools.cli import main

    port, controller_port, sasl_port = _distinct_free_ports(3)
    broker = KafkaBroker(port=port, controller_port=controller_port, extra_config={
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},"
                     f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config":
            f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USER}="{SASL_PASSWORD}";',
    })
    sasl = f"127.0.0.1:{sasl_port}"
    properties_file = tmp_path / "client.properties"
    properties_file.write_text("\n".join([
        "# SASL/PLAIN for both client libraries",
        "security.protocol=SASL_PLAINTEXT",
        "sasl.mechanism=PLAIN",
        f'java.sasl.jaas.config={SHADED_PLAIN_LOGIN} required username="{SASL_USER}" password="{SASL_PASSWORD}";',
        f"librdkafka.sasl.username={SASL_USER}",
        f"librdkafka.sasl.password={SASL_PASSWORD}",
    ]) + "\n")
    properties = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                  "librdkafka.sasl.username": SASL_USER, "librdkafka.sasl.password": SASL_PASSWORD}
    suffix = f"-sec-{uuid.uuid4().hex[:8]}"
    topics = TopicNames().suffixed(suffix)
    kafka = ["--bootstrap", sasl, f"--topic-suffix={suffix}", "--kafka-properties", str(properties_file)]

    with ListenWatcher(lambda: [pid for pid in [broker.pid] if pid]) as broker_watcher:
        broker.start(timeout_s=120)
        try:
            # Without the properties the SASL listener admits no one.
            with pytest.raises(KafkaException):
                AdminClient({"bootstrap.servers": sasl, "log_level": 0}).list_topics(timeout=3)

            assert main(["topics", "create", *kafka, "--partitions", "2"]) == 0
            assert main(["produce", "--generate", "400", "--generate-users", "30", "--generate-items", "30",
                         "--seed", "4", "--speedup", "5000", "--quiet", *kafka]) == 0

            env = {**os.environ, "FLINK_LOG_DIR": str(tmp_path / "flink-log")}
            env.pop("FRESHRANK_CHECKPOINT_DIR", None)
            command = [sys.executable, "-m", "tools.cli", "run", *kafka, "--bounded", "--group-id",
                       f"sec-{uuid.uuid4().hex[:6]}", "--checkpoint-interval", "1", "--window", "60",
                       "--max-disorder", "2", "--dim", "8", "--snapshot-interval", "1"]
            with open(tmp_path / "run.log", "wb") as log:
                job = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                with ListenWatcher(lambda: [job.pid]) as job_watcher:
                    code = job.wait(420)
            finally:
                if job.poll() is None:
                    job.kill()
                    job.wait()
            assert code == 0, (tmp_path / "run.log").read_text()[-4000:]

            produced = {i["impression_id"] for i in generate(GeneratorConfig(
                n_impressions=400, n_users=30, n_items=30, seed=4)).impressions}
            examples = read_topic(sasl, topics.examples, "LabeledExample", timeout_s=60, kafka_properties=properties)
            ids = [e["impression_id"] for e in examples]
            assert ids and len(ids) == len(set(ids)) and set(ids) <= produced
            assert read_topic(sasl, topics.snapshots, "ModelSnapshot", timeout_s=60, kafka_properties=properties)
        finally:
            broker.stop()

    assert {port, controller_port, sasl_port} <= broker_watcher.ports()
    assert broker_watcher.serving_beyond_loopback() == [], broker_watcher.not_on_loopback()
    assert len(job_watcher.seen) >= 3, job_watcher.seen
    assert job_watcher.serving_beyond_loopback() == [], job_watcher.not_on_loopback()
    assert stat.S_IMODE((tmp_path / ".freshrank" / "checkpoints").stat().st_mode) == 0o700


# --- the standalone cluster ----------------------------------------------------------------------------------


@pytest.mark.flink
@pytest.mark.slow
def test_standalone_cluster_listens_on_loopback_only(kafka_broker: str, tmp_path: Path) -> None:
    """Its daemons bind to loopback, with a job running; `flink run` submits and REST cancels with web
    submit/cancel off; the job checkpoints into the cluster's own (owner-only) folder."""
    from clients.topics import create_all
    from infra.cluster import StandaloneCluster

    suffix = f"-sec-{uuid.uuid4().hex[:8]}"
    create_all(kafka_broker, TopicNames().suffixed(suffix), partitions=1)
    cluster = StandaloneCluster(tmp_path / "cluster", rest_port=0, slots=1)
    with ListenWatcher(lambda: cluster._pid_file_pids() if cluster.home else []) as watcher:
        with cluster:
            config = cluster.rest("/config")
            job_id = cluster.submit(["--bootstrap", kafka_broker, f"--topic-suffix={suffix}", "--dim", "8",
                                     "--group-id", f"sec-{uuid.uuid4().hex[:6]}", "--checkpoint-interval", "1"],
                                    parallelism=1)
            try:
                cluster.wait_running(job_id, timeout_s=180)
                deadline = time.monotonic() + 60
                while not (cluster.checkpoint_dir / job_id).is_dir() and time.monotonic() < deadline:
                    time.sleep(0.5)
                time.sleep(1.0)  # a few more samples of every daemon with the job's tasks deployed
            finally:
                cluster.cancel(job_id)
            assert cluster.job_status(job_id) == "CANCELED"
    assert (cluster.checkpoint_dir / job_id).is_dir(), "the job did not checkpoint into the cluster's folder"
    assert cluster.rest_port in watcher.ports()
    assert watcher.serving_beyond_loopback() == [], watcher.not_on_loopback()
    assert config["features"]["web-submit"] is False and config["features"]["web-cancel"] is False
    for folder in (cluster.checkpoint_dir, cluster.savepoint_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
