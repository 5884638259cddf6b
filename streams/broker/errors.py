"""The one exception the broker launcher raises for things a person must fix."""

from __future__ import annotations


class BrokerError(RuntimeError):
    """A local Kafka broker could not be provided.

    The message is a single line that says what went wrong and what to do about
    it; the CLI prints it as is (no traceback), tests may match on it.
    """
