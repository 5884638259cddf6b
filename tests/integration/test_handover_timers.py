"""Due recordings are deleted across a graceful scale-down that overlaps their due time.

A user saw, on a 3-node cluster with 2-3 workers, five call recordings that fell
due about two seconds after the second of two workers was stopped with SIGTERM
(a scale-down 3 -> 1) never get a DELETE: the last worker took all six
partitions, restored them, said it was ready, and sent nothing for them, with
lag 0, no dead letter and no alert.

This test runs the same hand-over on the real broker, several times: three
``lifecycle worker`` processes of one app, a burst of recordings on every
partition that all fall due at one moment T (the notice policy keeps recordings
30 days, so each is recorded at T - 30 days), one worker stopped with SIGTERM
at T - ``FIRST_STOP_S`` (the first step of the scale-down) and another a few
seconds before T (``ROUNDS``), so that the surviving worker's rebalance, its
restore and T overlap, while background traffic of other subjects keeps the
workers busy. Nothing but the timer can delete the burst: its subjects get no
other event. Every recording due must get a DELETE on the call recorder's
command topic within ``DELETE_WITHIN_S`` of T. Between rounds the stopped
workers are started again, and the survivor changes, so each round hands
partitions over between different processes.

On failure the message names the recordings missed (subject, partition) and the
workers' log lines about the hand-over (rebalance, recovery, readiness, store,
timer) are saved next to the logs (``handover-round-<n>.log`` in the test's
temporary directory).

What it found (2026-12-08, about half the runs on a single-node broker): whole
partitions' recordings missed, because the survivor's standby copy of those
partitions had a hole. Faust resumes a new standby's changelog partitions and
the flow, then sends ``on_rebalance_complete``, whose handler here stops the
flow (``agents.runtime.faust_app.hold_fetching_until_streams_resume``); a fetch
returning in that window is discarded and followed by a seek to committed
offsets, which never moves a changelog partition. The standby's first records
were never applied, its persisted offset moved past them, and when it became
the owner it restored nothing: the subjects (and their timer entries) were not
in its store at all.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from schemas.commands import Action, Command
from schemas.events import CallRecorded
from streams.topics import MURMUR2_PARTITIONER
from tests.chaos.probes import partition_of
from tests.integration.events import call_recorded
from tests.integration.pipeline import Pipeline, pipelines
from tests.integration.topic_tail import Tail

pytestmark = pytest.mark.slow

PARTITIONS = 6
WORKERS = 3
# Subjects per partition per round; the first ``TWO_RECORDINGS`` of each have
# two recordings (a subject's records due at once go in one DELETE).
SUBJECTS_PER_PARTITION = 5
TWO_RECORDINGS = 2
# The scale-down 3 -> 1: the first worker stops this long before T (its
# rebalance settles before T), the second one later, so that its rebalance,
# the survivor's restore and T overlap.
FIRST_STOP_S = 10.0


@dataclass(frozen=True)
class Round:
    # The burst is published this long before T: just before the first stop (its
    # decisions overlap that hand-over, as the report's recordings, made 10 s
    # before they were due, did), or well before it.
    publish_s: float
    # The second worker stops this long before T.
    second_stop_s: float


ROUNDS = (Round(10.5, 3.0), Round(14.0, 2.0), Round(10.5, 1.5))
# Background traffic (recordings due in 30 days, never during the test), so the
# workers are busy when they are stopped, as under real traffic.
FILLER_PER_S = 25.0
FILLER_SUBJECTS = 200
# Every recording due at T has a DELETE by T + this.
DELETE_WITHIN_S = 20.0
CALL_RECORDER = "call-recorder"
# Worker log lines worth keeping when a round fails.
RELEVANT = re.compile(
    r"rebalanc|revok|assign|recover|ready|rocksdb|closing db|opening partition|"
    r"locked|seek|cancel|terminat|timer|end offsets|stopping|stopped|shutting|"
    r"warning|error|exception|traceback",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Due:
    subject: str
    recording_id: str
    partition: int


@pytest.fixture
def workers(kafka_bootstrap: str, tmp_path: Path) -> Iterator[list[Pipeline]]:
    """``WORKERS`` pipelines of one app (one prefix, app id and topics), each with
    its own data directory, metrics port and logs; none started. The first owns
    the topics (deleted after the test)."""
    first_dir = tmp_path / "w1"
    first_dir.mkdir()
    for first in pipelines(kafka_bootstrap, first_dir, partitions=PARTITIONS):
        group = [first]
        try:
            for n in range(2, WORKERS + 1):
                workdir = tmp_path / f"w{n}"
                workdir.mkdir()
                group.append(
                    Pipeline(
                        bootstrap=kafka_bootstrap,
                        workdir=workdir,
                        partitions=PARTITIONS,
                        prefix=first.prefix,
                    )
                )
            yield group
        finally:
            for other in group[1:]:
                other.close()  # stops its worker if it still runs


def start_all(group: list[Pipeline]) -> None:
    """Start the workers of ``group`` at once (each waits for its own ready line)."""
    errors: list[BaseException] = []

    def start(pipeline: Pipeline) -> None:
        try:
            pipeline.start(timeout=120)
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in group]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def burst(round_no: int, due: datetime) -> tuple[list[CallRecorded], list[Due]]:
    """Recordings on every partition, all recorded at ``due`` - 30 days (the notice
    policy's retention): all due at ``due``, to the millisecond."""
    recorded_at = due - timedelta(days=30)
    events: list[CallRecorded] = []
    wanted: list[Due] = []
    counts = dict.fromkeys(range(PARTITIONS), 0)
    n = 0
    while min(counts.values()) < SUBJECTS_PER_PARTITION:
        subject = f"cust-ho{round_no}-{n}"
        n += 1
        partition = partition_of(subject.encode(), PARTITIONS)
        if counts[partition] >= SUBJECTS_PER_PARTITION:
            continue
        recordings = 2 if counts[partition] < TWO_RECORDINGS else 1
        counts[partition] += 1
        for k in range(recordings):
            recording_id = f"rec-{subject}-{k}"
            events.append(
                call_recorded(subject, recording_id, event_id=f"ev-{subject}-{k}", when=recorded_at)
            )
            wanted.append(Due(subject, recording_id, partition))
    return events, wanted


def deleted(commands: Tail) -> dict[str, datetime]:
    """Recording id -> when its first DELETE was issued."""
    out: dict[str, datetime] = {}
    for c in commands.now():
        if isinstance(c, Command) and c.action is Action.DELETE:
            for record_id in c.record_ids:
                if record_id not in out or c.issued_at < out[record_id]:
                    out[record_id] = c.issued_at
    return out


def sleep_until(moment: float) -> None:
    left = moment - time.time()
    if left > 0:
        time.sleep(left)


def sigterm(pipeline: Pipeline) -> subprocess.Popen[bytes]:
    """Send SIGTERM to the worker (a scale-down's stop) without waiting for it."""
    process = pipeline.process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    pipeline.process = None
    return process


def save_relevant_lines(group: list[Pipeline], survivor: Pipeline, path: Path) -> list[str]:
    """The hand-over lines of every worker log of ``group`` into ``path``; returns
    the survivor's (of its current run), for the failure message."""
    lines: list[str] = []
    for n, pipeline in enumerate(group, start=1):
        for log in sorted(pipeline.workdir.glob("worker-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if RELEVANT.search(line):
                    lines.append(f"w{n}/{log.name}: {line}")
    path.write_text("\n".join(lines) + "\n")
    mine = f"{survivor.workdir.name}/{survivor.log_path.name}: "
    return [line for line in lines if line.startswith(mine)]


class Filler:
    """Background traffic on its own producer thread: recordings of other subjects,
    recorded now (due in 30 days). Never the burst's subjects: an event of a
    subject also deletes its due records, and the report's subjects had no
    event after their recordings, so only the timer could delete them."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="filler", daemon=True)

    def __enter__(self) -> Filler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        producer = Producer(
            {**self.pipeline.client_config, "acks": "all", "partitioner": MURMUR2_PARTITIONER}
        )
        topic = self.pipeline.names.input("telephony")
        rng = random.Random(7)
        n = 0
        while not self._stop.wait(1 / FILLER_PER_S):
            subject = f"cust-filler-{rng.randrange(FILLER_SUBJECTS)}"
            event = call_recorded(
                subject, f"rec-fill-{n}", event_id=f"ev-fill-{n}", when=datetime.now(UTC)
            )
            producer.produce(topic, key=subject.encode(), value=self.pipeline.codec.encode(event))
            producer.poll(0)
            n += 1
        producer.flush(30)


def test_due_recordings_deleted_across_a_graceful_scale_down(
    workers: list[Pipeline], tmp_path: Path
) -> None:
    group = workers
    start_all(group)
    with Tail(group[0], group[0].names.command(CALL_RECORDER)) as commands, Filler(group[0]):
        for round_no, plan in enumerate(ROUNDS, start=1):
            # The survivor changes each round; the other two are stopped in turn.
            survivor = group[(round_no - 1) % WORKERS]
            first, second = [p for p in group if p is not survivor]
            # T to the millisecond (the pipeline's resolution).
            due_at = datetime.fromtimestamp(int((time.time() + plan.publish_s) * 1000) / 1000, UTC)
            t_due = due_at.timestamp()
            events, wanted = burst(round_no, due_at)
            assert {w.partition for w in wanted} == set(range(PARTITIONS))
            group[0].publish_many(events)

            sleep_until(t_due - FIRST_STOP_S)
            stopped = [sigterm(first)]
            sleep_until(t_due - plan.second_stop_s)
            stopped.append(sigterm(second))
            how = (
                f"survivor {survivor.workdir.name}, burst published at T-{plan.publish_s} s, "
                f"{first.workdir.name} stopped at T-{FIRST_STOP_S} s, "
                f"{second.workdir.name} at T-{plan.second_stop_s} s"
            )

            missed: list[Due] = []

            def all_deleted(wanted: list[Due] = wanted) -> bool:
                nonlocal missed
                done = deleted(commands)
                missed = [w for w in wanted if w.recording_id not in done]
                return not missed

            while not all_deleted() and time.time() < t_due + DELETE_WITHIN_S:
                time.sleep(0.5)
            exits = [p.wait(60) for p in stopped]
            done = deleted(commands)
            late = [
                (done[w.recording_id] - due_at).total_seconds()
                for w in wanted
                if w.recording_id in done
            ]
            print(
                f"round {round_no}: T={due_at.isoformat()} {how}; "
                f"{len(wanted) - len(missed)} of {len(wanted)} deleted, "
                f"{min(late, default=0):.2f}-{max(late, default=0):.2f} s after T"
            )
            if missed:
                report = tmp_path / f"handover-round-{round_no}.log"
                lines = save_relevant_lines(group, survivor, report)
                pytest.fail(
                    f"round {round_no}: {len(missed)} of {len(wanted)} recordings due at "
                    f"{due_at.isoformat()} had no DELETE {DELETE_WITHIN_S:.0f} s later "
                    f"({how}; exit codes {exits}): "
                    + ", ".join(
                        f"{m.recording_id} of {m.subject} (partition {m.partition})" for m in missed
                    )
                    + f"\nworker log lines: {report}; the survivor's last ones:\n"
                    + "\n".join(lines[-60:])
                )
            assert exits == [0, 0], f"round {round_no}: stopped workers exited with {exits}"
            # Issued no earlier than due (the policy's time, to the millisecond).
            early = [w.recording_id for w in wanted if done[w.recording_id] < due_at]
            assert not early, f"round {round_no}: deleted before due: {early}"
            if round_no < len(ROUNDS):
                start_all([first, second])
