"""The faust-streaming app: windowed view counters over the local topic.

Two tumbling-window tables, both windowed by the event's own ``event_time`` (never by arrival
time, so the same events give the same counts on every run):

- ``views_per_product``: views per product per window (``window_s``, default one minute);
- ``views_per_store``: views per store (the country dimension's natural key) per window.

Top-N over the last 5 and 60 minutes is a read over ``views_per_product`` (the sum of the last
5 / 60 one-minute windows) rather than two more hopping tables: a 60-minute hopping table with a
one-minute step writes 60 changelog records per event, the sum costs nothing on the write path.

Guarantees:

- ``read_committed``: faust-streaming (0.15.3 too) builds its worker consumer with it only under
  ``exactly_once``; we run ``at_least_once`` and set it on the consumer faust builds
  (:mod:`live.consumer`, patch 1), so records of the bridge's aborted or open transactions are
  never counted.
- Why not ``exactly_once``: faust commits a partition's transaction without flushing its own
  producer buffer first and keeps processing while it commits, so changelog records land in the
  wrong transaction (measured on 0.11.3 with kill -9 in tests/integration/live/test_restart.py:
  counts lost and doubled; upstream reports still open: faust-streaming #517, #323).
- Nothing counted is lost: the consumer hands each fetched batch of the topic to
  :meth:`LiveCounters.count_records`, which counts it (in memory, one changelog record per
  (key, window) the batch touched) and returns once the brokers acknowledged (acks=all) those
  records; only then does the consumer ack the batch's offsets, and an offset commit covers acked
  offsets only.
- No double counting: at-least-once redelivers what was processed after the last commit; each
  table value carries the last source offset it counted (:func:`live.counting.add_view`), so a
  redelivered view is skipped.

Tables live in memory and are rebuilt on start from the changelog view (:mod:`live.recovery`:
its snapshot plus the changelog after it), faust replaying only what the view had not read; the
changelog topics (replication factor ``replication_factor``, compact+delete with
``retention_s``) stay the durable state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import faust
import faust.stores
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from faust.types.auth import SASLMechanism
from prometheus_client import CollectorRegistry, Counter, Gauge

from live.consumer import LiveApp, RecordBatch, _ReadCommittedConsumer
from live.counting import UNKNOWN, View, WindowEntry, add_view, parse_view, scoped_key
from live.recovery import STORE_SCHEME, SeededStore, Seeder
from live.settings import LiveSettings
from shared.errors import BackendUnavailableError, ConfigError
from shared.kafka import create_topics

log = logging.getLogger(__name__)

PRODUCT_TABLE = "views_per_product"
STORE_TABLE = "views_per_store"

faust.stores.STORES.aliases.setdefault(STORE_SCHEME, f"{SeededStore.__module__}:{SeededStore.__name__}")


def _faust_broker(settings: LiveSettings) -> tuple[str, faust.SASLCredentials | None]:
    conn = settings.local_kafka
    url = ";".join(f"kafka://{hostport.strip()}" for hostport in conn.bootstrap_servers.split(","))
    if conn.security_protocol == "PLAINTEXT":
        return url, None
    if conn.security_protocol != "SASL_PLAINTEXT" or conn.sasl_mechanism != "PLAIN":
        # faust builds SASL_SSL from an ssl_context; only what the stacks use is wired here.
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

    def __init__(
        self, settings: LiveSettings, partitions: int, registry: CollectorRegistry | None = None, seeder: Seeder | None = None
    ) -> None:
        """``partitions``: the source topic's (see :func:`prepare_topics`); the changelogs match it.
        ``seeder``: where the tables' stores take a partition's state and changelog position from
        on recovery (:meth:`live.view.ChangelogView.seed`); None: faust replays the changelogs."""
        self.settings = settings
        self.seeder = seeder
        self.partitions = partitions
        self.view_types = frozenset(settings.product_view_types)
        broker, credentials = _faust_broker(settings)
        self.app = LiveApp(
            settings.app_id,
            broker=broker,
            broker_credentials=credentials,
            processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=settings.commit_interval_s,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
            topic_partitions=partitions,
            topic_replication_factor=settings.replication_factor,
            topic_allow_declare=True,
            # One standby: a replica keeps a warm copy of another's tables and takes over without
            # replaying a whole changelog. (faust 0.11.3 also needed it: with 0 standbys it swapped
            # in aiokafka's round-robin assignor and never recovered the tables; 0.15 keeps its own
            # assignor whenever the app has changelog tables.)
            table_standby_replicas=1,
            store="memory://",
            datadir=settings.data_dir,
            web_enabled=False,  # the FastAPI app of the service serves HTTP
            autodiscover=False,
            table_cleanup_interval=30.0,
            producer_acks=-1,
            producer_linger=settings.producer_linger_s,
            producer_max_batch_size=settings.producer_max_batch_bytes,
        )
        self.topic = self.app.topic(settings.local_topic, key_serializer="raw", value_serializer="raw")
        self.by_product = self._windowed_table(PRODUCT_TABLE)
        self.by_store = self._windowed_table(STORE_TABLE)
        registry = registry or CollectorRegistry()
        Gauge(
            "live_table_recovery_replayed_records",
            "Changelog records faust's table recovery and standbys applied since start (tables seeded from the view: only the tail)",
            registry=registry,
        ).set_function(lambda: self.recovery_replayed)
        self.seen = Counter("live_events_total", "Local-topic events consumed", registry=registry)
        self.counted = Counter("live_views_total", "Product views counted", registry=registry)
        self.redelivered = Counter("live_redelivered_views_total", "Views read again after a restart, already counted", registry=registry)
        # Plain counts for the API (since this process started; the tables hold the totals).
        self.events_seen = 0
        self.views_counted = 0
        self.views_redelivered = 0
        # The agent subscribes the topic; the consumer hands it its records in whole fetched
        # batches (count_records), not one by one through faust's conductor (live.consumer).
        self.app.agent(self.topic, name="count_views")(self._count_views)
        consumer = cast(_ReadCommittedConsumer, self.app.consumer)
        consumer.batch_topic, consumer.batch_handler = settings.local_topic, self.count_records

    def _windowed_table(self, name: str) -> Any:
        """A tumbling-window table; values are JSON ``[count, last offset]``."""
        table = self.app.Table(
            name, default=list, partitions=self.partitions, store=f"{STORE_SCHEME}://local", options={"seeder": self.seeder}
        )
        return table.tumbling(self.settings.window_s, expires=self.settings.retention_s).table

    async def count_records(self, batch: RecordBatch) -> None:
        """Counts one fetched batch of the topic and returns once the brokers acknowledged (acks=all)
        its changelog records; the consumer acks its offsets only then (live.consumer, patch 2)."""
        views, events = [], 0
        view_types = self.view_types
        for tp, records in batch:
            events += len(records)
            partition = tp.partition
            for record in records:
                view = parse_view(record.value, view_types)
                if view is not None:
                    views.append((view, partition, record.offset))
        self.seen.inc(events)
        self.events_seen += events
        await self.write_changelog(self.count(views))

    async def _count_views(self, stream: faust.StreamT) -> AsyncIterator[None]:
        # Only reached when the consumer runs without its batch handler (faust's per-record path).
        # take_events acks a batch's events only when this body asks for the next batch, i.e. after
        # the brokers acknowledged the batch's changelog records: a commit covers only what the
        # changelog holds. A failed write raises: the agent crashes, nothing is committed past it.
        take_events = cast(faust.Stream, stream).take_events  # on the Stream class, not on StreamT
        async for events in take_events(self.settings.batch_max, within=self.settings.batch_within_s):
            views = []
            for event in events:
                view = parse_view(event.value, self.view_types)
                if view is not None:
                    views.append((view, event.message.partition, event.message.offset))
            self.seen.inc(len(events))
            self.events_seen += len(events)
            await self.write_changelog(self.count(views))
            yield None

    def count(self, views: list[tuple[View, int, int]]) -> list[tuple[Any, int, Any, list[int]]]:
        """Adds a batch of (view, partition, offset) to both tables, skipping views already counted.

        One changelog record per (key, window) the batch touched, not one per view: the table
        value after the batch, written to the key's own partition (faust's windowed-table API
        takes the partition from "the current event", which a batch does not have). Updates the
        in-memory tables and returns the changelog records to write: (table, partition, key, value).
        """
        products: dict[Any, tuple[int, list[int]]] = {}
        stores: dict[Any, tuple[int, list[int]]] = {}
        for view, partition, offset in views:
            added = self._stage(self.by_product, products, scoped_key(partition, view.product_id), view.event_time, partition, offset)
            added = (
                self._stage(self.by_store, stores, scoped_key(partition, view.store_id or UNKNOWN), view.event_time, partition, offset)
                and added
            )
            if added:
                self.views_counted += 1
                self.counted.inc()
            else:
                self.views_redelivered += 1
                self.redelivered.inc()
        records: list[tuple[Any, int, Any, list[int]]] = []
        for table, staged in ((self.by_product, products), (self.by_store, stores)):
            expiring = table._partition_timestamp_keys  # (partition, window end) -> keys; faust pops it at expiry
            for window_key, (partition, value) in staged.items():
                table.data[window_key] = value
                ends = (partition, window_key[1][1])
                if ends in expiring:
                    expiring[ends].add(window_key)
                else:
                    # What Table.on_key_set does: expiry bookkeeping. Once per (partition, window
                    # end): it also pushes the end onto a heap, which per key and batch grew by
                    # thousands of duplicates a second at 5 k events/s (kept for LIVE_RETENTION_S).
                    table._maybe_set_key_ttl(window_key, partition)
                records.append((table, partition, window_key, value))
        return records

    async def write_changelog(self, records: list[tuple[Any, int, Any, list[int]]]) -> None:
        """Writes the records with faust's producer and returns when the brokers acknowledged them.

        Straight to ``app.producer.send`` with JSON key and value (what the tables' ``json``
        codec reads back on recovery: ``[key, [window start, window end]]`` → ``[count, offset]``).
        faust's ``Topic.send`` / ``send_soon`` cost ~1 ms per record here (futures, sensors, a
        buffer handing over one record per loop turn); this path is a dict lookup and a JSON dump.
        """
        producer = self.app.producer
        sent = [
            await producer.send(table.changelog_topic.get_topic_name(), orjson.dumps(key), orjson.dumps(value), partition, None, None)
            for table, partition, key, value in records
        ]
        await asyncio.gather(*sent)

    @staticmethod
    def _stage(table: Any, staged: dict[Any, tuple[int, list[int]]], key: str, event_time: float, partition: int, offset: int) -> bool:
        window_key = (key, table.window.current(event_time))  # faust's windowed key: (key, (start, end))
        current = staged[window_key][1] if window_key in staged else table.data.get(window_key)
        value = add_view(current, offset)
        if value is None:
            return False
        staged[window_key] = (partition, value)
        return True

    @property
    def recovery_replayed(self) -> int:
        """Changelog records faust's recovery (and standbys) applied to both tables since start."""
        return sum(cast(SeededStore, t.data).replayed for t in (self.by_product, self.by_store))

    # ---- read side (any coroutine of the process; a snapshot of the in-memory tables) ----

    def product_entries(self) -> Iterator[WindowEntry]:
        return iter(list(self.by_product.data.items()))

    def store_entries(self) -> Iterator[WindowEntry]:
        return iter(list(self.by_store.data.items()))

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
