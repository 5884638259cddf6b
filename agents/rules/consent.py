"""Consent (N4): recorded when given; its withdrawal stops what relied on it.

``ConsentGiven`` records the consent for the purpose (``state.consents``;
audit ``consent-recorded``; when the policy's basis for that purpose is not
consent, audit ``consent-not-the-basis`` as well: consent is used only where
nothing else applies, so the desk should look).

``ConsentWithdrawn`` records the withdrawal and sends STOP_PROCESSING (rule
``N4.consent``, ``parameters.purpose`` = the purpose, ``parameters.reason`` =
``consent-withdrawn``; ``request_id`` = the withdrawal event id, so a later
withdrawal after fresh consent is a new command) to every system holding
records whose legal basis is consent for that purpose. Records of the same
purpose under another basis (contract, legal obligation, legitimate interests)
are untouched and counted in the audit entry (``other-basis``). The records
are gone through a page at a time, each page with its commands and its audit
entry.

Consent binds (``bind``, called for every registration): a record registered
on the basis of consent for a purpose whose consent is withdrawn, with no
consent given since, gets a command at once (rule ``N4.consent-binds``):
STOP_PROCESSING, or DELETE when the policy's ``consent.after_withdrawal`` is
``delete``; audit ``processing-without-consent`` naming the rule, the system and
the record; the worker counts it in ``lifecycle_processing_without_consent_total``
(by system and purpose), and ``LifecycleProcessingWithoutConsent`` fires for the
system that keeps processing without consent. A registration that merely repeats a
record whose command that system already confirmed sends nothing again.

Decision: STOP_PROCESSING, not DELETE. Withdrawal stops the processing that
relied on consent (N4); it is not an erasure request. The records keep their
retention schedule and are deleted when it says so, or at once if the subject
asks for erasure (those records then have no ground to be kept). Consent given
again later needs no command: systems act on new consent when they register
new records.
"""

from __future__ import annotations

from collections import defaultdict

from agents.rules import commands, jobs
from agents.rules.context import Ctx
from agents.rules.policy import ConsentEnforcement
from agents.rules.registry import handles
from agents.rules.rights import N4_CONSENT, page_suffix
from agents.rules.state import ConsentState, Job, RecordState, RecordStatus
from schemas.base import LegalBasis
from schemas.commands import Action
from schemas.events import ConsentGiven, ConsentWithdrawn

STOP_CONSENT = "stop-consent"
N4_CONSENT_BINDS = "N4.consent-binds"


@handles(ConsentGiven)
def on_consent_given(ctx: Ctx, event: ConsentGiven) -> None:
    consents = ctx.subject.consents
    previous = consents.get(event.purpose)
    consents[event.purpose] = ConsentState(
        purpose=event.purpose, given_at=event.event_time, withdrawn_at=None
    )
    ctx.audit(
        N4_CONSENT,
        "consent-recorded",
        controller_id=event.controller_id,
        purpose=event.purpose,
        previously_withdrawn=previous is not None and previous.withdrawn_at is not None,
    )
    purpose = ctx.policy.purpose(event.purpose)
    if purpose is None or purpose.legal_basis is not LegalBasis.CONSENT:
        ctx.audit(
            N4_CONSENT,
            "consent-not-the-basis",
            controller_id=event.controller_id,
            purpose=event.purpose,
            policy_basis=purpose.legal_basis.value if purpose else "unknown-purpose",
        )


@handles(ConsentWithdrawn)
def on_consent_withdrawn(ctx: Ctx, event: ConsentWithdrawn) -> None:
    consents = ctx.subject.consents
    previous = consents.get(event.purpose)
    consents[event.purpose] = ConsentState(
        purpose=event.purpose,
        given_at=previous.given_at if previous else None,
        withdrawn_at=event.event_time,
    )
    jobs.start(
        ctx,
        STOP_CONSENT,
        event.event_id,
        purpose=event.purpose,
        controller=event.controller_id,
    )


@jobs.step(STOP_CONSENT)
def _stop_page(ctx: Ctx, job: Job) -> Job | None:
    purpose = job.data["purpose"]
    page, last = jobs.page(ctx, job)
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    other_basis = 0
    for record in page:
        if record.purpose != purpose or record.status is not RecordStatus.HELD:
            continue
        if record.legal_basis is LegalBasis.CONSENT:
            groups[(record.system, record.controller_id)].append(record.key)
        else:
            other_basis += 1
    sent: list[str] = []
    for (system, controller_id), keys in sorted(groups.items()):
        cid = commands.issue(
            ctx,
            action=Action.STOP_PROCESSING,
            system=system,
            controller_id=controller_id,
            rule_id=N4_CONSENT,
            record_keys=keys,
            # The withdrawal event's id: a later withdrawal after fresh consent is a new command.
            request_id=job.ref,
            parameters={"purpose": purpose, "reason": "consent-withdrawn"},
        )
        if cid is not None:
            sent.append(cid)
    ctx.audit(
        N4_CONSENT,
        "consent-withdrawn",
        controller_id=job.data["controller"],
        command_ids=sent,
        purpose=purpose,
        systems=sorted({s for s, _ in groups}),
        record_ids=[ctx.records[k].record_id for keys in groups.values() for k in keys],
        other_basis=other_basis,
        **page_suffix(job, last),
    )
    return None if last else jobs.advance(job, page)


def withdrawn(ctx: Ctx, purpose: str) -> ConsentState | None:
    """The purpose's consent, if it is withdrawn and not given again since."""
    consent = ctx.subject.consents.get(purpose)
    return consent if consent is not None and consent.withdrawn_at is not None else None


def bind(ctx: Ctx, record: RecordState) -> None:
    """A record relying on withdrawn consent is stopped (or deleted) at once (N4)."""
    if record.legal_basis is not LegalBasis.CONSENT or record.status is not RecordStatus.HELD:
        return
    consent = withdrawn(ctx, record.purpose)
    if consent is None:
        return
    delete = ctx.policy.consent.after_withdrawal is ConsentEnforcement.DELETE
    action = Action.DELETE if delete else Action.STOP_PROCESSING
    parameters = None if delete else {"purpose": record.purpose, "reason": "consent-withdrawn"}
    cid = commands.command_id_for(
        ctx,
        action=action,
        system=record.system,
        rule_id=N4_CONSENT_BINDS,
        record_keys=[record.key],
    )
    if cid in ctx.closed:
        return  # the system already confirmed it for this very record (a repeat)
    sent = commands.issue(
        ctx,
        action=action,
        system=record.system,
        controller_id=record.controller_id,
        rule_id=N4_CONSENT_BINDS,
        record_keys=[record.key],
        parameters=parameters,
    )
    ctx.notes.without_consent.append((record.system, record.purpose))
    ctx.audit(
        N4_CONSENT_BINDS,
        "processing-without-consent",
        controller_id=record.controller_id,
        command_ids=[sent] if sent else [],
        system=record.system,
        record_id=record.record_id,
        purpose=record.purpose,
        action=action.value,
        consent_withdrawn_at=consent.withdrawn_at,
    )
