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
# Input events can hold personal data; they are kept long enough to replay a
# worker's recent history and no longer, so erased data does not survive in
# the pipeline's own topics beyond this window.
INPUT_RETENTION_MS = 14 * DAY_MS
MURMUR2_PARTITIONER = "murmur2_random"


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


def declared_topics(settings: Settings, downstream_systems: Iterable[str]) -> list[TopicSpec]:
    """All topics for one pipeline, given the downstream systems the policy names."""
    names = TopicNames(settings.topic_prefix)
    p, rf = settings.partitions, settings.replication_factor
    delete = {"cleanup.policy": "delete"}
    inputs = [
        TopicSpec(n, p, rf, {**delete, "retention.ms": str(INPUT_RETENTION_MS)})
        for n in names.inputs
    ]
    return [
        *inputs,
        TopicSpec(names.acks, p, rf, {**delete, "retention.ms": str(30 * DAY_MS)}),
        TopicSpec(names.ticks, p, rf, {**delete, "retention.ms": str(1 * DAY_MS)}),
        # The audit trail is the proof: kept forever, never compacted. It holds
        # pseudonyms only, never personal data.
        TopicSpec(names.audit, p, rf, {**delete, "retention.ms": "-1"}, keyed_by_subject=False),
        TopicSpec(names.responses, p, rf, {**delete, "retention.ms": str(90 * DAY_MS)}),
        TopicSpec(
            names.dead_letter,
            p,
            rf,
            {**delete, "retention.ms": str(30 * DAY_MS)},
            keyed_by_subject=False,
        ),
        *(
            TopicSpec(names.command(s), p, rf, {**delete, "retention.ms": str(30 * DAY_MS)})
            for s in sorted(set(downstream_systems))
        ),
    ]
