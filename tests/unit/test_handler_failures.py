"""Per-item isolation and failure classes in the agent body, with fakes for each failure point.

A batch always holds a healthy subject next to the one that fails: it must be
decided, sent and stored as if nothing happened. A permanent failure parks the
failing item on the dead-letter topic (with its failure class) and the batch
returns, so Faust may commit it; a transient one is retried, and if it does
not heal the worker stops before anything is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn

import aiokafka.errors as ak
import pytest
from confluent_kafka import KafkaError, KafkaException
from faust.exceptions import ProducerSendError
from prometheus_client import CollectorRegistry, Counter
from tenacity import wait_none

from agents.audit.chain import ChainHead, link
from agents.audit.writer import (
    AuditFenced,
    AuditRefused,
    AuditUnavailable,
    FencedOutput,
    Refused,
)
from agents.clock import FakeClock
from agents.rules.context import AuditEntry
from agents.rules.policy import load_policy
from agents.rules.snapshot import SubjectSnapshot
from agents.runtime.failures import RetryPolicy, Step, classify
from agents.runtime.handler import Handler, RawMessage, Sender
from agents.runtime.known_topics import KnownTopics
from agents.runtime.metrics import LifecycleMetrics
from agents.store import keys
from agents.store.base import StoreError
from agents.store.layer import Write
from agents.store.memory import MemoryPartition, MemoryStateStore
from schemas.audit import AuditEvent, AuditSource
from schemas.base import Channel
from schemas.commands import Action, Command
from schemas.deadletter import DeadLetter, FailureClass, ReasonClass
from schemas.events import CallRecorded, MarketingOptOutReceived
from schemas.internal import DueTick
from streams.codec import Codec, EncodeError, RegistryUnavailable
from streams.settings import REPO_ROOT
from streams.topics import TopicNames

from .test_handler import T0, Sent

NAMES = TopicNames("t")
CODEC = Codec()
POLICY = load_policy(REPO_ROOT / "agents" / "policy" / "notice.yaml")
FAST = RetryPolicy(wait=wait_none(), attempts=3)
TELEPHONY = NAMES.input("telephony")
DESK = NAMES.input("privacy-desk")
SUPPRESS_TO = NAMES.command("marketing-platform")


class Stopped(Exception):
    """Stands in for the process exit (exit 75) of a fail-stop."""


def stop(exc: Exception) -> NoReturn:
    raise Stopped from exc


class _Lazy:
    """An awaitable that starts its work only when awaited, as the writer's commit:
    a batch stopped early leaves it unawaited without a warning."""

    def __init__(self, make: Callable[[], Awaitable[list[Refused]]]) -> None:
        self.make = make

    def __await__(self) -> Generator[Any, None, list[Refused]]:
        return self.make().__await__()


class FakeAudit:
    """Links entries as the audit writer does and hands them, then the decision's
    staged outputs, to the fake sender, as one transaction would: a transient send
    error is retried (``retried`` counts them) and fails the commit after
    ``FAST.attempts``; an output refused for good is returned, the rest committed;
    the audit records themselves refused fail the commit. ``fail`` queues writer
    errors (after its own retries) for the next appends."""

    def __init__(self, send: Sender) -> None:
        self.send = send
        self.heads: dict[int, ChainHead] = {}
        self.fail: list[Exception] = []
        self.retried = 0

    async def append(
        self,
        partition: int,
        entries: Sequence[AuditEntry],
        *,
        source: AuditSource,
        decided_at: datetime,
        outputs: Sequence[FencedOutput] = (),
    ) -> Awaitable[list[Refused]]:
        if self.fail:
            raise self.fail.pop(0)
        head = self.heads.get(partition, ChainHead.genesis())
        audit = []
        for index, entry in enumerate(entries):
            event = link(
                head,
                entry,
                partition=partition,
                key=b"k",
                decided_at=decided_at,
                source=source,
                entry_index=index,
            )
            head = ChainHead.of(event)
            audit.append(await self.send(NAMES.audit, None, CODEC.encode(event), partition))
        self.heads[partition] = head
        refused: list[Refused] = []
        sent: list[tuple[FencedOutput, Awaitable[Any]]] = []
        for output in outputs:
            delivery = await self._send(output, refused)
            if delivery is not None:
                sent.append((output, delivery))
        return _Lazy(lambda: self._committed(audit, sent, refused))

    async def _send(self, output: FencedOutput, refused: list[Refused]) -> Awaitable[Any] | None:
        for attempt in range(FAST.attempts):
            try:
                return await self.send(output.topic, output.key, output.value, None)
            except Exception as exc:
                if not classify(exc, Step.SEND).transient:
                    refused.append((output, exc))
                    return None
                if attempt == FAST.attempts - 1:
                    raise AuditUnavailable(f"commit: {type(exc).__name__}") from exc
                self.retried += 1
        return None

    async def _committed(
        self,
        audit: list[Awaitable[Any]],
        sent: list[tuple[FencedOutput, Awaitable[Any]]],
        refused: list[Refused],
    ) -> list[Refused]:
        for delivery in audit:
            try:
                await delivery
            except Exception as exc:
                raise AuditRefused(f"commit: {type(exc).__name__}") from exc
        for output, delivery in sent:
            try:
                await delivery
            except Exception as exc:
                if classify(exc, Step.SEND).transient:
                    raise AuditUnavailable(f"commit: {type(exc).__name__}") from exc
                refused.append((output, exc))
        return refused


class FlakySend(Sent):
    """``Sent`` whose send raises, or whose delivery fails, for chosen topics."""

    def __init__(self) -> None:
        super().__init__()
        self.raise_on: dict[str, list[Exception]] = {}  # consumed one per send
        self.always_raise: dict[str, Exception] = {}
        self.undelivered: dict[str, Exception] = {}

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> Awaitable[Any]:
        if topic in self.always_raise:
            raise self.always_raise[topic]
        if self.raise_on.get(topic):
            raise self.raise_on[topic].pop(0)
        if topic in self.undelivered:
            failure = self.undelivered[topic]

            async def refused() -> None:
                raise failure

            return asyncio.ensure_future(refused())
        # A future, as the producer returns: it completes whether awaited or not.
        return asyncio.ensure_future(await super().__call__(topic, key, value, partition))


class FlakyPartition(MemoryPartition):
    """A partition whose reads of a subject's entries raise (as RocksDB's would),
    one queued error per read."""

    def __init__(self, get_fails: dict[str, list[Exception]]) -> None:
        super().__init__()
        self.get_fails = get_fails

    def _check(self, key: bytes) -> None:
        subject = keys.subject_of(key)
        if subject is not None and self.get_fails.get(subject):
            raise StoreError(self.get_fails[subject].pop(0))

    def get(self, key: bytes) -> bytes | None:
        self._check(key)
        return super().get(key)


class FlakyStore(MemoryStateStore):
    """The state store, with reads or writes of chosen subjects failing.

    ``set_fails``: the broker refuses the subject's writes (per subject);
    ``persist_fails``: the store as a whole fails, one queued error per persist."""

    def __init__(self) -> None:
        super().__init__()
        self.get_fails: dict[str, list[Exception]] = {}
        self.set_fails: dict[str, Exception] = {}
        self.persist_fails: list[Exception] = []

    def partition(self, partition: int) -> MemoryPartition:
        if partition not in self.partitions:
            self.partitions[partition] = FlakyPartition(self.get_fails)
        return self.partitions[partition]

    async def persist(self, groups: list[tuple[int, list[Write]]]) -> list[Exception | None]:
        if self.persist_fails:
            raise self.persist_fails.pop(0)
        results: list[Exception | None] = []
        for partition, writes in groups:
            subjects = {keys.subject_of(k) for k, _ in writes}
            refused = next((self.set_fails[s] for s in subjects if s in self.set_fails), None)
            if refused is None:
                self.apply(partition, writes)
            results.append(refused)
        return results

    def holds(self, subject: str) -> bool:
        return MemoryPartition.get(self.entries(0), keys.header(subject)) is not None

    @property
    def empty(self) -> bool:
        return all(len(p) == 0 for p in self.partitions.values())


def always(error: Exception) -> list[Exception]:
    return [error] * 10


class World:
    def __init__(self, metrics: Any = None) -> None:
        self.registry = CollectorRegistry()
        self.sent = FlakySend()
        self.store = FlakyStore()
        self.audit = FakeAudit(self.sent)
        self.clock = FakeClock(T0)
        self.handler = Handler(
            codec=CODEC,
            policy=POLICY,
            clock=self.clock,
            names=NAMES,
            metrics=metrics
            or LifecycleMetrics.create(self.registry, version="t", policy_version="t"),
            store=self.store,
            audit=self.audit,
            send=self.sent,
            retry=FAST,
            on_delivery_failure=stop,
        )

    def run(self, *events: CallRecorded | MarketingOptOutReceived) -> None:
        items = [
            RawMessage(topic_of(e), 0, offset, e.subject_id.encode(), CODEC.encode(e))
            for offset, e in enumerate(events)
        ]
        asyncio.run(self.handler.handle_batch(items))

    def state(self, subject: str) -> SubjectSnapshot:
        snapshot = SubjectSnapshot.read(self.store.entries(0), subject)
        assert snapshot is not None, subject
        return snapshot

    def dead(self) -> list[DeadLetter]:
        return self.sent.on(NAMES.dead_letter)

    def audited_subjects(self) -> set[str]:
        audit: list[AuditEvent] = self.sent.on(NAMES.audit)
        return {e.subject_ref for e in audit}

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def topic_of(event: CallRecorded | MarketingOptOutReceived) -> str:
    return TELEPHONY if isinstance(event, CallRecorded) else DESK


def recording(subject: str, n: int = 1) -> CallRecorded:
    return CallRecorded(
        event_id=f"ev-{subject}-{n}",
        subject_id=subject,
        source_system="telephony",
        event_time=T0,
        recording_id=f"rec-{n}",
        system="call-recorder",
    )


def opt_out(subject: str) -> MarketingOptOutReceived:
    return MarketingOptOutReceived(
        event_id=f"oo-{subject}",
        subject_id=subject,
        source_system="privacy-desk",
        event_time=T0,
        channels=[Channel.ALL],
    )


@pytest.fixture
def w() -> World:
    return World()


def assert_healthy(w: World, subject: str) -> None:
    """The healthy neighbour was decided, sent, confirmed and stored."""
    assert "call-recorder/rec-1" in w.state(subject).records
    assert w.sent.confirmed == len(w.sent.records)


def parked(w: World) -> list[tuple[str, int, FailureClass | None]]:
    return [(d.topic, d.offset, d.failure_class) for d in w.dead()]


# -- decode ----------------------------------------------------------------------


def test_the_decoder_raising_parks_that_item_only(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = CODEC.decode

    def decode(value: bytes | None, *args: Any, **kwargs: Any) -> Any:
        if value == CODEC.encode(recording("cust-bad")):
            raise RuntimeError("codec bug")
        return real(value, *args, **kwargs)

    monkeypatch.setattr(CODEC, "decode", decode)
    w.run(recording("cust-bad"), recording("cust-ok"))
    assert parked(w) == [(TELEPHONY, 0, FailureClass.PROCESSING_ERROR)]
    assert w.dead()[0].reason == "decode failed: processing_error (RuntimeError)"
    assert_healthy(w, "cust-ok")


def test_a_registry_that_stays_unreachable_stops_the_worker(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*_: Any, **__: Any) -> Any:
        raise RegistryUnavailable("down")

    monkeypatch.setattr(CODEC, "decode", unreachable)
    with pytest.raises(Stopped):
        w.run(recording("cust-ok"))
    assert w.dead() == []  # a good message is never dead-lettered for it
    assert w.metric("lifecycle_transient_retries_total", step="decode") == FAST.attempts - 1


# -- load ------------------------------------------------------------------------


def test_a_store_read_raising_parks_that_item_only(w: World) -> None:
    w.store.get_fails["cust-bad"] = always(RuntimeError("rocksdb says no"))
    w.run(recording("cust-bad"), recording("cust-ok"))
    assert parked(w) == [(TELEPHONY, 0, FailureClass.STATE_UNREADABLE)]
    (letter,) = w.dead()
    assert letter.original_value == CODEC.encode(recording("cust-bad"))
    assert letter.reason == "load failed: state_unreadable (RuntimeError)"
    assert not w.store.holds("cust-bad")
    assert_healthy(w, "cust-ok")
    assert (
        w.metric("lifecycle_items_parked_total", topic=TELEPHONY, failure_class="state_unreadable")
        == 1
    )


def test_a_stored_state_the_model_rejects_is_parked(w: World) -> None:
    # The likeliest cause: a release that changes the stored state model. The
    # value is parked too (once, under its store key), so it can be repaired.
    header = b'{"v": 1, "subject_id": "cust-bad", "new_field": 1}'
    w.store.apply(0, [(keys.header("cust-bad"), header)])
    w.run(recording("cust-bad"), recording("cust-ok"))
    value, event = w.dead()
    assert (value.original_key, value.original_value) == (keys.header("cust-bad"), header)
    assert (value.offset, value.failure_class) == (-1, FailureClass.STATE_UNREADABLE)
    assert (event.topic, event.offset, event.failure_class) == (
        TELEPHONY,
        0,
        FailureClass.STATE_UNREADABLE,
    )
    assert "SubjectHeader v1: invalid at new_field" in event.reason
    assert_healthy(w, "cust-ok")


def test_a_store_read_failing_transiently_is_retried(w: World) -> None:
    w.store.get_fails["cust-1"] = [OSError("busy"), OSError("busy")]
    w.run(recording("cust-1"))
    assert w.dead() == []
    assert "call-recorder/rec-1" in w.state("cust-1").records
    assert w.metric("lifecycle_transient_retries_total", step="load") == 2


# -- observe ---------------------------------------------------------------------


def test_metrics_failing_does_not_cost_the_event(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("exporter bug")

    monkeypatch.setattr(Counter, "inc", broken)
    w.run(opt_out("cust-1"), recording("cust-ok"))
    assert w.dead() == []
    assert w.state("cust-1").suppression is not None
    assert [c.action for c in w.sent.on(SUPPRESS_TO)] == [Action.SUPPRESS_MARKETING]
    assert_healthy(w, "cust-ok")


def test_an_observer_raising_parks_that_item_only() -> None:
    class Observers:
        """A metrics double whose event observer raises for one subject's topic."""

        def __getattr__(self, name: str) -> Callable[..., None]:
            def observe(*args: Any) -> None:
                if name == "observe_event" and args[0] == DESK:
                    raise RuntimeError("observer bug")

            return observe

    w = World(metrics=Observers())
    w.run(opt_out("cust-1"), recording("cust-ok"))
    assert parked(w) == [(DESK, 0, FailureClass.PROCESSING_ERROR)]
    assert w.sent.on(SUPPRESS_TO) == []
    assert not w.store.holds("cust-1")
    assert_healthy(w, "cust-ok")


# -- store -----------------------------------------------------------------------


def test_a_store_write_refused_parks_every_item_of_that_subject(w: World) -> None:
    w.store.set_fails["cust-bad"] = RuntimeError("cannot write")
    w.run(recording("cust-bad", 1), recording("cust-ok"), recording("cust-bad", 2))
    # Both of its items: the state that failed carried both decisions.
    assert parked(w) == [
        (TELEPHONY, 0, FailureClass.STATE_NOT_STORED),
        (TELEPHONY, 2, FailureClass.STATE_NOT_STORED),
    ]
    assert not w.store.holds("cust-bad")
    assert_healthy(w, "cust-ok")


def test_the_store_failing_transiently_for_good_stops_the_worker(w: World) -> None:
    w.store.persist_fails = always(OSError("disk full"))
    with pytest.raises(Stopped):
        w.run(recording("cust-1"))
    assert w.metric("lifecycle_transient_retries_total", step="store") == FAST.attempts - 1
    assert w.dead() == []


# -- send: transient -------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ak.KafkaTimeoutError(),
        ProducerSendError("Error while sending"),
        KafkaException(KafkaError(KafkaError._TRANSPORT)),
    ],
    ids=["KafkaTimeoutError", "ProducerSendError-unknown-cause", "confluent-transport"],
)
def test_a_send_failing_transiently_is_retried(w: World, error: Exception) -> None:
    if isinstance(error, ProducerSendError):
        error.__cause__ = ak.NotLeaderForPartitionError()
    w.sent.raise_on[SUPPRESS_TO] = [error, error]
    w.run(opt_out("cust-1"), recording("cust-ok"))
    assert w.dead() == []
    assert [c.action for c in w.sent.on(SUPPRESS_TO)] == [Action.SUPPRESS_MARKETING]
    assert w.audit.retried == 2  # by the audit writer: the command is in its transaction
    assert_healthy(w, "cust-ok")


def test_a_send_that_stays_unavailable_stops_the_worker_before_any_state(w: World) -> None:
    w.sent.always_raise[SUPPRESS_TO] = ak.NotLeaderForPartitionError()
    with pytest.raises(Stopped):
        w.run(recording("cust-ok"), opt_out("cust-1"))
    # Nothing is written: Faust commits nothing, and the batch is replayed.
    assert w.store.empty
    assert w.audit.retried == FAST.attempts - 1


def test_a_delivery_that_times_out_stops_the_worker(w: World) -> None:
    # The producer has retried it until its delivery timeout already.
    w.sent.undelivered[SUPPRESS_TO] = ak.KafkaTimeoutError()
    with pytest.raises(Stopped):
        w.run(opt_out("cust-1"))
    assert w.store.empty


@pytest.mark.parametrize(
    "error",
    [
        AuditUnavailable("audit partition 0: commit failed after retries"),
        AuditFenced("audit partition 0 is owned by another worker"),
        AuditRefused("audit partition 0: not authorised"),
    ],
    ids=["unavailable-after-retries", "fenced", "refused"],
)
def test_an_audit_append_that_fails_stops_the_worker_with_nothing_stored(
    w: World, error: Exception
) -> None:
    # The writer retries transient errors itself; what reaches the handler means
    # the batch's decisions cannot be proven, so none of its events may be acked.
    w.audit.fail = [error]
    with pytest.raises(Stopped):
        w.run(opt_out("cust-1"), recording("cust-ok"))
    assert w.store.empty
    assert w.dead() == []


def test_an_audit_commit_the_broker_refuses_stops_the_worker(w: World) -> None:
    # Not parked: the transaction holds every decision of the batch on that partition.
    w.sent.undelivered[NAMES.audit] = ak.MessageSizeTooLargeError()
    with pytest.raises(Stopped):
        w.run(recording("cust-1"))
    assert w.store.empty


# -- send: permanent -------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "failure_class"),
    [
        (ProducerSendError("x"), FailureClass.UNKNOWN_TOPIC),
        (KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)), FailureClass.UNKNOWN_TOPIC),
        (ak.MessageSizeTooLargeError(), FailureClass.RECORD_TOO_LARGE),
        (ak.TopicAuthorizationFailedError(), FailureClass.NOT_AUTHORISED),
    ],
    ids=["faust-wrapped-unknown-topic", "unknown-topic-check", "too-large", "not-authorised"],
)
def test_a_command_that_cannot_be_sent_is_parked_and_the_decision_stands(
    w: World, error: Exception, failure_class: FailureClass
) -> None:
    if isinstance(error, ProducerSendError):
        error.__cause__ = ak.UnknownTopicOrPartitionError()
    w.sent.always_raise[SUPPRESS_TO] = error
    w.run(opt_out("cust-1"), recording("cust-ok"))
    assert parked(w) == [(DESK, 0, failure_class)]
    (letter,) = w.dead()
    assert letter.reason.startswith(f"output to {SUPPRESS_TO} not delivered: {failure_class.value}")
    assert letter.reason_class is (
        ReasonClass.OVERSIZE
        if failure_class is FailureClass.RECORD_TOO_LARGE
        else ReasonClass.INVALID_MODEL
    )
    assert w.sent.on(SUPPRESS_TO) == []
    # The opt-out itself is recorded and audited; the unsent command stays
    # outstanding, so it is resent and, failing that, escalated to a person.
    state = w.state("cust-1")
    assert state.suppression is not None
    assert [c.command.target_system for c in state.commands.values()] == ["marketing-platform"]
    assert len(w.audited_subjects()) == 2
    assert (
        w.metric("lifecycle_items_parked_total", topic=DESK, failure_class=failure_class.value) == 1
    )
    assert_healthy(w, "cust-ok")


def test_a_delivery_the_broker_refuses_for_good_is_parked(w: World) -> None:
    # E.g. a record under the producer's limit but over the topic's max.message.bytes.
    w.sent.undelivered[SUPPRESS_TO] = ak.MessageSizeTooLargeError()
    w.run(opt_out("cust-1"), recording("cust-ok"))
    assert parked(w) == [(DESK, 0, FailureClass.RECORD_TOO_LARGE)]
    assert w.state("cust-1").suppression is not None
    assert_healthy(w, "cust-ok")


def test_an_output_that_cannot_be_encoded_is_parked(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = CODEC.encode

    def encode(model: Any) -> bytes:
        if isinstance(model, Command):
            raise EncodeError("cannot write Command")
        return real(model)

    monkeypatch.setattr(CODEC, "encode", encode)
    w.run(opt_out("cust-1"), recording("cust-ok"))
    assert parked(w) == [(DESK, 0, FailureClass.UNENCODABLE_OUTPUT)]
    assert_healthy(w, "cust-ok")


def test_when_even_the_dead_letter_cannot_be_written_the_worker_stops(w: World) -> None:
    w.sent.always_raise[SUPPRESS_TO] = ak.MessageSizeTooLargeError()
    w.sent.always_raise[NAMES.dead_letter] = ak.TopicAuthorizationFailedError()
    with pytest.raises(Stopped):
        w.run(opt_out("cust-1"))
    assert w.store.empty


def test_a_tick_of_a_parked_command_parks_again(w: World) -> None:
    """The resend of a command that cannot be delivered is parked too: no crash loop."""
    w.sent.always_raise[SUPPRESS_TO] = ak.UnknownTopicOrPartitionError()
    w.run(opt_out("cust-1"))
    (tracked,) = w.state("cust-1").commands.values()
    w.clock.set(tracked.next_retry_at + timedelta(seconds=1))
    tick = DueTick(subject_id="cust-1", due_at=tracked.next_retry_at, sent_at=w.clock.now())
    raw = RawMessage(NAMES.ticks, 0, 9, b"cust-1", CODEC.encode(tick))
    asyncio.run(w.handler.handle_batch([raw]))
    assert [(d.topic, d.failure_class) for d in w.dead()] == [
        (DESK, FailureClass.UNKNOWN_TOPIC),
        (NAMES.ticks, FailureClass.UNKNOWN_TOPIC),
    ]
    (tracked,) = w.state("cust-1").commands.values()
    assert tracked.command.attempt == 2


# -- the unknown-topic check -------------------------------------------------------


def test_known_topics_fail_fast_for_a_missing_topic_and_heal_when_created() -> None:
    live = {"t.cmd.crm"}
    asked: list[int] = []

    def list_topics() -> set[str]:
        asked.append(1)
        return set(live)

    known = KnownTopics(list_topics)

    async def go() -> None:
        await known.check("t.cmd.crm")
        await known.check("t.cmd.crm")  # remembered
        with pytest.raises(KafkaException) as missing:
            await known.check("t.cmd.gone")
        assert missing.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        live.add("t.cmd.gone")
        await known.check("t.cmd.gone")

    asyncio.run(go())
    assert len(asked) == 3
