"""Asking one node whether it serves requests, with the Kafka protocol.

A TCP connect is not enough: a broker binds its listener early but only
processes requests once it has caught up with the metadata log and been
unfenced. So we send a real request (DescribeCluster) through a fresh client
whose only bootstrap server is the node in question: until that node answers,
the client knows no other broker, so an answer proves *that* node is serving.
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka.admin import AdminClient

ClientConfig = dict[str, str | int | float | bool]


def admin_config(bootstrap: str, client_config: Mapping[str, str] | None = None) -> ClientConfig:
    """Settings for short-lived admin clients of local clusters.

    Connection-refused errors are expected while a broker starts, so librdkafka's
    own logging is silenced (log_level 0) instead of printed into test output;
    the short reconnect backoff notices a broker within ~0.5 s of it listening.
    ``client_config`` adds security settings (``LocalKafka.client_config()``).
    """
    return {
        "bootstrap.servers": bootstrap,
        "log_level": 0,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 500,
        "socket.connection.setup.timeout.ms": 3000,
        **(client_config or {}),
    }


def broker_ids(
    bootstrap: str, timeout: float = 2.0, client_config: Mapping[str, str] | None = None
) -> set[int] | None:
    """Ids of the live (unfenced) brokers the node at ``bootstrap`` reports, or None."""
    admin = AdminClient(admin_config(bootstrap, client_config))
    try:
        result = admin.describe_cluster(request_timeout=timeout).result(timeout=timeout + 1.0)
    except Exception:
        # Refused, timed out, not yet unfenced: all mean "not ready yet".
        return None
    return {int(node.id) for node in result.nodes}
