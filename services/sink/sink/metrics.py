"""The sink's Prometheus metrics, registered on the service's own registry
(:func:`shared.metrics.service_registry`). Counters are named without ``_total`` here; they are
exposed (and documented) with it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.metrics import DeadLetters

# Every dlq.stage the sink writes (sink.documents STAGE_*): present at 0 from the start.
DLQ_STAGES = ("sink.decode", "sink.validate", "sink.size", "sink.encode", "sink.write", "sink.conflict", "sink.build")


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter("sink_consumed_records", "Records taken from the topic into a batch", registry=registry)
        self.written = Counter("sink_written_documents", "Documents MongoDB acknowledged as inserted", registry=registry)
        self.duplicates = Counter(
            "sink_duplicate_documents", "Documents already in MongoDB (duplicate _id): redelivered, counted as written", registry=registry
        )
        self.conflicting_duplicates = Counter(
            "sink_conflicting_duplicate_documents",
            "Documents whose _id was already stored with different content (outside the delivery fields): "
            "dead-lettered (stage sink.conflict), the stored one kept",
            registry=registry,
        )
        # pipeline_dead_lettered_records_total{hop="sink", stage}, the bridge's counter's name
        self.dead_lettered = DeadLetters(registry, "sink", DLQ_STAGES)
        self.batch_size = Histogram(
            "sink_batch_size_records",
            "Records per written batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
            registry=registry,
        )
        self.batch_latency = Histogram(
            "sink_batch_latency_seconds",
            "From the start of a batch's write to its committed offsets",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.write_retries = Counter("sink_write_retries", "Failed MongoDB write attempts that were retried", ["reason"], registry=registry)
        self.commits = Counter("sink_offset_commits", "Successful offset commits", registry=registry)
        self.commit_failures = Counter("sink_offset_commit_failures", "Offset commits that failed", ["reason"], registry=registry)
        self.abandoned = Counter(
            "sink_abandoned_batches", "Batches dropped uncommitted (revocation or shutdown while MongoDB was down)", registry=registry
        )
        # The group's lag, the same from every replica (it is the group's, not this process's):
        # sum over partitions of max over instances. Refreshed at each scrape (ServiceState.on_scrape).
        self.lag = Gauge(
            "sink_lag_records",
            "End offset (last stable) minus the group's committed offset, per partition",
            ["partition"],
            registry=registry,
        )
        self.buffered = Gauge("sink_buffered_records", "Records fetched and waiting for the next batch", registry=registry)
        # Where a sink's time goes (seconds, summed): tells a slow sink's bottleneck from /metrics.
        # fetch: waiting in the consumer's getmany; build: decoding records into documents (on the
        # event loop); slot_wait: a full batch waiting for a free write slot; insert: insert_many
        # attempts; commit_wait: a written batch waiting for its predecessor's commit; commit: the
        # offset commit itself.
        self.stage_seconds = Counter(
            "sink_stage_seconds", "Seconds spent per stage of the consume-write-commit path", ["stage"], registry=registry
        )
        self.assigned = Gauge("sink_assigned_partitions", "Partitions assigned to this process", registry=registry)
        # Visibility leases (sink.visibility): how far behind the clock this process's published
        # visible_through was at its last successful publication (its oldest unanswered write
        # attempt; about 1 ms when none), and the publications that failed (at SINK_VISIBILITY_LEASE_S
        # of failures in a row, writes stop).
        self.visibility_lag = Gauge(
            "sink_visibility_lag_seconds",
            "Publication time minus the visible_through published, at the last successful visibility lease publication",
            registry=registry,
        )
        self.visibility_failures = Counter(
            "sink_visibility_publication_failures",
            "Visibility lease publications that failed (retried at the next tick)",
            registry=registry,
        )
