"""Event builders for unit tests on a ``Harness``: send the event, return the decision."""

from __future__ import annotations

from datetime import date
from typing import Any

from agents.rules.context import Decision
from agents.rules.policy import EventTimeSettings, Policy, load_policy
from agents.rules.testing import Harness
from schemas.base import DataCategory, DataSource, DocumentType, LegalBasis
from schemas.events import IdentityEvidenceReceived, RecordRegistered
from streams.settings import REPO_ROOT

# Policies are frozen, so one loaded copy serves every test module.
NOTICE_AS_SHIPPED = load_policy(REPO_ROOT / "agents" / "policy" / "notice.yaml")
DEMO_AS_SHIPPED = load_policy(REPO_ROOT / "agents" / "policy" / "demo.yaml")


def without_watermarks(policy: Policy) -> Policy:
    """``policy`` with answers that do not wait for the sources' watermarks."""
    return policy.model_copy(update={"event_time": EventTimeSettings(sources=[])})


# Tests of the other obligations answer without waiting for watermarks (a harness
# has one subject and no heartbeats); test_cutoff.py uses the policies as shipped.
NOTICE = without_watermarks(NOTICE_AS_SHIPPED)
DEMO = without_watermarks(DEMO_AS_SHIPPED)


def register(
    h: Harness,
    record_id: str,
    system: str,
    category: DataCategory,
    purpose: str = "service-delivery",
    *,
    basis: LegalBasis = LegalBasis.CONTRACT,
    source: DataSource = DataSource.SUBJECT,
    **kw: Any,
) -> Decision:
    """``RecordRegistered`` for ``h``'s subject (contract data the subject gave, by default)."""
    return h.send(
        h.event(
            RecordRegistered,
            record_id=record_id,
            system=system,
            category=category,
            source=source,
            legal_basis=basis,
            purpose=purpose,
            **kw,
        )
    )


def identity_evidence(
    h: Harness, evidence_id: str, kind: DocumentType, issued: date | None = None, req: str = "r-1"
) -> Decision:
    """``IdentityEvidenceReceived`` under request ``req``."""
    return h.send(
        h.event(
            IdentityEvidenceReceived,
            request_id=req,
            evidence_id=evidence_id,
            document_type=kind,
            issued_on=issued,
        )
    )
