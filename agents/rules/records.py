"""Registering the records systems hold about a subject (N3, N4, N14).

Every record is registered with category, source, system, legal basis,
purpose and controller, and scheduled by ``retention.schedule``. Its
generation is the id of the event that registered it: registered again after
its deletion was confirmed, it is a new generation, so its next DELETE has a
new command id and a downstream system that remembers the first one acts again.
Registered again while its DELETE is outstanding, the new generation is noted
(``registered-while-deleting``) and the record is held again, and scheduled,
once that DELETE is confirmed: the system may have received the data again
after it deleted.

N14: call recordings are for training and security only. A registration of a
recording with a marketing purpose is refused: the audit entry says so and the
record is registered under the policy's recording purpose instead (so N7 still
deletes it on time). A recording reported by a marketing system must not be
there at all: it is registered and a DELETE is sent to that system at once.

N9: a record new to the state whose event time is at or before the receipt of
one of the subject's erasure, restriction or objection-to-profiling requests is
dealt with under that request at once (``cutoff.on_registered``).

N4: a record registered on consent that was withdrawn (none given since) is
stopped or deleted at once (``consent.bind``).

A record on an unknown system is not registered (no command could reach it):
``unknown-system`` is audited so the gap is visible.
"""

from __future__ import annotations

from datetime import datetime

from agents.rules import commands, consent, cutoff, ids, marketing, retention
from agents.rules.context import Ctx
from agents.rules.registry import handles
from agents.rules.state import RecordState, RecordStatus, record_key, replace
from schemas.base import DataCategory, DataSource, LegalBasis
from schemas.commands import Action
from schemas.events import CallRecorded, RecordRegistered


def register(
    ctx: Ctx,
    *,
    record_id: str,
    system: str,
    category: DataCategory,
    source: DataSource,
    legal_basis: LegalBasis,
    purpose: str,
    controller_id: str,
    contract_id: str | None,
    fields: list[str],
    registered_at: datetime,
    generation: str,
) -> RecordState | None:
    target = ctx.policy.system(system)
    if target is None:
        ctx.audit(
            ids.N3_REGISTER,
            "unknown-system",
            controller_id=controller_id,
            system=system,
            record_id=record_id,
            category=category.value,
        )
        return None
    if category not in target.categories:
        ctx.audit(
            ids.N3_REGISTER,
            "category-not-declared",
            controller_id=controller_id,
            system=system,
            record_id=record_id,
            category=category.value,
        )
    if controller_id != ctx.policy.controller.id and not any(
        c.id == controller_id for c in ctx.policy.controllers
    ):
        ctx.audit(
            ids.N2_UNKNOWN_CONTROLLER,
            "unknown-controller",
            controller_id=controller_id,
            system=system,
            record_id=record_id,
        )
    key = record_key(system, record_id)
    existing = ctx.records.get(key)
    if existing is not None:
        if existing.status is not RecordStatus.HELD:
            ctx.audit(
                ids.N3_REGISTER,
                "registered-while-deleting",
                controller_id=controller_id,
                system=system,
                record_id=record_id,
                command_ids=[existing.command_id] if existing.command_id else [],
            )
            if existing.next_generation is None:
                existing = replace(
                    existing,
                    next_generation=generation,
                    reregistered_at=registered_at,
                    fields=sorted(set(existing.fields) | set(fields)),
                )
                ctx.records[key] = existing
            return existing
        record = replace(
            existing,
            fields=sorted(set(existing.fields) | set(fields)),
            registered_at=min(existing.registered_at, registered_at),
            contract_id=existing.contract_id or contract_id,
        )
    else:
        record = RecordState(
            record_id=record_id,
            system=system,
            category=category,
            legal_basis=legal_basis,
            source=source,
            purpose=purpose,
            controller_id=controller_id,
            contract_id=contract_id,
            provided_by_subject=source is DataSource.SUBJECT,
            fields=sorted(set(fields)),
            registered_at=registered_at,
            generation=generation,
        )
    record = retention.schedule(ctx, record)
    ctx.records[key] = record
    ctx.registered.append(key)
    ctx.audit(
        record.rule_id or ids.N3_REGISTER,
        "retention-scheduled",
        controller_id=controller_id,
        system=system,
        record_id=record_id,
        category=category.value,
        legal_basis=legal_basis.value,
        source=source.value,
        due_at=record.due_at or "while-contract-active",
    )
    if existing is None:
        # Reported after a request it predates (event time): dealt with under it (N9).
        cutoff.on_registered(ctx, record, registered_at)
    return ctx.records[key]


@handles(CallRecorded)
def on_call_recorded(ctx: Ctx, event: CallRecorded) -> None:
    purpose = ctx.policy.purpose(ctx.policy.recording_purpose)
    record = register(
        ctx,
        record_id=event.recording_id,
        system=event.system,
        category=DataCategory.CALL_RECORDING,
        source=DataSource.OBSERVED,
        legal_basis=purpose.legal_basis if purpose else LegalBasis.LEGITIMATE_INTERESTS,
        purpose=ctx.policy.recording_purpose,
        controller_id=event.controller_id,
        contract_id=None,
        fields=[],
        registered_at=event.event_time,
        generation=event.event_id,
    )
    if record is not None:
        _refuse_recording_on_marketing_system(ctx, record)


@handles(RecordRegistered)
def on_record_registered(ctx: Ctx, event: RecordRegistered) -> None:
    purpose_id, basis = event.purpose, event.legal_basis
    if event.category is DataCategory.CALL_RECORDING:
        purpose = ctx.policy.purpose(event.purpose)
        if purpose is not None and purpose.marketing:
            ctx.audit(
                ids.N14_NO_MARKETING,
                "recording-marketing-refused",
                controller_id=event.controller_id,
                system=event.system,
                record_id=event.record_id,
                purpose=event.purpose,
            )
            recording = ctx.policy.purpose(ctx.policy.recording_purpose)
            purpose_id = ctx.policy.recording_purpose
            basis = recording.legal_basis if recording else basis
    record = register(
        ctx,
        record_id=event.record_id,
        system=event.system,
        category=event.category,
        source=event.source,
        legal_basis=basis,
        purpose=purpose_id,
        controller_id=event.controller_id,
        contract_id=event.contract_id,
        fields=list(event.fields),
        registered_at=event.event_time,
        generation=event.event_id,
    )
    if record is None:
        return
    if record.category is DataCategory.CALL_RECORDING:
        _refuse_recording_on_marketing_system(ctx, record)
    else:
        marketing.check_re_add(ctx, record, purpose_id)
    consent.bind(ctx, ctx.records[record.key])


def _refuse_recording_on_marketing_system(ctx: Ctx, record: RecordState) -> None:
    system = ctx.policy.system(record.system)
    if system is None or not system.marketing or record.status is not RecordStatus.HELD:
        return
    cid = commands.issue(
        ctx,
        action=Action.DELETE,
        system=record.system,
        controller_id=record.controller_id,
        rule_id=ids.N14_NO_MARKETING,
        record_keys=[record.key],
    )
    ctx.audit(
        ids.N14_NO_MARKETING,
        "recording-removed-from-marketing",
        controller_id=record.controller_id,
        command_ids=[cid] if cid else [],
        system=record.system,
        record_id=record.record_id,
    )
