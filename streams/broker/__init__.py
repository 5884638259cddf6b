"""A real Apache Kafka broker (KRaft) for tests, demos and CI, started from the JVM.

No Docker engine exists on the project's machines, so the broker jars come from
Maven Central (``ensure_jars``) and run as plain ``java`` processes on loopback.
``LocalKafka`` is the Python API; ``lifecycle kafka up/down/status`` the CLI.
"""

from streams.broker.errors import BrokerError
from streams.broker.jars import default_kafka_version, ensure_jars
from streams.broker.launcher import LocalKafka

__all__ = ["BrokerError", "LocalKafka", "default_kafka_version", "ensure_jars"]
