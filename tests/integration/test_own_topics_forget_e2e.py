"""The pipeline's own topics forget an erased subject (N9.erasure-own-topics).

A real worker under the shipped policy with the own-topics bound compressed to
seconds (as ``demo.yaml`` compresses retention). A subject's new e-mail address
travels through the pipeline: on its input topic (a rectification), in a RECTIFY
command and its state, and in a dead letter (an unreadable event carrying it).
The subject is then erased. Scanning the raw bytes of every topic of the
pipeline (state changelog and Faust's own topics included, aborted
transactions included) must then find the address nowhere, and the subject's
id only where the design keeps it: the state changelog (the request's outcome,
N10) and the erasure ledger (N9.erasure-replay), docs/own-data.md. The worker's
local store (RocksDB files) must then lose the address too.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, KafkaError, TopicPartition

from schemas.base import DataCategory
from schemas.commands import Action, Command
from schemas.events import ErasureRequested, RectificationRequested
from schemas.responses import RequestResponse, ResponseStatus
from streams.admin import admin_client
from tests.integration.events import desk_request, registered
from tests.integration.pipeline import (
    NOTICE_POLICY,
    Pipeline,
    pipelines,
    wait_decided,
    wait_for,
)

BOUND = "PT40S"


def short_bound_policy(directory: Path) -> Path:
    doc = yaml.safe_load(NOTICE_POLICY.read_text())
    doc["own_topics"] = {
        "rule": "N9.erasure-own-topics",
        "personal_data_kept_for": BOUND,
        "segment_for": "PT4S",
    }
    path = directory / "short-own-topics.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    policy = short_bound_policy(tmp_path)
    for pipeline in pipelines(kafka_bootstrap, tmp_path, policy_path=policy):
        pipeline.start()
        for system in pipeline.policy.systems:
            pipeline.run_downstream(system.id)
        yield pipeline


def topic_bytes(pipeline: Pipeline, timeout: float = 60.0) -> dict[str, bytes]:
    """Every topic of the pipeline -> the raw bytes of all its keys and values,
    aborted transactional records included (read uncommitted).

    Every partition holding records is assigned at once and read to the end it
    had when the scan began (one fetch session: a partition at a time took about
    half a second each, half a minute a scan)."""
    admin = admin_client(pipeline.settings, pipeline.bootstrap)
    topics = {
        name: meta
        for name, meta in admin.list_topics(timeout=30).topics.items()
        if name.startswith(pipeline.prefix)
    }
    chunks: dict[str, list[bytes]] = {name: [] for name in topics}
    consumer = Consumer(
        {
            **pipeline.client_config,
            "group.id": f"scan-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            "enable.partition.eof": True,
        }
    )
    try:
        ends: dict[tuple[str, int], int] = {}
        starts: list[TopicPartition] = []
        for name, meta in topics.items():
            for partition in meta.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(name, partition), timeout=10
                )
                if high > low:
                    ends[(name, partition)] = high
                    starts.append(TopicPartition(name, partition, low))
        consumer.assign(starts)
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise AssertionError(f"scan did not reach the end of {sorted(ends)}")
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            where = (msg.topic() or "", msg.partition() or 0)
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.pop(where, None)
                continue
            chunks[where[0]] += [msg.key() or b"", msg.value() or b""]
            if where in ends and (msg.offset() or 0) + 1 >= ends[where]:
                del ends[where]
    finally:
        consumer.close()
    return {name: b"".join(parts) for name, parts in chunks.items()}


def holding(pipeline: Pipeline, needle: bytes, *, except_: tuple[str, ...] = ()) -> list[str]:
    return sorted(
        name
        for name, data in topic_bytes(pipeline).items()
        if needle in data and name not in except_
    )


def test_after_an_erasure_no_topic_keeps_the_subjects_data(pipeline: Pipeline) -> None:
    tag = uuid.uuid4().hex[:12]
    subject = f"cust-forget-{tag}"
    address = f"ann.{tag}@example.com"
    record = registered(
        subject,
        f"form-{tag}",
        "crm",
        DataCategory.FORMS_SURVEYS,
        purpose="sales-enquiries",
        event_id=f"ev-reg-{tag}",  # event ids are opaque (here: not built from the subject id)
    )
    pipeline.publish(record.model_copy(update={"fields": ["email"]}))
    # The record and the request travel on different topics, in no order across
    # them: a rectification only corrects records known when it runs (rectification
    # has no event-time cutoff, docs/event-time.md), so the record goes first.
    wait_decided(pipeline, [record], "the record registered")
    rectify = desk_request(
        RectificationRequested,
        subject,
        f"req-fix-{tag}",
        event_id=f"ev-fix-{tag}",
        corrections={"email": address},
    )
    pipeline.publish(rectify)
    pipeline.wait_for_models(
        pipeline.names.command("crm"),
        Command,
        lambda cs: any(c.subject_id == subject and c.action is Action.RECTIFY for c in cs),
        what="the RECTIFY command carrying the new address",
    )
    # An unreadable event that carries the address: parked with its payload.
    pipeline.publish_raw(
        pipeline.names.input("crm"), subject.encode(), b"\x00not avro " + address.encode()
    )
    needle = address.encode()
    wait_for(
        lambda: any(needle in value for *_, value in pipeline.read_raw(pipeline.names.dead_letter)),
        30,
        "the dead letter keeps the payload",
    )
    # The scan can fail: the address is in several topics now.
    assert {
        pipeline.names.input("privacy-desk"),
        pipeline.names.command("crm"),
        pipeline.names.dead_letter,
    } <= set(holding(pipeline, needle))

    pipeline.publish(
        desk_request(ErasureRequested, subject, f"req-erase-{tag}", event_id=f"ev-er-{tag}")
    )
    pipeline.wait_for_models(
        pipeline.names.responses,
        RequestResponse,
        lambda rs: any(
            r.request_id == f"req-erase-{tag}" and r.status is ResponseStatus.COMPLETED for r in rs
        ),
        what="the erasure completed",
    )
    # Within the bound (40 s here; 72 hours + 1 hour in the shipped policy), plus
    # the broker's retention check and log cleaner runs. Other subjects' events keep
    # coming, as in production: a compacted partition's active segment is rolled
    # (and so becomes cleanable) when it is written to.
    kept_by_design = (
        pipeline.names.erasure_ledger,
        f"{pipeline.prefix}-subjects-changelog",
    )
    stop = threading.Event()
    traffic = threading.Thread(target=_other_subjects, args=(pipeline, tag, stop), daemon=True)
    traffic.start()
    try:
        wait_for(
            lambda: (
                holding(pipeline, needle) == []
                and holding(pipeline, subject.encode(), except_=kept_by_design) == []
            ),
            240,
            "the erased subject's data stayed in the pipeline's topics",
            interval=5.0,
        )
    except AssertionError:
        raise AssertionError(
            f"still there: address in {holding(pipeline, needle)}, subject id in "
            f"{holding(pipeline, subject.encode(), except_=kept_by_design)}"
        ) from None
    finally:
        stop.set()
        traffic.join(30)
    # The worker's local store (RocksDB: log and sorted files) forgets within the
    # same bound: it is compacted each `segment_for` (4 s here).
    data_dir = pipeline.worker_data_dir
    assert data_dir.is_dir()
    wait_for(
        lambda: files_holding(data_dir, needle) == [],
        60,
        "the worker's local store kept the erased address",
        interval=2.0,
    )


def files_holding(directory: Path, needle: bytes) -> list[str]:
    found = []
    for path in directory.rglob("*"):
        try:
            if path.is_file() and needle in path.read_bytes():
                found.append(str(path.relative_to(directory)))
        except FileNotFoundError:  # a file RocksDB removed while we read
            continue
    return sorted(found)


def _other_subjects(pipeline: Pipeline, tag: str, stop: threading.Event) -> None:
    n = 0
    while not stop.wait(2.0):
        n += 1
        pipeline.publish(
            registered(
                f"cust-other-{tag}-{n}",
                f"form-{n}",
                "crm",
                DataCategory.FORMS_SURVEYS,
                purpose="sales-enquiries",
                event_id=f"ev-other-{tag}-{n}",
            )
        )
