"""The faust-streaming app: windowed view counters over the local topic.

Two tumbling-window tables, both windowed by the event's own ``event_time`` (never by arrival
time, so the same events give the same counts on every run):

- ``views_per_product``: views per product per window (``window_s``, default one minute);
- ``views_per_store``: views per store (the country dimension's natural key) per window.

Top-N over the last 5 and 60 minutes is a read over ``views_per_product`` (the sum of the last
5 / 60 one-minute windows) rather than two more hopping tables: a 60-minute hopping table with a
one-minute step writes 60 changelog records per event, the sum costs nothing on the write path.

Guarantees: ``processing_guarantee="exactly_once"``. In faust 0.11 that is the only switch for
the consumer's ``isolation_level``: ``read_committed`` is set when, and only when, the app runs
transactions (there is no ``consumer_isolation_level`` setting). It also makes the changelog
writes and the source offsets of one partition commit in one Kafka transaction (one
transactional producer per source partition, ``{app_id}-{group}-{partition}``), so a restart —
graceful or kill -9 — recovers exactly the counts of the committed offsets: nothing is counted
twice. Tables live in memory and are rebuilt from their changelog topics (replication factor
``replication_factor``) on start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient
from faust.types.auth import SASLMechanism
from prometheus_client import CollectorRegistry, Counter

from live.counting import UNKNOWN, View, WindowEntry, parse_view, scoped_key
from live.settings import LiveSettings
from shared.errors import BackendUnavailableError, ConfigError
from shared.kafka import create_topics

log = logging.getLogger(__name__)

PRODUCT_TABLE = "views_per_product"
STORE_TABLE = "views_per_store"


def _faust_broker(settings: LiveSettings) -> tuple[str, faust.SASLCredentials | None]:
    conn = settings.local_kafka
    url = ";".join(f"kafka://{hostport.strip()}" for hostport in conn.bootstrap_servers.split(","))
    if conn.security_protocol == "PLAINTEXT":
        return url, None
    if conn.security_protocol != "SASL_PLAINTEXT" or conn.sasl_mechanism != "PLAIN":
        # faust 0.11 builds SASL_SSL from an ssl_context; only what the stacks use is wired here.
        raise ConfigError(f"live: unsupported local Kafka security {conn.security_protocol}/{conn.sasl_mechanism}")
    password = conn.sasl_password.get_secret_value() if conn.sasl_password else None
    return url, faust.SASLCredentials(username=conn.sasl_username, password=password, mechanism=SASLMechanism.PLAIN)


def changelog_topics(settings: LiveSettings) -> list[str]:
    """Faust's names for the tables' changelog topics."""
    return [f"{settings.app_id}-{table}-changelog" for table in (PRODUCT_TABLE, STORE_TABLE)]


async def prepare_topics(settings: LiveSettings, *, timeout_s: float = 60.0) -> int:
    """Creates what is missing and returns the source topic's partition count. Idempotent.

    The changelog topics are created here, with the source's partition count, instead of by
    faust on start: faust checks co-partitioning on the first event against its consumer's
    metadata and crashes the agent when a topic it just created is not there yet. Returns only
    when the cluster metadata shows every topic with all partitions led.
    """
    conn = settings.local_kafka
    await create_topics(conn, [settings.local_topic], partitions=settings.topic_partitions, replication_factor=settings.replication_factor)
    admin = AIOKafkaAdminClient(**conn.client_kwargs())
    await admin.start()
    try:
        source = await _partition_count(admin, settings.local_topic, timeout_s)
        changelogs = changelog_topics(settings)
        configs = {"cleanup.policy": "compact,delete", "retention.ms": str(settings.retention_s * 1000)}
        await create_topics(conn, changelogs, partitions=source, replication_factor=settings.replication_factor, configs=configs)
        for topic in changelogs:
            if (have := await _partition_count(admin, topic, timeout_s)) != source:
                raise ConfigError(f"changelog {topic} has {have} partitions, source {settings.local_topic} has {source}")
        return source
    finally:
        await admin.close()


async def _partition_count(admin: AIOKafkaAdminClient, topic: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics([topic])
        partitions = [p for t in described if t["topic"] == topic and t["error_code"] == 0 for p in t["partitions"]]
        if partitions and all(p["leader"] >= 0 for p in partitions):
            return len(partitions)
        if time.monotonic() > deadline:
            raise BackendUnavailableError(f"topic {topic} has no led partitions after {timeout_s:.0f}s")
        await asyncio.sleep(0.2)


class LiveCounters:
    """The faust app, its tables and the agent that counts. ``start``/``stop`` run it in-process."""

    def __init__(self, settings: LiveSettings, partitions: int, registry: CollectorRegistry | None = None) -> None:
        """``partitions``: the source topic's (see :func:`prepare_topics`); the changelogs match it."""
        self.settings = settings
        self.partitions = partitions
        self.view_types = frozenset(settings.product_view_types)
        broker, credentials = _faust_broker(settings)
        self.app = faust.App(
            settings.app_id,
            broker=broker,
            broker_credentials=credentials,
            processing_guarantee="exactly_once",
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=settings.commit_interval_s,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
            topic_partitions=partitions,
            topic_replication_factor=settings.replication_factor,
            topic_allow_declare=True,
            store="memory://",
            datadir=settings.data_dir,
            web_enabled=False,  # the FastAPI app of the service serves HTTP
            autodiscover=False,
            table_cleanup_interval=30.0,
            producer_acks=-1,
        )
        self.topic = self.app.topic(settings.local_topic, key_serializer="raw", value_serializer="raw")
        # The window timestamp of the event being counted: set by the agent right before the
        # table updates, read by faust through ``relative_to`` (the agent runs with concurrency 1).
        self._event_time = 0.0
        self.by_product = self._windowed_table(PRODUCT_TABLE)
        self.by_store = self._windowed_table(STORE_TABLE)
        registry = registry or CollectorRegistry()
        self.seen = Counter("live_events_total", "Local-topic events consumed", registry=registry)
        self.counted = Counter("live_views_total", "Product views counted", registry=registry)
        # Plain counts for the API (since this process started; the tables hold the totals).
        self.events_seen = 0
        self.views_counted = 0
        self.app.agent(self.topic, name="count_views")(self._count_views)

    def _windowed_table(self, name: str) -> Any:
        table = self.app.Table(name, default=int, partitions=self.partitions, key_type=str, value_type=int)
        windowed: Any = table.tumbling(self.settings.window_s, expires=self.settings.retention_s)
        return windowed.relative_to(lambda _event: self._event_time)  # typed in faust's stubs only on the class

    async def _count_views(self, stream: faust.StreamT) -> AsyncIterator[None]:
        async for event in stream.events():
            self.seen.inc()
            self.events_seen += 1
            view = parse_view(event.value, self.view_types)
            if view is not None:
                self.count(view, event.message.partition)
            yield None

    def count(self, view: View, partition: int) -> None:
        """Adds one view to both tables (must run inside the agent: faust needs the event)."""
        self._event_time = view.event_time
        self.by_product[scoped_key(partition, view.product_id)] += 1
        self.by_store[scoped_key(partition, view.store_id or UNKNOWN)] += 1
        self.counted.inc()
        self.views_counted += 1

    # ---- read side (any coroutine of the process; a snapshot of the in-memory tables) ----

    def product_entries(self) -> Iterator[WindowEntry]:
        return iter(list(self.by_product.table.data.items()))

    def store_entries(self) -> Iterator[WindowEntry]:
        return iter(list(self.by_store.table.data.items()))

    @property
    def ready(self) -> bool:
        """Started, partitions assigned and the tables recovered from their changelogs."""
        app = self.app
        recovery: Any = app.tables.recovery  # type: ignore[attr-defined]  # on the TableManager class, not its protocol
        return bool(app.started and not app.rebalancing and recovery.completed.is_set())

    def not_ready_reason(self) -> str:
        app = self.app
        if not app.started:
            return "starting"
        if app.rebalancing:
            return "rebalancing"
        return "recovering tables from changelog"

    async def start(self) -> None:
        self.app.in_worker = True  # what faust.Worker sets; some services only run in a worker
        await self.app.start()

    async def stop(self) -> None:
        await self.app.stop()
