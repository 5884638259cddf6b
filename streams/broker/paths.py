"""Where the launcher keeps things: the jar cache, cluster dirs, the deploy files."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy" / "kafka"
POM_FILE = DEPLOY_DIR / "pom.xml"
LOG4J2_FILE = DEPLOY_DIR / "log4j2.xml"

# Same variable (and default) as streams.settings.Settings.var_dir, read directly so
# the launcher does not depend on the application's settings model.
VAR_DIR_ENV = "LIFECYCLE_VAR_DIR"
CACHE_DIR_ENV = "LIFECYCLE_KAFKA_CACHE"
# The cluster `lifecycle kafka up` starts and the application falls back to.
DEFAULT_CLUSTER_NAME = "dev"


def var_dir() -> Path:
    """The project's runtime dir: ``$LIFECYCLE_VAR_DIR`` or ``<repo>/var``."""
    return Path(os.environ.get(VAR_DIR_ENV) or REPO_ROOT / "var")


def clusters_dir() -> Path:
    """Parent of every local cluster's own dir (``<var>/kafka/<name>``)."""
    return var_dir() / "kafka"


def cache_root() -> Path:
    """Parent of the per-version jar caches.

    ``$LIFECYCLE_KAFKA_CACHE`` if set, else ``$XDG_CACHE_HOME/data-lifecycle``, else
    ``~/.cache/data-lifecycle``. Jars for Kafka X live in ``<root>/kafka-X/libs``.
    """
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "data-lifecycle"
