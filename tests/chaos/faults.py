"""The faults, injected one after another while traffic flows.

Each step does its damage, publishes probes (``probes.py``) and waits until
they are through: the time from the damage to that moment is the step's
recovery time. Steps, in order, for the names in ``CHAOS_FAULTS``:

- ``kill-worker``: SIGKILL each running worker in turn (the supervisor restarts it);
- ``broker``: SIGKILL the broker node that coordinates the workers' consumer
  group, restart it after ``CHAOS_BROKER_DOWN_S``;
- ``downstream``: SIGKILL one reference downstream consumer (restarted);
- ``stall``: SIGSTOP a worker past its session timeout, then SIGCONT: it lost its
  partitions meanwhile, and whatever it decided from its stale state must not go
  out (its outputs are fenced with the audit; it may stop with exit 75);
- ``handover``: up to 3 workers, then a burst of recordings that fall due together
  is published and workers are stopped (SIGTERM) down to 1: one at once, the last
  shortly before the burst falls due, so the rebalance and the due times overlap
  (the lost-timers report: every one of them must still be deleted);
- ``scale``: stop workers down to 1, start workers up to 3, stop down to 1
  (each a step; stops are clean SIGTERMs, as a scale-down is).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Protocol

from confluent_kafka.admin import AdminClient

from agents.rules.policy import Policy, RuleKind
from schemas.base import DataCategory
from schemas.events import CallRecorded
from streams.broker.launcher import LocalKafka
from tests.chaos.config import ChaosConfig
from tests.chaos.probes import ProbeWatcher, partition_of, probe_events
from tests.chaos.supervisor import Supervisor
from tests.chaos.traffic import TrafficThread

WORKER = "worker-"


@dataclass
class FaultRecord:
    name: str
    detail: str
    at_s: float  # seconds after the traffic started
    recovered_s: float | None = None  # None: probes not through within the timeout
    injected: bool = True
    notes: list[str] = field(default_factory=list)
    # When the probes got through after all, for a fault not recovered by the timeout.
    late_s: float | None = None
    began: float = 0.0
    probes: list[str] = field(default_factory=list)


class FaultContext(Protocol):
    config: ChaosConfig
    supervisor: Supervisor
    kafka: LocalKafka
    watcher: ProbeWatcher
    traffic: TrafficThread
    admin: AdminClient
    group_id: str
    traffic_started: float
    policy: Policy

    def start_worker(self, n: int) -> str: ...


def workers(ctx: FaultContext) -> list[str]:
    return ctx.supervisor.wanted(WORKER)


def group_coordinator(admin: AdminClient, group_id: str) -> int:
    """The broker node coordinating ``group_id`` now."""
    (future,) = admin.describe_consumer_groups([group_id], request_timeout=10).values()
    return int(future.result(timeout=15).coordinator.id)


class FaultRunner:
    def __init__(self, ctx: FaultContext) -> None:
        self.ctx = ctx
        self.records: list[FaultRecord] = []

    def run(self) -> list[FaultRecord]:
        ctx = self.ctx
        wait = ctx.traffic_started + ctx.config.first_fault_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for name in ctx.config.fault_names:
            {
                "kill-worker": self._kill_workers,
                "broker": self._broker,
                "downstream": self._downstream,
                "stall": self._stall,
                "handover": self._handover,
                "scale": self._scale,
            }[name]()
        return self.records

    # -- the faults ----------------------------------------------------------------------------

    def _kill_workers(self) -> None:
        for name in workers(self.ctx):
            self._step("kill-worker", f"kill -9 {name}", partial(self.ctx.supervisor.kill, name))

    def _broker(self) -> None:
        ctx = self.ctx
        try:
            node = group_coordinator(ctx.admin, ctx.group_id)
            why = "coordinator of the workers' group"
        except Exception as exc:  # the fault still runs, on some node
            node = ctx.kafka.running_node_ids()[0]
            why = f"coordinator unknown: {type(exc).__name__}"
        down = ctx.config.broker_down_s

        def kill() -> None:
            ctx.kafka.kill_node(node)

        def restart(record: FaultRecord, killed: float) -> None:
            time.sleep(max(0.0, killed + down - time.monotonic()))
            began = time.monotonic()
            ctx.kafka.start_node(node)
            record.notes.append(
                f"node {node} restarted after {began - killed:.0f}s down, "
                f"serving {time.monotonic() - began:.1f}s later"
            )

        self._step(
            "broker",
            f"kill -9 broker node {node} ({why}), restarted after {down:.0f}s",
            kill,
            meanwhile=restart,
        )

    def _downstream(self) -> None:
        victim = f"downstream-{self.ctx.config.downstream_victim}"
        self._step("downstream", f"kill -9 {victim}", lambda: self.ctx.supervisor.kill(victim))

    def _stall(self) -> None:
        ctx = self.ctx
        running = workers(ctx)
        victim = running[0]
        seconds = ctx.config.stall_s
        detail = f"SIGSTOP {victim} for {seconds:.0f}s, then SIGCONT"
        if len(running) < 2:
            detail += " (the only worker: it keeps its partitions)"
        self._step("stall", detail, lambda: ctx.supervisor.stall(victim, seconds))

    def _handover(self) -> None:
        ctx = self.ctx
        config = ctx.config

        def act() -> None:
            scale_up(ctx, 3)
            due = datetime.now(UTC) + timedelta(seconds=config.burst_due_in_s)
            for event in burst(ctx.policy, due, config.burst_records, config.partitions):
                ctx.traffic.publish_now(event)
            victims = workers(ctx)[1:][::-1]
            if victims:
                ctx.supervisor.stop(victims[0])
            last = due - timedelta(seconds=config.burst_last_stop_before_s)
            time.sleep(max(0.0, (last - datetime.now(UTC)).total_seconds()))
            for name in victims[1:]:
                ctx.supervisor.stop(name)

        detail = (
            f"workers -> 3, {config.burst_records} recordings due in "
            f"{config.burst_due_in_s:.0f}s, workers -> 1 (the last SIGTERM "
            f"{config.burst_last_stop_before_s:.1f}s before they fall due)"
        )
        self._step("handover", detail, act)

    def _scale(self) -> None:
        ctx = self.ctx

        def scale_to(target: int) -> Callable[[], None]:
            def act() -> None:
                running = workers(ctx)
                for name in running[target:][::-1]:
                    ctx.supervisor.stop(name)
                idle = [n for n in range(1, 4) if f"{WORKER}{n}" not in running]
                started = [ctx.start_worker(n) for n in idle[: max(0, target - len(running))]]
                if started:
                    ctx.supervisor.wait_ready(started, timeout=ctx.config.recovery_timeout_s)

            return act

        previous = len(workers(ctx))
        for target in (1, 3, 1):
            self._step("scale", f"workers {previous} -> {target}", scale_to(target))
            previous = target

    # -- one step ------------------------------------------------------------------------------

    def _step(
        self,
        name: str,
        detail: str,
        act: Callable[[], object],
        meanwhile: Callable[[FaultRecord, float], None] | None = None,
    ) -> None:
        ctx = self.ctx
        index = len(self.records) + 1
        began = time.monotonic()
        record = FaultRecord(name, detail, at_s=began - ctx.traffic_started, began=began)
        self.records.append(record)
        latest = ctx.config.traffic_s + ctx.config.fault_overrun_s
        if record.at_s > latest:
            record.injected = False
            record.notes.append(
                f"not injected: the faults before it ran past +{latest:.0f}s "
                "(a slow machine: raise CHAOS_TRAFFIC_S)"
            )
            return
        if record.at_s > ctx.config.traffic_s:
            record.notes.append("injected after the traffic window (only probes flowing)")
        try:
            act()
        except Exception as exc:
            record.injected = False
            record.notes.append(f"could not inject: {type(exc).__name__}: {exc}")
            return
        probes = probe_events(index, ctx.config.partitions, datetime.now(UTC))
        record.probes = [p.subject_id for p in probes]
        for probe in probes:
            ctx.traffic.publish_now(probe)
        if meanwhile is not None:
            meanwhile(record, began)
        through = ctx.watcher.wait_through(
            [p.subject_id for p in probes],
            timeout=max(0.0, began + ctx.config.recovery_timeout_s - time.monotonic()),
        )
        if through is not None:
            record.recovered_s = through - began
        time.sleep(ctx.config.fault_gap_s)


def scale_up(ctx: FaultContext, target: int) -> None:
    """Start idle workers until ``target`` run, and wait until they are ready."""
    running = workers(ctx)
    idle = [n for n in range(1, 4) if f"{WORKER}{n}" not in running]
    started = [ctx.start_worker(n) for n in idle[: max(0, target - len(running))]]
    if started:
        ctx.supervisor.wait_ready(started, timeout=ctx.config.recovery_timeout_s)


def burst(policy: Policy, due: datetime, count: int, partitions: int) -> list[CallRecorded]:
    """``count`` call recordings, spread over every partition, that all fall due at
    ``due`` under ``policy`` (recorded that long before)."""
    rule = policy.rule_for(policy.controller.id, RuleKind.FIXED, DataCategory.CALL_RECORDING)
    assert rule is not None, "the policy keeps call recordings under a fixed rule"
    recorded = due - rule.keep_for.as_timedelta()
    stamp = f"{due:%H%M%S}"
    events = []
    for n in range(count):
        subject = f"burst-{stamp}-{n}"
        events.append(
            CallRecorded(
                event_id=f"ev-{subject}",
                subject_id=subject,
                source_system="telephony",
                event_time=recorded,
                recording_id=f"rec-{subject}",
                system="call-recorder",
                duration_seconds=60,
            )
        )
    spread = {partition_of(e.subject_id.encode(), partitions) for e in events}
    assert count < partitions or len(spread) == partitions, "the burst misses a partition"
    return events


def note_late_recoveries(records: list[FaultRecord], watcher: ProbeWatcher) -> None:
    """For faults not recovered within the timeout: whether, and when, they did later."""
    for record in records:
        if record.recovered_s is not None or not record.probes:
            continue
        times = [watcher.through(s) for s in record.probes]
        if all(t is not None for t in times):
            record.late_s = max(t for t in times if t is not None) - record.began
        else:
            missing = sum(1 for t in times if t is None)
            record.notes.append(f"{missing} of {len(times)} probe(s) never got through")
