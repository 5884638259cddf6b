"""What the worker needs of a state store, and the bound on what it stores."""

from __future__ import annotations

from typing import Protocol

from agents.store.layer import Entries, Write

# Every message the pipeline writes (changelog entry, command, response, audit
# event, tick, dead letter) stays under this many bytes: half the broker's
# default limit (message.max.bytes = 1 MiB), so headers and batching never tip
# a message over it (docs/state.md, "Bounds").
MAX_MESSAGE_BYTES = 512 * 1024


class StoreError(Exception):
    """Reading the store failed (I/O, not content): ``cause`` says how."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


class StateStore(Protocol):
    def entries(self, partition: int) -> Entries:
        """The partition's entries as stored (reads only; failures raise ``StoreError``)."""

    async def persist(self, groups: list[tuple[int, list[Write]]]) -> list[Exception | None]:
        """Make each group's writes durable (changelog confirmed) and visible, in
        order, in its partition; per group, None or the exception that refused it."""
