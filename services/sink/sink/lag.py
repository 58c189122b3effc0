"""``/lag``: how far the sink's consumer group is behind the end of its topic.

Contract: per partition of the topic, the group's committed offset against the end offset (the
last stable offset: the consumer reads ``read_committed``); a partition without a commit counts
from its beginning offset. Raises (``/lag`` answers 503) while no partition of the topic is known.
The gauges ``sink_lag_records`` and ``sink_lag_records_total`` are set as a side effect.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from sink.metrics import SinkMetrics


async def group_lag(
    lag_consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient, topic: str, group_id: str, metrics: SinkMetrics
) -> dict[str, Any]:
    """Per partition of the topic: the group's committed offset vs the end (last stable) offset."""
    partitions = lag_consumer.partitions_for_topic(topic)
    if not partitions:
        # topics() returns fresh metadata without updating the client's cache: refresh it, so
        # a topic created after the sink started is seen now, not after metadata_max_age_ms.
        await lag_consumer._client.force_metadata_update()
        partitions = lag_consumer.partitions_for_topic(topic) or set()
    if not partitions:
        # Not "caught up": nothing is known yet (the topic may not exist). /lag answers 503.
        raise RuntimeError(f"no partitions known for topic {topic!r} yet")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    end = await lag_consumer.end_offsets(tps)
    begin = await lag_consumer.beginning_offsets(tps)
    committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
    rows, total = [], 0
    for tp in tps:
        meta = committed.get(tp)
        c = meta.offset if meta is not None and meta.offset >= 0 else None
        lag = max(0, end[tp] - (c if c is not None else begin[tp]))
        total += lag
        rows.append({"partition": tp.partition, "committed": c, "end": end[tp], "lag": lag})
        metrics.lag.labels(str(tp.partition)).set(lag)
    metrics.lag_total.set(total)
    return {"topic": topic, "group": group_id, "partitions": rows, "total_lag": total, "caught_up": total == 0}
