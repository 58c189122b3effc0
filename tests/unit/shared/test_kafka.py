"""shared.kafka: the one consumer factory and the one lag rule of the bridge, the sink and live."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from shared.errors import BackendUnavailableError
from shared.kafka import KafkaConnection, PartitionLag, committed_positions, create_consumer, partition_lags, topic_partitions

TP0, TP1, TP2 = (TopicPartition("t", p) for p in range(3))


class FakeClient:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer

    async def force_metadata_update(self) -> bool:
        self.consumer.refreshed += 1
        self.consumer.partitions = self.consumer.after_refresh
        return True


class FakeConsumer:
    def __init__(self, partitions: set[int] | None, after_refresh: set[int] | None = None) -> None:
        self.partitions, self.after_refresh, self.refreshed = partitions, after_refresh, 0
        self._client = FakeClient(self)
        self.calls: list[str] = []

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.calls.append("end")
        return {tp: 100 for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.calls.append("start")
        return {tp: 40 for tp in tps}


class FakeAdmin:
    async def list_consumer_group_offsets(self, group_id: str, partitions: list[TopicPartition]) -> dict[TopicPartition, Any]:
        return {TP0: OffsetAndMetadata(70, ""), TP1: OffsetAndMetadata(-1, "")}


def test_lag_counts_from_the_position_else_from_the_log_start_never_negative() -> None:
    assert PartitionLag(TP0, 70, 40, 100).lag == 30
    assert PartitionLag(TP0, None, 40, 100).lag == 60  # no commit: from the log start, not from 0
    assert PartitionLag(TP0, 120, 40, 100).lag == 0


async def test_positions_and_log_offsets_make_the_lags() -> None:
    consumer, admin = FakeConsumer({0, 1, 2}), FakeAdmin()
    tps = await topic_partitions(consumer, "t")  # type: ignore[arg-type]
    assert tps == [TP0, TP1, TP2]
    positions = await committed_positions(admin, "g", tps)  # type: ignore[arg-type]
    assert positions == {TP0: 70, TP1: None, TP2: None}
    lags = await partition_lags(consumer, positions)  # type: ignore[arg-type]
    assert [(p.tp, p.position, p.log_start, p.end, p.lag) for p in lags] == [
        (TP0, 70, 40, 100, 30),
        (TP1, None, 40, 100, 60),
        (TP2, None, 40, 100, 60),
    ]
    assert consumer.calls == ["end", "start"]


async def test_unknown_partitions_are_refreshed_once_then_an_error_never_a_zero_lag() -> None:
    late = FakeConsumer(None, after_refresh={0})
    assert await topic_partitions(late, "t") == [TP0]  # type: ignore[arg-type]
    assert late.refreshed == 1
    with pytest.raises(BackendUnavailableError):
        await topic_partitions(FakeConsumer(set(), after_refresh=set()), "t")  # type: ignore[arg-type]
    subscribed = FakeConsumer(None, after_refresh={0})
    with pytest.raises(BackendUnavailableError):
        await topic_partitions(subscribed, "t", refresh=False)  # type: ignore[arg-type]
    assert subscribed.refreshed == 0


async def test_the_factory_reads_committed_without_auto_commit() -> None:
    conn = KafkaConnection(bootstrap_servers="127.0.0.1:1")
    consumer = create_consumer(conn, group_id="g", auto_offset_reset="none")
    assert consumer._isolation_level == "read_committed"
    assert consumer._enable_auto_commit is False and consumer._group_id == "g"
    assert create_consumer(conn)._group_id is None
