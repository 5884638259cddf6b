"""Configuration from environment variables (prefix ``LIFECYCLE_``), with sane defaults.

Secrets are ``SecretStr`` so they never appear in reprs or logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.logs import DEFAULT_REPEAT_WINDOW_S, kafka_log_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_AUDIT_KEY = "dev-only-audit-key-change-me"


class KafkaSecurity(BaseSettings):
    """TLS/SASL settings shared by every client the project creates."""

    model_config = SettingsConfigDict(env_prefix="LIFECYCLE_KAFKA_", extra="ignore")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka properties for confluent-kafka clients.

        Every client the project creates takes these, so this is also where
        librdkafka's log lines are sent to Python logging instead of stderr
        (``streams.logs``: they reach a process's log, limited like the rest).
        """
        conf: dict[str, Any] = {
            "security.protocol": self.security_protocol.lower(),
            **kafka_log_config(),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            conf["ssl.ca.location"] = str(self.ssl_cafile)
        if self.ssl_certfile:
            conf["ssl.certificate.location"] = str(self.ssl_certfile)
        if self.ssl_keyfile:
            conf["ssl.key.location"] = str(self.ssl_keyfile)
        return conf


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIFECYCLE_", extra="ignore")

    # The one variable without our prefix: it is the ecosystem's convention.
    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    topic_prefix: str = Field(default="lifecycle", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,80}$")
    partitions: int = Field(default=6, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=5)
    app_id: str = Field(default="data-lifecycle", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,80}$")
    var_dir: Path = REPO_ROOT / "var"
    policy_path: Path = REPO_ROOT / "agents" / "policy" / "notice.yaml"
    schema_registry_url: str | None = None
    audit_hmac_key: SecretStr = SecretStr(DEV_AUDIT_KEY)
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    # Loopback by default; a container sets 0.0.0.0 so Prometheus can scrape it.
    metrics_host: str = "127.0.0.1"
    # Faust's own web server (its table router and debug pages): nothing of the
    # pipeline uses it, so it is off (0); a port given here is bound to loopback,
    # for a developer's debugging (kubectl port-forward), never exposed.
    web_port: int = Field(default=0, ge=0, le=65535)
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    # Faust keeps this many warm copies of each table partition on other
    # workers, so a failover does not replay the changelog (needs 2+ workers).
    standby_replicas: int = Field(default=1, ge=0, le=3)
    # How often the worker commits the offsets of decided events (Faust's
    # broker_commit_interval): a crash replays at most about this much input.
    commit_interval_s: float = Field(default=2.8, gt=0, le=3600)
    # The standing reconciliation (agents/runtime/reconcile.py): a record due more
    # than this long ago with no DELETE and no reason on record is overdue (covers
    # timer rounds, re-ticks and the catch-up after a hand-over), checked this often.
    reconcile_bound_s: float = Field(default=90.0, gt=0, le=86_400)
    reconcile_interval_s: float = Field(default=5.0, gt=0, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # A transient failure (broker, leader, network, schema registry) is retried
    # up to this many times and this long, then the worker stops without
    # committing (exit 75). Keep it well under the consumer's max poll interval.
    retry_attempts: int = Field(default=10, ge=1, le=100)
    retry_max_seconds: float = Field(default=60.0, gt=0, le=600)
    # SIGTERM/SIGINT stops the worker within this many seconds, broker or no
    # broker: past it the worker exits 75 without committing anything more
    # (agents/runtime/stopping.py). Keep it under the orchestrator's grace period.
    stop_timeout_s: float = Field(default=15.0, gt=0, le=600)
    # A log line repeated within this many seconds is counted, not written; one
    # summary per logger per window says how many (streams/logs.py). 0: off.
    log_repeat_window_s: float = Field(default=DEFAULT_REPEAT_WINDOW_S, ge=0, le=3600)

    @property
    def security(self) -> KafkaSecurity:
        return KafkaSecurity()

    @property
    def worker_data_dir(self) -> Path:
        return self.var_dir / "worker" / self.app_id
