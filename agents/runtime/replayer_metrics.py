"""The erasure replayer's metrics (``lifecycle erasures listen``, N9.erasure-replay).

One typed bundle created against a registry, as the worker's. Labels are the
restored system's id (a policy slug) and an outcome; never a subject or a
record. SREs alert on ``lifecycle_replayer_unreadable_total`` (ledger entries
or restore announcements that went to the dead-letter topic) and can see when
the last restore was replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from agents.runtime.replayer import ReplayReport


@dataclass(frozen=True)
class ReplayerMetrics:
    restores: Counter
    deletions_resent: Counter
    records_resent: Counter
    unreadable: Counter
    last_restore: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ReplayerMetrics:
        return cls(
            restores=Counter(
                "lifecycle_replayer_restores_total",
                "Restores of a downstream system whose erasures were re-sent, by system.",
                ["system"],
                registry=registry,
            ),
            deletions_resent=Counter(
                "lifecycle_replayer_deletions_resent_total",
                "Erasure ledger entries (confirmed DELETEs) re-sent after a restore, by system.",
                ["system"],
                registry=registry,
            ),
            records_resent=Counter(
                "lifecycle_replayer_records_resent_total",
                "Records named by the DELETEs re-sent after a restore, by system.",
                ["system"],
                registry=registry,
            ),
            unreadable=Counter(
                "lifecycle_replayer_unreadable_total",
                "Ledger entries and restore announcements that could not be read "
                "(sent to the dead-letter topic).",
                registry=registry,
            ),
            last_restore=Gauge(
                "lifecycle_replayer_last_restore_timestamp_seconds",
                "When the last restore's erasures were all re-sent (Unix time).",
                registry=registry,
            ),
        )

    def observe_replay(self, report: ReplayReport, finished_at: float) -> None:
        self.restores.labels(report.system).inc()
        self.deletions_resent.labels(report.system).inc(report.entries)
        self.records_resent.labels(report.system).inc(report.records)
        self.unreadable.inc(report.unreadable)
        self.last_restore.set(finished_at)

    def observe_unreadable(self, count: int = 1) -> None:
        self.unreadable.inc(count)
