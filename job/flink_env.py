"""A StreamExecutionEnvironment configured from flink-conf/config.yaml plus the job's options."""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path
from typing import Any

import yaml
from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment

FLINK_CONF_DIR = Path(__file__).resolve().parent.parent / "flink-conf"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return flat


def flink_settings(conf_dir: Path = FLINK_CONF_DIR) -> dict[str, str]:
    """The settings of `config.yaml` as flat Flink keys."""
    return _flatten(yaml.safe_load((conf_dir / "config.yaml").read_text()) or {})


# Settings of the cluster processes (start-cluster.sh reads them from config.yaml). They must not
# travel in a job's own configuration: the job's settings win over the cluster's for the submission,
# so a `rest.port` there would decide which cluster `flink run` submits to.
CLUSTER_KEY_PREFIXES = ("rest.", "jobmanager.", "taskmanager.")


def job_settings(settings: dict[str, str]) -> dict[str, str]:
    """`settings` without the cluster-level keys."""
    return {key: value for key, value in settings.items() if not key.startswith(CLUSTER_KEY_PREFIXES)}


def make_environment(overrides: dict[str, str] | None = None) -> StreamExecutionEnvironment:
    """A local (or, under `flink run`, cluster) environment with our settings applied."""
    # Thread mode embeds CPython in the JVM (PemJa); it sees a venv's packages only via PYTHONPATH,
    # which the JVM inherits from this process when the gateway starts.
    paths = [*site.getsitepackages(), str(FLINK_CONF_DIR.parent)]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    settings = job_settings(flink_settings())
    settings["python.executable"] = sys.executable
    settings["python.client.executable"] = sys.executable
    settings.update(overrides or {})
    config = Configuration()
    for key, value in settings.items():
        config.set_string(key, value)
    return StreamExecutionEnvironment.get_execution_environment(config)
