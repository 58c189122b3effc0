"""Settings pieces every service reuses. Each service has one settings class of its own.

Connection settings use the same unprefixed names in every service (``LOCAL_KAFKA_*``,
``REMOTE_KAFKA_*``, ``MONGODB_URI``, ``POSTGRES_DSN``) so one environment file serves the whole
deployment; a service's own knobs carry its prefix (``BRIDGE_``, ``SINK_``, ``ETL_``).
Passwords are ``SecretStr`` and have no default: outside the local stack they must be given.

The fields every long-running service has (outage backoff, HTTP, logging, shutdown, the local
cluster) are in :class:`ServiceSettings`, and a Kafka consumer group member's tuning in
:class:`ConsumerSettings`; a service's class derives from one and sets its ``env_prefix``, so an
inherited field is read under the service's own name (``BRIDGE_HTTP_PORT``, ``SINK_LOG_LEVEL`` …).
A service with other defaults redeclares the field with them.

Use in a settings class::

    remote_kafka: KafkaConnection = Field(default_factory=remote_kafka_from_env, exclude=True)
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kafka import KafkaConnection

LOCAL_KAFKA_PREFIX = "LOCAL_KAFKA_"
REMOTE_KAFKA_PREFIX = "REMOTE_KAFKA_"


def local_kafka_from_env() -> KafkaConnection:
    """The local cluster from ``LOCAL_KAFKA_BOOTSTRAP_SERVERS``, ``LOCAL_KAFKA_SASL_USERNAME`` …"""
    return KafkaConnection.from_env(os.environ, LOCAL_KAFKA_PREFIX)


def remote_kafka_from_env() -> KafkaConnection:
    """The remote source cluster from ``REMOTE_KAFKA_*``."""
    return KafkaConnection.from_env(os.environ, REMOTE_KAFKA_PREFIX)


class ServiceSettings(BaseSettings):
    """What every long-running service configures the same way; read under the subclass's prefix."""

    model_config = SettingsConfigDict(extra="ignore")

    local_kafka: KafkaConnection = Field(default_factory=local_kafka_from_env, exclude=True)

    # Outages: bounded exponential backoff (shared.backoff) between retries.
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0

    # Service: the HTTP surface (shared.service), the log level, and how long the worker may take
    # to stop after SIGTERM before it is cancelled (shared.service.run_service).
    http_host: str = "0.0.0.0"
    http_port: int
    shutdown_timeout_s: float
    log_level: str = "INFO"
    # text (readable) | json (one object per line, for Loki/ELK): shared.logs. One unprefixed
    # variable for the whole deployment.
    log_format: Literal["text", "json"] = Field(default="text", validation_alias=AliasChoices("LOG_FORMAT"))


class ConsumerSettings(ServiceSettings):
    """A service whose worker is a member of a Kafka consumer group: its consumer's tuning."""

    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 4_194_304
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    # How often the consumer refreshes metadata: bounds how long a topic that appears (or gains
    # partitions) after start goes unnoticed. aiokafka's default is 5 minutes.
    metadata_max_age_ms: int = 10_000

    def consumer_options(self) -> dict[str, Any]:
        """The tuning as ``shared.kafka.create_consumer`` (``AIOKafkaConsumer``) arguments."""
        return {
            "fetch_max_bytes": self.fetch_max_bytes,
            "max_partition_fetch_bytes": self.max_partition_fetch_bytes,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "metadata_max_age_ms": self.metadata_max_age_ms,
        }
