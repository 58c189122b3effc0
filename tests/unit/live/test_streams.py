"""The faust app is built as designed: the pinned faust/aiokafka pair, a read_committed worker
consumer (faust 0.11 offers it only with exactly_once), tables windowed by minute."""

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
    # faust's own assignor (co-partitioning, changelog actives for recovery): with 0 standbys
    # faust 0.11.3 would use aiokafka's round-robin assignor and never recover the tables.
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
