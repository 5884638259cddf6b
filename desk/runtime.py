"""Wiring shared by the desk's CLI and web server: settings, store, Kafka clients."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.clock import Clock, SystemClock
from desk.readmodel.projector import Projector
from desk.readmodel.store import Store
from desk.readmodel.topics import DeskTopics
from desk.settings import DeskSettings
from streams.codec import Codec
from streams.settings import Settings


@dataclass
class Desk:
    settings: Settings
    desk: DeskSettings
    store: Store
    clock: Clock
    bootstrap: str | None = None
    topics: DeskTopics = field(init=False)

    def __post_init__(self) -> None:
        self.topics = DeskTopics.from_settings(self.settings)

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        desk: DeskSettings | None = None,
        *,
        clock: Clock | None = None,
        bootstrap: str | None = None,
    ) -> Desk:
        settings = settings or Settings()
        desk = desk or DeskSettings()
        clock = clock or SystemClock()
        store = Store.open(
            desk.database(settings),
            topics=DeskTopics.from_settings(settings),
            audit_key=settings.audit_hmac_key.get_secret_value().encode(),
            codec=Codec.from_settings(settings),
            clock=clock,
        )
        return cls(settings, desk, store, clock, bootstrap)

    def kafka_bootstrap(self) -> str:
        """The broker (``KAFKA_BOOTSTRAP_SERVERS`` or the local one); ``BrokerError`` if none."""
        if self.bootstrap is None:
            from streams.connection import bootstrap_servers

            self.bootstrap = bootstrap_servers()
        return self.bootstrap

    def consumer_config(self) -> dict[str, str]:
        return {
            "bootstrap.servers": self.kafka_bootstrap(),
            **self.settings.security.confluent_config(),
        }

    def projector(self) -> Projector:
        return Projector(self.store, self.consumer_config(), self.topics)

    def close(self) -> None:
        self.store.close()
