"""Run the real worker (a ``lifecycle worker`` process) against the test broker.

Each ``Pipeline`` gets its own topic prefix, app id (consumer group, table
changelogs) and data directory, so tests never see each other's data.

Kafka security (``LIFECYCLE_KAFKA_*`` in ``extra_env``) applies to the worker and
to every client the pipeline makes itself: topic setup, producer, readers and
downstream consumers (see ``PipelineSettings``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from pydantic import PrivateAttr

from agents.rules.policy import load_policy
from agents.runtime.failures import Step, classify
from agents.tools.downstream import Behaviour, DownstreamConsumer, ReferenceStore
from schemas.audit import AuditEvent
from schemas.base import Frozen
from schemas.commands import Command
from streams.admin import admin_client, ensure_topics
from streams.broker.admin import delete_topics
from streams.broker.ports import free_ports
from streams.codec import Codec
from streams.settings import REPO_ROOT, KafkaSecurity, Settings
from streams.topics import MURMUR2_PARTITIONER, TopicNames

LIFECYCLE = Path(sys.executable).parent / "lifecycle"
READY_LINE = "[^Worker]: Ready"
SECURITY_ENV_PREFIX = "LIFECYCLE_KAFKA_"
NOTICE_POLICY = REPO_ROOT / "agents" / "policy" / "notice.yaml"
DEMO_POLICY = REPO_ROOT / "agents" / "policy" / "demo.yaml"
EXTRA_MARKETING_SYSTEM = "sms-gateway"


class PipelineSettings(Settings):
    """Settings whose Kafka security is the worker's, not this test process's.

    ``Settings.security`` reads the process environment; a pipeline's worker gets
    its security from ``extra_env`` instead, and so must the pipeline's own clients.
    """

    _security: KafkaSecurity | None = PrivateAttr(default=None)

    def use_security(self, security: KafkaSecurity) -> None:
        self._security = security

    @property
    def security(self) -> KafkaSecurity:
        return self._security if self._security is not None else super().security


def security_from_env(extra_env: Mapping[str, str]) -> KafkaSecurity:
    """The security a worker started with ``{**os.environ, **extra_env}`` reads."""
    fields = {
        key[len(SECURITY_ENV_PREFIX) :].lower(): value
        for key, value in extra_env.items()
        if key.upper().startswith(SECURITY_ENV_PREFIX)
    }
    # Init values win over the environment, which fills in the rest: as in the worker.
    return KafkaSecurity.model_validate(fields)


@dataclass
class Pipeline:
    bootstrap: str
    workdir: Path
    policy_path: Path = NOTICE_POLICY
    # Answers wait for the sources' watermarks (N9) only where a test asks for it:
    # tests of the other obligations publish no heartbeats, and would wait for the
    # policy's maximum (tests/integration/test_event_time_e2e.py does).
    watermarks: bool = False
    partitions: int = 2
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = field(default_factory=lambda: free_ports(1)[0])
    runs: int = 0
    _downstreams: list[tuple[DownstreamConsumer, threading.Thread]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.watermarks:
            self.policy_path = without_watermarks(self.policy_path, self.workdir)
        self.names = TopicNames(self.prefix)
        self.codec = Codec()
        self.settings = PipelineSettings(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            topic_prefix=self.prefix,
            app_id=self.prefix,
            partitions=self.partitions,
            var_dir=self.workdir,
            policy_path=self.policy_path,
        )
        self.settings.use_security(security_from_env(self.extra_env))
        self.policy = load_policy(self.policy_path)
        ensure_topics(
            self.settings,
            self.bootstrap,
            [s.id for s in self.policy.systems],
            self.policy.topic_retention(),
        )
        self.producer = Producer(
            {
                **self.client_config,
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": MURMUR2_PARTITIONER,
            }
        )

    @property
    def client_config(self) -> dict[str, str]:
        """Bootstrap and security for a confluent-kafka client of this pipeline's broker."""
        return {"bootstrap.servers": self.bootstrap, **self.settings.security.confluent_config()}

    # -- worker process -----------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "LIFECYCLE_TOPIC_PREFIX": self.prefix,
            "LIFECYCLE_APP_ID": self.prefix,
            "LIFECYCLE_PARTITIONS": str(self.partitions),
            "LIFECYCLE_VAR_DIR": str(self.workdir),
            "LIFECYCLE_POLICY_PATH": str(self.policy_path),
            "LIFECYCLE_METRICS_PORT": str(self.metrics_port),
            "LIFECYCLE_WEB_PORT": "0",
            **self.extra_env,
        }

    @property
    def log_path(self) -> Path:
        return self.workdir / f"worker-{self.runs}.log"

    def start(self, timeout: float = 90.0) -> None:
        self.runs += 1
        with self.log_path.open("wb") as log:
            # The child keeps its own copy of the file descriptor.
            self.process = subprocess.Popen(
                [str(LIFECYCLE), "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(
            lambda: READY_LINE in self.log_path.read_text(errors="replace"),
            timeout,
            f"worker did not become ready; see {self.log_path}",
            alive=self.process,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(10)
        finally:
            self.process = None

    def kill(self) -> None:
        """SIGKILL the worker's whole process group, as a crash would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def delete_topics(self) -> None:
        """Delete every topic of this pipeline (its prefix: inputs, outputs, the state
        changelog, Faust's own), so a suite run does not pile them up on the broker."""
        admin = admin_client(self.settings, self.bootstrap)
        try:
            names = [n for n in admin.list_topics(timeout=30).topics if n.startswith(self.prefix)]
        except KafkaException:
            return  # the broker is gone: nothing is left to clean up
        delete_topics(admin, names)

    def close(self) -> None:
        for consumer, thread in self._downstreams:
            consumer.stop()
            thread.join(10)
        if self.process is not None:
            self.stop()

    # -- downstream systems ---------------------------------------------------

    def run_downstream(
        self,
        system: str,
        behaviour: Behaviour | None = None,
        *,
        store: ReferenceStore | None = None,
        group_id: str | None = None,
    ) -> DownstreamConsumer:
        consumer = DownstreamConsumer(
            system=system,
            bootstrap=self.bootstrap,
            settings=self.settings,
            store=store or ReferenceStore(self.workdir / "downstream" / f"{system}.sqlite"),
            behaviour=behaviour or Behaviour(),
            group_id=group_id,
        )
        thread = threading.Thread(target=consumer.run, name=f"downstream-{system}", daemon=True)
        thread.start()
        self._downstreams.append((consumer, thread))
        return consumer

    # -- traffic ----------------------------------------------------------

    def publish(self, event: Frozen, topic: str | None = None, raw: bytes | None = None) -> None:
        source = getattr(event, "source_system", "privacy-desk")
        subject = event.subject_id
        self.producer.produce(
            topic or self.names.input(source),
            key=subject.encode(),
            value=raw if raw is not None else self.codec.encode(event),
        )
        assert self.producer.flush(30) == 0

    def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.producer.produce(topic, key=key, value=value)
        assert self.producer.flush(30) == 0

    def publish_many(self, events: Iterable[Frozen]) -> int:
        """Publish ``events`` as fast as the producer takes them (one flush at the end)."""
        count = 0
        for event in events:
            source = getattr(event, "source_system", "privacy-desk")
            while True:
                try:
                    self.producer.produce(
                        self.names.input(source),
                        key=getattr(event, "subject_id").encode(),  # noqa: B009 (Frozen has none)
                        value=self.codec.encode(event),
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self.producer.poll(0.1)
            count += 1
            self.producer.poll(0)
        assert self.producer.flush(120) == 0
        return count

    def append(self, topic: str, partition: int, value: bytes, key: bytes | None = None) -> int:
        """Produce one record to an explicit partition; returns the offset it landed at."""
        delivered: list[Any] = []
        self.producer.produce(
            topic,
            key=key,
            value=value,
            partition=partition,
            on_delivery=lambda err, msg: delivered.append(err or msg),
        )
        assert self.producer.flush(30) == 0
        (result,) = delivered
        if isinstance(result, KafkaError):
            raise RuntimeError(f"append to {topic}[{partition}] failed: {result}")
        return int(result.offset())

    # -- worker internals ---------------------------------------------------

    @property
    def worker_data_dir(self) -> Path:
        """The worker's local table data (RocksDB); its changelog topics are the truth."""
        return self.settings.worker_data_dir

    def scrape_metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The worker's /metrics, as {sample name: [(labels, value)]}."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return out

    def metric_sum(self, name: str, **labels: str) -> float:
        """Sum of ``name``'s samples whose labels include ``labels``; 0 when absent."""
        return sum(
            value
            for sample_labels, value in self.scrape_metrics().get(name, [])
            if all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def read(self, topic: str) -> list[tuple[int, int, Any]]:
        """Everything on ``topic`` now: (partition, offset, decoded model)."""
        return [
            (
                partition,
                offset,
                self.codec.decode(value, key, now=datetime.now(UTC), check_key=False),
            )
            for partition, offset, key, value in self.read_raw(topic)
        ]

    def raw_keys(self, topic: str) -> dict[bytes, int]:
        """The partition each key of ``topic`` was last written to."""
        return {key: p for p, _, key, _ in self.read_raw(topic) if key is not None}

    def read_raw(self, topic: str) -> list[tuple[int, int, bytes | None, bytes]]:
        """Everything committed on ``topic`` now, undecoded: (partition, offset, key, value).

        Read committed, as every reader of the audit topic does: its records are
        written in transactions, and an aborted one is not part of the trail.
        """
        out: list[tuple[int, int, bytes | None, bytes]] = []
        consumer = Consumer(
            {
                **self.client_config,
                "group.id": "reader",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                # The end of a partition shows in a fetch answered empty, held this long
                # by the broker (default 500 ms): every read would wait for it.
                "fetch.wait.max.ms": 10,
            }
        )
        try:
            for partition in range(self.partitions):
                tp = TopicPartition(topic, partition)
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, partition, low)])
                while True:
                    msg = consumer.poll(5.0)
                    if msg is None:
                        raise TimeoutError(f"{topic}[{partition}] stalled before {high}")
                    error = msg.error()
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        break
                    if error is not None or msg.partition() != partition:
                        continue
                    # Transaction markers take offsets too: stop on reaching the end.
                    if msg.offset() >= high:
                        break
                    out.append((partition, msg.offset(), msg.key(), msg.value()))
        finally:
            consumer.close()
        return out

    def models(self, topic: str, kind: type[Any]) -> list[Any]:
        return [m for _, _, m in self.read(topic) if isinstance(m, kind)]

    def wait_for_models(
        self,
        topic: str,
        kind: type[Any],
        predicate: Callable[[list[Any]], bool],
        timeout: float = 60.0,
        what: str = "",
    ) -> list[Any]:
        found: list[Any] = []

        def check() -> bool:
            nonlocal found
            try:
                found = self.models(topic, kind)
            except (KafkaException, TimeoutError) as exc:
                # A leader moving (a fault test kills brokers) is not a result: read again.
                if isinstance(exc, KafkaException) and not classify(exc, Step.SEND).transient:
                    raise
                return False
            return predicate(found)

        wait_for(check, timeout, f"timed out waiting on {topic}: {what}", alive=self.process)
        return found


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    message: str,
    *,
    alive: subprocess.Popen[bytes] | None = None,
    interval: float = 0.5,
) -> None:
    """Poll ``condition`` until true. Waiting on a real system is not a timed assertion:
    the timeout only bounds how long a broken run takes to fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"worker exited with {alive.returncode}: {message}")
        time.sleep(interval)
    raise AssertionError(message)


def pipelines(bootstrap: str, tmp_path: Path, **kwargs: Any) -> Iterator[Pipeline]:
    pipeline = Pipeline(bootstrap=bootstrap, workdir=tmp_path, **kwargs)
    try:
        yield pipeline
    finally:
        pipeline.close()
        if "prefix" not in kwargs:  # a given prefix is another pipeline's, still in use
            pipeline.delete_topics()


def answering_pipelines(bootstrap: str, workdir: Path, **kwargs: Any) -> Iterator[Pipeline]:
    """A started worker with every downstream system of its policy answering."""
    for pipeline in pipelines(bootstrap, workdir, **kwargs):
        pipeline.start()
        for system in pipeline.policy.systems:
            pipeline.run_downstream(system.id)
        yield pipeline


def with_second_marketing_system(source: Path, directory: Path) -> Path:
    """``source`` plus a second marketing system, so "every marketing system" is two."""
    doc = yaml.safe_load(source.read_text())
    doc["systems"].append(
        {
            "id": EXTRA_MARKETING_SYSTEM,
            "description": "SMS marketing gateway (test)",
            "categories": ["marketing_profile"],
            "region": "uk",
            "safeguard": "none",
            "marketing": True,
        }
    )
    path = directory / f"{source.stem}-plus-sms.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def without_watermarks(source: Path, directory: Path) -> Path:
    """``source`` with answers that do not wait for the sources' watermarks."""
    doc = yaml.safe_load(source.read_text())
    doc.setdefault("event_time", {})["sources"] = []
    doc["event_time"]["contract_sources"] = []  # deletions do not wait either
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{source.stem}-no-watermarks.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_desk(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    """``lifecycle desk <args>`` with the pipeline's environment, as the privacy desk runs it."""
    return subprocess.run(
        [str(LIFECYCLE), "desk", *args],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def subject_commands(pipeline: Pipeline, system: str, subject: str) -> list[Command]:
    """The subject's commands on ``system``'s command topic."""
    return [
        c
        for c in pipeline.models(pipeline.names.command(system), Command)
        if c.subject_id == subject
    ]


def wait_subject_commands(
    pipeline: Pipeline, system: str, subject: str, what: str
) -> list[Command]:
    """Wait until ``system`` has a command for ``subject``; the subject's commands there."""
    commands = pipeline.wait_for_models(
        pipeline.names.command(system),
        Command,
        lambda cs: any(c.subject_id == subject for c in cs),
        what=what,
    )
    return [c for c in commands if c.subject_id == subject]


def wait_decided(pipeline: Pipeline, events: Iterable[Any], what: str) -> list[AuditEvent]:
    """Wait until every one of ``events`` is named by some audit entry."""
    wanted = {e.event_id for e in events}
    return pipeline.wait_for_models(
        pipeline.names.audit,
        AuditEvent,
        lambda es: wanted <= {i for e in es for i in e.event_ids_in},
        what=what,
    )
