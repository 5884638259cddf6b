"""Which output topics exist, so that a send to a missing one fails at once.

aiokafka waits for a topic's metadata up to the producer's request timeout (20
minutes under Faust's default) before it gives up with
``UnknownTopicOrPartitionError``; a command for a system whose topic was never
created (the system left the policy, or a new topic set was never completed)
would hold its partition that long, then fail anyway. The worker asks the
cluster instead, and raises the client's own "unknown topic" error, which
``agents.runtime.failures`` classes as permanent: the item is parked at once.

A topic seen to exist is remembered (topics are not deleted under a running
worker); a missing one is asked about again on its next send, so creating it
is enough for later sends to go through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient


class KnownTopics:
    def __init__(self, list_topics: Callable[[], set[str]]) -> None:
        self._list_topics = list_topics
        self._present: set[str] = set()

    async def check(self, topic: str) -> None:
        """Return if ``topic`` exists; raise ``KafkaException(UNKNOWN_TOPIC_OR_PART)`` if not.

        A metadata request that times out raises the client's (transient) error.
        """
        if topic in self._present:
            return
        live = await asyncio.get_running_loop().run_in_executor(None, self._list_topics)
        self._present |= live
        if topic not in self._present:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))


def cluster_topics(admin: AdminClient, timeout: float = 10.0) -> Callable[[], set[str]]:
    """The topics the worker's principal can see.

    All topics rather than one by name: asking for one topic's metadata can
    auto-create it on a cluster that allows that, which would hide the problem.
    A topic the principal may not describe looks missing, which it is, to the worker.
    """

    def list_topics() -> set[str]:
        return set(admin.list_topics(timeout=timeout).topics)

    return list_topics
