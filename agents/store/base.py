"""What the worker needs of a state store, and the bound on what it stores."""

from __future__ import annotations

from typing import Protocol

from agents.store.layer import Entries, Write

# Every message the pipeline writes (changelog entry, command, response, audit
# event, tick, dead letter) stays under this many bytes: half the broker's
# default limit (message.max.bytes = 1 MiB), so headers and batching never tip
# a message over it (docs/state.md, "Bounds").
MAX_MESSAGE_BYTES = 512 * 1024


class StateStore(Protocol):
    def entries(self, partition: int) -> Entries:
        """The partition's entries as stored (reads only)."""

    async def persist(self, writes: dict[int, list[Write]]) -> None:
        """Make the writes durable (changelog confirmed) and visible, in order per partition."""
