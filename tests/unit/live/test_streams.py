"""The faust app is built as designed: the pinned faust/aiokafka pair, a read_committed worker
consumer (faust offers it only with exactly_once), tables windowed by minute, fetched batches
counted in one go and acked only after their changelog write (live.consumer)."""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
import pytest
from faust.types import TP
from live.counting import View
from live.settings import LiveSettings
from live.streams import LiveCounters, _faust_broker
from pydantic import SecretStr

from shared.errors import ConfigError
from shared.kafka import KafkaConnection


def settings(**kw: object) -> LiveSettings:
    conn = KafkaConnection(
        bootstrap_servers="127.0.0.1:1,127.0.0.2:2", security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password=SecretStr("p")
    )
    return LiveSettings(local_kafka=conn, postgres_dsn=None, **kw)


def test_the_pinned_pair() -> None:
    assert (faust.__version__, aiokafka.__version__) == ("0.15.3", "0.12.0")


def test_broker_urls_and_sasl_credentials() -> None:
    url, credentials = _faust_broker(settings())
    assert url == "kafka://127.0.0.1:1;kafka://127.0.0.2:2"
    assert credentials is not None and (credentials.username, credentials.password) == ("u", "p")
    with pytest.raises(ConfigError):
        _faust_broker(settings().model_copy(update={"local_kafka": KafkaConnection(bootstrap_servers="h:1", security_protocol="SSL")}))


async def test_worker_consumer_reads_committed_with_at_least_once() -> None:
    counters = LiveCounters(settings(app_id="unit-live"), partitions=6)
    app = counters.app
    assert app.conf.processing_guarantee.value == "at_least_once"
    thread = app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._isolation_level == "read_committed"
    assert consumer._group_id == "unit-live" and consumer._enable_auto_commit is False
    # faust's own assignor (co-partitioning, changelog actives for recovery), one standby.
    assert app.conf.table_standby_replicas == 1 and thread._assignor is app.assignor


def test_tables_are_one_minute_tumbling_windows_with_retention() -> None:
    counters = LiveCounters(settings(window_s=60, retention_s=7200), partitions=6)
    for table in (counters.by_product, counters.by_store):
        assert table.window.size == 60 and table.window.expires == 7200
        assert table.window.current(120.5) == (120, 179.9)
        assert table.partitions == 6


def _consumer_and_tps() -> tuple[Any, TP, TP]:
    counters = LiveCounters(settings(app_id="unit-live", local_topic="src"), partitions=6)
    consumer = counters.app.consumer
    return consumer, TP("src", 0), TP("unit-live-views_per_product-changelog", 0)


async def test_during_a_rebalance_source_partitions_resume_only_after_the_seek(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, source, changelog = _consumer_and_tps()
    app = consumer.app
    assigned = {source, changelog}
    monkeypatch.setattr(consumer, "assignment", lambda: assigned)
    seeks: list[set[TP]] = []

    async def seek_to_committed() -> dict[TP, int]:
        seeks.append(set(consumer._get_active_partitions()))  # what the fetcher may deliver while seeking
        return {source: 10}

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    consumer.pause_partitions(assigned)
    app.rebalancing = True
    consumer.resume_partitions(assigned)
    assert consumer._get_active_partitions() == {changelog}  # changelogs resume at once (recovery reads them)
    await consumer.perform_seek()
    assert seeks == [{changelog}]  # the source partition was not fetchable during the seek
    assert consumer._get_active_partitions() == assigned and not consumer._paused_partitions
    assert consumer._committed_offset[source] == 10 and consumer._read_offset[source] == 10

    # Outside a rebalance, resuming is immediate.
    app.rebalancing = False
    consumer.pause_partitions({source})
    consumer.resume_partitions({source})
    assert consumer._get_active_partitions() == assigned


def test_next_commit_offset_ignores_duplicate_and_already_committed_acks() -> None:
    consumer, source, _ = _consumer_and_tps()
    consumer._committed_offset[source] = 100
    # 98 and 99: acks of a copy delivered before the last commit landed; 101, 102 acked twice.
    consumer._acked[source].extend([98, 100, 101, 101, 99, 102, 102, 103])
    assert consumer._new_offset(source) == 104  # faust alone: 102 (a duplicate ends its run of consecutive offsets)
    assert list(consumer._acked[source]) == []


async def test_count_batches_skip_counted_offsets_and_register_each_window_end_once_for_expiry() -> None:
    counters = LiveCounters(settings(app_id="unit-live", window_s=60, retention_s=7200), partitions=6)
    a, b = View(130.0, "p1", "7"), View(150.0, "p2", "7")
    records = counters.count([(a, 0, 10), (b, 0, 11), (a, 3, 4)])
    products = {(key, value[0]) for table, _, key, value in records if table is counters.by_product}
    assert products == {(("0/p1", (120, 179.9)), 1), (("0/p2", (120, 179.9)), 1), (("3/p1", (120, 179.9)), 1)}
    stores = [(p, key, value) for table, p, key, value in records if table is counters.by_store]
    assert sorted(stores) == [(0, ("0/7", (120, 179.9)), [2, 11]), (3, ("3/7", (120, 179.9)), [1, 4])]
    # A second batch: offset 11 again (redelivered) is skipped, offset 12 counted.
    records = counters.count([(b, 0, 11), (a, 0, 12)])
    assert {(key, tuple(value)) for table, _, key, value in records if table is counters.by_product} == {(("0/p1", (120, 179.9)), (2, 12))}
    assert (counters.views_counted, counters.views_redelivered) == (4, 1)
    # Expiry bookkeeping: one heap entry per (partition, window end), every key registered under it.
    table = counters.by_product
    assert {p: list(h) for p, h in table._partition_timestamps.items() if h} == {0: [179.9], 3: [179.9]}
    assert table._partition_timestamp_keys[(0, 179.9)] == {("0/p1", (120, 179.9)), ("0/p2", (120, 179.9))}


def _record(topic: str, partition: int, offset: int, value: bytes) -> Any:
    from aiokafka.structs import ConsumerRecord

    return ConsumerRecord(topic, partition, offset, 0, 0, b"k", value, None, 1, len(value), [])


def _view(product: str, store: str = "7") -> bytes:
    return (
        b'{"collection":"view_product_detail","product_id":"' + product.encode() + b'","store_id":"' + store.encode() + b'",'
        b'"event_time":"1970-01-01T00:02:10Z"}'
    )


async def test_a_fetched_batch_is_counted_in_one_go_and_acked_only_after_its_changelog_write(monkeypatch: pytest.MonkeyPatch) -> None:
    counters = LiveCounters(settings(app_id="unit-live", local_topic="src", window_s=60), partitions=6)
    consumer = counters.app.consumer
    assert (consumer.batch_topic, consumer.batch_handler) == ("src", counters.count_records)
    tp0, tp1, changelog = TP("src", 0), TP("src", 1), TP("unit-live-views_per_product-changelog", 0)
    monkeypatch.setattr(type(consumer), "flow_active", property(lambda self: True))
    consumer._read_offset[tp0] = 4  # offset 4 read and counted before a restart: delivered again, skipped
    counters.by_product.data[("0/p1", (120, 179.9))] = [1, 4]
    counters.by_store.data[("0/7", (120, 179.9))] = [1, 4]
    written: list[list[tuple[str, Any, list[int]]]] = []
    acked_during_write: list[list[int]] = []

    async def write_changelog(records: list[tuple[Any, int, Any, list[int]]]) -> None:
        acked_during_write.append(list(consumer._acked[tp0]))
        written.append(sorted((table.name, key, value) for table, _, key, value in records))

    monkeypatch.setattr(counters, "write_changelog", write_changelog)
    delivered: list[tuple[str, int]] = []

    async def callback(message: Any) -> None:
        delivered.append((message.topic, message.offset))

    consumer.callback = callback
    other = b'{"collection":"add_to_cart_action","product_id":"p9","event_time":"1970-01-01T00:02:10Z"}'
    # 5 and 8 on partition 0 (6, 7: a transaction's marker and an aborted record, never delivered)
    records = {
        tp0: [_record("src", 0, 4, _view("p1")), _record("src", 0, 5, _view("p1")), _record("src", 0, 8, other)],
        tp1: [_record("src", 1, 0, _view("p1")), _record("src", 1, 1, _view("p2", "9"))],
        changelog: [_record(changelog.topic, 0, 0, b"[1, 0]")],
    }
    await consumer._deliver(records, {tp0, tp1, changelog})
    # One write for the whole batch: one record per (key, window); 4 was counted already, 8 is no view.
    window = (120, 179.9)
    assert written == [
        sorted(
            [
                ("views_per_product", ("0/p1", window), [2, 5]),
                ("views_per_product", ("1/p1", window), [1, 0]),
                ("views_per_product", ("1/p2", window), [1, 1]),
                ("views_per_store", ("0/7", window), [2, 5]),
                ("views_per_store", ("1/7", window), [1, 0]),
                ("views_per_store", ("1/9", window), [1, 1]),
            ]
        )
    ]
    assert acked_during_write == [[]]  # nothing acked while the changelog write was pending
    assert (counters.events_seen, counters.views_counted, counters.views_redelivered) == (5, 3, 1)
    assert (list(consumer._acked[tp0]), list(consumer._acked[tp1])) == ([4, 5, 8], [0, 1])
    # the skipped offsets count as done (faust's _add_gap(tp, 6, 8) stores the interval [6, 9))
    assert [(iv.begin, iv.end) for iv in sorted(consumer._gap[tp0])] == [(6, 9)]
    assert (consumer._read_offset[tp0], consumer._read_offset[tp1]) == (8, 1)
    assert delivered == [(changelog.topic, 0)]  # any other topic: faust's per-record path
    assert consumer._new_offset(tp0) == 9 and consumer._new_offset(tp1) == 2
    # faust's stall detector knows both partitions were processed (else: "Stream has not started
    # processing" at ERROR every few seconds); the changelog's record went through faust's own path
    assert set(counters.app.monitor.stream_inbound_time) >= {tp0, tp1}


async def test_a_batch_straddling_a_rebalance_is_not_acked(monkeypatch: pytest.MonkeyPatch) -> None:
    counters = LiveCounters(settings(app_id="unit-live", local_topic="src", window_s=60), partitions=6)
    consumer, tp0 = counters.app.consumer, TP("src", 0)
    monkeypatch.setattr(type(consumer), "flow_active", property(lambda self: True))

    async def write_changelog(records: list[tuple[Any, int, Any, list[int]]]) -> None:
        counters.app.consumer_generation_id += 1  # a rebalance while the write was pending

    monkeypatch.setattr(counters, "write_changelog", write_changelog)
    await consumer._deliver({tp0: [_record("src", 0, 0, _view("p1"))]}, {tp0})
    assert counters.views_counted == 1 and list(consumer._acked[tp0]) == [] and consumer._read_offset[tp0] is None
