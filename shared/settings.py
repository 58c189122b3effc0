"""Settings pieces every service reuses. Each service has one settings class of its own.

Connection settings use the same unprefixed names in every service (``LOCAL_KAFKA_*``,
``REMOTE_KAFKA_*``, ``MONGODB_URI``, ``POSTGRES_DSN``) so one environment file serves the whole
deployment; a service's own knobs carry its prefix (``BRIDGE_``, ``SINK_``, ``ETL_``).
Passwords are ``SecretStr`` and have no default: outside the local stack they must be given.

Use in a settings class::

    local_kafka: KafkaConnection = Field(default_factory=local_kafka_from_env)
"""

from __future__ import annotations

import os

from shared.kafka import KafkaConnection

LOCAL_KAFKA_PREFIX = "LOCAL_KAFKA_"
REMOTE_KAFKA_PREFIX = "REMOTE_KAFKA_"


def local_kafka_from_env() -> KafkaConnection:
    """The local cluster from ``LOCAL_KAFKA_BOOTSTRAP_SERVERS``, ``LOCAL_KAFKA_SASL_USERNAME`` …"""
    return KafkaConnection.from_env(os.environ, LOCAL_KAFKA_PREFIX)


def remote_kafka_from_env() -> KafkaConnection:
    """The remote source cluster from ``REMOTE_KAFKA_*``."""
    return KafkaConnection.from_env(os.environ, REMOTE_KAFKA_PREFIX)
