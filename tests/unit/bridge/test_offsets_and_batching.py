"""The pure pieces around the transform: stored-offset records and the key partitioner."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from bridge.batching import KeyPartitioner
from bridge.offsets import offset_key, offset_value, parse_offset_record
from bridge.settings import BridgeSettings

from shared.kafka import KafkaConnection


def test_offset_record_round_trip() -> None:
    assert offset_key("product_views", 3) == b"product_views/3"
    assert offset_value(1234) == b'{"next_offset":1234}'
    assert parse_offset_record(offset_key("a/b", 11), offset_value(7)) == ("a/b", 11, 7)


def test_offset_tombstone_and_foreign_records() -> None:
    assert parse_offset_record(b"product_views/0", None) == ("product_views", 0, None)
    assert parse_offset_record(None, b"{}") is None
    assert parse_offset_record(b"no-partition", b"{}") is None
    assert parse_offset_record(b"topic/x", b"{}") is None


def test_key_partitioner_matches_kafkas_default_partitioner() -> None:
    keys = [f"device-{i}".encode() for i in range(500)] + [b"", b"\xff\x00"]
    for partitions in (1, 3, 6, 7):
        ours = KeyPartitioner(partitions, cache_size=100)
        parts = list(range(partitions))
        assert [ours(k) for k in keys] == [DefaultPartitioner()(k, parts, parts) for k in keys]
        assert [ours(k) for k in keys] == [DefaultPartitioner()(k, parts, parts) for k in keys]  # from the cache


def test_transactional_id_is_derived_from_the_remote_partition() -> None:
    conn = KafkaConnection(bootstrap_servers="127.0.0.1:1")  # nothing is contacted
    settings = BridgeSettings(remote_kafka=conn, local_kafka=conn, remote_topic="product_views", group_id="bridge")
    assert settings.transactional_id(4) == "bridge.product_views.4"
    other = BridgeSettings(remote_kafka=conn, local_kafka=conn, remote_topic="t", group_id="g", transactional_id_prefix="p")
    assert other.transactional_id(0) == "p.t.0"
    # the partition's second producer (pipelined transactions): fenced on take-over too
    assert settings.transactional_id(4, 1) == "bridge.product_views.4.1"
    assert other.transactional_id(0, 0) == "p.t.0"
