"""A Flink standalone session cluster (one JobManager, one TaskManager) run from the pip-installed Flink.

The apache-flink wheel ships `pyflink/bin/{start-cluster.sh,stop-cluster.sh,flink}`. This module runs
them against a generated cluster folder ("home"), never against the venv's own `pyflink/conf` or
`pyflink/lib`, which it leaves untouched:

    home/conf/        FLINK_CONF_DIR: config.yaml = the wheel's conf/config.yaml (its Java 17
                      --add-opens), then flink-conf/config.yaml, then the cluster's own settings
                      (ports, slots, python.executable, checkpoint and savepoint dirs); log4j files,
                      masters and workers (localhost)
    home/lib/         FLINK_LIB_DIR: links to pyflink/lib/*.jar plus pyflink/opt/flink-python-*.jar, so
                      PemJa loads once per TaskManager JVM (a second thread-mode job on the same
                      TaskManager otherwise fails with `NoSuchFieldException: loadedLibraryNames`)
    home/log/         FLINK_LOG_DIR: JobManager, TaskManager and client logs
    home/pid/         FLINK_PID_DIR: the daemons' pid files (not the shared /tmp default)
    home/checkpoints/, home/savepoints/  (owner-only, 0700: they hold the whole model)
    home/cluster.json the REST port and daemon pids, for `python -m infra.cluster status|stop`

Thread mode embeds CPython in the TaskManager JVM, which sees the venv's packages and this repository
only through the PYTHONPATH it inherits, and finds its standard library from `python3` on PATH: every
script runs with PYTHONPATH=<site-packages>:<repo>, the venv's bin/ first on PATH, then java's folder,
and the venv's interpreter as `python.executable` and client executable.

    with StandaloneCluster() as cluster:                   # free REST port, temporary home
        job_id = cluster.submit(["--bootstrap", "localhost:9092", "--parallelism", "2"])
        savepoint = cluster.stop_with_savepoint(job_id)
        job_id = cluster.submit_from_savepoint(savepoint, [...same options...])

From a shell (home `.cache/flink-cluster`, REST port 8081 unless `--port`):

    python -m infra.cluster start [--port 8081] [--home DIR]     # prints `export` lines for the raw client
    python -m infra.cluster submit [-s SAVEPOINT] [-p 2] -- --bootstrap localhost:9092 ...   # prints the job id
    python -m infra.cluster stop-job JOB_ID                      # stop with savepoint; prints its path
    python -m infra.cluster status | env | cancel JOB_ID | stop

Submitting runs `flink run -py job/main.py`; the job's own configuration carries job-level settings
only (`job.flink_env.job_settings`), so the client submits to the cluster its FLINK_CONF_DIR names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from infra.flink_rest import flink_rest
from infra.ports import free_port, port_is_free
from infra.processes import alive, command_line, java_bin, last_lines, log_tail, pin_to_cpus, send_signal
from infra.waiting import wait_until
from job.paths import IMPORT_ROOT, cache_dir, flink_conf_dir, main_py

DEFAULT_HOME = cache_dir() / "flink-cluster"
DEFAULT_REST_PORT = 8081
STATE_FILE = "cluster.json"
# Keys of the program's configuration that belong to the cluster, not to a job (see the module doc).
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELED", "SUSPENDED"})

_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")
_SAVEPOINT_PATH = re.compile(r"Savepoint completed\. Path: (\S+)")


class ClusterError(RuntimeError):
    """The cluster could not be started, reached or used; the message carries the relevant log tail."""


def pyflink_home() -> Path:
    """The installed `pyflink` package folder: the Flink distribution of the apache-flink wheel."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def _cmdline(pid: int) -> str:
    return " ".join(command_line(pid))


class StandaloneCluster:
    """One JobManager + `taskmanagers` TaskManagers on localhost; a context manager that starts and stops them.

    Several TaskManagers are how a thread-mode job uses more than one core for Python: each
    TaskManager JVM embeds one interpreter, whose lock all of its slots share.

    `rest_port=0` picks a free port. Without `home` a temporary folder is used (kept after `stop()`,
    like pytest's tmp_path, so logs survive a failure; `remove_home=True` deletes it). `config`
    adds or overrides Flink settings of the generated config.yaml. `cpus_per_taskmanager` > 0 runs each
    TaskManager on CPUs of its own (the first TaskManager on the first CPUs this process may use, the
    next on the next ones): what a TaskManager does with one core, and what a second one adds, measured
    on one machine as on separate ones. The JobManager and everything else stay free.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        rest_port: int = 0,
        *,
        slots: int = 2,
        taskmanagers: int = 1,
        python: str | os.PathLike[str] = sys.executable,
        config: dict[str, Any] | None = None,
        remove_home: bool = False,
        cpus_per_taskmanager: int = 0,
    ) -> None:
        self.home = Path(home).resolve() if home is not None else None
        self.rest_port = rest_port
        self.slots = slots
        if taskmanagers < 1:
            raise ValueError(f"taskmanagers must be at least 1, not {taskmanagers}")
        self.taskmanagers = taskmanagers
        self.python = str(python)
        self.extra_config = {key: str(value) for key, value in (config or {}).items()}
        self.remove_home = remove_home
        if cpus_per_taskmanager < 0:
            raise ValueError(f"cpus_per_taskmanager must not be negative, not {cpus_per_taskmanager}")
        self.cpus_per_taskmanager = cpus_per_taskmanager
        self._pids: list[int] = []
        self._cpu_sets: dict[int, int] = {}  # TaskManager pid -> its CPU set's index (see _pin_taskmanagers)

    # --- paths and environment ------------------------------------------------------------------

    def _home(self) -> Path:
        if self.home is None:
            raise ClusterError("cluster not started: no home folder yet")
        return self.home

    @property
    def conf_dir(self) -> Path:
        return self._home() / "conf"

    @property
    def lib_dir(self) -> Path:
        return self._home() / "lib"

    @property
    def log_dir(self) -> Path:
        return self._home() / "log"

    @property
    def pid_dir(self) -> Path:
        return self._home() / "pid"

    @property
    def checkpoint_dir(self) -> Path:
        return self._home() / "checkpoints"

    @property
    def savepoint_dir(self) -> Path:
        return self._home() / "savepoints"

    @property
    def rest_url(self) -> str:
        if not self.rest_port:
            raise ClusterError("cluster not started: no REST port yet")
        return f"http://localhost:{self.rest_port}"

    @property
    def flink_bin(self) -> Path:
        return pyflink_home() / "bin"

    def env(self) -> dict[str, str]:
        """The environment for Flink's scripts and the `flink` client against this cluster."""
        env = dict(os.environ)
        python_path = [*site.getsitepackages(), str(IMPORT_ROOT)]
        if env.get("PYTHONPATH"):
            python_path.append(env["PYTHONPATH"])
        env.update(
            FLINK_CONF_DIR=str(self.conf_dir),
            FLINK_LIB_DIR=str(self.lib_dir),
            FLINK_LOG_DIR=str(self.log_dir),
            FLINK_PID_DIR=str(self.pid_dir),
            PYTHONPATH=os.pathsep.join(python_path),
            PYFLINK_CLIENT_EXECUTABLE=self.python,
            # The interpreter's folder first: thread mode's embedded CPython finds its standard library
            # from `python3` on PATH; a system python3 first (e.g. /usr/bin, next to java) gives it a
            # foreign stdlib ("No module named '_struct'"). Java from its real folder, not /usr/bin.
            PATH=os.pathsep.join([str(Path(self.python).parent), str(java_bin()), env.get("PATH", "")]),
            FLINK_IDENT_STRING=env.get("FLINK_IDENT_STRING") or env.get("USER") or "freshrank",
        )
        env.pop("FLINK_HOME", None)  # the scripts derive it from their own location (pyflink/)
        return env

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> StandaloneCluster:
        """Write home, run start-cluster.sh and wait until the REST API lists a TaskManager with its slots."""
        deadline = time.monotonic() + timeout_s
        if self.home is None:
            self.home = Path(tempfile.mkdtemp(prefix="freshrank-flink-"))
        if self.rest_port == 0:
            self.rest_port = free_port()
        if not port_is_free(self.rest_port):
            raise ClusterError(f"REST port {self.rest_port} is in use (another cluster or MiniCluster?)")
        if self._running_pids():
            raise ClusterError(f"a cluster of {self.home} is still running (pids {self._running_pids()}): stop it")
        self._usable_cpus()  # refuse before anything starts
        self._write_home()
        result = self._run([str(self.flink_bin / "start-cluster.sh")], timeout_s=max(5.0, deadline - time.monotonic()))
        self._pids = self._pid_file_pids()
        self._write_state()
        if result.returncode != 0:
            self.stop()
            raise ClusterError(f"start-cluster.sh failed (exit {result.returncode}):\n{result.stdout}"
                               f"{result.stderr}\n{self.log_tail()}")
        try:
            self._wait_ready(deadline)
            self._pin_taskmanagers()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """stop-cluster.sh, then SIGTERM/SIGKILL whatever of this cluster's daemons is still alive."""
        if self.home is None:
            return
        pids = sorted(set(self._pids) | set(self._pid_file_pids()))
        if pids and self.conf_dir.is_dir():
            try:
                self._run([str(self.flink_bin / "stop-cluster.sh")], timeout_s=timeout_s)
            except (subprocess.TimeoutExpired, ClusterError):
                pass
        for pid in self._leftovers(pids):
            send_signal(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not self._leftovers(pids), 10.0)
        for pid in self._leftovers(pids):
            send_signal(pid, signal.SIGKILL)
        self._pids = []
        (self.home / STATE_FILE).unlink(missing_ok=True)
        if self.remove_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @classmethod
    def attach(cls, home: str | os.PathLike[str] = DEFAULT_HOME) -> StandaloneCluster:
        """The cluster that `start()` (e.g. `python -m infra.cluster start`) left running in `home`."""
        state_path = Path(home).resolve() / STATE_FILE
        if not state_path.is_file():
            raise ClusterError(f"no cluster state in {state_path}: is a cluster running from that home?")
        state = json.loads(state_path.read_text())
        cluster = cls(home, state["rest_port"], slots=state["slots"], taskmanagers=state.get("taskmanagers", 1),
                      python=state["python"], cpus_per_taskmanager=state.get("cpus_per_taskmanager", 0))
        cluster._pids = state["pids"]
        cluster._cpu_sets = {int(pid): index for pid, index in state.get("cpu_sets", {}).items()}
        return cluster

    # --- failover ---------------------------------------------------------------------------------

    def taskmanager_pids(self) -> list[int]:
        """The live TaskManager JVMs of this cluster."""
        pids = []
        for path in self.pid_dir.glob("*taskexecutor*.pid"):
            pids += [int(line) for line in path.read_text().split() if line.isdigit()]
        return self._leftovers(pids)

    def kill_taskmanager(self) -> int:
        """SIGKILL one TaskManager, as a crashed machine would die (no shutdown hooks); returns its pid."""
        pids = self.taskmanager_pids()
        if not pids:
            raise ClusterError("no TaskManager is running")
        send_signal(pids[0], signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not alive(pids[0]), 10.0, 0.1)
        return pids[0]

    def ensure_taskmanagers(self, timeout_s: float = 120.0) -> int:
        """Start a TaskManager for each of this cluster's that is no longer alive (a standalone cluster
        does not restart them; a thread-mode TaskManager can also die in its embedded interpreter when
        a job is cancelled). Returns how many were started."""
        missing = self.taskmanagers - len(self.taskmanager_pids())
        for _ in range(missing):
            self.start_taskmanager(timeout_s)
        return max(missing, 0)

    def start_taskmanager(self, timeout_s: float = 120.0) -> None:
        """One more TaskManager (taskmanager.sh start); waits until the JobManager lists it."""
        before = {tm["id"] for tm in self.rest("/taskmanagers")["taskmanagers"]}
        result = self._run([str(self.flink_bin / "taskmanager.sh"), "start"], timeout_s=timeout_s)
        if result.returncode != 0:
            raise ClusterError(f"taskmanager.sh start failed (exit {result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")
        self._pids = sorted(set(self._pids) | set(self._pid_file_pids()))
        self._write_state()
        wait_until(lambda: {tm["id"] for tm in self.rest("/taskmanagers")["taskmanagers"]} - before, timeout_s, 0.5,
                   timeout_error=lambda: ClusterError(
                       f"the new TaskManager did not register in time:\n{self.log_tail()}"))
        self._pin_taskmanagers()

    def _usable_cpus(self) -> list[int]:
        cpus = sorted(os.sched_getaffinity(0))
        needed = self.taskmanagers * self.cpus_per_taskmanager
        if needed > len(cpus):
            raise ClusterError(f"{self.taskmanagers} TaskManager(s) with {self.cpus_per_taskmanager} CPU(s) each need "
                               f"{needed} CPUs; this process may use {len(cpus)}")
        return cpus

    def _pin_taskmanagers(self) -> None:
        """Each live TaskManager on its CPU set; one started in place of a dead one takes the free set."""
        if not self.cpus_per_taskmanager:
            return
        cpus, k = self._usable_cpus(), self.cpus_per_taskmanager
        live = self.taskmanager_pids()
        self._cpu_sets = {pid: index for pid, index in self._cpu_sets.items() if pid in live}
        for pid in sorted(set(live) - set(self._cpu_sets)):
            index = min(set(range(self.taskmanagers)) - set(self._cpu_sets.values()))
            pin_to_cpus(pid, set(cpus[index * k:(index + 1) * k]))
            self._cpu_sets[pid] = index
        self._write_state()

    # --- REST -----------------------------------------------------------------------------------

    def rest(self, path: str, method: str = "GET", body: dict | None = None, timeout_s: float = 10.0) -> Any:
        """JSON from the REST API (`path` like "/overview")."""
        return flink_rest(self.rest_url, path, method, body, timeout_s)

    def overview(self) -> dict[str, Any]:
        return self.rest("/overview")

    def job_status(self, job_id: str) -> str:
        """The job's state: CREATED, RUNNING, FINISHED, FAILED, CANCELED, ..."""
        return self.rest(f"/jobs/{job_id}")["state"]

    def wait_for_status(self, job_id: str, states: str | set[str], timeout_s: float = 120.0) -> str:
        """Wait until the job is in one of `states` (failing early, with the log tail, on a terminal other one)."""
        wanted = {states} if isinstance(states, str) else set(states)
        seen = [""]

        def reached() -> str | None:
            state = seen[0] = self.job_status(job_id)
            if state in TERMINAL_STATES and state not in wanted:
                raise ClusterError(f"job {job_id} is {state}, expected {sorted(wanted)}\n{self.failure(job_id)}")
            return state if state in wanted else None

        return wait_until(reached, timeout_s, 0.5, timeout_error=lambda: ClusterError(
            f"job {job_id} still {seen[0]} after {timeout_s:.0f}s\n{self.log_tail()}"))

    def wait_running(self, job_id: str, timeout_s: float = 120.0) -> None:
        """Wait until the job and all its tasks are RUNNING (a savepoint can only be taken then)."""
        self.wait_for_status(job_id, "RUNNING", timeout_s)
        wait_until(lambda: all(vertex["status"] == "RUNNING" for vertex in self.rest(f"/jobs/{job_id}")["vertices"]),
                   timeout_s, 0.5, timeout_error=lambda: ClusterError(
                       f"tasks of job {job_id} not all running after {timeout_s:.0f}s\n{self.log_tail()}"))

    def failure(self, job_id: str) -> str:
        """The root exception of a failed job (REST), or the log tail."""
        try:
            exceptions = self.rest(f"/jobs/{job_id}/exceptions")
            root = (exceptions.get("exceptionHistory") or {}).get("entries") or []
            if root:
                return root[0].get("stacktrace", "")[:6000]
        except (urllib.error.URLError, OSError, ValueError):
            pass
        return self.log_tail()

    # --- the flink client -----------------------------------------------------------------------

    def flink(self, args: list[str], timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run `pyflink/bin/flink ARGS` against this cluster (its FLINK_CONF_DIR); output captured."""
        return self._run([str(self.flink_bin / "flink"), *args], timeout_s=timeout_s)

    def submit(
        self,
        args: list[str],
        detached: bool = True,
        *,
        parallelism: int = 2,
        savepoint: str | None = None,
        timeout_s: float = 300.0,
    ) -> str:
        """`flink run [-d] [-s SAVEPOINT] -p N -py job/main.py ARGS`; returns the job id.

        ARGS are `freshrank run` options (`--bootstrap H:P --topic-suffix=...`; write options whose
        value starts with "-" as `--opt=value`). No `--jarfile`: job.kafka_job adds the Kafka connector
        jar to pipeline.jars, and the client ships pipeline.jars with the job.
        """
        command = ["run"]
        if detached:
            command.append("-d")
        if savepoint:
            command += ["-s", savepoint]
        command += ["-p", str(parallelism), "-pyclientexec", self.python, "-py", str(main_py()), *args]
        result = self.flink(command, timeout_s=timeout_s)
        found = _JOB_ID.search(result.stdout)
        if result.returncode != 0 or found is None:
            raise ClusterError(f"flink {' '.join(command)} failed (exit {result.returncode}):\n"
                               f"{last_lines(result.stdout + result.stderr, 30)}\n{self.log_tail(40, client=True)}")
        job_id = found.group(1)
        try:
            self.job_status(job_id)
        except urllib.error.HTTPError as error:  # submitted, but elsewhere: see the module doc on rest.port
            raise ClusterError(f"job {job_id} was submitted, but not to this cluster ({self.rest_url}): the "
                               "program's configuration names another rest.address/rest.port") from error
        return job_id

    def submit_from_savepoint(self, savepoint: str, args: list[str], detached: bool = True, **kwargs: Any) -> str:
        """`submit` resuming from `savepoint` (`flink run -s SAVEPOINT ...`)."""
        return self.submit(args, detached, savepoint=savepoint, **kwargs)

    def stop_with_savepoint(self, job_id: str, directory: str | os.PathLike[str] | None = None,
                            timeout_s: float = 300.0) -> str:
        """`flink stop --savepointPath DIR JOB_ID`: a savepoint, then the job stops; returns the savepoint path."""
        target = Path(directory) if directory is not None else self.savepoint_dir
        command = ["stop", "--type", "canonical", "--savepointPath", target.resolve().as_uri(), job_id]
        result = self.flink(command, timeout_s=timeout_s)
        found = _SAVEPOINT_PATH.search(result.stdout)
        if result.returncode != 0 or found is None:
            raise ClusterError(f"flink {' '.join(command)} failed (exit {result.returncode}):\n"
                               f"{last_lines(result.stdout + result.stderr, 60)}\n{self.failure(job_id)}")
        return found.group(1)

    def cancel(self, job_id: str, timeout_s: float = 60.0) -> None:
        """Cancel the job (REST) and wait until it is CANCELED (or otherwise terminal)."""
        if self.job_status(job_id) in TERMINAL_STATES:
            return
        self.rest(f"/jobs/{job_id}?mode=cancel", method="PATCH")
        wait_until(lambda: self.job_status(job_id) in TERMINAL_STATES, timeout_s, 0.3,
                   timeout_error=lambda: ClusterError(f"job {job_id} did not cancel within {timeout_s:.0f}s"))

    def log_tail(self, lines: int = 40, client: bool = False) -> str:
        """The last lines of the JobManager/TaskManager logs and .out files, or of the client log (the
        Python program's output under `flink run`), for error messages."""
        if self.home is None or not self.log_dir.is_dir():
            return "(no logs)"
        parts = []
        for path in sorted(self.log_dir.glob("flink-*")):
            if path.suffix in (".log", ".out") and ("client" in path.name) == client and path.stat().st_size:
                parts.append(f"--- {path} ---\n{log_tail(path, lines)}")
        return "\n".join(parts) or f"(no logs in {self.log_dir})"

    # --- internals ------------------------------------------------------------------------------

    def _run(self, command: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env=self.env(), cwd=IMPORT_ROOT, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout_s)

    def _settings(self) -> dict[str, str]:
        from job.flink_env import flink_settings

        # The distribution's defaults first: env.java.opts.all carries the --add-opens/--add-exports that
        # Flink needs on Java 17 (without them the client fails with InaccessibleObjectException).
        settings = flink_settings(pyflink_home() / "conf")
        settings.update(flink_settings())
        settings.update({
            "rest.address": "localhost",
            "rest.bind-address": "localhost",
            "rest.port": str(self.rest_port),
            "rest.bind-port": str(self.rest_port),
            "jobmanager.rpc.address": "localhost",
            "jobmanager.rpc.port": str(free_port()),
            "taskmanager.numberOfTaskSlots": str(self.slots),
            "python.executable": self.python,
            "python.client.executable": self.python,
            "execution.checkpointing.dir": self.checkpoint_dir.as_uri(),
            "execution.checkpointing.savepoint-dir": self.savepoint_dir.as_uri(),
            "env.log.dir": str(self.log_dir),
            "env.pid.dir": str(self.pid_dir),
        })
        settings.update(self.extra_config)
        return settings

    def _write_home(self) -> None:
        from job.flink_env import private_dir

        home = self._home()
        for folder in (self.conf_dir, self.lib_dir, self.log_dir, self.pid_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.checkpoint_dir, self.savepoint_dir):  # they hold the whole model: owner-only
            private_dir(folder)
        flink = pyflink_home()
        for path in (flink / "conf").iterdir():
            if path.name.startswith(("log4j", "logback")):
                shutil.copyfile(path, self.conf_dir / path.name)
        (self.conf_dir / "masters").write_text(f"localhost:{self.rest_port}\n")
        (self.conf_dir / "workers").write_text("localhost\n" * self.taskmanagers)  # one line per TaskManager
        header = (f"# Written by infra/cluster.py on start: {flink / 'conf' / 'config.yaml'}, then "
                  f"{flink_conf_dir() / 'config.yaml'}, then the cluster's own settings.\n")
        (self.conf_dir / "config.yaml").write_text(
            header + yaml.safe_dump(self._settings(), default_flow_style=False, sort_keys=True))
        for link in self.lib_dir.iterdir():
            link.unlink()
        python_jars = sorted((flink / "opt").glob("flink-python-*.jar"))
        if not python_jars:
            raise ClusterError(f"no flink-python jar in {flink / 'opt'}")
        for jar in [*sorted((flink / "lib").glob("*.jar")), python_jars[-1]]:
            (self.lib_dir / jar.name).symlink_to(jar)
        (home / "README").write_text("A Flink standalone cluster's folder, written by infra/cluster.py.\n")

    def _pid_file_pids(self) -> list[int]:
        pids = []
        if self.home is not None and self.pid_dir.is_dir():
            for path in self.pid_dir.glob("*.pid"):
                pids += [int(line) for line in path.read_text().split() if line.isdigit()]
        return pids

    def _leftovers(self, pids: list[int]) -> list[int]:
        """The pids that are still alive and are this cluster's JVMs (their command line names its conf dir)."""
        marker = str(self.conf_dir)
        return [pid for pid in pids if alive(pid) and marker in _cmdline(pid)]

    def _running_pids(self) -> list[int]:
        return self._leftovers(self._pid_file_pids()) if self.home is not None else []

    def _write_state(self) -> None:
        state = {"rest_port": self.rest_port, "slots": self.slots, "taskmanagers": self.taskmanagers,
                 "python": self.python, "pids": self._pids, "cpus_per_taskmanager": self.cpus_per_taskmanager,
                 "cpu_sets": self._cpu_sets}
        (self._home() / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def _wait_ready(self, deadline: float) -> None:
        def failed(reason: str) -> ClusterError:
            return ClusterError(f"Flink cluster at {self.rest_url}: {reason}; logs in {self.log_dir}:\n"
                                f"{self.log_tail()}")

        def ready() -> bool:
            try:
                overview = self.overview()
                if (overview.get("taskmanagers", 0) >= self.taskmanagers
                        and overview.get("slots-total", 0) >= self.slots * self.taskmanagers):
                    return True
            except (urllib.error.URLError, OSError, ValueError):
                pass
            dead = [pid for pid in self._pid_file_pids() if not alive(pid)]
            if dead:
                raise failed(f"daemon(s) {dead} exited")
            return False

        wait_until(ready, max(deadline - time.monotonic(), 0.0), 0.5, timeout_error=lambda: failed("not ready in time"))


# --- command line ---------------------------------------------------------------------------------


def _print_env(cluster: StandaloneCluster) -> None:
    """`export` lines that point the `flink` client (and Flink's scripts) at this cluster."""
    env = cluster.env()
    for name in ("FLINK_CONF_DIR", "FLINK_LIB_DIR", "FLINK_LOG_DIR", "FLINK_PID_DIR", "PYTHONPATH",
                 "PYFLINK_CLIENT_EXECUTABLE"):
        print(f"export {name}={env[name]}")
    print(f"export PATH={cluster.flink_bin}:$PATH")


def _not_negative(text: str) -> int:
    """An argparse type: a whole number of at least 0 (the error then names the option, not a parameter)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def build_parser(prog: str = "python -m infra.cluster") -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=str(DEFAULT_HOME), help="cluster folder (default %(default)s)")
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", parents=[common],
                                help="start the cluster and wait until its TaskManager is registered")
    start.add_argument("--port", type=int, default=DEFAULT_REST_PORT,
                       help="REST/web UI port (default %(default)s; 0 = any free port)")
    start.add_argument("--slots", type=int, default=2, help="slots per TaskManager (default %(default)s)")
    start.add_argument("--taskmanagers", type=int, default=1,
                       help="TaskManager JVMs (default %(default)s; in thread mode each runs one Python interpreter)")
    start.add_argument("--cpus-per-taskmanager", type=_not_negative, default=0, metavar="N",
                       help="run each TaskManager on N CPUs of its own (default: no pinning)")
    start.add_argument("--prometheus-port", metavar="PORT-PORT",
                       help="expose every daemon's metrics to Prometheus, each on the first free port of this range "
                            "(e.g. 9250-9260; Flink's reporter listens on every interface, so it is off unless given)")
    commands.add_parser("status", parents=[common], help="TaskManagers, slots and jobs of the running cluster")
    commands.add_parser("env", parents=[common], help="print `export` lines for the raw `flink` client")
    commands.add_parser("stop", parents=[common], help="stop the cluster (stop-cluster.sh, then any leftover daemon)")
    submit = commands.add_parser(
        "submit", parents=[common], help="flink run the job; prints its id",
        description="Submit the Kafka job (`flink run -d -py job/main.py`); options after `--` are "
                    "`freshrank run` options, e.g. `-- --bootstrap localhost:9092 --parallelism 2`.")
    submit.add_argument("-s", "--from-savepoint", help="resume from this savepoint (flink run -s)")
    submit.add_argument("-p", "--parallelism", type=int, default=2, help="job parallelism (default %(default)s)")
    submit.add_argument("job_args", nargs=argparse.REMAINDER, help="-- then `freshrank run` options")
    stop_job = commands.add_parser("stop-job", parents=[common],
                                   help="stop a job with a savepoint; prints the savepoint path")
    stop_job.add_argument("job_id")
    stop_job.add_argument("--savepoint-dir", help="target folder (default HOME/savepoints)")
    cancel = commands.add_parser("cancel", parents=[common], help="cancel a job (no savepoint)")
    cancel.add_argument("job_id")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m infra.cluster") -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(prog).parse_args(argv)
    try:
        if args.command == "start":
            started = time.monotonic()
            from job.flink_env import prometheus_reporter

            reporter = prometheus_reporter(args.prometheus_port) if args.prometheus_port else {}
            cluster = StandaloneCluster(args.home, args.port, slots=args.slots,
                                        taskmanagers=args.taskmanagers, config=reporter,
                                        cpus_per_taskmanager=args.cpus_per_taskmanager).start()
            print(f"Flink cluster up in {time.monotonic() - started:.1f}s: {cluster.rest_url} "
                  f"(logs {cluster.log_dir}); for the raw `flink` client:", file=sys.stderr)
            _print_env(cluster)
            return 0
        cluster = StandaloneCluster.attach(args.home)
        if args.command == "stop":
            cluster.stop()
            print("Flink cluster stopped", file=sys.stderr)
        elif args.command == "env":
            _print_env(cluster)
        elif args.command == "status":
            overview = cluster.overview()
            print(f"{cluster.rest_url}: {overview['taskmanagers']} TaskManager(s), "
                  f"{overview['slots-available']}/{overview['slots-total']} slots free, "
                  f"{overview['jobs-running']} job(s) running")
            for job in cluster.rest("/jobs/overview")["jobs"]:
                print(f"{job['jid']}  {job['state']:<10} {job['name']}")
        elif args.command == "submit":
            job_args = args.job_args[1:] if args.job_args[:1] == ["--"] else args.job_args
            print(cluster.submit(job_args, parallelism=args.parallelism, savepoint=args.from_savepoint))
        elif args.command == "stop-job":
            print(cluster.stop_with_savepoint(args.job_id, args.savepoint_dir))
        elif args.command == "cancel":
            cluster.cancel(args.job_id)
    except (ClusterError, urllib.error.URLError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
