"""Checks that ask the running cluster: consumer lag, the audit chain, the processes."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.checks import Check
from tests.chaos.faults import FaultRecord
from tests.chaos.supervisor import CRASHED, Supervisor

LIFECYCLE = Path(sys.executable).parent / "lifecycle"


Ends = dict[tuple[str, int], int]


def end_offsets(consumer_config: dict[str, str], topics: Iterable[str], partitions: int) -> Ends:
    """Each partition's end offset now."""
    consumer = Consumer({**consumer_config, "group.id": "chaos-ends", "enable.auto.commit": False})
    try:
        return {
            (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
            for t in topics
            for p in range(partitions)
        }
    finally:
        consumer.close()


def group_lag(
    consumer_config: dict[str, str], group: str, topics: Iterable[str], partitions: int, ends: Ends
) -> int:
    """Records up to ``ends`` that ``group`` has not yet committed."""
    consumer = Consumer({**consumer_config, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        behind = 0
        for tp in consumer.committed(tps, timeout=15):
            low, _ = consumer.get_watermark_offsets(tp, timeout=10)
            # Nothing committed yet counts from the partition's start.
            done = tp.offset if tp.offset >= 0 else low
            behind += max(0, ends[(tp.topic, tp.partition)] - done)
        return behind
    finally:
        consumer.close()


def wait_for_zero_lag(
    consumer_config: dict[str, str],
    groups: Mapping[str, list[str]],
    partitions: int,
    timeout: float,
    drain: float = 0.0,
) -> tuple[dict[str, int], float | None]:
    """After ``drain`` seconds (work in flight at the end of the traffic: answers
    waiting for acknowledgements or a watermark's maximum wait), poll until every
    group has committed everything its topics held then; (last lags, seconds it
    took or None).

    Measured against the end offsets at the start, not the moving end: after the
    traffic, records keep falling due, so the worker keeps writing ticks to itself
    and downstream systems keep acknowledging; a group that is keeping up still
    shows a few records in flight at any instant (until its next commit)."""
    began = time.monotonic()
    time.sleep(min(drain, timeout))
    ends = end_offsets(consumer_config, {t for ts in groups.values() for t in ts}, partitions)
    while True:
        lags = {
            group: group_lag(consumer_config, group, topics, partitions, ends)
            for group, topics in groups.items()
        }
        if not any(lags.values()):
            return lags, time.monotonic() - began
        if time.monotonic() - began >= timeout:
            return lags, None
        time.sleep(2.0)


def lag_check(lags: dict[str, int], took: float | None) -> Check:
    check = Check(
        "consumer lag zero",
        "every consumer group (worker, downstream systems) committed all its topics held "
        "when the traffic ended",
    )
    check.checked = len(lags)
    for group, lag in sorted(lags.items()):
        if lag:
            check.violations.append(f"group {group}: {lag} record(s) not committed")
    if took is not None:
        check.notes.append(f"reached zero after {took:.0f}s of waiting")
    return check


def audit_chain_check(env: Mapping[str, str], timeout: float = 180.0) -> Check:
    """``lifecycle audit verify``, as an operator runs it."""
    check = Check(
        "audit chain verified", "`lifecycle audit verify` finds every partition's chain intact"
    )
    result = subprocess.run(
        [str(LIFECYCLE), "audit", "verify"],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    check.checked = sum(1 for line in lines if line.startswith("partition "))
    for line in lines:
        if "BROKEN" in line or "broken" in line:
            check.violations.append(line)
    if result.returncode != 0 and not check.violations:
        check.violations.append(
            f"lifecycle audit verify exited {result.returncode}: {result.stderr.strip()[-500:]}"
        )
    check.notes += [line for line in lines if line not in check.violations][:20]
    return check


def processes_check(supervisor: Supervisor, quiet_s: float) -> Check:
    check = Check(
        "no process restarting",
        f"every worker and downstream consumer is up and none restarted in the last {quiet_s:.0f}s",
    )
    now = time.monotonic()
    for name in supervisor.wanted():
        check.checked += 1
        child = supervisor.children[name]
        if not child.running:
            check.violations.append(f"{name} is not running")
        elif now - child.started_at < quiet_s:
            check.violations.append(f"{name} (re)started {now - child.started_at:.0f}s ago")
    return check


def crashes_check(supervisor: Supervisor, started: float) -> Check:
    check = Check(
        "no unplanned exits",
        "only the injected faults ended a process: none exited by itself (no crash on a "
        "transient error, no crash loop)",
    )
    exits = supervisor.exits
    check.checked = len(exits)
    for e in exits:
        if e.cause == CRASHED:
            check.violations.append(
                f"{e.name} exited by itself with code {e.code} at +{e.at - started:.0f}s"
            )
    return check


def faults_check(records: list[FaultRecord]) -> Check:
    check = Check("faults injected", "every fault asked for was injected while the run went on")
    check.checked = len(records)
    for r in records:
        if not r.injected:
            check.violations.append(f"{r.detail}: " + "; ".join(r.notes))
    return check


# The reconciliation's gauges (agents/runtime/reconcile.py): the target is 0.
OVERDUE_GAUGES = ("lifecycle_records_overdue", "lifecycle_timers_overdue")
RETICKED = "lifecycle_reconciliation_reticked_total"


def scrape(port: int) -> dict[str, float]:
    """Each metric's samples summed, from a worker's /metrics on loopback."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def reconciliation_check(ports: Mapping[str, int], running: Iterable[str]) -> Check:
    """Every running worker's reconciliation finds nothing overdue at the end, and
    says how many subjects it had to wake again during the run (a deletion the
    timers missed, healed)."""
    check = Check(
        "nothing overdue (reconciliation)",
        "each running worker's standing reconciliation finds no record kept past its "
        "time without a reason, and no overdue wake-up",
    )
    reticked = 0.0
    for name in running:
        port = ports.get(name)
        if port is None:
            continue
        try:
            sums = scrape(port)
        except OSError as exc:
            check.violations.append(f"{name}: metrics not read ({type(exc).__name__})")
            continue
        check.checked += 1
        for gauge in OVERDUE_GAUGES:
            if sums.get(gauge, 0.0) > 0:
                check.violations.append(f"{name}: {gauge} = {sums[gauge]:.0f}")
        reticked += sums.get(RETICKED, 0.0)
    check.notes.append(
        f"subjects woken again by the reconciliation (workers now running): {reticked:.0f}"
    )
    return check
