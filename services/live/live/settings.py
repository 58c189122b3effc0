"""The live service's one settings class: its own knobs under ``LIVE_``, connections shared."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.event import DEFAULT_PRODUCT_VIEW_TYPES
from shared.settings import ServiceSettings


class LiveSettings(ServiceSettings):
    """Inherited (shared.settings): the local cluster, backoff, HTTP, log level, shutdown timeout."""

    model_config = SettingsConfigDict(env_prefix="LIVE_", extra="ignore", populate_by_name=True)

    # The star schema the page plots, read as the read-only role analyst (sql/009_roles.sql:
    # SELECT on dim_*, fact_*, v_*; not etl_runs). Falls back to LIVE_POSTGRES_DSN, then to
    # POSTGRES_DSN (the owner, still read only by session setting) where no analyst DSN is set.
    # None: the page says "no data yet".
    postgres_dsn: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANALYST_POSTGRES_DSN", "LIVE_POSTGRES_DSN", "POSTGRES_DSN"), exclude=True
    )
    pg_schema: str = "public"

    # The bridge's output topic (normalized events, see shared.event).
    local_topic: str = "processed_product_view_test"
    # The dead-letter topic the page's "dead letters" panel counts (live.deadletters).
    dlq_topic: str = "processed_product_view_test.dlq"
    # Faust app id: consumer group id and prefix of the changelog topics.
    app_id: str = "live"
    # Which ``collection`` values count as a product view (same default as the ETL).
    product_view_types: tuple[str, ...] = DEFAULT_PRODUCT_VIEW_TYPES

    # Partitions of the changelog topics: must equal the local topic's (tables are co-partitioned).
    topic_partitions: int = 6
    replication_factor: int = 3
    # Window size of the counters; top-N sums the last N such windows.
    window_s: int = 60
    # Windows older than this (against the wall clock, faust's rule) are dropped from memory and
    # from the changelog (retention). Must cover the longest top-N span.
    retention_s: int = 2 * 3600
    # Seconds between offset commits (faust ``broker_commit_interval``).
    commit_interval_s: float = 1.0
    # Only on faust's per-record path (a consumer without live.consumer's batch handler): the agent's
    # take_events batches, at most batch_max events or what arrived within batch_within_s. The
    # service itself counts each fetched batch whole (live.consumer, patch 2).
    batch_max: int = 2000
    batch_within_s: float = 0.25
    # Changelog producer batching: one produce request per this many seconds per broker instead
    # of one per table update (two per view).
    producer_linger_s: float = 0.02
    # Per-partition record batch: large enough for a whole counting batch, so sending a batch's
    # changelog records never waits for an earlier request to drain (aiokafka keeps one open batch).
    producer_max_batch_bytes: int = 524_288
    # A killed worker's partitions move to another after this long without heartbeats.
    session_timeout_s: float = 10.0
    # Where faust keeps local state and the changelog view writes its snapshot (tables live in
    # memory; see live.recovery).
    data_dir: str = ".stack/live"
    # How a start recovers the tables (live.recovery): "snapshot" = the view's snapshot in data_dir
    # plus the changelog after it, faust's tables seeded from the view; "seed" = the view replays
    # the changelogs from the log start, faust's tables seeded from it; "replay" = no snapshot, no
    # seeding: the view and faust's recovery each replay the whole changelog (before 2026-12).
    recovery: Literal["snapshot", "seed", "replay"] = "snapshot"
    # Seconds between two snapshots of the changelog view (and one on a clean stop).
    snapshot_interval_s: float = Field(default=30.0, gt=0)

    top_n: int = 10
    # Top-N spans in minutes served by /api/top and the page.
    top_spans_min: tuple[int, ...] = (5, 60)
    # How many minutes of the live per-minute series the page and /api/minutes show by default.
    series_minutes: int = 30
    # The page's auto-refresh period.
    refresh_s: int = 10
    # Recent ETL runs shown on the page.
    etl_runs_limit: int = 10
    # The ETL API whose GET /continuous says how fresh the star schema is (the page's
    # "star schema as of …, N s behind", live.freshness). Empty: the page does not say.
    etl_api_url: str = "http://127.0.0.1:8103"
    pg_timeout_s: float = 5.0
    # The page's star section: the default date range is the last star_days days up to the last
    # date with facts (not today); the section re-fetches itself every star_refresh_s seconds.
    star_days: int = Field(default=7, ge=1, le=366)
    star_refresh_s: int = Field(default=60, ge=1)
    # Rows per star-schema breakdown on the page (the API's n goes up to 100).
    star_top_n: int = Field(default=10, ge=1, le=100)
    # The one asyncpg pool of the process (page and /api/star/*): at most this many connections,
    # named so in pg_stat_activity.
    pg_pool_max: int = Field(default=4, ge=1)
    pg_application_name: str = "live"

    # Service (the other fields are inherited; the backoff is used while Kafka is unreachable at start).
    http_port: int = 8104
    shutdown_timeout_s: float = 15.0

    @field_validator("pg_schema")
    @classmethod
    def _schema_is_identifier(cls, value: str) -> str:
        if not value.replace("_", "").isalnum() or value[0].isdigit():
            raise ValueError(f"pg_schema must be a plain identifier, got {value!r}")
        return value

    @field_validator("window_s")
    @classmethod
    def _window_divides_hour(cls, value: int) -> int:
        if value <= 0 or 3600 % value:
            raise ValueError("window_s must divide 3600")
        return value
