"""Commands the pipeline sends to downstream systems, and their acknowledgements.

A command's id is derived from what it does (see ``command_id``), so a replay
of the same decision produces the same id and a downstream system that has
already carried it out can answer "done" again without acting twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import StrEnum

from pydantic import Field

from schemas.base import (
    DataCategory,
    Frozen,
    Identifier,
    ShortText,
    Slug,
    UtcDatetime,
)


class Action(StrEnum):
    DELETE = "delete"
    ANONYMISE = "anonymise"
    SUPPRESS_MARKETING = "suppress_marketing"
    RESTRICT = "restrict"
    LIFT_RESTRICTION = "lift_restriction"
    RECTIFY = "rectify"
    EXPORT = "export"
    STOP_PROCESSING = "stop_processing"


class AckOutcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    NOT_HELD = "not_held"


def command_id(
    *,
    action: Action,
    system: str,
    subject_id: str,
    rule_id: str,
    record_ids: tuple[str, ...] | list[str],
    request_id: str | None = None,
    generations: Mapping[str, str] | None = None,
) -> str:
    """Stable id of a command: the same decision always yields the same id.

    ``generations`` maps a record id to the id of the event that registered it,
    so a record deleted and registered again is named by a new command id (a
    downstream system that remembers the first deletion must act again). A
    record without a generation is named by its id alone, as before generations.
    """
    gens = generations or {}
    named = sorted(f"{r}@{gens[r]}" if gens.get(r) else r for r in record_ids)
    parts = [action.value, system, subject_id, rule_id, request_id or "", *named]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"cmd-{digest[:32]}"


class Command(Frozen):
    """An instruction to one downstream system about one subject's records."""

    command_id: Identifier
    action: Action
    target_system: Slug
    subject_id: Identifier
    controller_id: Slug
    record_ids: list[Identifier] = Field(default_factory=list, max_length=10_000)
    categories: list[DataCategory] = Field(default_factory=list, max_length=20)
    rule_id: ShortText
    request_id: Identifier | None = None
    issued_at: UtcDatetime
    deadline: UtcDatetime
    attempt: int = Field(default=1, ge=1)
    policy_version: ShortText
    # Action-specific parameters, e.g. the corrected values for RECTIFY or the
    # purpose for STOP_PROCESSING.
    parameters: dict[Slug, ShortText] = Field(default_factory=dict, max_length=50)


class ExportedRecord(Frozen):
    """One record a system exported for an access or portability request."""

    record_id: Identifier
    category: DataCategory
    provided_by_subject: bool
    fields: dict[Slug, ShortText] = Field(default_factory=dict, max_length=200)


class CommandAck(Frozen):
    """A downstream system's answer to a command."""

    command_id: Identifier
    subject_id: Identifier
    system: Slug
    outcome: AckOutcome
    reason: ShortText | None = None
    acked_at: UtcDatetime
    export_reference: ShortText | None = None
    exported: list[ExportedRecord] = Field(default_factory=list, max_length=10_000)
