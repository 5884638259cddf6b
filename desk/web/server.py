"""``lifecycle desk serve``: the web application under uvicorn, optionally with the
projector in a background thread (one process for a small installation or the demo)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import click
import uvicorn

from agents.clock import SystemClock
from desk.readmodel.topics import MissingTopics
from desk.runtime import Desk
from desk.web import auth
from desk.web.app import create_app
from schemas.events import Event

log = logging.getLogger(__name__)
READY = "privacy desk listening on"


def verify_audit(desk: Desk) -> list[Any]:
    """Every partition of the audit topic, checked from its first event now."""
    from confluent_kafka.admin import AdminClient

    from agents.audit.verify import verify_partition
    from streams.codec import Codec

    topic = desk.topics.names.audit
    config: dict[str, Any] = {**desk.consumer_config()}
    admin = AdminClient(config)
    described = admin.list_topics(topic, timeout=10).topics[topic]
    key = desk.settings.audit_hmac_key.get_secret_value().encode()
    return [
        verify_partition(
            desk.consumer_config(), topic, p, Codec.from_settings(desk.settings), SystemClock(), key
        )
        for p in sorted(described.partitions)
    ]


def serve(host: str | None = None, port: int | None = None, *, with_projector: bool) -> None:
    desk = Desk.open()
    try:
        users = auth.Users.load(desk.desk.users_file)
    except auth.UsersFileError as exc:
        raise click.ClickException(str(exc)) from None
    if not users.by_name and not desk.desk.trust_proxy_header:
        raise click.ClickException(
            "no desk users: set LIFECYCLE_DESK_USERS_FILE (see docs/desk.md) or "
            "LIFECYCLE_DESK_TRUST_PROXY_HEADER"
        )
    publisher: list[Any] = []
    lock = threading.Lock()

    def publish(event: Event) -> None:
        from streams.publisher import Publisher

        with lock:
            if not publisher:
                publisher.append(Publisher(desk.kafka_bootstrap(), desk.settings))
        publisher[0].publish(event)

    stop = threading.Event()
    thread = None
    if with_projector:
        projector = desk.projector()

        def project() -> None:
            try:
                projector.run(stop)
            except MissingTopics as exc:
                log.error("projector stopped: %s", exc)
            finally:
                projector.close()

        thread = threading.Thread(target=project, name="desk-projector", daemon=True)
        thread.start()
    app = create_app(desk, users, publish=publish, verify_audit=lambda: verify_audit(desk))
    bind_host = host or desk.desk.host
    bind_port = port if port is not None else desk.desk.port
    config = uvicorn.Config(
        app, host=bind_host, port=bind_port, access_log=False, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    # Printed for people and for the demo and tests, which wait for it.
    log.info("%s http://%s:%d/", READY, bind_host, bind_port)
    try:
        server.run()
    finally:
        stop.set()
        if thread is not None:
            thread.join(10)
        if publisher:
            publisher[0].close()
        desk.close()
