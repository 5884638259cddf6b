"""Create declared topics idempotently and report drift from the declaration."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streams.logs import serve_kafka_logs
from streams.settings import Settings
from streams.topics import TopicRetention, TopicSpec, declared_topics

log = logging.getLogger(__name__)


class TopicDrift(RuntimeError):
    """A live topic differs from its declaration; reusing it silently could lose data."""


def admin_client(settings: Settings, bootstrap: str) -> AdminClient:
    # Nobody polls an admin client: its log lines (streams.logs) are served for it.
    return serve_kafka_logs(
        AdminClient({"bootstrap.servers": bootstrap, **settings.security.confluent_config()})
    )


def topic_drift(admin: AdminClient, specs: Iterable[TopicSpec]) -> list[str]:
    """Differences between the declared and the live topics (missing topics excluded)."""
    specs = list(specs)
    live = admin.list_topics(timeout=15).topics
    problems: list[str] = []
    present = [s for s in specs if s.name in live]
    for spec in present:
        partitions = len(live[spec.name].partitions)
        if partitions != spec.partitions:
            problems.append(f"{spec.name}: {partitions} partitions, declared {spec.partitions}")
    if not present:
        return problems
    resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in present]
    futures = admin.describe_configs(resources)
    by_name = {s.name: s for s in present}
    for resource, future in futures.items():
        spec = by_name[resource.name]
        config = future.result()
        for key, wanted in spec.config.items():
            actual = config[key].value if key in config else None
            if actual != wanted:
                problems.append(f"{spec.name}: {key}={actual}, declared {wanted}")
    return problems


def ensure_topics(
    settings: Settings,
    bootstrap: str,
    downstream_systems: Iterable[str],
    retention: TopicRetention | None = None,
) -> list[str]:
    """Create missing declared topics; raise ``TopicDrift`` if existing ones differ.

    Returns the names created. Safe to run any number of times.
    """
    specs = declared_topics(settings, downstream_systems, retention)
    admin = admin_client(settings, bootstrap)
    existing = set(admin.list_topics(timeout=15).topics)
    missing = [s for s in specs if s.name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication, config=dict(s.config)) for s in missing]
        )
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                # Another worker creating the same topic at once is fine.
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            log.debug("created topic %s", name)
        log.info("created %d declared topic(s)", len(missing))
    drift = topic_drift(admin, specs)
    if drift:
        raise TopicDrift("declared topics differ from the live ones: " + "; ".join(drift))
    return [s.name for s in missing]
