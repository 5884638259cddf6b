"""Messages the pipeline sends to itself."""

from __future__ import annotations

from pydantic import Field

from schemas.base import DataCategory, Frozen, Identifier, ShortText, Slug, UtcDatetime

# Records one DueTick may name (its contract's bound; senders chunk to it).
MAX_TICK_RECORDS = 100


class DueTick(Frozen):
    """Wakes a subject whose earliest due time has passed.

    The timer may not write tables (Faust allows table writes only while an
    event is being processed), so it sends this to a topic co-partitioned with
    the input; the agent then decides in event context. A duplicate tick is
    harmless: the rules fire only what is due and not yet done.
    """

    subject_id: Identifier
    due_at: UtcDatetime
    sent_at: UtcDatetime
    # Records (``system/record_id``) the tick is about: ones the standing
    # reconciliation found overdue (their due entries restored if missing,
    # agents.runtime.reconcile), or deletions deferred until ``due_at`` that the
    # contract sources have now passed (agents.rules.retention.wake_deferred).
    # Empty for a plain wake-up.
    records: list[ShortText] = Field(default_factory=list, max_length=MAX_TICK_RECORDS)
    # Sent by the standing reconciliation: the named records were found overdue
    # (audited ``overdue-found``, shown on the desk's escalations page).
    reconciliation: bool = False


class ErasureLedgerEntry(Frozen):
    """One deletion a downstream system confirmed, kept for replay after a restore.

    Written to the erasure-ledger topic (key ``<system>/<command_id>``, compacted)
    when a DELETE command is acknowledged DONE or NOT_HELD, and kept as long as
    the longest backup retention in the policy (N9.erasure-replay). It names
    records and commands only; no personal data values.
    """

    command_id: Identifier
    system: Slug
    subject_id: Identifier
    controller_id: Slug
    record_ids: list[Identifier] = Field(default_factory=list, max_length=10_000)
    categories: list[DataCategory] = Field(default_factory=list, max_length=20)
    rule_id: ShortText
    request_id: Identifier | None = None
    erased_at: UtcDatetime


class SystemRestored(Frozen):
    """A downstream system was restored from a backup taken at ``backup_taken_at``.

    Published by the system (``Publisher.publish_restored``) on the restores
    topic; every deletion of that system recorded in the erasure ledger since the
    backup was taken is sent to it again, with the same command ids.
    """

    restore_id: Identifier
    system: Slug
    backup_taken_at: UtcDatetime
    restored_at: UtcDatetime


class ErasureReplay(Frozen):
    """Asks the worker that owns a subject to send one ledger deletion again.

    Sent to the erasure-replays topic (keyed by subject, co-partitioned with the
    inputs) by the erasure replayer; the worker re-sends the DELETE with its original id and
    audits ``erasure-replayed``.
    """

    subject_id: Identifier
    restore_id: Identifier
    backup_taken_at: UtcDatetime
    command_id: Identifier
    system: Slug
    controller_id: Slug
    record_ids: list[Identifier] = Field(default_factory=list, max_length=10_000)
    categories: list[DataCategory] = Field(default_factory=list, max_length=20)
    rule_id: ShortText
    request_id: Identifier | None = None
    erased_at: UtcDatetime
