"""A real single-node Kafka broker (KRaft, broker and controller in one JVM) on 127.0.0.1.

Why: tests and local runs need real Kafka semantics (transactions for Flink's exactly-once sink,
compacted topics, consumer groups) and this machine has no docker and no Kafka tarball, only Maven
Central; `job.jars` fetches the broker's jars and this module runs `kafka.Kafka` from them.

    with KafkaBroker(port=0) as broker:
        create_topics(broker.bootstrap_servers, {"impressions": 4, "items": 1}, compacted={"items"})  # clients.admin

From a shell (pid file in the data dir, so a test script can start one broker and reuse it):

    python -m infra.kafka_broker start --port 9092 --data-dir .cache/kafka   # prints host:port
    python -m infra.kafka_broker status --data-dir .cache/kafka
    python -m infra.kafka_broker stop --data-dir .cache/kafka
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from clients.admin import BrokerUnreachable, admin_client, require_broker
from infra.ports import free_port, port_accepts, port_is_free
from infra.processes import command_line, java_bin, log_tail, send_signal
from infra.waiting import wait_until
from job import jars
from job.paths import cache_dir

DEFAULT_PORT = 9092
DEFAULT_CLI_DATA_DIR = cache_dir() / "kafka"
PID_FILE = "broker.pid"
BOOTSTRAP_FILE = "bootstrap.txt"
LOG_FILE = "broker.log"
NODE_ID = 1

LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""


class BrokerError(RuntimeError):
    """The broker could not be started, reached or stopped; the message carries the log's tail."""


def random_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64, unpadded (as `kafka-storage random-uuid`)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids these too: they read like command-line flags
            return text


try:  # loaded here, not in the forked child, where taking the loader's lock could deadlock
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, so a crashed test run leaves no broker."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class KafkaBroker:
    """One KRaft broker+controller JVM on 127.0.0.1; a context manager that starts and stops it.

    `port=0` picks a free port (as does `controller_port=0`). Without `data_dir` a temporary folder
    is used and removed on `stop()`; a given `data_dir` is kept and reused (formatted only once).
    `extra_config` adds or overrides server.properties entries. `warm_up` (about 1 s) makes `start()`
    also load the group and transaction coordinators, which Kafka otherwise does on first use: the
    first consumer group or (idempotent, the default) producer would wait on "coordinator load in
    progress", which skews latency measurements and the first test.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        data_dir: str | os.PathLike[str] | None = None,
        controller_port: int = 0,
        *,
        heap: str = "512m",
        extra_config: Mapping[str, object] | None = None,
        warm_up: bool = True,
    ) -> None:
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.extra_config = dict(extra_config or {})
        self.warm_up = warm_up
        self._owns_data_dir = data_dir is None
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self._process: subprocess.Popen[bytes] | None = None

    # --- public --------------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """`host:port` for Kafka clients (`bootstrap.servers`)."""
        if not self.port:
            raise BrokerError("port not chosen yet: call start() first")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / LOG_FILE

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 60.0, *, detach: bool = False) -> KafkaBroker:
        """Format storage (first time only), launch the JVM and wait until the broker serves metadata.

        `detach=True` puts the broker in its own session and does not tie it to this process's life
        (for the command line's `start`); otherwise it gets SIGTERM when this process dies.
        """
        if self.is_running():
            return self
        deadline = time.monotonic() + timeout_s
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="freshrank-kafka-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port()
        if self.controller_port == 0:
            self.controller_port = free_port()
            while self.controller_port == self.port:
                self.controller_port = free_port()
        for port in (self.port, self.controller_port):
            if not port_is_free(port):
                raise BrokerError(f"port {port} on 127.0.0.1 is already in use (another broker?)")

        classpath = os.pathsep.join(str(p) for p in jars.kafka_broker_classpath())
        properties = self._write_config()
        self._format_storage(classpath, properties, deadline)

        command = [*self._jvm(classpath), "kafka.Kafka", str(properties)]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=detach,
                preexec_fn=None if detach else _die_with_parent,
            )
        try:
            self._wait_ready(deadline)
            if self.warm_up:
                self._load_coordinators(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (Kafka's clean shutdown), SIGKILL after `timeout_s`; removes a temporary data dir."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._owns_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals -----------------------------------------------------------------------------

    def _config(self) -> dict[str, object]:
        assert self.data_dir is not None
        config: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": NODE_ID,
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{self.controller_port}",
            # Both listeners on loopback only: PLAINTEXT without authentication is for this machine
            # (tests/test_security.py checks every listening socket of a run).
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self.data_dir / "kraft-logs",
            "num.partitions": 1,
            # Topics are created explicitly (create_topics) with their partition counts and policies.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 4,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 4,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # Flink's exactly-once Kafka sink uses a 1 h transaction timeout by default.
            "transaction.max.timeout.ms": 3_600_000,
            "log.retention.hours": 168,
        }
        config.update(self.extra_config)
        return config

    def _write_config(self) -> Path:
        assert self.data_dir is not None
        (self.data_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in self._config().items()))
        return path

    def _jvm(self, classpath: str) -> list[str]:
        assert self.data_dir is not None
        return [
            str(java_bin() / "java"),
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            # Kafka flushes on its own shutdown; log4j's hook only races it ("JVM is shutting down").
            "-Dlog4j2.shutdownHookEnabled=false",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            classpath,
        ]

    def _format_storage(self, classpath: str, properties: Path, deadline: float) -> None:
        """`kafka-storage format` once per data dir: a formatted one keeps its cluster id and topics."""
        assert self.data_dir is not None
        if (self.data_dir / "kraft-logs" / "meta.properties").is_file():
            return
        command = [
            *self._jvm(classpath),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            random_cluster_id(),
            "--config",
            str(properties),
        ]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
            )
        except subprocess.TimeoutExpired as error:
            raise BrokerError("formatting Kafka storage timed out") from error
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise BrokerError(f"formatting Kafka storage failed (exit {result.returncode}):\n{output}")

    def _wait_ready(self, deadline: float) -> None:
        process = self._process
        assert process is not None

        def ready() -> bool:
            if process.poll() is not None:
                raise BrokerError(f"broker exited with code {process.returncode} while starting; "
                                  f"log {self.log_path}:\n{log_tail(self.log_path)}")
            # Wait for the port first: librdkafka would log every refused connection to stderr.
            return port_accepts(self.port) and _metadata_ok(self.bootstrap_servers, 2.0)

        wait_until(ready, max(deadline - time.monotonic(), 0.0), timeout_error=lambda: BrokerError(
            f"broker not ready in time; log {self.log_path}:\n{log_tail(self.log_path)}"))

    def _load_coordinators(self, deadline: float) -> None:
        """Create and load __consumer_offsets and __transaction_state now rather than on first use."""
        from confluent_kafka import KafkaException, Producer

        admin = admin_client(self.bootstrap_servers)
        while True:
            try:
                admin.describe_consumer_groups(["freshrank-warm-up"])["freshrank-warm-up"].result(5)
                break
            except KafkaException as error:
                if time.monotonic() > deadline:
                    raise BrokerError(f"group coordinator not available: {error}") from error
                time.sleep(0.1)
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "transactional.id": "freshrank-warm-up",
                "log_level": 3,
            }
        )
        try:
            producer.init_transactions(max(1.0, deadline - time.monotonic()))
        except KafkaException as error:
            raise BrokerError(f"transaction coordinator not available: {error}") from error


def _metadata_ok(bootstrap: str, timeout_s: float) -> bool:
    """True once the broker answers a metadata request and lists itself."""
    try:
        require_broker(bootstrap, timeout_s=timeout_s)
    except BrokerUnreachable:
        return False
    return True


# --- command line ------------------------------------------------------------------------------


def _read_pid(data_dir: Path) -> int | None:
    """The pid in the pid file if that process is still our broker (not a recycled pid)."""
    try:
        pid = int((data_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    cmdline = command_line(pid)
    if "kafka.Kafka" in cmdline and str(data_dir / "server.properties") in cmdline:
        return pid
    return None


def _cli_start(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    pid = _read_pid(data_dir)
    if pid is not None:
        print((data_dir / BOOTSTRAP_FILE).read_text().strip())
        print(f"already running (pid {pid})", file=sys.stderr)
        return 0
    started = time.monotonic()
    broker = KafkaBroker(port=args.port, data_dir=data_dir, controller_port=args.controller_port)
    try:
        broker.start(timeout_s=args.timeout, detach=True)
    except BrokerError as error:
        print(error, file=sys.stderr)
        return 1
    pid = broker.pid
    (data_dir / PID_FILE).write_text(f"{pid}\n")
    (data_dir / BOOTSTRAP_FILE).write_text(f"{broker.bootstrap_servers}\n")
    broker._process = None  # detached: it outlives this process; `stop` finds it by the pid file
    print(broker.bootstrap_servers)
    print(f"started (pid {pid}) in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def _cli_stop(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    pid = _read_pid(data_dir)
    if pid is None:
        print("not running", file=sys.stderr)
        (data_dir / PID_FILE).unlink(missing_ok=True)
        return 0
    send_signal(pid, signal.SIGTERM)
    try:
        wait_until(lambda: _read_pid(data_dir) is None, args.timeout)
    except TimeoutError:
        send_signal(pid, signal.SIGKILL)
    (data_dir / PID_FILE).unlink(missing_ok=True)
    print(f"stopped (pid {pid})", file=sys.stderr)
    return 0


def _cli_status(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    pid = _read_pid(data_dir)
    if pid is None:
        print("not running", file=sys.stderr)
        return 1
    bootstrap = (data_dir / BOOTSTRAP_FILE).read_text().strip()
    if not _metadata_ok(bootstrap, 5.0):
        print(f"pid {pid} alive but {bootstrap} does not answer", file=sys.stderr)
        return 2
    print(bootstrap)
    print(f"running (pid {pid})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m infra.kafka_broker") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Run a single-node KRaft Kafka broker in the background.")
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="PLAINTEXT port (0 = any free)")
    parser.add_argument("--controller-port", type=int, default=0, help="controller port (0 = any free)")
    parser.add_argument("--data-dir", default=str(DEFAULT_CLI_DATA_DIR),
                        help="logs, pid file and topic data (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for start/stop")
    args = parser.parse_args(argv)
    return {"start": _cli_start, "stop": _cli_stop, "status": _cli_status}[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
