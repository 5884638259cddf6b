"""The README's run command: everything on one machine, with a live summary.

Starts (or reuses, with KAFKA_BOOTSTRAP_SERVERS) a Kafka broker, the worker
under the compressed demo policy, a reference downstream consumer per system
and the traffic simulator, then prints what happens: recordings expiring,
contracts ageing out, opt-outs suppressing, erasures completing.
"""

from __future__ import annotations

import contextlib
import gc
import logging
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
from types import FrameType
from typing import Any

from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from agents.clock import SystemClock
from agents.rules.policy import Policy, load_policy
from agents.runtime.replayer import ErasureReplayer, RestoreListener
from agents.tools.downstream import DownstreamConsumer, ReferenceStore
from agents.tools.simulator import Simulator
from schemas.audit import AuditEvent
from schemas.responses import RequestResponse
from streams.admin import ensure_topics
from streams.broker.launcher import LocalKafka
from streams.broker.ports import free_ports
from streams.codec import Codec, DecodeError
from streams.connection import bootstrap_from_env
from streams.logs import limit_repeats
from streams.publisher import Publisher
from streams.settings import REPO_ROOT, Settings
from streams.topics import PRODUCING_SYSTEMS, TopicNames

DEMO_POLICY = REPO_ROOT / "agents" / "policy" / "demo.yaml"
LIFECYCLE = Path(sys.executable).parent / "lifecycle"
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
    "erasure-replayed": "erasure re-sent after a restore",
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
        security: dict[str, Any] | None = None,
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
    children: _Children, env: dict[str, str], var_dir: Path, run_id: str, port: int
) -> str:
    """``lifecycle desk serve --project`` for this run; returns the demo password."""
    password = _desk_users(var_dir / "demo" / run_id / "desk-users.yaml")
    desk_env = {
        **env,
        "LIFECYCLE_DESK_USERS_FILE": str(var_dir / "demo" / run_id / "desk-users.yaml"),
        "LIFECYCLE_DESK_SECRET_KEY": secrets.token_urlsafe(32),
        "LIFECYCLE_DESK_PORT": str(port),
    }
    children.start(
        [str(LIFECYCLE), "desk", "serve", "--project"],
        desk_env,
        var_dir / "demo" / f"{run_id}-desk.log",
    )
    return password


# The demo's children stop within their own bound (the worker's
# LIFECYCLE_STOP_TIMEOUT_S); this much later their process groups are killed.
CHILD_STOP_MARGIN_S = 5.0
# The demo's own Kafka clients (downstream consumers, restores, feed) close
# within this, together, before the broker goes.
THREADS_STOP_S = 10.0
# Ctrl-C, a closed terminal and a plain `kill` all end the demo the same way.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Interrupts:
    """Turns the first stop signal into a KeyboardInterrupt: one path for all of them.

    Later signals are ignored, so impatience cannot cut the cleanup short (it
    is bounded anyway). While a child is being started (``holding``), the
    interrupt waits until the child is known, so that it is stopped too.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        # Set once the demo stops by itself: a signal then must not cut the
        # cleanup short either.
        self.stopping = False
        self._holding = 0
        self._pending = False

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None or self.stopping:
            return
        self.received = signum
        if self._holding:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        if not self._holding and self._pending:
            self._pending = False
            raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_Interrupts]:
    """SIGINT, SIGTERM and SIGHUP interrupt the demo; the previous handlers after.

    Entered once the broker runs: the launcher's own SIGTERM/SIGHUP handler
    (which stops its brokers at once) must not run before the demo's children
    are stopped; the broker goes last, when the demo leaves ``_broker``.
    """
    interrupts = _Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield interrupts  # signal handlers can only be set in the main thread
        return
    previous = {signum: signal.signal(signum, interrupts.handle) for signum in STOP_SIGNALS}
    try:
        yield interrupts
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Children:
    """The demo's child processes, each the leader of its own session.

    Ctrl-C in the terminal reaches the demo only; the demo stops its children
    itself: SIGTERM to each process group once, then up to ``grace_s`` for
    them to exit, then SIGKILL to the group of each one still running.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.processes: list[subprocess.Popen[bytes]] = []
        self._terminated_at: float | None = None

    def start(
        self, args: list[str], env: dict[str, str], log_path: Path
    ) -> subprocess.Popen[bytes]:
        # stdout and stderr (librdkafka's lines, tracebacks) go to the child's log.
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                args,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def terminate(self) -> None:
        """SIGTERM to every child's group, once: a second SIGTERM makes the worker
        give up its clean stop (agents/runtime/stopping.py)."""
        if self._terminated_at is not None:
            return
        self._terminated_at = time.monotonic()
        for process in self.processes:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)

    def stop(self) -> None:
        """Terminate, wait up to the bound, kill what is left; every child reaped."""
        self.terminate()
        deadline = (self._terminated_at or time.monotonic()) + self.grace_s
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            # Only a leader not yet reaped: its pid cannot have been reused.
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@contextlib.contextmanager
def _log_to_file(path: Path, repeat_window_s: float) -> Iterator[None]:
    """The demo's own log lines (librdkafka's among them) go to ``path``, not the
    screen, which is for the summary; the previous root handlers after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    previous = list(root.handlers)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    limit_repeats([handler], repeat_window_s)
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.handlers[:] = previous
        handler.close()


class _InProcess:
    """What runs inside the demo's process: downstream consumers, erasure replays
    after restores, the decision feed and the publisher; stopped together."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.consumers: list[DownstreamConsumer] = []
        self.restores: RestoreListener | None = None
        self.publisher: Publisher | None = None
        self.threads: list[threading.Thread] = []

    def start(self, thread: threading.Thread) -> None:
        self.threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for consumer in self.consumers:
            consumer.stop()
        if self.restores is not None:
            self.restores.stop()
        deadline = time.monotonic() + THREADS_STOP_S
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.publisher is not None:
            self.publisher.close()
        # Release the Kafka clients before the broker goes, or librdkafka
        # keeps reconnecting to it until they are collected.
        self.consumers, self.restores, self.publisher = [], None, None
        gc.collect()


def run_demo(duration: float | None = None, every_s: float = 1.0) -> None:
    """Run until ``duration`` ends or a stop signal (SIGINT, SIGTERM, SIGHUP)
    arrives; every process the demo started is stopped before it returns."""
    var_dir = Path(os.environ.get("LIFECYCLE_VAR_DIR", REPO_ROOT / "var"))
    run_id = datetime.now(UTC).strftime("demo%Y%m%d%H%M%S")
    seen: dict[str, int] = {}
    try:
        with contextlib.ExitStack() as stack:
            # Unwound in reverse: the demo's processes, then the signal
            # handlers, then the broker, last.
            demo_log = var_dir / "demo" / f"{run_id}-demo.log"
            stack.enter_context(_log_to_file(demo_log, Settings().log_repeat_window_s))
            bootstrap = stack.enter_context(_broker(var_dir))
            interrupts = stack.enter_context(_stop_on_signals())
            _run(stack, interrupts, bootstrap, var_dir, run_id, seen, duration, every_s)
    except KeyboardInterrupt:
        pass  # Ctrl-C, SIGTERM or SIGHUP: everything is stopped by now
    finally:
        print(
            "demo stopped; seen: "
            + ", ".join(f"{NOTABLE[k]} x{v}" for k, v in sorted(seen.items())),
            flush=True,
        )


def _run(
    stack: contextlib.ExitStack,
    interrupts: _Interrupts,
    bootstrap: str,
    var_dir: Path,
    run_id: str,
    seen: dict[str, int],
    duration: float | None,
    every_s: float,
) -> None:
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
    ensure_topics(settings, bootstrap, [s.id for s in policy.systems], policy.topic_retention())
    log_path = var_dir / "demo" / f"{run_id}-worker.log"
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
    children = _Children(settings.stop_timeout_s + CHILD_STOP_MARGIN_S)
    stack.callback(children.stop)
    with interrupts.holding():
        worker = children.start([str(LIFECYCLE), "worker"], env, log_path)
    # The desk reads the worker's state changelog, which the worker creates as it
    # starts: the desk's projector waits for it (see desk.readmodel.projector).
    with interrupts.holding():
        desk_password = _start_desk(children, env, var_dir, run_id, desk_port)
    inside = _InProcess()
    stack.callback(inside.stop)
    # Runs first: the children stop while the demo's own clients close.
    stack.callback(children.terminate)
    _start_inside(inside, bootstrap, settings, policy, names, var_dir, run_id, seen)
    print(
        f"demo {run_id}: worker log {log_path}, metrics http://127.0.0.1:{metrics_port}/metrics"
        f", demo log {var_dir / 'demo' / f'{run_id}-demo.log'}"
    )
    print(
        f"privacy desk: http://127.0.0.1:{desk_port}/  "
        f"(demo login: {DEMO_DESK_USER} / {desk_password}; "
        f"log {var_dir / 'demo' / f'{run_id}-desk.log'})"
    )
    print("policy: recordings kept 20 s, legal-obligation data 60 s after contract end")
    try:
        inside.publisher = Publisher(bootstrap, settings)
        _drive(inside.publisher, worker, metrics_port, time.monotonic(), duration, every_s)
    finally:
        interrupts.stopping = True


def _start_inside(
    inside: _InProcess,
    bootstrap: str,
    settings: Settings,
    policy: Policy,
    names: TopicNames,
    var_dir: Path,
    run_id: str,
    seen: dict[str, int],
) -> None:
    for s in policy.systems:
        inside.consumers.append(
            DownstreamConsumer(
                system=s.id,
                bootstrap=bootstrap,
                settings=settings,
                store=ReferenceStore(var_dir / "demo" / run_id / f"{s.id}.sqlite"),
            )
        )
    # Replays erasures for systems that announce a restore (docs/own-data.md).
    inside.restores = RestoreListener(
        ErasureReplayer(
            bootstrap,
            settings,
            clock=SystemClock(),
            clock_margin=policy.backups.clock_margin.as_timedelta(),
        )
    )
    for c in inside.consumers:
        inside.start(threading.Thread(target=c.run, daemon=True))
    inside.start(threading.Thread(target=inside.restores.run, daemon=True))
    feed = _Feed(bootstrap, names, inside.stop_event, settings.security.confluent_config())
    feed.counts = seen
    inside.start(feed)


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
