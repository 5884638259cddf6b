"""Builds the Faust application: topics, tables, the agent and the timer.

This is the only module that knows Faust. It binds the thin handler to real
Kafka topics and RocksDB tables; everything it calls is tested without Kafka.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from streams.settings import Settings

log = logging.getLogger(__name__)

PRODUCER_LINGER_S = 0.005


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """TLS/SASL for Faust's aiokafka clients, from the same settings as every client."""
    sec = settings.security
    context: ssl.SSLContext | None = None
    if sec.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None)
        if sec.ssl_certfile:
            context.load_cert_chain(
                str(sec.ssl_certfile), str(sec.ssl_keyfile) if sec.ssl_keyfile else None
            )
    if sec.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=sec.sasl_username,
            password=sec.sasl_password.get_secret_value() if sec.sasl_password else None,
            mechanism=sec.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class StreamSafeConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer, whose seek to committed offsets is authoritative.

    Faust drops records it has fetched but not delivered (a batch cut short
    when the flow stops, records of a partition paused by the time its batch
    arrives) and relies on ``perform_seek`` -> ``seek_to_committed`` to read
    them again. aiokafka seeks only where a committed offset above 0 exists,
    so a stream partition with nothing committed yet (a fresh deployment, a
    worker killed before its first commit) would stay past the dropped
    records, and Faust, which skips its gap check when nothing is committed,
    would then commit past them. Such a partition is sought to offset 0
    instead: with ``consumer_auto_offset_reset="earliest"`` an offset below
    the log start resolves to the log start, without a ListOffsets request
    (which would wait behind the long-polling fetch). Changelog partitions are
    left alone: recovery positions them itself.
    """

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        for tp, offset in committed.items():
            if not offset and not self._is_changelog_tp(tp):
                await self.seek(tp, 0)
        await self._seek_standbys_to_applied()
        on_sought = getattr(self.transport, "on_sought", None)
        if on_sought is not None:
            on_sought(
                {
                    (tp.topic, tp.partition): offset
                    for tp, offset in committed.items()
                    if not self._is_changelog_tp(tp)
                }
            )
        return committed

    async def _seek_standbys_to_applied(self) -> None:
        """Put every standby changelog partition back to just after what its store
        has applied, so that standby records fetched and dropped are read again.

        Faust drops a fetch that returns while the flow is stopped and then seeks
        to committed offsets (``Consumer.getmany``), which moves stream partitions
        only: a changelog partition has no committed offset, and aiokafka seeks
        only where one above 0 exists. Our flow stop at ``on_rebalance_complete``
        (``hold_fetching_until_streams_resume``) opens exactly such a window just
        after Faust has started the standbys. A standby that lost a fetch there
        applied the records after it, its stored offset moved past the hole, and
        when it became the owner it "restored" nothing: the subjects in the hole
        were missing from its store, and their due recordings were never deleted
        (issue "No promise silently missed": the scale-down race;
        tests/integration/test_handover_timers.py). Seeking to the applied offset
        + 1 is always right for a standby, dropped fetch or not.
        """
        standbys = self.app.assignor.assigned_standbys()
        if not standbys:
            return
        tables = {t.changelog_topic.get_topic_name(): t for t in self.app.tables.values()}
        for tp in standbys:
            table = tables.get(tp.topic)
            if table is None:
                continue
            applied = table.persisted_offset(tp)
            await self.seek(tp, applied + 1 if applied is not None else 0)


Sought = Callable[[Mapping[tuple[str, int], int | None]], None]


class StreamSafeTransport(aiokafka_driver.Transport):
    Consumer = StreamSafeConsumer
    # Told the stream partitions' committed offsets after each seek, that is
    # once state recovery is done (set by the worker: agents.runtime.catchup).
    on_sought: Sought | None = None


def hold_fetching_until_streams_resume(app: faust.App) -> None:
    """Deliver no stream record between recovery's resume and its queue clear.

    When recovery completes, Faust resumes the stream partitions while the
    consumer flow is still running (it ran for the changelogs), awaits the
    seek to committed offsets, and only then resumes flow control, which
    clears every stream's queue: records delivered in between are dropped
    without being processed or acknowledged. Stopping the flow here (the
    signal is sent first thing) keeps them in the broker until
    ``consumer.resume_flow()`` runs after the clear; they are then fetched
    from the position the seek set.
    """

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def stop_flow(_app: Any, **_: Any) -> None:
        app.consumer.stop_flow()


def make_app(settings: Settings, bootstrap: str) -> faust.App:
    # Faust creates only the last level of its data dir.
    settings.worker_data_dir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=broker_urls(bootstrap),
        broker_credentials=broker_credentials(settings),
        store="rocksdb://",
        datadir=str(settings.worker_data_dir),
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        # A batch's outputs and state writes are handed to the producer one by
        # one and waited for together: a few milliseconds of linger put them in
        # a few produce requests instead of one small request each (which cost
        # more CPU than anything else the worker did).
        producer_linger=PRODUCER_LINGER_S,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_bind="127.0.0.1",
        # A crashed worker's group membership is given up within seconds, so
        # its partitions move to a live worker quickly.
        broker_session_timeout=10.0,
        broker_commit_interval=settings.commit_interval_s,
        # A partition with nothing committed is read from its log start
        # (StreamSafeConsumer relies on it too).
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=60.0,
        table_standby_replicas=settings.standby_replicas,
        autodiscover=False,
    )
    # Set before anything creates the default transport (and its consumer).
    app.transport = StreamSafeTransport(app.conf.broker_consumer, app)
    hold_fetching_until_streams_resume(app)
    return app


@dataclass(frozen=True)
class TablesRef:
    subjects: Any
    due: Any


def raw_topic(app: faust.App, *names: str, partitions: int) -> Any:
    """A topic of raw bytes: decoding is ours (streams.codec), not Faust's."""
    return app.topic(
        *names,
        partitions=partitions,
        internal=False,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )


def tp_partitions(tps: set[TP], topic: str) -> set[int]:
    return {tp.partition for tp in tps if tp.topic == topic}
