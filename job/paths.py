"""Where freshrank's files are: the package data it reads, and the folders it writes.

The Avro schemas (`schemas/`) and the Flink settings (`flink-conf/`) ship inside the distribution as
the packages `freshrank_schemas` and `freshrank_flink_conf` (pyproject.toml maps the two folders), so
an installed wheel reads the same files as a checkout, through `importlib.resources`. What freshrank
writes (jars fetched from Maven Central, broker data, the standalone cluster's home) goes to
`.cache/` of a checkout, or to the user's cache folder when it runs from an installed wheel.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

# The folder holding the `job` and `udfs` packages: a checkout, or site-packages of an install.
IMPORT_ROOT = Path(__file__).resolve().parent.parent


def resource_dir(package: str) -> Path:
    """The folder of a data package as a file-system path (Flink and fastavro read plain files)."""
    folder = resources.files(package)
    if not isinstance(folder, Path):  # a zipped install: nothing here can read from it
        raise RuntimeError(f"freshrank's package data ({package}) must be installed as files, not zipped")
    return folder


def flink_conf_dir() -> Path:
    """The folder of freshrank's `config.yaml` (the repository's `flink-conf/`); in a checkout run
    without its editable install's import hook (e.g. a script on PYTHONPATH), the folder itself."""
    try:
        return resource_dir("freshrank_flink_conf")
    except ModuleNotFoundError:
        return IMPORT_ROOT / "flink-conf"


def in_checkout() -> bool:
    """Whether the code runs from a source checkout (editable install) rather than an installed wheel."""
    return (IMPORT_ROOT / "pyproject.toml").is_file()


def cache_dir() -> Path:
    """Where fetched jars and local services' data go: `FRESHRANK_CACHE_DIR` if set, else `.cache/` of
    the checkout (gitignored), else `$XDG_CACHE_HOME/freshrank` (`~/.cache/freshrank`)."""
    override = os.environ.get("FRESHRANK_CACHE_DIR")
    if override:
        return Path(override).resolve()
    if in_checkout():
        return IMPORT_ROOT / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "freshrank"


def main_py() -> Path:
    """The script `flink run -py` submits."""
    return IMPORT_ROOT / "job" / "main.py"
