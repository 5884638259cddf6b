"""Bounds that keep every step and every message small, whatever a subject holds.

A decision reads and writes at most about ``PAGE`` records for work that spans
the subject's records (erasure, restriction, a contract's end, ...) and fires
at most ``DUE_BATCH`` due items; what is left continues in the next step (the
worker sends the subject a tick at once). A command names at most ``CHUNK``
records, so commands and their audit proofs are bounded too (docs/state.md).
"""

from __future__ import annotations

PAGE = 500
CHUNK = 500
DUE_BATCH = 500
# Kept items listed in one response (the rest are counted, and named in the audit trail).
MAX_KEPT_IN_RESPONSE = 100
# Distinct reasons given in one refusal (RequestResponse.reasons holds at most 100).
MAX_REASONS = 20
# Records listed by name in an access report (larger holdings are summarised).
MAX_REPORT_RECORDS = 2_000
# Portable records put into one portability answer (larger exports go by reference).
MAX_PORTABLE_RECORDS = 2_000
# Export references listed in one answer (about 120 bytes each).
MAX_EXPORTS_LISTED = 1_000
