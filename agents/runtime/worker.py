"""Composition root: wires real adapters (Kafka, RocksDB, clock, metrics) to the handler."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import faust
import mode.loop
from confluent_kafka import Consumer
from prometheus_client import CollectorRegistry, start_http_server

from agents import __version__
from agents.audit.writer import AuditWriter, KafkaAuditTopic
from agents.clock import Clock, SystemClock
from agents.rules.policy import Policy, load_policy
from agents.runtime.catchup import CatchUp
from agents.runtime.failures import RetryPolicy, Step
from agents.runtime.faust_app import StreamSafeTransport, make_app, raw_topic
from agents.runtime.handler import Handler, RawMessage, to_ms
from agents.runtime.known_topics import KnownTopics, cluster_topics
from agents.runtime.metrics import LifecycleMetrics, deadline_bucket, install_faust_sensors
from agents.runtime.offsets import OffsetLookup
from agents.runtime.reconcile import ReconcileMetrics, Reconciler
from agents.runtime.scheduler import TimerCount, Waker, open_requests, outstanding_commands
from agents.runtime.stopping import StopWatchdog, Worker, bound_consumer_thread
from agents.store.faust_store import FaustStateStore
from agents.store.layer import Entries
from schemas.base import RequestType
from schemas.commands import Action
from schemas.internal import DueTick
from streams.admin import admin_client, ensure_topics
from streams.codec import Codec
from streams.settings import Settings
from streams.topics import TopicNames

log = logging.getLogger(__name__)

# A due item fires within a second of its due time: at most one interval, plus a
# decision. An idle round reads a few keys per partition (2-3 ms, bench/tick_bench.py).
TICK_INTERVAL_S = 0.5
# Subjects still in the previous state format are looked for this often (migration).
MIGRATION_SWEEP_S = 10.0
MIGRATION_BATCH = 1_000
# Up to this many events are decided before one wait for the broker; a batch
# closes early after BATCH_WITHIN_S so a quiet stream is not held back.
BATCH_MAX = 200
BATCH_WITHIN_S = 0.05
# The state changelog is compacted; these bound how long a superseded or deleted
# entry can survive in it, so erased data does not linger in the pipeline's own
# topics: compaction runs within a day of a change (the active segment is rolled
# for it), and a tombstone (a deleted record, a forgotten subject) is itself
# dropped a day after that. A policy with a shorter own-topics bound shortens
# both (``changelog_config``; N9.erasure-own-topics, docs/own-data.md).
CHANGELOG_CONFIG = {
    "max.compaction.lag.ms": str(86_400_000),
    "delete.retention.ms": str(86_400_000),
    "min.cleanable.dirty.ratio": "0.1",
}


def changelog_config(policy: Policy) -> dict[str, str]:
    bound = min(policy.topic_retention().personal_ms, 86_400_000)
    return {
        **CHANGELOG_CONFIG,
        "max.compaction.lag.ms": str(bound),
        "delete.retention.ms": str(bound),
    }


METRICS_INTERVAL_S = 5.0


@dataclass
class Pipeline:
    app: faust.App
    handler: Handler
    store: FaustStateStore
    metrics: LifecycleMetrics
    registry: CollectorRegistry


def build_pipeline(
    settings: Settings,
    bootstrap: str,
    *,
    clock: Clock | None = None,
    policy: Policy | None = None,
    registry: CollectorRegistry | None = None,
) -> Pipeline:
    clock = clock or SystemClock()
    policy = policy or load_policy(settings.policy_path)
    registry = registry or CollectorRegistry()
    metrics = LifecycleMetrics.create(registry, version=__version__, policy_version=policy.version)
    names = TopicNames(settings.topic_prefix)
    metrics.declare(
        systems=[s.id for s in policy.systems],
        actions=[a.value for a in Action],
        request_types=[t.value for t in RequestType],
        dead_letter_topics=[*names.inputs, names.acks, names.ticks, names.erasure_replays],
        retry_steps=[s.value for s in Step],
    )
    # A command outstanding longer than this would already have been escalated
    # under the policy's retry settings: the alert's per-system bound.
    c = policy.commands
    horizon = c.escalate_after_attempts * (
        c.ack_deadline.as_timedelta() + c.retry_backoff_max.as_timedelta()
    )
    metrics.set_ack_bounds({s.id: horizon.total_seconds() for s in policy.systems})
    codec = Codec.from_settings(settings)
    app = make_app(settings, bootstrap)
    monitor = install_faust_sensors(app, registry)
    p = settings.partitions

    source = raw_topic(
        app, *names.inputs, names.acks, names.ticks, names.erasure_replays, partitions=p
    )
    ticks = raw_topic(app, names.ticks, partitions=p)
    outputs: dict[str, Any] = {}

    def output(topic: str) -> Any:
        if topic not in outputs:
            outputs[topic] = raw_topic(app, topic, partitions=p)
        return outputs[topic]

    known_topics = KnownTopics(cluster_topics(admin_client(settings, bootstrap)))

    async def send(
        topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> Awaitable[Any]:
        await known_topics.check(topic)
        # What Topic.send does, but returning Faust's own future: Faust sets the
        # delivery error on it too, and an error nobody awaits is logged as lost.
        message = output(topic).as_future_message(key=key, value=value, partition=partition)
        await output(topic).publish_message(message)
        fut: Awaitable[Any] = message
        return fut

    # bytes key and value types make Faust use the raw serializer. One table holds
    # every subject's entries (header, records, commands, due indexes: see
    # agents/store/keys.py), so a decision's writes land in one changelog
    # partition, in order.
    subjects = app.Table(
        "subjects",
        partitions=p,
        key_type=bytes,
        value_type=bytes,
        extra_topic_configs=changelog_config(policy),
    )
    store = FaustStateStore(subjects)
    audit_topic = KafkaAuditTopic(
        topic=names.audit,
        app_id=settings.app_id,
        client_config={"bootstrap.servers": bootstrap, **settings.security.confluent_config()},
        codec=codec,
        clock=clock,
        on_unreadable=lambda _p, _o: metrics.observe_audit_error("read_head", "unreadable"),
    )
    audit = AuditWriter(
        key=settings.audit_hmac_key.get_secret_value().encode(),
        metrics=metrics,
        open_log=audit_topic.open,
    )
    handler = Handler(
        codec=codec,
        policy=policy,
        clock=clock,
        names=names,
        metrics=metrics,
        store=store,
        audit=audit,
        send=send,
        state_topic=f"{settings.app_id}-subjects-changelog",
        retry=RetryPolicy(attempts=settings.retry_attempts, max_seconds=settings.retry_max_seconds),
        check_topic=known_topics.check,
    )
    waker = Waker()
    counter = TimerCount()
    last_sweep = [0.0]
    catch_up = CatchUp()
    if isinstance(app.transport, StreamSafeTransport):
        app.transport.on_sought = catch_up.sought
    # The timer waits for these to be decided again after an assignment (not ticks).
    replayed_topics = [*names.inputs, names.acks, names.erasure_replays]
    offsets = OffsetLookup(
        Consumer(
            {
                "bootstrap.servers": bootstrap,
                **settings.security.confluent_config(),
                # Never subscribed and never committing: the group is not joined.
                "group.id": f"{settings.app_id}-offset-lookup",
                "enable.auto.commit": False,
            }
        )
    )

    @app.agent(source, concurrency=1)
    async def lifecycle(stream: Any) -> None:
        # Faust acks the batch's events only after this body returns for it.
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            raws = [RawMessage(*_where(e), e.message.key, e.message.value) for e in events]
            await handler.handle_batch(raws)
            catch_up.decided((r.topic, r.partition, r.offset) for r in raws)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(_app: Any, revoked: Any, **_: Any) -> None:
        # Another worker may own these partitions now: forget derived state,
        # and close the audit producers (the next owner fences them anyway).
        # Faust's rebalance is eager (everything is revoked), like this.
        waker.clear()
        catch_up.reset()
        await audit.release()

    claims: set[asyncio.Task[None]] = set()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(_app: Any, assigned: Any, **_: Any) -> None:
        # Fence the audit (and with it the outputs) of every partition this worker
        # now owns at once, so a paused former owner can no longer send for them;
        # in the background: the rebalance does not wait for the broker round trips.
        owned = {tp.partition for tp in assigned if tp.topic == names.acks}
        task = asyncio.ensure_future(audit.claim(owned))
        claims.add(task)
        task.add_done_callback(claims.discard)

    def restoring() -> bool:
        # Faust also seeks to committed offsets when a fetch is dropped mid-rebalance,
        # before recovery ends: only the end of the rebalance says the store is whole.
        return catch_up.recovering or bool(app.rebalancing)

    async def timers_may_run(partition: int) -> bool:
        """After an assignment, the timer waits until the partition's inputs are
        decided again (agents.runtime.catchup)."""
        if restoring():
            return False
        if not catch_up.armed(partition):
            # Not through Faust's consumer: agents/runtime/offsets.py says why.
            try:
                ends, starts = await asyncio.to_thread(
                    offsets.bounds, [(topic, partition) for topic in replayed_topics]
                )
            except Exception as exc:  # the broker away: try again at the next tick
                log.warning(
                    "partition %d: end offsets not read (%s)", partition, type(exc).__name__
                )
                return False
            catch_up.arm(partition, ends, starts, time.monotonic())
        return catch_up.ready(partition, time.monotonic())

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_audit(_app: Any, **_: Any) -> None:
        # After the consumer stopped, so no batch is still appending.
        await audit.close()

    async def tick(
        subject_id: str,
        due_at: datetime,
        now: datetime,
        records: Sequence[str] = (),
        reconciliation: bool = False,
    ) -> None:
        event = DueTick(
            subject_id=subject_id,
            due_at=due_at,
            sent_at=now,
            records=list(records),
            reconciliation=reconciliation,
        )
        await ticks.send(key=subject_id.encode(), value=codec.encode(event))

    @app.timer(interval=TICK_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def wake_due_subjects() -> None:
        # Due times are read from disk: nothing to rebuild after a rebalance.
        now = clock.now()
        now_ms = to_ms(now)
        sweep = now_ms / 1000 - last_sweep[0] >= MIGRATION_SWEEP_S
        for partition in store.active_partitions():
            if not await timers_may_run(partition):
                continue
            entries = store.entries(partition)
            for subject_id, due_ms in waker.due(entries, now_ms):
                await tick(subject_id, _from_ms(due_ms), now)
            for subject_id in waker.caught_up(entries, policy.event_time.sources, now_ms):
                await tick(subject_id, now, now)
            contract_sources = policy.event_time.contract_sources
            for subject_id, due_ms, records in waker.deferred(entries, contract_sources, now_ms):
                await tick(subject_id, _from_ms(due_ms), now, records=records)
            if sweep:
                for subject_id in waker.legacy(entries, now_ms, MIGRATION_BATCH):
                    await tick(subject_id, now, now)
        if sweep:
            last_sweep[0] = now_ms / 1000
        reconcile_metrics.timer_round_done(time.time())

    reconcile_metrics = ReconcileMetrics.create(registry)
    reconcile_metrics.declare(r.id for r in policy.retention)
    install_reconciliation(
        app,
        Reconciler(bound_ms=int(settings.reconcile_bound_s * 1000)),
        reconcile_metrics,
        interval_s=settings.reconcile_interval_s,
        store=store,
        clock=clock,
        gate=timers_may_run,
        recovering=restoring,
        tick=tick,
    )

    @app.timer(interval=policy.own_topics.segment_for.as_timedelta().total_seconds())  # type: ignore[untyped-decorator]
    async def forget_deleted_state() -> None:
        # An erased subject's deleted entries stay in RocksDB's files until a
        # compaction: compact as often as a topic segment rolls, so the local
        # store forgets within the same bound as the topics (N9.erasure-own-topics).
        await store.forget_deleted()

    @app.timer(interval=METRICS_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def refresh_gauges() -> None:
        now = clock.now()
        now_ms = to_ms(now)
        counts: dict[tuple[str, str], int] = {}
        ages: dict[str, list[float]] = {}
        partitions = store.active_partitions()
        for partition in partitions:
            entries = store.entries(partition)
            for request_type, due_ms in open_requests(entries):
                bucket = deadline_bucket(_from_ms(due_ms), now)
                counts[(request_type, bucket)] = counts.get((request_type, bucket), 0) + 1
            for system, sent_ms in outstanding_commands(entries):
                ages.setdefault(system, []).append((now_ms - sent_ms) / 1000)
            counter.step(partition, entries)
        counter.keep_only(partitions)
        metrics.set_requests_open(counts)
        metrics.set_outstanding(ages)
        metrics.set_timers_scheduled(counter.total)
        metrics.set_consumer_lag_from_monitor(monitor)

    return Pipeline(app=app, handler=handler, store=store, metrics=metrics, registry=registry)


def install_reconciliation(
    app: faust.App,
    reconciler: Reconciler,
    metrics: ReconcileMetrics,
    *,
    interval_s: float,
    store: FaustStateStore,
    clock: Clock,
    gate: Callable[[int], Awaitable[bool]],
    recovering: Callable[[], bool],
    tick: Callable[..., Awaitable[None]],
) -> None:
    """The standing reconciliation as a timer of its own, so that it goes on
    measuring whatever happens to the due-subject timer (agents.runtime.reconcile)."""

    @app.timer(interval=interval_s)  # type: ignore[untyped-decorator]
    async def reconcile() -> None:
        if recovering():
            return  # the store is being restored: figures would be partial
        try:
            await reconcile_round()
        except Exception as exc:  # a check that fails must not stop the worker
            metrics.failed_rounds.inc()
            log.warning("reconciliation round failed (%s); next round", type(exc).__name__)

    async def reconcile_round() -> None:
        now = clock.now()
        now_ms = to_ms(now)
        partitions = store.active_partitions()
        may_tick = {p for p in partitions if await gate(p)}
        entries: dict[int, Entries] = {p: store.entries(p) for p in partitions}
        found = reconciler.round(entries, now_ms, may_tick)
        metrics.publish(found, now_ms)
        for subject_id, record_keys in found.to_tick.items():
            log.warning(
                "reconciliation: %d overdue record(s) of a subject ticked again", len(record_keys)
            )
            await tick(subject_id, now, now, records=record_keys, reconciliation=True)
            metrics.reticked.inc()


def _where(event: Any) -> tuple[str, int, int]:
    m = event.message
    return m.topic, m.partition, m.offset


def _from_ms(ms: int) -> datetime:
    from datetime import UTC

    return datetime.fromtimestamp(ms / 1000, UTC)


def run_worker(settings: Settings, bootstrap: str, *, loglevel: str = "info") -> None:
    """Create topics, serve /metrics, run the Faust worker until SIGTERM.

    SIGTERM (or SIGINT) stops it within ``settings.stop_timeout_s``, with the
    broker or without (agents/runtime/stopping.py says why a late exit is safe).
    """
    # Before anything creates an event loop (Faust's consumer thread makes its
    # own through the same policy): uvloop's callbacks and socket writes cost a
    # fraction of asyncio's, and the worker is one event loop doing small steps.
    mode.loop.use("uvloop")
    policy = load_policy(settings.policy_path)
    ensure_topics(settings, bootstrap, [s.id for s in policy.systems], policy.topic_retention())
    pipeline = build_pipeline(settings, bootstrap, policy=policy)
    if settings.metrics_port:
        start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=pipeline.registry
        )
    watchdog = StopWatchdog(settings.stop_timeout_s)
    worker = Worker(
        pipeline.app,
        watchdog=watchdog,
        repeat_window_s=settings.log_repeat_window_s,
        loglevel=loglevel,
        quiet=True,
    )
    watchdog.before_exit = worker.flush_summaries
    bound_consumer_thread(pipeline.app, settings.stop_timeout_s)
    try:
        worker.execute_from_commandline()
    finally:
        worker.flush_summaries()
