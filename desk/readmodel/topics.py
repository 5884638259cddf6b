"""Which topics the read model reads, derived from the pipeline's settings.

Names come from ``LIFECYCLE_TOPIC_PREFIX`` (public topics) and
``LIFECYCLE_APP_ID`` (the worker's state changelogs), with the same defaults as
the worker, so the desk needs no option of its own. Command topics are found
on the broker (``<prefix>.cmd.<system>``), so a new downstream system is read
without changing the desk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from desk.readmodel import state_projection
from streams.settings import Settings
from streams.topics import TopicNames, declared_topics

Kind = Literal["state", "responses", "commands", "acks", "audit", "dead_letter"]


class MissingTopics(LookupError):
    """Topics the desk needs are not on the broker; the message says what to check."""


@dataclass(frozen=True)
class DeskTopics:
    prefix: str
    app_id: str

    @classmethod
    def from_settings(cls, settings: Settings) -> DeskTopics:
        return cls(settings.topic_prefix, settings.app_id)

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.prefix)

    @property
    def state(self) -> list[str]:
        return state_projection.topics(self.app_id)

    @property
    def public(self) -> list[str]:
        n = self.names
        return [n.responses, n.acks, n.audit, n.dead_letter]

    def kind(self, topic: str) -> Kind | None:
        n = self.names
        if topic in self.state:
            return "state"
        fixed: dict[str, Kind] = {
            n.responses: "responses",
            n.acks: "acks",
            n.audit: "audit",
            n.dead_letter: "dead_letter",
        }
        if topic in fixed:
            return fixed[topic]
        if topic.startswith(f"{self.prefix}.cmd."):
            return "commands"
        return None

    def select(self, existing: Iterable[str]) -> list[str]:
        """The topics to read among ``existing`` ones; ``MissingTopics`` names what is absent."""
        present = set(existing)
        wanted = [*self.state, *self.public]
        missing = [name for name in wanted if name not in present]
        if missing:
            changelogs = sorted(n for n in present if n.endswith("-subjects-changelog"))
            hints = []
            if any(name in self.state for name in missing):
                hints.append(
                    f"the worker's state changelog is named after its app id "
                    f"(LIFECYCLE_APP_ID, now {self.app_id!r})"
                    + (
                        f"; changelogs on this broker: {', '.join(changelogs[:10])}"
                        + (f" and {len(changelogs) - 10} more" if len(changelogs) > 10 else "")
                        if changelogs
                        else "; no worker has written state to this broker yet"
                    )
                )
            if any(name in self.public for name in missing):
                hints.append(
                    f"the pipeline's topics are named after LIFECYCLE_TOPIC_PREFIX "
                    f"(now {self.prefix!r}); `lifecycle topics create` creates them"
                )
            raise MissingTopics(f"topic(s) not found: {', '.join(missing)}. " + "; ".join(hints))
        commands = sorted(n for n in present if self.kind(n) == "commands")
        return [*wanted, *commands]

    def retention(self) -> dict[str, timedelta]:
        """How long each kind of row is kept: its topic's retention."""
        specs = {s.name: s for s in declared_topics(Settings(topic_prefix=self.prefix), ["x"])}
        n = self.names

        def of(name: str) -> timedelta:
            return timedelta(milliseconds=int(specs[name].config["retention.ms"]))

        return {
            "responses": of(n.responses),
            "commands": of(n.command("x")),
            "acks": of(n.acks),
            "dead_letter": of(n.dead_letter),
            # Nothing about a forgotten subject can arrive later than the longest of them.
            "forgotten": max(of(n.responses), of(n.command("x")), of(n.acks)),
        }
