"""Kafka connection settings and client factory shared by every service and test."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import BaseModel, SecretStr

from shared.errors import ConfigError


class KafkaConnection(BaseModel):
    """How to reach one Kafka cluster. SASL PLAIN/SCRAM and TLS are all configurable."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SASL_PLAINTEXT | SSL | SASL_SSL
    sasl_mechanism: str = "PLAIN"  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str) -> KafkaConnection:
        """Reads ``{prefix}BOOTSTRAP_SERVERS``, ``{prefix}SASL_USERNAME`` … from a mapping."""
        fields = {name: env[prefix + name.upper()] for name in cls.model_fields if prefix + name.upper() in env}
        if "bootstrap_servers" not in fields:
            raise ConfigError(f"{prefix}BOOTSTRAP_SERVERS is not set")
        return cls.model_validate(fields)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client."""
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers, "security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.security_protocol.endswith("SSL"):
            kw["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        return kw

    def masked(self) -> str:
        return f"{self.bootstrap_servers} ({self.security_protocol}, user={self.sasl_username})"


async def create_topics(
    conn: KafkaConnection,
    topics: Iterable[str],
    *,
    partitions: int,
    replication_factor: int,
    configs: Mapping[str, str] | None = None,
) -> list[str]:
    """Creates the topics that do not exist yet; returns the names it created. Idempotent."""
    admin = AIOKafkaAdminClient(**conn.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t not in existing]
        if not wanted:
            return []
        new = [NewTopic(t, partitions, replication_factor, topic_configs=dict(configs or {})) for t in wanted]
        with contextlib.suppress(TopicAlreadyExistsError):  # raced with another creator: it exists
            await admin.create_topics(new, validate_only=False)
        return wanted
    finally:
        await admin.close()
