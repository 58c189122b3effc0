"""The sink's one settings class: its own knobs under ``SINK_``, connections shared.

MongoDB is addressed by the unprefixed ``MONGODB_URI``, ``MONGODB_DATABASE`` and
``MONGODB_COLLECTION`` that the ETL reads too; the local cluster by ``LOCAL_KAFKA_*``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ConsumerSettings

BSON_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # MongoDB's (and FerretDB's) maxBsonObjectSize


class SinkSettings(ConsumerSettings):
    """Inherited (shared.settings): the local cluster, the consumer's tuning, backoff, HTTP, log
    level and shutdown timeout."""

    # populate_by_name: SinkSettings(mongodb_uri=…, mongodb_database=…) works as it reads (the
    # aliases alone would silently ignore those keyword arguments and take the environment's).
    model_config = SettingsConfigDict(env_prefix="SINK_", extra="ignore", populate_by_name=True)

    mongodb_uri: SecretStr = Field(
        default=SecretStr("mongodb://127.0.0.1:27017/"), validation_alias=AliasChoices("MONGODB_URI", "SINK_MONGODB_URI"), exclude=True
    )
    mongodb_database: str = Field(default="kafka_data_db", validation_alias=AliasChoices("MONGODB_DATABASE", "SINK_MONGODB_DATABASE"))
    mongodb_collection: str = Field(
        default="product_views_records", validation_alias=AliasChoices("MONGODB_COLLECTION", "SINK_MONGODB_COLLECTION")
    )

    # Topics and the consumer group (the seed's names as defaults).
    topic: str = "processed_product_view_test"
    dlq_topic: str = "processed_product_view_test.dlq"
    group_id: str = "product_views_sink"
    # The dead-letter topic is created when missing (the bridge creates it the same way).
    dlq_partitions: int = 3
    replication_factor: int = 3

    # Batches: a batch is written when it holds max_batch_events records or max_batch_bytes of
    # record values, or max_batch_wait_ms after its first record arrived, whichever comes first.
    max_batch_events: int = 5000
    max_batch_bytes: int = 16 * 1024 * 1024
    max_batch_wait_ms: int = 200
    # Documents whose BSON is larger than this go to the dead-letter topic (MongoDB refuses > 16 MiB).
    max_document_bytes: int = BSON_MAX_DOCUMENT_BYTES

    # Batches written at the same time (each its own insert_many). Offsets are still committed in
    # batch order, each batch's only after it and every earlier batch were acknowledged. 1 = the
    # plain two-stage pipeline (one write in flight while the next batch is collected).
    max_inflight_batches: int = Field(default=4, ge=1)

    # MongoDB writes. "auto": "majority" when the server is a replica-set member, else 1
    # (FerretDB and a standalone mongod have no replica set, so "majority" means nothing there).
    write_concern: str = "auto"
    write_journal: bool | None = None
    # The ETL's read indexes (mongo.INDEXES). "auto": created on MongoDB, not on FerretDB, where
    # no query can use them while every insert pays for their upkeep (see the README, "Indexes").
    read_indexes: Literal["auto", "create", "skip"] = "auto"
    # Only for FerretDB on PostgreSQL (the local stand-in): FerretDB's PostgreSQL database, where
    # the sink builds the GIN index that serves its _id lookups (sink/ferretdb.py). Unset on MongoDB.
    ferretdb_postgresql_url: SecretStr | None = Field(default=None, exclude=True)
    # Server selection and connect timeout of each attempt (with no writable server known, an
    # insert first pings within it: pymongo.timeout alone would wait the whole attempt timeout).
    mongodb_timeout_ms: int = 5_000
    # One insert_many attempt is given up after this long (client-side timeout, sent to the server
    # as maxTimeMS) and retried. Each attempt stamps its documents' ingested_at when it starts, so
    # a document becomes visible at most this long after its stamp: the ETL's settle margin
    # (ETL_SETTLE_SECONDS, 120 s) must be larger than this plus the clocks' skew. The visibility
    # lease pins an attempt that ended without an answer for this long (+1 s) after its start.
    write_attempt_timeout_s: float = Field(default=60.0, gt=0)
    # Visibility leases (sink/visibility.py, shared/visibility.py): every visibility_interval_s the
    # sink publishes, in the events' database's sink_visibility collection, the instant through
    # which everything it stamped is visible. It starts no write attempt more than
    # visibility_lease_s after its last successful publication (retried as an outage), so a reader
    # can tell a sink that died or was cut off: nothing it stamped lands after published_at +
    # visibility_lease_s + write_attempt_timeout_s. The lease must outlast several intervals.
    visibility_interval_s: float = Field(default=1.0, gt=0)
    visibility_lease_s: float = Field(default=10.0, gt=0)
    # A document refused with a code the table (sink.mongo.ERROR_CODES) does not know is tried this
    # many times, the server answering a ping each time, then dead-lettered (stage "sink.write").
    # Known refusals are dead-lettered at once; outages (connection, timeout, backend down) are
    # retried with backoff for as long as they last: they are not bad records.
    document_write_attempts: int = 3

    # Consumer (the rest of its tuning is inherited). Static membership (KIP-345): a stable id per instance (e.g. the container name) lets a
    # restarted sink take its partitions back at once instead of waiting for a rebalance.
    group_instance_id: str | None = None
    max_poll_interval_ms: int = 300_000
    # On revocation the batch being written gets this long to finish and commit; after that it
    # is abandoned uncommitted (the partition's next owner rewrites it; writes are idempotent).
    revoke_flush_timeout_s: float = 5.0

    # Outages.
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0

    # Service. SIGTERM: the open batch is flushed if MongoDB answers within shutdown_flush_s,
    # offsets committed, clients closed (≤ 2 s): the worker returns within shutdown_flush_s + 3 s
    # and the process exits 0; shutdown_timeout_s is shared.service's last-resort cancel.
    http_port: int = 8102
    shutdown_flush_s: float = 6.0
    shutdown_timeout_s: float = 9.5

    @model_validator(mode="after")
    def _lease_outlasts_its_interval(self) -> SinkSettings:
        if self.visibility_lease_s <= self.visibility_interval_s:
            raise ValueError(
                f"SINK_VISIBILITY_LEASE_S ({self.visibility_lease_s:g}) must be larger than SINK_VISIBILITY_INTERVAL_S "
                f"({self.visibility_interval_s:g}): a lease shorter than the time between publications lapses between them"
            )
        return self

    def masked(self) -> str:
        """The settings for the log: credentials never printed."""
        uri = self.mongodb_uri.get_secret_value()
        if "@" in uri:
            scheme, rest = uri.split("://", 1)
            uri = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return (
            f"kafka={self.local_kafka.masked()} topic={self.topic} group={self.group_id} dlq={self.dlq_topic} "
            f"mongodb={uri} {self.mongodb_database}.{self.mongodb_collection} write_concern={self.write_concern} "
            f"batch≤{self.max_batch_events} events/{self.max_batch_bytes} B/{self.max_batch_wait_ms} ms"
        )
