"""``/lag``: how far the sink's consumer group is behind the end of its topic.

Contract: per partition of the topic, the group's committed offset against the end offset (the
last stable offset: the consumer reads ``read_committed``); a partition without a commit counts
from its beginning offset (:mod:`shared.kafka`'s one lag rule). Raises (``/lag`` answers 503)
while no partition of the topic is known. The gauge ``sink_lag_records{partition}`` is set as a
side effect (``/lag`` and every ``/metrics`` scrape call it; the topic's total is
``sum(sink_lag_records)`` in PromQL).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from shared.kafka import committed_positions, partition_lags, topic_partitions
from sink.metrics import SinkMetrics


async def group_lag(
    lag_consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient, topic: str, group_id: str, metrics: SinkMetrics
) -> dict[str, Any]:
    """Per partition of the topic: the group's committed offset vs the end (last stable) offset."""
    tps = await topic_partitions(lag_consumer, topic)
    lags = await partition_lags(lag_consumer, await committed_positions(admin, group_id, tps))
    rows = []
    for p in lags:
        rows.append({"partition": p.tp.partition, "committed": p.position, "end": p.end, "lag": p.lag})
        metrics.lag.labels(str(p.tp.partition)).set(p.lag)
    total = sum(p.lag for p in lags)
    return {"topic": topic, "group": group_id, "partitions": rows, "total_lag": total, "caught_up": total == 0}
