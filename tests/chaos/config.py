"""What a chaos run does, from ``CHAOS_*`` environment variables (small defaults)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# In the order they run. "scale" is three steps: down to 1 worker, up to 3, down to 1.
ALL_FAULTS = ("kill-worker", "broker", "downstream", "stall", "handover", "scale")


class ChaosConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHAOS_", extra="ignore")

    # Traffic: this many simulated customers (about 7 events each) over ``traffic_s``.
    customers: int = Field(default=600, ge=1, le=100_000)
    # Long enough for every fault to come while traffic flows on a loaded 2-core machine.
    traffic_s: float = Field(default=180.0, gt=20)
    seed: int = 9
    # Faults, comma-separated, from ALL_FAULTS; "none" runs traffic without faults.
    faults: str = ",".join(ALL_FAULTS)
    workers: int = Field(default=2, ge=1, le=3)
    # How long the killed broker node stays down before it is restarted.
    broker_down_s: float = Field(default=15.0, ge=0)
    # How long a stalled worker stays paused (SIGSTOP): past its 10 s session.
    stall_s: float = Field(default=15.0, ge=0)
    # The hand-over's burst: this many recordings fall due together, this long after
    # it is published; one worker is stopped at once, the last one shortly before.
    burst_records: int = Field(default=60, ge=1, le=10_000)
    burst_due_in_s: float = Field(default=12.0, ge=3)
    burst_last_stop_before_s: float = Field(default=1.6, ge=0)
    # The reconciliation's bound in the run (LIFECYCLE_RECONCILE_BOUND_S): short, so a
    # deletion the timers missed is healed, and counted, within the run.
    reconcile_bound_s: float = Field(default=20.0, gt=0)
    # The downstream consumer that is killed (probes are opt-outs, so a marketing
    # system's recovery shows in the figures).
    downstream_victim: str = "marketing-platform"
    # The first fault waits this long after traffic starts; then each fault waits
    # for the previous one's recovery and ``fault_gap_s`` more.
    first_fault_s: float = Field(default=10.0, ge=0)
    fault_gap_s: float = Field(default=3.0, ge=0)
    # A fault whose probes are not all through by then is reported as not recovered.
    recovery_timeout_s: float = Field(default=45.0, gt=0)
    # No fault starts later than this after the traffic window ends (the run stays
    # bounded on a slow machine); one that cannot start is a failed check.
    fault_overrun_s: float = Field(default=60.0, ge=0)
    # After traffic: how long the pipeline may take to drain (consumer lag zero).
    settle_s: float = Field(default=60.0, ge=0)
    # Of which the first seconds let work in flight finish before the lag is measured:
    # the demo policy's watermark max wait (10 s) plus acknowledgement round trips.
    drain_s: float = Field(default=30.0, ge=0)
    # No process may have restarted in this window before the final check.
    quiet_s: float = Field(default=15.0, ge=0)
    # A record due this long before the check must have been deleted by then.
    grace_s: float = Field(default=15.0, ge=0)
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=3, ge=1, le=3)
    broker_heap: str = "256m"
    # Keep worker data and downstream stores after the run (logs are always kept).
    keep_data: bool = False
    # Markdown file whose figures block is replaced with this run's figures.
    doc: Path | None = None

    @field_validator("faults")
    @classmethod
    def _known_faults(cls, value: str) -> str:
        names = [f.strip() for f in value.split(",") if f.strip()]
        unknown = [f for f in names if f not in (*ALL_FAULTS, "none")]
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; choose from {ALL_FAULTS} or none")
        return ",".join(names)

    @property
    def fault_names(self) -> list[str]:
        return [f for f in self.faults.split(",") if f and f != "none"]
