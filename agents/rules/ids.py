"""Rule ids used in commands and audit entries for rules that are not retention
rules from the policy (those carry the policy's own ids, e.g. ``N7.call-recordings``)."""

from __future__ import annotations

N1_OPT_OUT = "N1.opt-out"
N1_RE_ADD = "N1.re-add-suppressed"
N2_UNKNOWN_CONTROLLER = "N2.unknown-controller"
N2_PROCESSOR = "N2.processor-mode"
N3_REGISTER = "N3.record-registered"
N6_CONTRACT = "N6.contract"
N7_LEGAL_HOLD = "N7.legal-hold"
N9_ERASURE = "N9.erasure"
N9_ERASURE_REPLAY = "N9.erasure-replay"
N9_OBJECTION_MARKETING = "N9.objection-direct-marketing"
N13_DEADLINE = "N13.request-deadline"
N14_NO_MARKETING = "N14.recordings-not-for-marketing"
COMMAND_DELIVERY = "commands.delivery"
DISPATCH = "dispatch"
# The standing reconciliation (agents.runtime.reconcile): nothing kept past its time.
RECONCILIATION = "reconciliation"
