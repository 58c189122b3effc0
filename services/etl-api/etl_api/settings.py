"""The one settings class of the ETL service and its Spark job (env prefix ``ETL_``).

Connection settings keep the names every service shares (``MONGODB_URI``, ``MONGODB_DATABASE``,
``MONGODB_COLLECTION``, ``POSTGRES_DSN``); the service's own knobs are ``ETL_*``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.event import DEFAULT_PRODUCT_VIEW_TYPES, EVENT_TIME_FLOOR, EVENT_TIME_MAX_AHEAD_S, PARTS
from shared.kafka import KafkaConnection
from shared.settings import LOCAL_KAFKA_PREFIX, local_kafka_from_env

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Variables of the API's environment a job process never inherits (it does not need them: the
# job writes no HTTP answers, and its environment is readable by its Spark JVM and workers).
JOB_ENV_EXCLUDED = frozenset({"ETL_API_TOKEN", *(LOCAL_KAFKA_PREFIX + name.upper() for name in KafkaConnection.model_fields)})


def optional_local_kafka_from_env() -> KafkaConnection | None:
    """The local cluster (``LOCAL_KAFKA_*``, as every service) if configured: only
    ``GET /reconciliation/kafka`` reads it (the bridge's offsets topic); a job never does."""
    return local_kafka_from_env() if os.environ.get(LOCAL_KAFKA_PREFIX + "BOOTSTRAP_SERVERS") else None


class EtlSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ETL_", extra="ignore")

    # --- connections (unprefixed names shared by every service)
    mongodb_uri: str = Field("mongodb://127.0.0.1:27017/", validation_alias=AliasChoices("MONGODB_URI", "ETL_MONGODB_URI"))
    mongodb_database: str = Field("kafka_data_db", validation_alias=AliasChoices("MONGODB_DATABASE", "ETL_MONGODB_DATABASE"))
    mongodb_collection: str = Field("product_views_records", validation_alias=AliasChoices("MONGODB_COLLECTION", "ETL_MONGODB_COLLECTION"))
    postgres_dsn: SecretStr = Field(validation_alias=AliasChoices("POSTGRES_DSN", "ETL_POSTGRES_DSN"))

    # --- HTTP API
    api_token: SecretStr | None = None  # bearer token for writes; without it every write is refused (503)
    host: str = "127.0.0.1"
    port: int = 8103
    log_level: str = "INFO"
    # text | json (shared.logs), for the API and its job processes; unprefixed like every service's
    log_format: Literal["text", "json"] = Field(default="text", validation_alias=AliasChoices("LOG_FORMAT"))

    # --- warehouse
    pg_schema: str = "public"  # the star schema's PostgreSQL schema (tests use one per test)

    # --- what counts, how to read
    product_view_types: Annotated[tuple[str, ...], NoDecode] = DEFAULT_PRODUCT_VIEW_TYPES  # `collection` values that are product views
    exclude_bots: bool = True  # bot/crawler user agents are skipped (reason "bot"), not counted as views
    internal_domains: Annotated[tuple[str, ...], NoDecode] = ("glamira",)  # registered-domain names of the shop's own sites
    # Clock-skew margin: a run reads at most up to now - this (and never past a sink's visibility
    # lease, etl_api/visibility.py). Without leases (visibility_leases false) it must exceed the
    # sink's longest write attempt (SINK_WRITE_ATTEMPT_TIMEOUT_S, 60 s): set 120 then.
    settle_seconds: float = Field(default=2.0, ge=0)
    visibility_leases: bool = True  # bound every read by the sinks' visibility leases (shared/visibility.py)
    # An incremental run first checks the ingest hours this far back from the watermark against
    # the hour ledger and recomputes the event dates of documents that became visible after their
    # hour was read (etl_api/ledger.py); 0 turns healing off (GET /reconciliation still reports them).
    heal_lookback_hours: float = Field(default=24.0, ge=0, le=24 * 31)
    # GET /reconciliation/kafka reads the bridge's counts from its offsets topic on the local
    # cluster (LOCAL_KAFKA_* as every service); the same name as BRIDGE_OFFSETS_TOPIC.
    bridge_offsets_topic: str = "processed_product_view_test.bridge-offsets"
    local_kafka: KafkaConnection | None = Field(default_factory=optional_local_kafka_from_env, exclude=True)
    read_parts: int = PARTS  # split every hour/date read into this many `part` equality slices (1 = no split)
    # Plausible event times: an event before the floor, or later than its document's ingested_at
    # by more than max_ahead seconds, is skipped ('implausible_event_time'), never counted.
    event_time_floor: str = EVENT_TIME_FLOOR  # ISO-8601 instant, UTC if no offset
    event_time_max_ahead_s: float = Field(default=EVENT_TIME_MAX_AHEAD_S, ge=0)
    # FerretDB on PostgreSQL only: its PostgreSQL URL, so runs add the GIN read index its own
    # btree indexes lack (etl_api/ferretdb.py) and read its table directly
    # (etl_api/ferretdb_rows.py). Unset with MongoDB.
    ferretdb_postgresql_url: SecretStr | None = None

    # --- Spark
    spark_master: str = "local[*]"  # local[*], spark://host:7077, yarn, k8s://… (non-local: the code is shipped, see README)
    spark_python: str | None = None  # executors' Python (PYSPARK_PYTHON); default: this interpreter
    spark_conf: dict[str, str] = {}  # extra Spark properties, JSON: {"spark.executor.memory": "2g", "spark.driver.host": "10.0.0.5"}
    spark_driver_memory: str = "1g"
    spark_shuffle_partitions: int = 8
    # Full runs: the events read are spread over at least (collection size / this) Spark
    # partitions, so one partition (read, cached and aggregated in one task) stays this small
    # whatever the data size; with 4 read tasks a 3 M-event full run ran out of a 1 g heap.
    read_partition_rows: int = Field(default=100_000, ge=1_000)
    load_batch_rows: int = 10_000  # rows per COPY chunk streamed from Spark to PostgreSQL

    # --- continuous mode (etl_api/worker.py)
    continuous: bool = False  # the API starts the worker with the service (as PUT /continuous would)
    continuous_interval_s: float = Field(default=5.0, gt=0)  # a micro-batch every this many seconds
    # a micro-batch that read at least this many events is followed by the next one at once (catching up)
    continuous_eager_events: int = Field(default=20_000, ge=1)
    # a window at most this long is read second by second (ingest_second); a longer one (catch-up
    # after downtime) hour by hour, as an incremental run
    continuous_fine_max_s: float = Field(default=600.0, ge=0)
    # the heal check at the close of an ingest hour looks back this many hours (a worker's first
    # micro-batch looks back ETL_HEAL_LOOKBACK_HOURS): 24 hours of counting every hour is wasted work
    continuous_heal_hours: float = Field(default=2.0, ge=0)
    # shuffle partitions of a micro-batch read second by second (a few thousand rows): every stage
    # of its dozen small Spark jobs runs this many tasks instead of ETL_SPARK_SHUFFLE_PARTITIONS
    continuous_shuffle_partitions: int = Field(default=2, ge=1)
    continuous_retain_hours: float = Field(default=24.0, gt=0)  # succeeded micro-batch rows of etl_runs kept this long
    # the worker's driver JVM commits and touches its whole heap (ETL_SPARK_DRIVER_MEMORY) at start
    # (etl_api.spark.reserved_heap_options): its RSS is flat from the first micro-batch
    continuous_reserve_heap: bool = True
    continuous_backoff_max_s: float = Field(default=30.0, gt=0)  # a failed micro-batch is retried after at most this

    # --- run management
    run_log_dir: str = "/tmp/etl-api-runs"
    heartbeat_seconds: float = 5.0
    heartbeat_timeout_seconds: float = 60.0  # a running run silent this long is marked failed
    reaper_interval_seconds: float = 5.0
    # Fault injection, TESTS ONLY: the job sleeps this long inside the open load transaction
    # (after writing, before the ownership check and commit) so a test can kill the job or reap
    # the run meanwhile. Keep 0 in any deployment.
    fault_pause_in_load_seconds: float = 0.0

    @field_validator("ferretdb_postgresql_url", "api_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("pg_schema")
    @classmethod
    def _schema_is_identifier(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError(f"ETL_PG_SCHEMA {value!r} is not a plain lower-case SQL identifier")
        return value

    @field_validator("event_time_floor")
    @classmethod
    def _floor_is_instant(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"ETL_EVENT_TIME_FLOOR {value!r} is not an ISO-8601 instant") from exc
        return value

    @property
    def event_time_floor_ms(self) -> int:
        """The floor as UTC epoch milliseconds (naive = UTC)."""
        parsed = datetime.fromisoformat(self.event_time_floor)
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
        return int(parsed.timestamp() * 1000)

    @field_validator("product_view_types", "internal_domains", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("read_parts")
    @classmethod
    def _parts_divide(cls, value: int) -> int:
        if value < 1 or PARTS % value:
            raise ValueError(f"ETL_READ_PARTS must divide {PARTS}")
        return value

    def job_environment(self) -> dict[str, str]:
        """These settings as the environment of a job process, so the job sees exactly them."""
        env = {
            "MONGODB_URI": self.mongodb_uri,
            "MONGODB_DATABASE": self.mongodb_database,
            "MONGODB_COLLECTION": self.mongodb_collection,
            "POSTGRES_DSN": self.postgres_dsn.get_secret_value(),
        }
        for name, value in self.model_dump(
            exclude={"mongodb_uri", "mongodb_database", "mongodb_collection", "postgres_dsn", "api_token", "ferretdb_postgresql_url"}
        ).items():
            if value is None:
                continue
            if isinstance(value, tuple):
                env[f"ETL_{name.upper()}"] = ",".join(value)
            elif isinstance(value, dict):
                env[f"ETL_{name.upper()}"] = json.dumps(value)
            else:
                env[f"ETL_{name.upper()}"] = str(value)
        if self.ferretdb_postgresql_url is not None:
            env["ETL_FERRETDB_POSTGRESQL_URL"] = self.ferretdb_postgresql_url.get_secret_value()
        return env

    def job_process_environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The whole environment of a job process: ``base`` (the API's) without
        :data:`JOB_ENV_EXCLUDED` (any case: settings names are case-insensitive), plus
        :meth:`job_environment`."""
        return {k: v for k, v in base.items() if k.upper() not in JOB_ENV_EXCLUDED} | self.job_environment()

    def masked(self) -> dict[str, Any]:
        """For logging: secrets masked."""
        masked = {"postgres_dsn": "***", "api_token": "***", "ferretdb_postgresql_url": "***"}
        return self.model_dump(mode="json", exclude=set(masked)) | masked
