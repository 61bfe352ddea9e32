"""A StreamExecutionEnvironment configured from flink-conf/config.yaml plus the job's options."""

from __future__ import annotations

import os
import re
import site
import stat
import sys
from pathlib import Path
from typing import Any

import yaml
from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment

from job.paths import IMPORT_ROOT, cache_dir, flink_conf_dir

CHECKPOINT_DIR_KEY = "execution.checkpointing.dir"
SAVEPOINT_DIR_KEY = "execution.checkpointing.savepoint-dir"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return flat


def flink_settings(conf_dir: Path | None = None) -> dict[str, str]:
    """The settings of `config.yaml` (freshrank's, unless `conf_dir` names another) as flat Flink keys."""
    conf_dir = conf_dir or flink_conf_dir()
    return _flatten(yaml.safe_load((conf_dir / "config.yaml").read_text()) or {})


# Settings of the cluster processes (start-cluster.sh reads them from config.yaml). They must not
# travel in a job's own configuration: the job's settings win over the cluster's for the submission,
# so a `rest.port` there would decide which cluster `flink run` submits to (env.*: how the scripts
# start the JVMs, nothing a job reads).
CLUSTER_KEY_PREFIXES = ("rest.", "jobmanager.", "taskmanager.", "env.")
TASKMANAGER_JVM_OPTIONS_KEY = "env.java.opts.taskmanager"

# A local run is its own cluster (a MiniCluster in the gateway JVM), which reads its server settings
# from the job's configuration: it keeps these, so that its REST endpoint, RPC and blob servers bind
# to loopback like the standalone cluster's (without them the REST endpoint, which accepts job
# submissions, listens on every interface), and the network buffers' size and memory (the job's
# throughput depends on them, see config.yaml). Ports, slots and other memory stay the MiniCluster's
# own (a free port each; as many slots as the job needs), so local runs and a cluster can run side by side.
LOCAL_CLUSTER_KEYS = ("rest.address", "rest.bind-address", "jobmanager.bind-host", "taskmanager.bind-host",
                      "taskmanager.host", "taskmanager.memory.segment-size", "taskmanager.memory.network.min",
                      "taskmanager.memory.network.max")


def under_flink_client() -> bool:
    """True when this program runs under `flink run -py` (the client starts it with the gateway's port
    in PYFLINK_GATEWAY_PORT); a local run launches its own gateway and MiniCluster instead."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def job_settings(settings: dict[str, str], *, local: bool = False) -> dict[str, str]:
    """`settings` without the cluster-level keys; a `local` run keeps the MiniCluster's bind addresses."""
    return {key: value for key, value in settings.items()
            if not key.startswith(CLUSTER_KEY_PREFIXES) or (local and key in LOCAL_CLUSTER_KEYS)}


def private_dir(path: str | os.PathLike[str]) -> Path:
    """`path` (made absolute) as a directory only its owner can enter (0700): created so with any
    missing parents, an existing one of ours tightened to 0700. Checkpoints and savepoints hold the
    whole model and every user's vector, so another account on the machine must not read them.

    Raises PermissionError if the directory belongs to another user (e.g. a shared /tmp path).
    """
    target = Path(path).expanduser().absolute()
    missing = []
    for folder in [target, *target.parents]:
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    info = target.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{target} is not a directory")
    if info.st_uid != os.getuid():
        raise PermissionError(f"{target} belongs to another user (uid {info.st_uid}); choose a directory of your own")
    if stat.S_IMODE(info.st_mode) != 0o700:
        target.chmod(0o700)
    return target


def _state_dir_uri(value: str) -> str:
    """A checkpoint/savepoint dir of config.yaml or an option as a Flink URI. Local paths (relative
    ones resolved against the working directory, where a run's outputs go too) are created 0700;
    other schemes (s3://, hdfs://...) are passed through: their access control is the store's."""
    if "://" in value and not value.startswith("file://"):
        return value
    path = Path(value[len("file://"):]) if value.startswith("file://") else Path(value)
    return private_dir(path).as_uri()


def state_dirs(checkpoint_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The checkpoint and savepoint dirs of a run as Flink settings: `checkpoint_dir` if given (savepoints
    without a target of their own in its `savepoints/`), else config.yaml's (under the working directory)."""
    if checkpoint_dir is not None:
        root = str(checkpoint_dir).rstrip("/")
        return {CHECKPOINT_DIR_KEY: _state_dir_uri(root), SAVEPOINT_DIR_KEY: _state_dir_uri(f"{root}/savepoints")}
    settings = flink_settings()
    return {key: _state_dir_uri(settings[key]) for key in (CHECKPOINT_DIR_KEY, SAVEPOINT_DIR_KEY) if key in settings}


PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def prometheus_reporter(ports: str) -> dict[str, str]:
    """Flink settings that expose every metric (the job's `freshrank` groups included) to Prometheus
    at `http://HOST:PORT/metrics`. `ports` is a port or a range `9250-9260`: each JVM of a cluster
    (JobManager, TaskManagers) takes the first free one. Flink's reporter has no bind-address
    setting and listens on every interface, so it is off unless asked for (`--prometheus-port`)."""
    if not re.fullmatch(r"\d{1,5}(-\d{1,5})?", ports):
        raise ValueError(f"a Prometheus port must be a number or a range like 9250-9260, not {ports!r}")
    return {"metrics.reporter.prom.factory.class": PROMETHEUS_FACTORY, "metrics.reporter.prom.port": ports}


def _reporters_on_local_classpath() -> None:
    """A local run's MiniCluster finds metric reporters on the gateway JVM's classpath only (it has no
    plugin manager), and PyFlink builds that classpath from FLINK_LIB_DIR: point it at a folder of
    links to the wheel's lib/ jars plus its Prometheus reporter plugin. Must run before the gateway."""
    from pyflink import java_gateway
    from pyflink.find_flink_home import _find_flink_home

    if java_gateway._gateway is not None:
        raise RuntimeError("the Prometheus reporter must be set up before the Flink gateway starts")
    home = Path(_find_flink_home())
    jars = [*sorted((home / "lib").glob("*.jar")), *sorted((home / "plugins" / "metrics-prometheus").glob("*.jar"))]
    local_lib = cache_dir() / "flink-local-lib"
    local_lib.mkdir(parents=True, exist_ok=True)
    # Links are only added or corrected, never all removed first: another run may be starting from them.
    wanted = {jar.name: jar for jar in jars}
    for entry in local_lib.iterdir():
        if entry.name not in wanted:
            entry.unlink()
    for name, jar in wanted.items():
        link = local_lib / name
        if not (link.is_symlink() and link.resolve() == jar.resolve()):
            link.unlink(missing_ok=True)
            link.symlink_to(jar)
    os.environ["FLINK_LIB_DIR"] = str(local_lib)


def _start_local_gateway(jvm_options: str) -> None:
    """Start the gateway JVM, which is a local run's MiniCluster, with the TaskManagers' JVM options of
    config.yaml: PyFlink starts it with JVM_ARGS, set only for the start (Flink's own scripts read
    JVM_ARGS too, for a cluster or `flink run` this process may start later). A JVM_ARGS the user set
    wins; a gateway already up (a second environment in one process) keeps its own."""
    from pyflink import java_gateway

    if java_gateway._gateway is not None or not jvm_options or "JVM_ARGS" in os.environ:
        java_gateway.get_gateway()
        return
    os.environ["JVM_ARGS"] = jvm_options
    try:
        java_gateway.get_gateway()
    finally:
        del os.environ["JVM_ARGS"]


def make_environment(overrides: dict[str, str] | None = None,
                     checkpoint_dir: str | os.PathLike[str] | None = None,
                     prometheus_ports: str | None = None,
                     rest_port: int | None = None) -> StreamExecutionEnvironment:
    """A local (or, under `flink run`, cluster) environment with our settings applied.

    `checkpoint_dir` (e.g. `--checkpoint-dir`) replaces config.yaml's checkpoint and savepoint dirs.
    Under `flink run` without it, the cluster's own config names them (infra/cluster.py: its home).
    `prometheus_ports` turns on Flink's Prometheus reporter (`prometheus_reporter`) for a local run;
    under `flink run` reporters are the cluster's (`python -m infra.cluster start --prometheus-port`).
    `rest_port` fixes a local run's REST endpoint (web UI, job status) instead of a free port.
    """
    # Thread mode embeds CPython in the JVM (PemJa); it sees a venv's packages only via PYTHONPATH,
    # which the JVM inherits from this process when the gateway starts.
    paths = [*site.getsitepackages(), str(IMPORT_ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    local = not under_flink_client()
    all_settings = flink_settings()
    settings = job_settings(all_settings, local=local)
    for key in (CHECKPOINT_DIR_KEY, SAVEPOINT_DIR_KEY):
        settings.pop(key, None)
    if local or checkpoint_dir is not None:
        settings.update(state_dirs(checkpoint_dir))
    settings["python.executable"] = sys.executable
    settings["python.client.executable"] = sys.executable
    settings.update(overrides or {})
    if rest_port is not None:
        if not local:
            raise ValueError("under `flink run` the REST endpoint is the cluster's: leave --rest-port out")
        settings["rest.port"] = settings["rest.bind-port"] = str(rest_port)
    if prometheus_ports is not None:
        if not local:
            raise ValueError("under `flink run` the cluster's config sets metric reporters: start the cluster "
                             "with --prometheus-port instead")
        settings.update(prometheus_reporter(prometheus_ports))
        _reporters_on_local_classpath()
    if local and settings.get("python.execution-mode") == "thread":
        # PyFlink starts a gRPC "loopback" worker pool in this process for local runs, on every
        # interface ([::]:0), for Python workers in process mode; thread mode never calls it. This
        # (PyFlink's own) switch leaves it out, so nothing of a local run listens beyond loopback.
        os.environ.setdefault("_python_worker_execution_mode", "process")
    if local:
        _start_local_gateway(all_settings.get(TASKMANAGER_JVM_OPTIONS_KEY, ""))
    config = Configuration()
    for key, value in settings.items():
        config.set_string(key, value)
    return StreamExecutionEnvironment.get_execution_environment(config)
