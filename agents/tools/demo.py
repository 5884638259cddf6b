"""The README's run command: everything on one machine, with a live summary.

Starts (or reuses, with KAFKA_BOOTSTRAP_SERVERS) a Kafka broker, the worker
under the compressed demo policy, a reference downstream consumer per system
and the traffic simulator, then prints what happens: recordings expiring,
contracts ageing out, opt-outs suppressing, erasures completing.
"""

from __future__ import annotations

import contextlib
import gc
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from agents.clock import SystemClock
from agents.rules.policy import load_policy
from agents.tools.downstream import DownstreamConsumer, ReferenceStore
from agents.tools.simulator import Simulator
from schemas.audit import AuditEvent
from schemas.responses import RequestResponse
from streams.admin import ensure_topics
from streams.broker.launcher import LocalKafka
from streams.broker.ports import free_ports
from streams.codec import Codec, DecodeError
from streams.connection import bootstrap_from_env
from streams.publisher import Publisher
from streams.settings import REPO_ROOT, Settings
from streams.topics import PRODUCING_SYSTEMS, TopicNames

DEMO_POLICY = REPO_ROOT / "agents" / "policy" / "demo.yaml"
NOTABLE = {
    "retention-delete": "deletion commanded",
    "command-completed": "downstream confirmed",
    "deletion-held": "deletion held",
    "marketing-suppressed": "marketing suppressed",
    "re-add-suppressed": "re-add blocked",
    "erasure-decided": "erasure decided",
    "request-completed": "request completed",
    "command-escalated": "command escalated",
    "request-overdue": "request overdue",
}


@contextlib.contextmanager
def _broker(var_dir: Path) -> Iterator[str]:
    existing = bootstrap_from_env()
    if existing:
        yield existing
        return
    print("starting a local Kafka broker (first run downloads the jars with mvn)...", flush=True)
    with LocalKafka(nodes=1, name="demo") as cluster:
        yield cluster.bootstrap_servers


def _metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            key = sample.name
            if sample.name == "lifecycle_requests_open":
                key = f"requests_open_{sample.labels.get('bucket')}"
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


class _Feed(threading.Thread):
    """Prints notable audit decisions and request responses as they happen."""

    def __init__(
        self,
        bootstrap: str,
        names: TopicNames,
        stop: threading.Event,
        security: dict[str, str] | None = None,
    ) -> None:
        super().__init__(daemon=True, name="demo-feed")
        self.bootstrap, self.names, self.stop_event = bootstrap, names, stop
        self.security = security or {}
        self.counts: dict[str, int] = {}

    def run(self) -> None:
        codec, clock = Codec(), SystemClock()
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"{self.names.prefix}.demo-feed",
                "auto.offset.reset": "earliest",
                # Audit events are written in transactions; an aborted one is not shown.
                "isolation.level": "read_committed",
                **self.security,
            }
        )
        consumer.subscribe([self.names.audit, self.names.responses])
        try:
            while not self.stop_event.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                try:
                    model = codec.decode(msg.value(), msg.key(), now=clock.now(), check_key=False)
                except DecodeError:
                    continue
                self._show(model)
        finally:
            consumer.close()

    def _show(self, model: object) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        if isinstance(model, AuditEvent) and model.decision in NOTABLE:
            self.counts[model.decision] = self.counts.get(model.decision, 0) + 1
            what = NOTABLE[model.decision]
            detail = model.details.get("record-ids") or model.details.get("system") or ""
            print(f"  {stamp}  {model.rule_id:<24} {what:<24} {detail}", flush=True)
        elif isinstance(model, RequestResponse):
            kept = f", {len(model.kept)} kept with reasons" if model.kept else ""
            print(
                f"  {stamp}  {model.request_type.value:<24} request {model.request_id} "
                f"{model.status.value}{kept}",
                flush=True,
            )


DEMO_DESK_USER = "demo"


def _desk_users(path: Path) -> str:
    """A users file with one desk officer for this demo run; returns its password.

    Demo credentials only: a fresh random password per run, printed on the console."""
    from desk.web.auth import hash_password

    password = secrets.token_urlsafe(9)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"users:\n  - name: {DEMO_DESK_USER}\n    role: officer\n"
        f"    password_hash: '{hash_password(password)}'\n",
        encoding="utf-8",
    )
    return password


def _start_desk(
    env: dict[str, str], var_dir: Path, run_id: str, port: int
) -> tuple[subprocess.Popen[bytes], str]:
    """``lifecycle desk serve --project`` for this run; (process, demo password)."""
    password = _desk_users(var_dir / "demo" / run_id / "desk-users.yaml")
    desk_env = {
        **env,
        "LIFECYCLE_DESK_USERS_FILE": str(var_dir / "demo" / run_id / "desk-users.yaml"),
        "LIFECYCLE_DESK_SECRET_KEY": secrets.token_urlsafe(32),
        "LIFECYCLE_DESK_PORT": str(port),
    }
    lifecycle = Path(sys.executable).parent / "lifecycle"
    with (var_dir / "demo" / f"{run_id}-desk.log").open("wb") as log:
        desk = subprocess.Popen(
            [str(lifecycle), "desk", "serve", "--project"],
            env=desk_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return desk, password


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def run_demo(duration: float | None = None, every_s: float = 1.0) -> None:
    var_dir = Path(os.environ.get("LIFECYCLE_VAR_DIR", REPO_ROOT / "var"))
    run_id = datetime.now(UTC).strftime("demo%Y%m%d%H%M%S")
    with _broker(var_dir) as bootstrap:
        metrics_port, desk_port = free_ports(2)
        settings = Settings(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            topic_prefix=run_id,
            app_id=run_id,
            partitions=3,
            policy_path=DEMO_POLICY,
            var_dir=var_dir,
            metrics_port=metrics_port,
        )
        policy = load_policy(DEMO_POLICY)
        names = TopicNames(run_id)
        ensure_topics(settings, bootstrap, [s.id for s in policy.systems])
        log_path = var_dir / "demo" / f"{run_id}-worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LIFECYCLE_TOPIC_PREFIX": run_id,
            "LIFECYCLE_APP_ID": run_id,
            "LIFECYCLE_PARTITIONS": "3",
            "LIFECYCLE_POLICY_PATH": str(DEMO_POLICY),
            "LIFECYCLE_VAR_DIR": str(var_dir),
            "LIFECYCLE_METRICS_PORT": str(metrics_port),
            "LIFECYCLE_WEB_PORT": "0",
        }
        lifecycle = Path(sys.executable).parent / "lifecycle"
        stop = threading.Event()
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [str(lifecycle), "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # The desk reads the worker's state changelog, which the worker creates as it
        # starts: the desk's projector waits for it (see desk.readmodel.projector).
        desk, desk_password = _start_desk(env, var_dir, run_id, desk_port)
        consumers = [
            DownstreamConsumer(
                system=s.id,
                bootstrap=bootstrap,
                settings=settings,
                store=ReferenceStore(var_dir / "demo" / run_id / f"{s.id}.sqlite"),
            )
            for s in policy.systems
        ]
        threads = [threading.Thread(target=c.run, daemon=True) for c in consumers]
        feed = _Feed(bootstrap, names, stop, settings.security.confluent_config())
        for t in [*threads, feed]:
            t.start()
        print(
            f"demo {run_id}: worker log {log_path}, metrics http://127.0.0.1:{metrics_port}/metrics"
        )
        print(
            f"privacy desk: http://127.0.0.1:{desk_port}/  "
            f"(demo login: {DEMO_DESK_USER} / {desk_password}; "
            f"log {var_dir / 'demo' / f'{run_id}-desk.log'})"
        )
        print("policy: recordings kept 20 s, legal-obligation data 60 s after contract end")
        publisher = Publisher(bootstrap, settings)
        started = time.monotonic()
        try:
            _drive(publisher, worker, metrics_port, started, duration, every_s)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            for c in consumers:
                c.stop()
            for t in [*threads, feed]:
                t.join(15)
            publisher.close()
            # Release the Kafka clients before the broker goes, or librdkafka
            # keeps reconnecting to it (and saying so) until they are collected.
            del consumers, publisher
            gc.collect()
            _stop(desk)
            _stop(worker)
            print(
                "demo stopped; seen: "
                + ", ".join(f"{NOTABLE[k]} x{v}" for k, v in sorted(feed.counts.items())),
                flush=True,
            )


def _drive(
    publisher: Publisher,
    worker: subprocess.Popen[bytes],
    metrics_port: int,
    started: float,
    duration: float | None,
    every_s: float,
) -> None:
    simulator = Simulator()
    stream = simulator.stream(datetime.now(UTC), every_s)
    upcoming = next(stream)
    last_summary = 0.0
    while duration is None or time.monotonic() - started < duration:
        if worker.poll() is not None:
            raise SystemExit(f"worker exited with {worker.returncode}; see its log")
        now = datetime.now(UTC)
        while upcoming.at <= now:
            publisher.publish(upcoming.event)
            upcoming = next(stream)
        if time.monotonic() - last_summary >= 5:
            last_summary = time.monotonic()
            # Each publisher's heartbeat: everything up to now is published, so
            # erasure answers need not wait for the policy's maximum (N9).
            for system in PRODUCING_SYSTEMS:
                publisher.publish_watermark(system, now)
            m = _metrics(metrics_port)
            emitted = m.get("lifecycle_commands_emitted_total", 0)
            acked = m.get("lifecycle_commands_acknowledged_total", 0)
            elapsed = int(time.monotonic() - started)
            print(
                f"[{elapsed:>4}s] events in {m.get('lifecycle_events_consumed_total', 0):.0f}"
                f" | commands out {emitted:.0f} | acknowledged {acked:.0f}"
                f" | pending {m.get('lifecycle_commands_outstanding', 0):.0f}"
                f" | requests overdue {m.get('requests_open_overdue', 0):.0f}"
                f" | dead letters {m.get('lifecycle_dead_letters_total', 0):.0f}",
                flush=True,
            )
        time.sleep(0.2)
