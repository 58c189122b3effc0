"""Kafka connection settings, the consumer factory and the lag computation of every service.

Lag (``GET /lag`` of the bridge, the sink and live) is computed one way: per partition, the
records between a consumer's position (its committed or stored next offset) and the end offset
(the last stable offset: every consumer reads ``read_committed``), never negative. A partition
with no position yet counts from its log start: a consumer without a commit starts at the
earliest offset still in the log, never at 0 (the log may have been trimmed by retention).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import BaseModel, SecretStr

from shared.errors import BackendUnavailableError, ConfigError

T = TypeVar("T")


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


def create_consumer(conn: KafkaConnection, *, group_id: str | None = None, **options: Any) -> AIOKafkaConsumer:
    """A consumer of ``conn`` as every service wants it: ``read_committed`` (records of aborted
    transactions are never seen) and no auto commit (a service commits, or stores, only what is
    durable). ``options``: any other ``AIOKafkaConsumer`` argument (they may override these)."""
    defaults: dict[str, Any] = {"group_id": group_id, "isolation_level": "read_committed", "enable_auto_commit": False}
    return AIOKafkaConsumer(**conn.client_kwargs(), **{**defaults, **options})


@dataclass(frozen=True)
class PartitionLag:
    """One partition's offsets; ``lag`` is derived from them (see the module docstring)."""

    tp: TopicPartition
    position: int | None  # the committed (or stored) next offset; None: none yet
    log_start: int
    end: int  # the last stable offset

    @property
    def lag(self) -> int:
        base = self.position if self.position is not None else self.log_start
        return max(0, self.end - base)


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str, *, refresh: bool = True) -> list[TopicPartition]:
    """The partitions of ``topic``; with ``refresh``, the metadata is refreshed once when none are
    known yet (a consumer subscribed to the topic keeps them fresh itself). Raises
    ``BackendUnavailableError`` when there are none: "no partitions, no lag" would read as
    "caught up"."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions and refresh:
        # topics() returns fresh metadata without updating the client's cache: refresh it, so a
        # topic created after the client started is seen now, not after metadata_max_age_ms.
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise BackendUnavailableError(f"no partitions known for topic {topic!r} yet")
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def committed_positions(admin: AIOKafkaAdminClient, group_id: str, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
    """The consumer group's committed next offset of each partition, None where it has none."""
    committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
    out: dict[TopicPartition, int | None] = {}
    for tp in tps:
        meta = committed.get(tp)
        out[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
    return out


async def partition_lags(
    consumer: AIOKafkaConsumer, positions: Mapping[TopicPartition, int | None], *, timeout_s: float | None = None
) -> list[PartitionLag]:
    """Each partition of ``positions`` with its log start and end offsets (each read bounded by
    ``timeout_s``). Read the positions first, the log offsets after (as here): a position
    committed after the end offsets were read would otherwise look like one above the end."""
    tps = list(positions)
    ends = await _bounded(consumer.end_offsets(tps), timeout_s)
    starts = await _bounded(consumer.beginning_offsets(tps), timeout_s)
    return [PartitionLag(tp, positions[tp], starts[tp], ends[tp]) for tp in tps]


async def _bounded(aw: Awaitable[T], timeout_s: float | None) -> T:
    return await (asyncio.wait_for(aw, timeout_s) if timeout_s is not None else aw)
