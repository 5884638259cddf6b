"""One chaos run, start to end: cluster, processes, traffic, faults, checks, teardown.

Everything runs under ``<var>/chaos/<run id>/``: a log per process start, the
report (``report.txt``, ``report.json``); the 3-node cluster is
``<var>/kafka/<run id>/`` (its logs are kept). Worker data and downstream
stores are removed at the end unless ``CHAOS_KEEP_DATA=1``.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import sys
import threading
import time
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import KafkaException
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from agents.rules.policy import load_policy
from streams.admin import ensure_topics
from streams.broker import paths
from streams.broker.admin import admin_client
from streams.broker.launcher import LocalKafka
from streams.broker.ports import free_ports
from streams.codec import Codec
from streams.publisher import producer_config
from streams.settings import REPO_ROOT, Settings
from streams.topics import TopicNames
from tests.chaos import checks, live
from tests.chaos.config import ChaosConfig
from tests.chaos.faults import WORKER, FaultRunner, note_late_recoveries
from tests.chaos.probes import ProbeWatcher
from tests.chaos.report import RunReport
from tests.chaos.snapshot import read_snapshot
from tests.chaos.supervisor import Supervisor
from tests.chaos.traffic import TrafficThread, plan

DEMO_POLICY = REPO_ROOT / "agents" / "policy" / "demo.yaml"
LIFECYCLE = Path(sys.executable).parent / "lifecycle"
READY_LINE = "[^Worker]: Ready"
WORKER_START_TIMEOUT_S = 120.0
# Inherited settings that would point the processes elsewhere; the run sets its own.
_KEEP_FROM_ENV = ("LIFECYCLE_KAFKA_CACHE", "LIFECYCLE_LOG_LEVEL")


def new_run_id() -> str:
    return f"chaos-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


class ChaosRun:
    """Holds what the faults act on (``faults.FaultContext``)."""

    def __init__(self, config: ChaosConfig, workdir: Path | None = None) -> None:
        self.config = config
        self.run_id = new_run_id()
        self.workdir = workdir or paths.var_dir() / "chaos" / self.run_id
        self.policy = load_policy(DEMO_POLICY)
        self.systems = [s.id for s in self.policy.systems]
        # The topics the workers declare under this policy (retention, segments).
        self.retention = self.policy.topic_retention()
        self.names = TopicNames(self.run_id)
        self.group_id = self.run_id
        self.report = RunReport(
            self.run_id,
            settings={
                "customers": str(config.customers),
                "traffic_s": f"{config.traffic_s:.0f}",
                "workers": str(config.workers),
                "faults": config.faults or "none",
                "partitions": str(config.partitions),
                "replication": str(config.replication_factor),
            },
        )
        self.kafka = LocalKafka(nodes=3, name=self.run_id, heap=config.broker_heap, keep_logs=True)
        self.supervisor = Supervisor(self.workdir / "logs")
        self.traffic_started = 0.0
        self.metrics_ports: dict[str, int] = {}

    # -- FaultContext --------------------------------------------------------------------------

    def start_worker(self, n: int) -> str:
        name = f"{WORKER}{n}"
        # A worker keeps its metrics port across restarts (the final check scrapes it).
        port = self.metrics_ports.setdefault(name, free_ports(1)[0])
        env = {
            **self.env,
            "LIFECYCLE_VAR_DIR": str(self.workdir / name),
            "LIFECYCLE_METRICS_PORT": str(port),
            "LIFECYCLE_METRICS_HOST": "127.0.0.1",
        }
        self.supervisor.start(name, [str(LIFECYCLE), "worker"], env, ready_line=READY_LINE)
        return name

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> RunReport:
        began = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            # A CI timeout's SIGTERM must still tear down: children run in sessions of
            # their own and would outlive this process.
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            self._run(began)
        except BaseException as exc:
            where = traceback.extract_tb(exc.__traceback__)[-3:]
            self.report.error = (
                f"{type(exc).__name__}: {exc} (at "
                + " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(where))
                + ")"
            )
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / "error.txt").write_text(traceback.format_exc())
            if not isinstance(exc, Exception):
                raise
        finally:
            self._teardown()
            self.report.timings["total run time"] = time.monotonic() - began
            self.report.write(self.workdir)
        return self.report

    def _run(self, began: float) -> None:
        config, timings = self.config, self.report.timings
        # Other work on the machine slows every figure down; the report says how much.
        self.load_at_start = os.getloadavg()[0]
        self.kafka.start()
        bootstrap = self.kafka.bootstrap_servers
        timings["cluster start"] = time.monotonic() - began
        self.client_config = {"bootstrap.servers": bootstrap}
        self.settings = Settings(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            topic_prefix=self.run_id,
            app_id=self.group_id,
            partitions=config.partitions,
            replication_factor=config.replication_factor,
            var_dir=self.workdir / "downstream",
            policy_path=DEMO_POLICY,
        )
        # Right after creating topics, a node that has not yet seen them answers the
        # drift check with UNKNOWN_TOPIC_OR_PART; creation is idempotent, so try again.
        for attempt in Retrying(
            retry=retry_if_exception_type(KafkaException),
            stop=stop_after_attempt(4),
            wait=wait_fixed(1.0),
            reraise=True,
        ):
            with attempt:
                ensure_topics(self.settings, bootstrap, self.systems, self.retention)
        self.env = self._env(bootstrap)
        self.admin = admin_client(bootstrap)
        codec = Codec()

        step = time.monotonic()
        self.supervisor.__enter__()
        for system in self.systems:
            self.supervisor.start(
                f"downstream-{system}",
                [str(LIFECYCLE), "downstream", "--system", system],
                {**self.env, "LIFECYCLE_VAR_DIR": str(self.workdir / "downstream")},
            )
        started = [self.start_worker(n) for n in range(1, config.workers + 1)]
        self.supervisor.wait_ready(started, WORKER_START_TIMEOUT_S)
        timings["workers ready"] = time.monotonic() - step

        self.watcher = ProbeWatcher(
            self.client_config,
            self.names,
            config.partitions,
            codec,
            [s.id for s in self.policy.marketing_systems],
        )
        self.watcher.start()
        lead = 1.0
        start_wall = datetime.now(UTC) + timedelta(seconds=lead)
        planned = plan(config.customers, config.traffic_s, start_wall, config.seed)
        self.traffic_started = time.monotonic() + lead
        self.traffic = TrafficThread(
            planned,
            producer_config(bootstrap, self.settings),
            self.names,
            codec,
            self.traffic_started,
        )
        self.traffic.start()

        self.report.faults = FaultRunner(self).run()
        timings["faults"] = time.monotonic() - self.traffic_started
        self.traffic.join(max(0.0, self.traffic_started + config.traffic_s + 60 - time.monotonic()))
        unsent = self.traffic.flush(60)
        traffic_end = time.monotonic()
        timings["traffic"] = (self.traffic.finished or traffic_end) - self.traffic_started

        groups = {self.group_id: [*self.names.inputs, self.names.acks, self.names.ticks]}
        groups |= {f"{self.run_id}.downstream.{s}": [self.names.command(s)] for s in self.systems}
        lags, took = live.wait_for_zero_lag(
            self.client_config, groups, config.partitions, config.settle_s, config.drain_s
        )
        timings["settle (lag back to zero)"] = time.monotonic() - traffic_end
        last = self.supervisor.last_restart()
        if last is not None:
            time.sleep(max(0.0, min(config.quiet_s, last + config.quiet_s - time.monotonic())))

        step = time.monotonic()
        snapshot = read_snapshot(
            self.client_config, self.names, self.systems, config.partitions, codec
        )
        report = self.report
        report.checks = checks.run_checks(
            snapshot,
            self.policy,
            now=datetime.now(UTC),
            grace=timedelta(seconds=config.grace_s),
        )
        report.checks.append(live.lag_check(lags, took))
        report.checks.append(live.audit_chain_check(self.env))
        report.checks.append(live.processes_check(self.supervisor, config.quiet_s))
        report.checks.append(live.crashes_check(self.supervisor, self.traffic_started))
        report.checks.append(live.faults_check(report.faults))
        report.checks.append(
            live.reconciliation_check(self.metrics_ports, self.supervisor.running(WORKER))
        )
        note_late_recoveries(report.faults, self.watcher)
        timings["check"] = time.monotonic() - step
        confirmed = sum(self.traffic.confirmed.values())
        failed = sum(self.traffic.failed.values())
        report.figures["events published"] = (
            f"{self.traffic.published} ({confirmed} confirmed by the broker, {failed} failed, "
            f"{unsent} unsent; {len(planned)} planned, the rest are probes)"
        )
        report.figures |= checks.figures(snapshot, self.policy)
        report.restarts = {n: c.restarts for n, c in self.supervisor.children.items()}
        report.figures["machine load (1-min average) at start, end"] = (
            f"{self.load_at_start:.1f}, {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )

    def _env(self, bootstrap: str) -> dict[str, str]:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith("LIFECYCLE_") or k == "KAFKA_BOOTSTRAP_SERVERS")
            or k in _KEEP_FROM_ENV
        }
        return {
            **inherited,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LIFECYCLE_TOPIC_PREFIX": self.run_id,
            "LIFECYCLE_APP_ID": self.group_id,
            "LIFECYCLE_PARTITIONS": str(self.config.partitions),
            "LIFECYCLE_REPLICATION_FACTOR": str(self.config.replication_factor),
            "LIFECYCLE_POLICY_PATH": str(DEMO_POLICY),
            "LIFECYCLE_METRICS_PORT": "0",
            "LIFECYCLE_WEB_PORT": "0",
            "LIFECYCLE_RECONCILE_BOUND_S": f"{self.config.reconcile_bound_s:g}",
        }

    def _teardown(self) -> None:
        # Each step runs even if one before it failed: the children and the cluster
        # must not outlive the run.
        try:
            self.supervisor.shutdown()
        finally:
            try:
                self._stop_clients()
            finally:
                self.kafka.stop()
        if not self.config.keep_data:
            for path in self.workdir.glob(f"{WORKER}*"):
                shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(self.workdir / "downstream", ignore_errors=True)

    def _stop_clients(self) -> None:
        traffic = getattr(self, "traffic", None)
        if traffic is not None:
            traffic.stop()
            traffic.join(10)
        watcher = getattr(self, "watcher", None)
        if watcher is not None:
            watcher.stop()
        # Release this process's Kafka clients before the brokers go, or librdkafka
        # keeps reconnecting (and saying so) until they are collected.
        del traffic, watcher
        self.traffic = self.watcher = self.admin = None  # type: ignore[assignment]
        gc.collect()


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run_chaos(config: ChaosConfig | None = None, workdir: Path | None = None) -> RunReport:
    return ChaosRun(config or ChaosConfig(), workdir).run()
