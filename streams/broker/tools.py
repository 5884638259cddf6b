"""Finding the external programs the launcher needs: ``java`` and ``mvn``."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from streams.broker.errors import BrokerError

MIN_JAVA_MAJOR = 17  # Kafka 4 brokers do not run on older JVMs.

JAVA_MISSING = (
    "java not found: install a JDK 17+ (e.g. apt-get install openjdk-17-jre-headless) "
    "or set JAVA_HOME"
)
MVN_MISSING = (
    "mvn not found: install Maven (e.g. apt-get install maven) to fetch the Kafka jars, "
    "or point LIFECYCLE_KAFKA_CACHE at a cache that already holds them"
)


def find_java() -> Path:
    """The ``java`` to run brokers with: ``$JAVA_HOME/bin/java`` if JAVA_HOME is set, else PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if not os.access(candidate, os.X_OK):
            raise BrokerError(
                f"JAVA_HOME={java_home} has no executable bin/java: "
                "point JAVA_HOME at a JDK 17+ or unset it to use java from PATH"
            )
        java = candidate
    else:
        found = shutil.which("java")
        if found is None:
            raise BrokerError(JAVA_MISSING)
        java = Path(found)
    _check_java_version(str(java))
    return java


def find_mvn() -> Path:
    found = shutil.which("mvn")
    if found is None:
        raise BrokerError(MVN_MISSING)
    return Path(found)


def parse_java_major(version_output: str) -> int | None:
    """Major version from ``java -version`` output ('1.8.0_392' -> 8, '17.0.15' -> 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


@functools.lru_cache(maxsize=8)
def _check_java_version(java: str) -> None:
    # Cached: one `java -version` (~0.1 s) per java binary per process is enough.
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        raise BrokerError(f"{java} cannot be run ({exc}): {JAVA_MISSING}") from exc
    major = parse_java_major(result.stderr + result.stdout)
    if major is None:
        raise BrokerError(f"{java} -version gave no version: {JAVA_MISSING}")
    if major < MIN_JAVA_MAJOR:
        raise BrokerError(
            f"{java} is Java {major}; Kafka 4 brokers need Java {MIN_JAVA_MAJOR}+: "
            "install openjdk-17-jre-headless or set JAVA_HOME to a newer JDK"
        )
