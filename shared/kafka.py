"""Kafka connection settings, the consumer factory and the lag computation of every service.

Lag (``GET /lag`` of the bridge, the sink and live) is computed one way: per partition, the
records between a consumer's position (its committed or stored next offset) and the end offset
(the last stable offset: every consumer reads ``read_committed``), never negative. A partition
with no position yet counts from its log start: a consumer without a commit starts at the
earliest offset still in the log, never at 0 (the log may have been trimmed by retention).

Security: a connection with SASL credentials must name its security protocol
(``*_KAFKA_SECURITY_PROTOCOL``); without one the client would connect PLAINTEXT and never
authenticate, so it refuses to start (:class:`~shared.errors.ConfigError`). ``SASL_PLAINTEXT``
(the local stack) sends the password unencrypted: this module says so once per cluster and
process, and drops aiokafka's own warning, which it repeats on every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.protocol.metadata import MetadataRequest
from pydantic import BaseModel, SecretStr, model_validator

from shared.errors import BackendUnavailableError, ConfigError

T = TypeVar("T")

log = logging.getLogger(__name__)

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
# aiokafka.conn logs this at WARNING on every SASL_PLAINTEXT/PLAIN connection (each broker, each
# reconnect); we say it once ourselves (KafkaConnection.client_kwargs).
AIOKAFKA_CLEAR_PASSWORD_MESSAGE = "Sending username and password in the clear"
_warned_clear_password: set[tuple[str, str | None]] = set()


def _not_clear_password_warning(record: logging.LogRecord) -> bool:
    return record.msg != AIOKAFKA_CLEAR_PASSWORD_MESSAGE


# Installed on import: every aiokafka client of the pipeline is made from a KafkaConnection of
# this module. addFilter ignores a filter that is already installed.
logging.getLogger("aiokafka.conn").addFilter(_not_clear_password_warning)


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
        """Reads ``{prefix}BOOTSTRAP_SERVERS``, ``{prefix}SASL_USERNAME`` … from a mapping; empty
        values count as unset. Raises ``ConfigError`` naming the variable that is wrong."""
        fields = {name: env[prefix + name.upper()] for name in cls.model_fields if env.get(prefix + name.upper())}
        if "bootstrap_servers" not in fields:
            raise ConfigError(f"{prefix}BOOTSTRAP_SERVERS is not set")
        problem = _security_problem(fields, prefix)
        if problem:
            raise ConfigError(problem)
        return cls.model_validate(fields)

    @model_validator(mode="after")
    def _credentials_need_a_sasl_protocol(self) -> KafkaConnection:
        fields = {name: getattr(self, name) for name in self.model_fields_set}
        problem = _security_problem(fields, "")
        if problem:
            raise ConfigError(problem)
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client."""
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers, "security_protocol": self.security_protocol}
        if self.security_protocol == "SASL_PLAINTEXT":
            self._warn_clear_password()
        if self.security_protocol.startswith("SASL"):
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.security_protocol.endswith("SSL"):
            kw["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        return kw

    def masked(self) -> str:
        return f"{self.bootstrap_servers} ({self.security_protocol}, user={self.sasl_username})"

    def _warn_clear_password(self) -> None:
        key = (self.bootstrap_servers, self.sasl_username)
        if key in _warned_clear_password:
            return
        _warned_clear_password.add(key)
        log.warning(
            "Kafka %s: SASL_PLAINTEXT sends the password of user %s unencrypted on every connection; "
            "fine on the local stack's loopback, use SASL_SSL anywhere else",
            self.bootstrap_servers,
            self.sasl_username,
        )


def _security_problem(fields: Mapping[str, Any], prefix: str) -> str | None:
    """Why the explicitly given ``fields`` (``security_protocol``, ``sasl_username`` …) cannot
    make a connection, naming the variables under ``prefix`` (``""``: the field names); None if
    they can."""

    def name(field: str) -> str:
        return prefix + field.upper() if prefix else field

    given = [f for f in ("sasl_username", "sasl_password") if fields.get(f) is not None]
    protocol = fields.get("security_protocol")
    if given and protocol is None:
        return (
            f"{' and '.join(name(f) for f in given)} set but {name('security_protocol')} is not: "
            f"set it to SASL_SSL (or SASL_PLAINTEXT on a trusted network); without it the client "
            f"would connect with PLAINTEXT and never send the credentials"
        )
    if given and protocol not in SASL_PROTOCOLS:
        return (
            f"{' and '.join(name(f) for f in given)} set but {name('security_protocol')}={protocol} "
            f"does not use them: set it to SASL_SSL or SASL_PLAINTEXT, or remove the credentials"
        )
    return None


async def create_topics(
    conn: KafkaConnection,
    topics: Iterable[str],
    *,
    partitions: int,
    replication_factor: int,
    configs: Mapping[str, str] | None = None,
    leaders_timeout_s: float = 30.0,
) -> list[str]:
    """Creates the topics that do not exist yet; returns the names it created. Idempotent.

    Returns once every broker knows a leader for every partition of the created topics
    (:func:`wait_for_leaders`), so a producer may write to them right away."""
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
    finally:
        await admin.close()
    await wait_for_leaders(conn, wanted, timeout_s=leaders_timeout_s)
    return wanted


async def wait_for_leaders(conn: KafkaConnection, topics: Sequence[str], *, timeout_s: float) -> None:
    """Returns once every broker knows a leader for every partition of ``topics``; raises
    :class:`~shared.errors.BackendUnavailableError` after ``timeout_s``.

    A topic created a moment ago is known to the controller first. A producer that asks a broker
    which has not caught up yet caches "unknown topic", and its batches can stall until they
    expire (seen with aiokafka 0.12, most often in transactions: a 30 s stall of a transaction to
    a topic created just before). So ask each broker. A broker that does not answer is asked
    again until the deadline.
    """
    client = AIOKafkaClient(**conn.client_kwargs())
    await client.bootstrap()
    try:
        deadline = time.monotonic() + timeout_s
        pending = {broker.nodeId for broker in client.cluster.brokers()}
        last_error: BaseException | None = None
        while pending:
            for node_id in sorted(pending):
                try:
                    response = await client.send(node_id, MetadataRequest[1](list(topics)))
                except KafkaError as exc:
                    last_error = exc
                    continue
                if all(error == 0 and parts and all(p[2] >= 0 for p in parts) for error, _, _, parts in response.topics):
                    pending.discard(node_id)
            if pending and time.monotonic() > deadline:
                why = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
                raise BackendUnavailableError(f"brokers {sorted(pending)} know no leaders for {list(topics)} after {timeout_s:.0f}s{why}")
            if pending:
                await asyncio.sleep(0.1)
    finally:
        await client.close()


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


def bootstrap_addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    """``"a:9092,[::1]:9093"`` → ``[("a", 9092), ("::1", 9093)]`` (a server without a port: 9092)."""
    addresses = []
    for server in (s.strip() for s in bootstrap_servers.split(",")):
        if not server:
            continue
        host, sep, port = server.rpartition(":")
        if not sep or "]" in port or (host.count(":") and not host.startswith("[")):  # no port, or a bare IPv6 address
            host, port = server, "9092"
        addresses.append((host.strip("[]"), int(port)))
    return addresses


async def refused_connections(conn: KafkaConnection, timeout_s: float) -> str | None:
    """None when at least one bootstrap server accepts a TCP connection within ``timeout_s``
    (closed at once, before any Kafka byte); else why none did. A Kafka request to a cluster
    that is down does not fail, it retries until its own timeout: this tells "gone" from "slow"
    in a few milliseconds, since a busy broker's kernel still accepts."""

    async def probe(host: str, port: int) -> str | None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        except (OSError, TimeoutError) as exc:
            return f"{host}:{port} {type(exc).__name__}{f': {exc}' if str(exc) else ''}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None

    failures = await asyncio.gather(*(probe(host, port) for host, port in bootstrap_addresses(conn.bootstrap_servers)))
    if any(f is None for f in failures):
        return None
    return "no bootstrap server accepts a connection: " + "; ".join(f for f in failures if f is not None)


def group_membership(consumer: AIOKafkaConsumer) -> tuple[int, str]:
    """The consumer's group generation and member id as of its last join (set before
    ``on_partitions_assigned`` runs). aiokafka has no public accessor: this reads its coordinator,
    as of the pinned aiokafka 0.12.0 (``requirements/lock.txt``); check it when the pin moves."""
    coordinator = consumer._coordinator
    if coordinator is None:
        raise RuntimeError("the consumer has no group coordinator (not started, or no group_id)")
    return int(coordinator.generation), str(coordinator.member_id)


async def group_members(admin: AIOKafkaAdminClient, group_id: str) -> set[str]:
    """The member ids of a consumer group now (none when it is empty or unknown); raises
    aiokafka's error when the coordinator refuses (a retriable one while it moves)."""
    members: set[str] = set()
    for response in await admin.describe_consumer_groups([group_id]):
        for group in response.groups:  # (error_code, group, state, protocol_type, protocol, members, …)
            if group[0]:
                raise for_code(group[0])(f"describe group {group[1]}")
            members.update(str(member[0]) for member in group[5])  # (member_id, …)
    return members
