"""Every topic the pipeline uses, declared once.

Input, acknowledgement and tick topics are keyed by subject id and share one
partition count, so that all events about a subject land on the same
partition number and the worker that owns that partition owns the subject's
state (Faust co-partitioning). Producers must use the murmur2 partitioner
(Kafka's Java default) so confluent-kafka and aiokafka agree on placement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.settings import Settings

# Systems that publish events; each gets its own input topic so each can be
# given a write ACL on exactly one topic.
PRODUCING_SYSTEMS: tuple[str, ...] = (
    "telephony",
    "billing",
    "crm",
    "marketing",
    "web-analytics",
    "privacy-desk",
)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MURMUR2_PARTITIONER = "murmur2_random"


@dataclass(frozen=True)
class TopicRetention:
    """Retention bounds that come from the policy (``agents.rules.policy``).

    ``personal_ms`` is the retention of every topic that can carry personal data
    values (inputs, commands, acknowledgements, responses, dead letters), and
    ``segment_ms`` their segment length: erased data survives in the pipeline's
    own topics at most about ``personal_ms + segment_ms`` (N9.erasure-own-topics,
    docs/own-data.md). ``ledger_ms`` is how long the erasure ledger keeps an
    entry: the longest backup retention of any downstream system
    (N9.erasure-replay). The defaults are the shipped policy's.
    """

    personal_ms: int = 72 * HOUR_MS
    segment_ms: int = 1 * HOUR_MS
    ledger_ms: int = 35 * DAY_MS


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)
    keyed_by_subject: bool = True

    @property
    def cleanup_policy(self) -> str:
        return self.config.get("cleanup.policy", "delete")


@dataclass(frozen=True)
class TopicNames:
    """Names derived from one prefix, so tests can run isolated pipelines."""

    prefix: str

    def input(self, system: str) -> str:
        return f"{self.prefix}.in.{system}"

    def command(self, system: str) -> str:
        return f"{self.prefix}.cmd.{system}"

    @property
    def inputs(self) -> list[str]:
        return [self.input(s) for s in PRODUCING_SYSTEMS]

    @property
    def acks(self) -> str:
        return f"{self.prefix}.acks"

    @property
    def ticks(self) -> str:
        return f"{self.prefix}.ticks"

    @property
    def audit(self) -> str:
        return f"{self.prefix}.audit"

    @property
    def responses(self) -> str:
        return f"{self.prefix}.responses"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter"

    @property
    def erasure_ledger(self) -> str:
        return f"{self.prefix}.erasure-ledger"

    @property
    def erasure_replays(self) -> str:
        return f"{self.prefix}.erasure-replays"

    @property
    def restores(self) -> str:
        return f"{self.prefix}.restores"


def declared_topics(
    settings: Settings,
    downstream_systems: Iterable[str],
    retention: TopicRetention | None = None,
) -> list[TopicSpec]:
    """All topics for one pipeline, given the downstream systems the policy names."""
    names = TopicNames(settings.topic_prefix)
    p, rf = settings.partitions, settings.replication_factor
    bounds = retention or TopicRetention()
    delete = {"cleanup.policy": "delete"}
    # Topics that can carry personal data values: bounded retention, short
    # segments (retention deletes whole segments), so erased data is gone from
    # them within the policy's bound (N9.erasure-own-topics).
    personal = {
        **delete,
        "retention.ms": str(bounds.personal_ms),
        "segment.ms": str(bounds.segment_ms),
    }
    inputs = [TopicSpec(n, p, rf, dict(personal)) for n in names.inputs]
    return [
        *inputs,
        TopicSpec(names.acks, p, rf, dict(personal)),
        # Ticks name subjects (and replays name records): no longer than a day,
        # and no longer than the personal-data bound.
        TopicSpec(
            names.ticks,
            p,
            rf,
            {**delete, "retention.ms": str(min(DAY_MS, bounds.personal_ms))},
        ),
        # The audit trail is the proof: kept forever, never compacted. It holds
        # pseudonyms only, never personal data.
        TopicSpec(names.audit, p, rf, {**delete, "retention.ms": "-1"}, keyed_by_subject=False),
        TopicSpec(names.responses, p, rf, dict(personal)),
        TopicSpec(names.dead_letter, p, rf, dict(personal), keyed_by_subject=False),
        # What was erased from which system (ids and times, no personal data
        # values), for re-applying erasures after a restore (N9.erasure-replay):
        # one entry per system and command (compacted), kept as long as the
        # longest backup; broker time stamps, so a replay seeks by time.
        TopicSpec(
            names.erasure_ledger,
            p,
            rf,
            {
                "cleanup.policy": "compact,delete",
                "retention.ms": str(bounds.ledger_ms),
                "message.timestamp.type": "LogAppendTime",
            },
            keyed_by_subject=False,
        ),
        # Ledger entries sent back to the worker owning each subject after a restore
        # (co-partitioned with the inputs; ids only, consumed at once).
        TopicSpec(
            names.erasure_replays,
            p,
            rf,
            {**delete, "retention.ms": str(min(DAY_MS, bounds.personal_ms))},
        ),
        # "Restored from a backup taken at T", published by downstream systems.
        TopicSpec(
            names.restores,
            1,
            rf,
            {**delete, "retention.ms": str(bounds.ledger_ms)},
            keyed_by_subject=False,
        ),
        *(
            TopicSpec(names.command(s), p, rf, dict(personal))
            for s in sorted(set(downstream_systems))
        ),
    ]
