"""The desk's configuration (environment variables ``LIFECYCLE_DESK_*``).

The pipeline's own settings (``streams.settings.Settings``: topic prefix, app
id, audit key, Kafka security) name the topics the desk reads; these are the
desk's: where its read model lives, who may sign in, how the web server runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.settings import Settings

Role = Literal["read-only", "officer"]


class DeskSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIFECYCLE_DESK_", extra="ignore")

    # SQLAlchemy URL; default: SQLite at var/desk/<topic prefix>.sqlite.
    # PostgreSQL: postgresql+psycopg://user:password@host/db (pip install '.[postgres]').
    database_url: SecretStr | None = None
    # YAML file of desk users: users: [{name, role, password_hash}] (see docs/desk.md).
    users_file: Path | None = None
    # Signs session cookies; without it a random key is made at start (sessions end
    # when the desk restarts).
    secret_key: SecretStr | None = None
    # Trust this header (e.g. X-Forwarded-User) as the signed-in user's name, only on
    # requests from trusted_proxies; the user's role comes from the users file, or
    # proxy_default_role for names not in it (unset: such names are refused).
    trust_proxy_header: str | None = None
    trusted_proxies: str = "127.0.0.1,::1"
    proxy_default_role: Role | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)
    # Send the session cookie over HTTPS only (set behind TLS).
    secure_cookies: bool = False
    session_hours: int = Field(default=8, ge=1, le=24 * 7)

    def database(self, pipeline: Settings) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        path = pipeline.var_dir / "desk" / f"{pipeline.topic_prefix}.sqlite"
        return f"sqlite:///{path}"
