"""Audit events: the append-only, tamper-evident record of every decision (issue 4.7).

Subjects appear only as ``subject_ref``, a keyed pseudonym (HMAC-SHA256 with a
configured secret), so the trail proves what happened without keeping the
person's data. ``prev_hash``/``hash`` chain the events of one partition.
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic import Field

from schemas.base import Frozen, Identifier, ShortText, Slug, UtcDatetime

GENESIS_HASH = "0" * 64


class AuditSource(NamedTuple):
    """The input a decision was taken on: where it sits in Kafka."""

    topic: str
    partition: int
    offset: int


class AuditEvent(Frozen):
    audit_id: Identifier
    partition: int = Field(ge=0)
    sequence: int = Field(ge=0)
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    subject_ref: str = Field(pattern=r"^[0-9a-f]{64}$")
    controller_id: Slug
    rule_id: ShortText
    policy_version: ShortText
    decision: Slug
    event_ids_in: list[Identifier] = Field(default_factory=list, max_length=1000)
    command_ids_out: list[Identifier] = Field(default_factory=list, max_length=10_000)
    event_time: UtcDatetime
    decided_at: UtcDatetime
    # Non-personal facts about the decision: record ids, systems, due times.
    details: dict[Slug, ShortText] = Field(default_factory=dict, max_length=100)
    # Added in v2: the input whose decision this records (topic, partition,
    # offset), and this event's place among that decision's events. A crash
    # replays inputs from the last committed offset, and their decisions are
    # appended again; these let the verifier recognise such a replay. None on
    # events written before v2.
    source_topic: str | None = Field(default=None, min_length=1, max_length=249)
    source_partition: int | None = Field(default=None, ge=0)
    source_offset: int | None = Field(default=None, ge=0)
    source_entry: int | None = Field(default=None, ge=0)

    @property
    def source(self) -> AuditSource | None:
        """The input decided, when recorded (events since v2)."""
        if self.source_topic is None or self.source_partition is None:
            return None
        if self.source_offset is None:
            return None
        return AuditSource(self.source_topic, self.source_partition, self.source_offset)
