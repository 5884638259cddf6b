"""The Kafka broker jars: fetched once from Maven Central with mvn, then reused.

Layout: ``<cache_root>/kafka-<version>/libs/*.jar`` plus ``libs.complete``, a marker
written only after mvn succeeded. A cache without the marker (mvn interrupted,
disk full) or with a marker from a different pom is fetched again.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from streams.broker import paths
from streams.broker.errors import BrokerError
from streams.broker.tools import find_mvn

MVN_TIMEOUT_S = 900.0


def default_kafka_version() -> str:
    """The version pinned in deploy/kafka/pom.xml (single source of truth)."""
    try:
        pom = paths.POM_FILE.read_text(encoding="utf-8")
    except OSError as exc:
        raise BrokerError(f"cannot read {paths.POM_FILE}: {exc}") from exc
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    if match is None:
        raise BrokerError(f"{paths.POM_FILE} has no <kafka.version> property")
    return match.group(1).strip()


def version_dir(kafka_version: str, cache_root: Path | None = None) -> Path:
    return (cache_root or paths.cache_root()) / f"kafka-{kafka_version}"


def cache_fingerprint(kafka_version: str) -> str:
    """Identifies what a cache was built from: the version and the pom's content."""
    digest = hashlib.sha256(paths.POM_FILE.read_bytes())
    digest.update(kafka_version.encode())
    return f"kafka={kafka_version} pom-sha256={digest.hexdigest()}\n"


def cached_libs(kafka_version: str, cache_root: Path | None = None) -> Path | None:
    """The libs dir if a complete cache for this version and pom exists, else None."""
    vdir = version_dir(kafka_version, cache_root)
    libs, marker = vdir / "libs", vdir / "libs.complete"
    try:
        complete = marker.read_text(encoding="utf-8") == cache_fingerprint(kafka_version)
    except OSError:
        return None
    if complete and (libs / f"kafka_2.13-{kafka_version}.jar").is_file():
        return libs
    return None


def ensure_jars(kafka_version: str | None = None, *, cache_root: Path | None = None) -> Path:
    """Return the dir holding the broker's jars, running mvn first if needed.

    Safe to call from several processes at once (tests in parallel): a file lock
    makes one of them fetch while the others wait and then reuse its result.
    """
    version = kafka_version or default_kafka_version()
    libs = cached_libs(version, cache_root)
    if libs is not None:
        return libs
    vdir = version_dir(version, cache_root)
    vdir.mkdir(parents=True, exist_ok=True)
    with _exclusive(vdir / ".lock"):
        libs = cached_libs(version, cache_root)
        if libs is not None:
            return libs
        return _fetch(version, vdir)


def _fetch(version: str, vdir: Path) -> Path:
    libs, marker, log = vdir / "libs", vdir / "libs.complete", vdir / "mvn.log"
    mvn = find_mvn()
    marker.unlink(missing_ok=True)
    shutil.rmtree(libs, ignore_errors=True)
    command = [
        str(mvn),
        "-q",
        "-B",
        "-Dstyle.color=never",  # plain text in mvn.log
        "-f",
        str(paths.POM_FILE),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    with log.open("w", encoding="utf-8") as out:
        try:
            result = run_mvn(command, out)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"mvn took over {MVN_TIMEOUT_S:.0f}s fetching Kafka {version} jars (see {log}): "
                "check network access to https://repo1.maven.org"
            ) from exc
    if result != 0:
        raise BrokerError(mvn_failure_message(version, result, log))
    if not (libs / f"kafka_2.13-{version}.jar").is_file():
        raise BrokerError(f"mvn succeeded but {libs} has no kafka_2.13-{version}.jar (see {log})")
    marker.write_text(cache_fingerprint(version), encoding="utf-8")
    return libs


def run_mvn(command: list[str], out: TextIO) -> int:
    """Run mvn with its output in the log file; a seam for unit tests."""
    completed = subprocess.run(
        command,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=paths.DEPLOY_DIR,
        timeout=MVN_TIMEOUT_S,
        check=False,
    )
    return completed.returncode


def mvn_failure_message(version: str, returncode: int, log: Path) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    if re.search(
        rf"Could not find artifact org\.apache\.kafka:kafka_2\.13:jar:{re.escape(version)}", text
    ):
        return (
            f"Kafka {version} is not on Maven Central (mvn exit {returncode}, see {log}): "
            "use a released version"
        )
    return (
        f"could not fetch Kafka {version} jars with mvn (exit {returncode}, see {log}): "
        "check network access to https://repo1.maven.org (or a mirror/proxy in "
        "~/.m2/settings.xml), or set LIFECYCLE_KAFKA_CACHE to a dir that already holds "
        f"kafka-{version}/libs"
    )


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
