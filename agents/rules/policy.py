"""The retention and disclosure policy, as data (``agents/policy/*.yaml``).

``load_policy(path)`` reads a YAML file into frozen pydantic models and checks
what the notice promises before anything runs:

* every data category is described, and says whether it is needed for a legal
  obligation after a contract ends (N6);
* every downstream system declares region and transfer safeguard; a system
  outside the UK/EEA that holds personal data with safeguard ``none`` is
  refused (N8);
* retention rules have unique ids naming their obligation (``N7.call-recordings``),
  exactly one rule of each of the kinds ``contract_end``, ``legal_obligation``
  and ``default``, and ``fixed`` rules do not overlap in category;
* per-controller overrides (processor mode, N2) refer only to existing rules;
* command timings have a fixed length (no years/months).

Any failure raises ``PolicyError`` whose message names the file, the path in
the document (``systems[3] (us-billing).safeguard``) and what is wrong.

Retention rule kinds (how the rules engine uses them, see ``retention.py``):

``fixed``
    Records of the listed categories are due ``keep_for`` after they were
    recorded (event time), whatever the contract state (N7: 30 days).
``contract_end``
    Records of categories *not* needed for a legal obligation are due
    ``keep_for`` after the subject's last contract ends (N6; ``P0D``: at once).
    A record tied to a contract (``contract_id``) is due when that contract ends.
``legal_obligation``
    Records of categories needed for a legal obligation are due ``keep_for``
    after the last contract ends (N6: 7 calendar years); no due time while any
    contract is active.
``default``
    Records of a subject who has never had a contract (e.g. a sales lead
    marketed to under legitimate interests) are due ``keep_for`` after they
    were recorded.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from agents.rules.durations import Duration
from schemas.base import DataCategory, Frozen, LegalBasis, ShortText, Slug
from schemas.events import DEFAULT_CONTROLLER
from streams.topics import TopicRetention

RuleId = str


class PolicyError(ValueError):
    """The policy file is unreadable or breaks a rule; ``problems`` lists (path, message)."""

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems
        lines = [
            f"{file}: {path}: {message}" if path else f"{file}: {message}"
            for path, message in problems
        ]
        super().__init__("\n".join(lines))


class Region(StrEnum):
    UK = "uk"
    EEA = "eea"
    US = "us"
    OTHER = "other"


class Safeguard(StrEnum):
    NONE = "none"
    ADEQUACY = "adequacy"
    IDTA = "idta"
    SCC = "scc"
    PCI = "pci"


class RuleKind(StrEnum):
    FIXED = "fixed"
    CONTRACT_END = "contract_end"
    LEGAL_OBLIGATION = "legal_obligation"
    DEFAULT = "default"


class Contact(Frozen):
    name: ShortText
    email: ShortText | None = None
    phone: ShortText | None = None
    address: ShortText | None = None
    url: ShortText | None = None


class ControllerIdentity(Contact):
    id: Slug


class ComplaintAuthority(Contact):
    """Where a subject can complain (the ICO, N10, N11, N13)."""

    complain_after: Duration = Duration.parse("P30D")


class CategoryPolicy(Frozen):
    description: ShortText
    legal_obligation: bool
    # N11: whether providing it is a statutory or contractual requirement.
    requirement: ShortText = "not required"


class Purpose(Frozen):
    id: Slug
    description: ShortText
    legal_basis: LegalBasis
    legitimate_interests: ShortText | None = None
    marketing: bool = False


class DownstreamSystem(Frozen):
    id: Slug
    description: ShortText
    categories: list[DataCategory] = Field(default_factory=list)
    region: Region
    safeguard: Safeguard
    marketing: bool = False
    automated_processing: bool = False
    automated_logic: ShortText | None = None
    processor: bool = False


class RetentionRule(Frozen):
    id: ShortText = Field(pattern=r"^N[0-9]+\.[a-z0-9-]+$|^[a-z][a-z0-9.-]*$")
    kind: RuleKind
    keep_for: Duration
    categories: list[DataCategory] = Field(default_factory=list)
    description: ShortText


class RetentionOverride(Frozen):
    rule: ShortText
    keep_for: Duration


class ControllerPolicy(Frozen):
    """A client for whom the company acts as processor (N2)."""

    id: Slug
    name: ShortText
    contact: ShortText | None = None
    retention_overrides: list[RetentionOverride] = Field(default_factory=list)


class CommandSettings(Frozen):
    ack_deadline: Duration
    retry_backoff_base: Duration
    retry_backoff_max: Duration
    escalate_after_attempts: int = Field(ge=1, le=100)


class DeadlineCalendar(StrEnum):
    """How request deadlines are computed (N13).

    ``uk-gdpr``: a rights request is due one calendar month after receipt, rolled to
    the next England & Wales working day, at the end of that UK day; a complaint 30
    days after receipt (``agents.rights.deadlines``). ``duration``: plain
    ``response_due`` / ``ico.complain_after`` durations, for compressed demo policies.
    """

    UK_GDPR = "uk-gdpr"
    DURATION = "duration"


class RequestSettings(Frozen):
    calendar: DeadlineCalendar = DeadlineCalendar.UK_GDPR
    response_due: Duration = Duration.parse("P1M")
    warn_before: Duration = Duration.parse("P7D")


class StateSettings(Frozen):
    """How long bookkeeping stays in a subject's state (docs/state.md).

    ``dedup_window``: an event id seen again within it is a duplicate (ignored);
    ``finished_requests_kept_for``: a final request leaves the state this long
    after it closed (its answer stays on the responses topic, its decisions in
    the audit trail); ``closed_commands_kept_for``: a closed command's id is
    remembered this long, so a late or redelivered ack is recognised.
    """

    dedup_window: Duration = Duration.parse("P7D")
    finished_requests_kept_for: Duration = Duration.parse("P30D")
    closed_commands_kept_for: Duration = Duration.parse("P7D")

    @property
    def dedup_bucket(self) -> timedelta:
        """Seen event ids are kept in buckets of this length (a quarter of the window)."""
        return self.dedup_window.as_timedelta() / 4


class ConsentEnforcement(StrEnum):
    STOP_PROCESSING = "stop_processing"
    DELETE = "delete"


class ConsentSettings(Frozen):
    """N4: what a record gets that a system registers on the basis of consent for a
    purpose whose consent was withdrawn (with no consent given since):
    ``stop_processing`` (STOP_PROCESSING, as the withdrawal sent) or ``delete``."""

    after_withdrawal: ConsentEnforcement = ConsentEnforcement.STOP_PROCESSING


class EventTimeSettings(Frozen):
    """Event time and watermarks (N9 erasure, restriction, objection; docs/event-time.md).

    A request covers the subject's data as of its receipt. Its answer waits until
    every publishing system in ``sources`` has been seen past that time (its
    watermark: the latest event time seen from it, less ``allowed_lateness``, or
    a heartbeat it published), or until ``max_wait`` has passed (processing time),
    whichever comes first. An empty ``sources`` list answers without waiting.

    ``contract_sources``: the systems (among ``sources``) that report contracts. A
    deletion that rests on no contract running at its due time (every retention
    rule but ``fixed``) waits until they have been seen past that time, or
    ``max_wait`` after it (``agents.rules.retention``). Empty: no such wait.
    """

    sources: list[Slug] = Field(default_factory=list, max_length=50)
    contract_sources: list[Slug] = Field(default_factory=list, max_length=50)
    max_wait: Duration = Duration.parse("PT15M")
    allowed_lateness: Duration = Duration.parse("PT0S")

    @model_validator(mode="after")
    def _contract_sources_have_watermarks(self) -> EventTimeSettings:
        unknown = sorted(set(self.contract_sources) - set(self.sources))
        if unknown:
            raise ValueError(
                f"event_time.contract_sources not in event_time.sources: {', '.join(unknown)}"
            )
        return self


class BackupSettings(Frozen):
    """Erasures re-applied after a downstream restore (``N9.erasure-replay``, docs/own-data.md).

    ``longest_retention``: the longest time any downstream system keeps a backup;
    the erasure ledger keeps each erasure this long, so a restore from any
    backup still held can be cleaned again. ``clock_margin``: a replay "since T"
    also re-sends erasures recorded up to this long before T (clocks of the
    backup tool and the broker differ).
    """

    rule: ShortText = "N9.erasure-replay"
    longest_retention: Duration = Duration.parse("P35D")
    clock_margin: Duration = Duration.parse("PT1H")


class OwnTopicSettings(Frozen):
    """How long the pipeline's own topics keep personal data (``N9.erasure-own-topics``).

    ``personal_data_kept_for`` is the retention of every topic that can carry
    personal data values (inputs, commands, acknowledgements, responses, dead
    letters): after an erasure nothing of the subject's data survives there
    longer than this plus ``segment_for`` (a segment is deleted whole, once its
    newest message is older than the retention). docs/own-data.md.
    """

    rule: ShortText = "N9.erasure-own-topics"
    personal_data_kept_for: Duration = Duration.parse("PT72H")
    segment_for: Duration = Duration.parse("PT1H")


class Policy(Frozen):
    version: ShortText
    controller: ControllerIdentity
    dpo: Contact
    ico: ComplaintAuthority
    categories: dict[DataCategory, CategoryPolicy]
    purposes: list[Purpose]
    recording_purpose: Slug
    systems: list[DownstreamSystem]
    retention: list[RetentionRule]
    commands: CommandSettings
    requests: RequestSettings = RequestSettings()
    state: StateSettings = StateSettings()
    consent: ConsentSettings = ConsentSettings()
    event_time: EventTimeSettings = EventTimeSettings()
    backups: BackupSettings = BackupSettings()
    own_topics: OwnTopicSettings = OwnTopicSettings()
    controllers: list[ControllerPolicy] = Field(default_factory=list)

    # -- look-ups used by the rules ------------------------------------------------
    def system(self, system_id: str) -> DownstreamSystem | None:
        return next((s for s in self.systems if s.id == system_id), None)

    def purpose(self, purpose_id: str) -> Purpose | None:
        return next((p for p in self.purposes if p.id == purpose_id), None)

    @property
    def marketing_systems(self) -> list[DownstreamSystem]:
        return [s for s in self.systems if s.marketing]

    def is_legal_obligation(self, category: DataCategory) -> bool:
        return self.categories[category].legal_obligation

    def rules_for(self, controller_id: str) -> list[RetentionRule]:
        """Retention rules with ``controller_id``'s overrides applied (N2)."""
        controller = next((c for c in self.controllers if c.id == controller_id), None)
        if controller is None:
            return list(self.retention)
        overrides = {o.rule: o.keep_for for o in controller.retention_overrides}
        return [
            r.model_copy(update={"keep_for": overrides[r.id]}) if r.id in overrides else r
            for r in self.retention
        ]

    def rule_for(
        self, controller_id: str, kind: RuleKind, category: DataCategory | None = None
    ) -> RetentionRule | None:
        for rule in self.rules_for(controller_id):
            if rule.kind is kind and (category is None or category in rule.categories):
                return rule
        return None

    def topic_retention(self) -> TopicRetention:
        """The retention bounds of the pipeline's own topics (N9.erasure-own-topics,
        N9.erasure-replay)."""

        def ms(d: Duration) -> int:
            return int(d.as_timedelta().total_seconds() * 1000)

        return TopicRetention(
            personal_ms=ms(self.own_topics.personal_data_kept_for),
            segment_ms=ms(self.own_topics.segment_for),
            ledger_ms=ms(self.backups.longest_retention),
        )

    def complaint_text(self) -> str:
        ico = self.ico
        where = "; ".join(x for x in (ico.address, ico.phone, ico.url) if x)
        return f"You have the right to complain to the {ico.name}: {where}"


def _loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _check(policy: Policy) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []

    missing = [c.value for c in DataCategory if c not in policy.categories]
    if missing:
        problems.append(("categories", f"categories not described: {', '.join(missing)}"))

    purpose_ids = [p.id for p in policy.purposes]
    for i, p in enumerate(policy.purposes):
        if purpose_ids.count(p.id) > 1:
            problems.append((f"purposes[{i}] ({p.id}).id", "duplicate purpose id"))
        if p.legal_basis is LegalBasis.LEGITIMATE_INTERESTS and not p.legitimate_interests:
            problems.append(
                (
                    f"purposes[{i}] ({p.id}).legitimate_interests",
                    "required when legal_basis is legitimate_interests (N11)",
                )
            )
    rec = policy.purpose(policy.recording_purpose)
    if rec is None:
        problems.append(("recording_purpose", f"unknown purpose {policy.recording_purpose!r}"))
    elif rec.marketing:
        problems.append(
            (
                "recording_purpose",
                f"purpose {rec.id!r} is a marketing purpose; recordings are not "
                "used for marketing (N14)",
            )
        )

    system_ids = [s.id for s in policy.systems]
    for i, s in enumerate(policy.systems):
        where = f"systems[{i}] ({s.id})"
        if system_ids.count(s.id) > 1:
            problems.append((f"{where}.id", "duplicate system id"))
        if (
            s.region not in (Region.UK, Region.EEA)
            and s.categories
            and s.safeguard is Safeguard.NONE
        ):
            problems.append(
                (
                    f"{where}.safeguard",
                    f"system in region {s.region.value!r} holds personal data "
                    "outside the UK/EEA without a transfer safeguard "
                    "(adequacy, idta, scc or pci) (N8)",
                )
            )
        if s.automated_processing and not s.automated_logic:
            problems.append(
                (f"{where}.automated_logic", "required when automated_processing is true (N11)")
            )
        if s.marketing and DataCategory.CALL_RECORDING in s.categories:
            problems.append(
                (f"{where}.categories", "a marketing system may not hold call recordings (N14)")
            )

    rule_ids = [r.id for r in policy.retention]
    fixed_seen: dict[DataCategory, str] = {}
    for i, r in enumerate(policy.retention):
        where = f"retention[{i}] ({r.id})"
        if rule_ids.count(r.id) > 1:
            problems.append((f"{where}.id", "duplicate rule id"))
        if r.kind is RuleKind.FIXED:
            if not r.categories:
                problems.append((f"{where}.categories", "a fixed rule needs categories"))
            for c in r.categories:
                if c in fixed_seen:
                    problems.append(
                        (
                            f"{where}.categories",
                            f"category {c.value!r} already governed by {fixed_seen[c]}",
                        )
                    )
                fixed_seen[c] = r.id
        elif r.categories:
            problems.append(
                (
                    f"{where}.categories",
                    f"only fixed rules list categories; {r.kind.value} rules apply by "
                    "the categories' legal_obligation flag",
                )
            )
    for kind in (RuleKind.CONTRACT_END, RuleKind.LEGAL_OBLIGATION, RuleKind.DEFAULT):
        n = sum(1 for r in policy.retention if r.kind is kind)
        if n != 1:
            problems.append(("retention", f"need exactly one rule of kind {kind.value}, found {n}"))

    controller_ids = [c.id for c in policy.controllers]
    for i, client in enumerate(policy.controllers):
        where = f"controllers[{i}] ({client.id})"
        if controller_ids.count(client.id) > 1 or client.id == policy.controller.id:
            problems.append((f"{where}.id", "duplicate controller id"))
        for j, o in enumerate(client.retention_overrides):
            if o.rule not in rule_ids:
                problems.append(
                    (
                        f"{where}.retention_overrides[{j}].rule",
                        f"unknown rule {o.rule!r} (known: {', '.join(rule_ids)})",
                    )
                )

    cmd = policy.commands
    for name in ("ack_deadline", "retry_backoff_base", "retry_backoff_max"):
        d: Duration = getattr(cmd, name)
        if d.is_calendar:
            problems.append((f"commands.{name}", f"{d} must have a fixed length (no Y or M)"))
        elif d.exact.total_seconds() <= 0:
            problems.append((f"commands.{name}", "must be longer than zero"))
    for name in ("dedup_window", "finished_requests_kept_for", "closed_commands_kept_for"):
        d = getattr(policy.state, name)
        if d.is_calendar:
            problems.append((f"state.{name}", f"{d} must have a fixed length (no Y or M)"))
        elif d.exact.total_seconds() <= 0:
            problems.append((f"state.{name}", "must be longer than zero"))
    for name in ("max_wait", "allowed_lateness"):
        d = getattr(policy.event_time, name)
        if d.is_calendar:
            problems.append((f"event_time.{name}", f"{d} must have a fixed length (no Y or M)"))
    sources = policy.event_time.sources
    if len(set(sources)) != len(sources):
        problems.append(("event_time.sources", "a source is listed twice"))
    for section, name in (
        ("backups", "longest_retention"),
        ("backups", "clock_margin"),
        ("own_topics", "personal_data_kept_for"),
        ("own_topics", "segment_for"),
    ):
        d = getattr(getattr(policy, section), name)
        if d.is_calendar:
            problems.append((f"{section}.{name}", f"{d} must have a fixed length (no Y or M)"))
        elif d.exact.total_seconds() <= 0 and name != "clock_margin":
            problems.append((f"{section}.{name}", "must be longer than zero"))
    if not problems and cmd.retry_backoff_max.exact < cmd.retry_backoff_base.exact:
        problems.append(("commands.retry_backoff_max", "shorter than retry_backoff_base"))
    if policy.controller.id != DEFAULT_CONTROLLER:
        problems.append(
            ("controller.id", f"must be {DEFAULT_CONTROLLER!r}, the controller events default to")
        )
    return problems


def parse_policy(document: Any, source: str = "<policy>") -> Policy:
    """Validate an already-parsed document (a dict) into a ``Policy``."""
    if not isinstance(document, dict):
        raise PolicyError(source, [("", "the document must be a mapping")])
    try:
        policy = Policy.model_validate(document)
    except ValidationError as exc:
        raise PolicyError(
            source, [(_loc(tuple(e["loc"])), e["msg"]) for e in exc.errors()]
        ) from None
    problems = _check(policy)
    if problems:
        raise PolicyError(source, problems)
    return policy


def load_policy(path: str | Path) -> Policy:
    """Read and check a policy file; raises ``PolicyError`` naming what is wrong."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(str(path), [("", f"cannot read: {exc.strerror}")]) from None
    except yaml.YAMLError as exc:
        raise PolicyError(str(path), [("", f"not valid YAML: {exc}")]) from None
    return parse_policy(document, str(path))
