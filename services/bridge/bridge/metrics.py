"""The bridge's Prometheus metrics, in the service's own registry (:func:`shared.metrics.service_registry`).

Counters are named without ``_total`` here; they are exposed (and documented) with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.event import KEPT_AS_CAME_FIELDS
from shared.metrics import DeadLetters

# Every dlq.stage the bridge writes (bridge.records.Refusal): present at 0 from the start.
DLQ_STAGES = ("bridge.decode", "bridge.validate", "bridge.encode", "bridge.normalize")

# Known fields kept as they came because the bridge could not normalize them (issue 29: they never
# refuse an event): counted per copy by bridge.records.copy_record, a pure function the copier
# calls, so the counter is module-level and BridgeMetrics.create registers it in the service's
# registry. Every label is present at 0 from the start.
KEPT_AS_CAME = Counter(
    "bridge_events_with_field_kept_as_came",
    "Copied events whose known field (label) the bridge could not normalize and kept as it came, per copy",
    ["field"],
    registry=None,
)
for _field in KEPT_AS_CAME_FIELDS:
    KEPT_AS_CAME.labels(_field)


@dataclass
class BridgeMetrics:
    consumed: Counter
    produced: Counter
    dead_lettered: DeadLetters
    transactions: Counter
    batch_seconds: Histogram
    lag: Gauge
    stored_offset: Gauge
    rebalances: Counter
    restarts: Counter
    phase_seconds: Histogram
    record_age_seconds: Histogram
    source_resets: Counter
    source_incidents: Gauge
    source_resumes: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> BridgeMetrics:
        registry.register(KEPT_AS_CAME)
        return cls(
            consumed=Counter(
                "bridge_consumed_records", "Remote records consumed and handled in a committed transaction", registry=registry
            ),
            produced=Counter("bridge_produced_records", "Events produced to the local topic (committed)", registry=registry),
            # pipeline_dead_lettered_records_total{hop="bridge", stage}: by the step that refused
            # them (the dlq.stage header); consumed = produced + dead-lettered.
            dead_lettered=DeadLetters(registry, "bridge", DLQ_STAGES),
            transactions=Counter("bridge_transactions", "Local transactions by result", ["result"], registry=registry),
            batch_seconds=Histogram(
                "bridge_batch_seconds",
                "Time to transform, produce and commit one partition batch",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
                registry=registry,
            ),
            lag=Gauge(
                "bridge_lag_records", "Remote end offset minus stored offset, per assigned partition", ["partition"], registry=registry
            ),
            stored_offset=Gauge(
                "bridge_stored_offset", "Next remote offset stored per assigned partition", ["partition"], registry=registry
            ),
            rebalances=Counter("bridge_rebalances", "Partition assignments received", registry=registry),
            restarts=Counter("bridge_session_restarts", "Client sessions restarted after an error", registry=registry),
            # Where a transaction's time goes: build (transform), send (queue the batches),
            # produce (AddPartitionsToTxn + produce with acks=all), commit (EndTxn, markers).
            phase_seconds=Histogram(
                "bridge_transaction_phase_seconds",
                "Time per transaction phase (build, send, produce, commit)",
                ["phase"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            # How old a record is (remote record timestamp → now) when fetched, when its
            # transaction starts, and when that transaction is committed.
            record_age_seconds=Histogram(
                "bridge_record_age_seconds",
                "Age of the oldest record of a fetch or transaction at each stage (fetched, txn_start, committed)",
                ["stage"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            # Source resets (bridge.incidents): detections by kind (above_end, below_start,
            # out_of_range), partitions held in incident now, resumes by policy.
            source_resets=Counter(
                "bridge_source_resets",
                "Stored positions found outside the remote log (source reset incidents detected)",
                ["partition", "kind"],
                registry=registry,
            ),
            source_incidents=Gauge(
                "bridge_source_incident_partitions", "Owned remote partitions not copied because of a source reset", registry=registry
            ),
            source_resumes=Counter(
                "bridge_source_resumes", "Source reset incidents resolved by a resume policy", ["partition", "policy"], registry=registry
            ),
        )


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
