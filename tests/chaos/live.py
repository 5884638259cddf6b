"""Checks that ask the running cluster: consumer lag, the audit chain, the processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from tests.chaos.checks import Check
from tests.chaos.faults import FaultRecord
from tests.chaos.supervisor import CRASHED, Supervisor

LIFECYCLE = Path(sys.executable).parent / "lifecycle"


def group_lag(
    consumer_config: dict[str, str], group: str, topics: Iterable[str], partitions: int
) -> dict[str, int]:
    """Per topic: records not yet committed by ``group`` (end offset - committed)."""
    consumer = Consumer({**consumer_config, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        committed = {
            (tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=15)
        }
        lag: dict[str, int] = {}
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            done = committed[(tp.topic, tp.partition)]
            # Nothing committed yet counts from the partition's start.
            behind = high - (done if done >= 0 else low)
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, behind)
        return lag
    finally:
        consumer.close()


def total_lag(
    consumer_config: dict[str, str], groups: Mapping[str, Iterable[str]], partitions: int
) -> dict[str, int]:
    """Per group: its total lag over its topics."""
    return {
        group: sum(group_lag(consumer_config, group, topics, partitions).values())
        for group, topics in groups.items()
    }


def wait_for_zero_lag(
    consumer_config: dict[str, str],
    groups: Mapping[str, list[str]],
    partitions: int,
    timeout: float,
) -> tuple[dict[str, int], float | None]:
    """Poll until every group's lag is zero twice in a row; (last lags, seconds it took or None)."""
    began = time.monotonic()
    zero_once = False
    while True:
        lags = total_lag(consumer_config, groups, partitions)
        if not any(lags.values()):
            if zero_once:
                return lags, time.monotonic() - began
            zero_once = True
        else:
            zero_once = False
        if time.monotonic() - began >= timeout:
            return lags, None
        time.sleep(2.0)


def lag_check(lags: dict[str, int], took: float | None) -> Check:
    check = Check(
        "consumer lag zero", "every consumer group (worker, downstream systems) caught up"
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
