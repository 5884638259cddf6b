"""Pure lifecycle rules: policy, per-subject state and the decision function.

Public API::

    from agents.rules import decide, next_due, load_policy, SubjectHeader, Decision

See ``decide.py`` for the flow, ``registry.py`` for adding handlers.
"""

from __future__ import annotations

from agents.rules.context import AuditEntry, Decision
from agents.rules.decide import Message, decide, next_due
from agents.rules.policy import Policy, PolicyError, load_policy
from agents.rules.state import SubjectHeader

__all__ = [
    "AuditEntry",
    "Decision",
    "Message",
    "Policy",
    "PolicyError",
    "SubjectHeader",
    "decide",
    "load_policy",
    "next_due",
]
