"""Java artifacts the job and its tests need, fetched from Maven Central into `<repo>/.cache/`.

Why not a pom of ours: the project is Python; the only Java it needs is Flink's Kafka connector (one
shaded jar, added to the PyFlink job) and a Kafka broker for local runs and tests (no docker, no
tarballs here, only Maven Central). Maven resolves both into a private local repository under the
cache, so nothing depends on `~/.m2`, and each fetch writes a manifest last: a second call finds the
manifest and the jars it lists and returns at once, without starting Maven.

`python -m job.jars` fetches everything and prints the paths.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from job.paths import cache_dir

FLINK_KAFKA_CONNECTOR = "org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"
KAFKA_VERSION = "4.1.1"
# kafka_2.13 (kafka.Kafka, kafka.tools.StorageTool) already depends on kafka-server, kafka-storage,
# kafka-raft, the coordinators and slf4j-api 1.7.36 at runtime. The release tarball adds a logging
# backend; these are the same ones (log4j2 behind the slf4j 1.x binding) so the broker logs.
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "1.7.36"
KAFKA_BROKER_ARTIFACTS = (
    f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
    f"org.slf4j:slf4j-api:{SLF4J_VERSION}",
    f"org.apache.logging.log4j:log4j-api:{LOG4J_VERSION}",
    f"org.apache.logging.log4j:log4j-core:{LOG4J_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
)
# Maven 3.8 defaults to maven-dependency-plugin 2.8; pin a current one.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

MANIFEST = "manifest.txt"


class JarFetchError(RuntimeError):
    """Maven could not fetch an artifact (no network, unknown version, ...); carries Maven's output."""


def flink_kafka_connector_jar() -> Path:
    """Flink's shaded Kafka SQL/DataStream connector: one self-contained jar to hand to PyFlink."""
    group, artifact, version = FLINK_KAFKA_CONNECTOR.split(":")
    target = cache_dir() / "jars" / f"{artifact}-{version}"
    return _fetch_once(target, lambda out: _copy_artifact(FLINK_KAFKA_CONNECTOR, out))[0]


def kafka_broker_classpath() -> list[Path]:
    """Every jar a single-node KRaft broker (`kafka.Kafka`) and its storage formatter need, for `java -cp`."""
    target = cache_dir() / "jars" / f"kafka-broker-{KAFKA_VERSION}"
    return _fetch_once(target, lambda out: _copy_with_dependencies(KAFKA_BROKER_ARTIFACTS, out))


def fetch_all() -> dict[str, list[Path]]:
    """Fetch every Java artifact the project uses (for CI set-up or a warm cache before going offline)."""
    return {
        "flink_kafka_connector": [flink_kafka_connector_jar()],
        "kafka_broker": kafka_broker_classpath(),
    }


# --- internals ---------------------------------------------------------------------------------


def _read_manifest(target: Path) -> list[Path] | None:
    """The jars of a finished fetch, or None if it never finished or a jar has gone missing."""
    manifest = target / MANIFEST
    if not manifest.is_file():
        return None
    jars = [target / line for line in manifest.read_text().splitlines() if line.strip()]
    if not jars or not all(jar.is_file() for jar in jars):
        return None
    return jars


def _fetch_once(target: Path, fetch) -> list[Path]:
    """Return the jars in `target`, running `fetch(staging_dir)` first if they are not all there.

    The fetch goes to a staging folder that is renamed into place only once complete, under a file
    lock, so an interrupted fetch or two processes fetching at once never leave half a classpath.
    """
    jars = _read_manifest(target)
    if jars is not None:
        return jars
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        jars = _read_manifest(target)
        if jars is not None:
            return jars
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            fetch(staging)
            names = sorted(p.name for p in staging.glob("*.jar"))
            if not names:
                raise JarFetchError(f"Maven reported success but left no jar in {staging}")
            (staging / MANIFEST).write_text("\n".join(names) + "\n")
            staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any build output
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    jars = _read_manifest(target)
    assert jars is not None
    return jars


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mvn(args: list[str], cwd: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarFetchError("`mvn` is not on PATH; install Maven (apt-get install maven)")
    command = [
        mvn,
        "--batch-mode",
        "--no-transfer-progress",
        f"-Dmaven.repo.local={cache_dir() / 'm2'}",
        *args,
    ]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-6000:]
        raise JarFetchError(f"{' '.join(command)} failed (exit {result.returncode}):\n{output}")


def _copy_artifact(coordinates: str, out: Path) -> None:
    """One artifact, no dependencies: `dependency:copy` runs without any pom."""
    _mvn(
        [
            f"{DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={coordinates}",
            f"-DoutputDirectory={out}",
            "-Dmdep.overWriteReleases=true",
        ],
        cwd=out,
    )


def _copy_with_dependencies(coordinates: tuple[str, ...], out: Path) -> None:
    """Artifacts plus their transitive runtime dependencies.

    `copy-dependencies` needs a project, so a throwaway pom is written into the staging folder
    (inside the gitignored cache) and removed with it.
    """
    dependencies = []
    for coordinate in coordinates:
        group, artifact, version = coordinate.split(":")
        dependencies.append(
            "    <dependency>\n"
            f"      <groupId>{group}</groupId>\n"
            f"      <artifactId>{artifact}</artifactId>\n"
            f"      <version>{version}</version>\n"
            "    </dependency>\n"
        )
    pom = (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>freshrank.cache</groupId>\n"
        "  <artifactId>java-deps</artifactId>\n"
        "  <version>0</version>\n"
        "  <packaging>pom</packaging>\n"
        "  <dependencies>\n" + "".join(dependencies) + "  </dependencies>\n"
        "</project>\n"
    )
    (out / "pom.xml").write_text(pom)
    try:
        _mvn(
            [
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={out}",
            ],
            cwd=out,
        )
    finally:
        (out / "pom.xml").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classpath", action="store_true", help="print the broker classpath as one line")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        fetched = fetch_all()
    except JarFetchError as error:
        print(error, file=sys.stderr)
        return 1
    if args.classpath:
        print(os.pathsep.join(str(p) for p in fetched["kafka_broker"]))
        return 0
    for group, paths in fetched.items():
        print(f"# {group} ({len(paths)} jar{'s' if len(paths) != 1 else ''})")
        for path in paths:
            print(path)
    print(f"# done in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
