"""The running services' ``/metrics`` against the contract (docs/operations.md "Metrics").

Real processes on the local stack, one test each: ``python -m bridge`` copying a remote topic,
``python -m sink`` writing a local topic to MongoDB, ``python -m etl_api`` on its own PostgreSQL
schema (and one real Spark run), ``python -m live`` counting a local topic. Each ``/metrics`` is
parsed with prometheus_client's parser; every family must follow the conventions
(shared.metrics), each service must expose exactly the names documented for it, and every metric
the Grafana dashboard and the alert rules query that is documented for a service must be exposed
by it (the unit test proves each queried metric is documented for one: together, each is exposed
by some service). The values are checked too: the dead letters by hop, the flow counters, the
sink's lag refreshed by the scrape, readiness, and the ETL's freshness read from PostgreSQL at
scrape and its run observations.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from bridge.metrics import DLQ_STAGES as BRIDGE_STAGES
from eventgen.samples import bridged_events as make_events
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient
from sink.metrics import DLQ_STAGES as SINK_STAGES

from shared.kafka import KafkaConnection, create_topics
from shared.metrics import convention_problems
from tests.integration.bridge.helpers import BridgeNames, BridgeProcess, produce_events
from tests.integration.etl.conftest import TEST_DB as ETL_DB
from tests.integration.etl.conftest import TOKEN, EtlService
from tests.integration.etl.helpers import make_events as make_documents
from tests.integration.live.conftest import PARTITIONS as LIVE_PARTITIONS
from tests.integration.live.conftest import LiveProcess, free_port
from tests.integration.live.conftest import make_events as live_events
from tests.integration.live.conftest import produce as live_produce
from tests.integration.sink.helpers import (
    PARTITIONS,
    SinkProcess,
    create_topic,
    delete_topics,
    drop_collection,
    encode,
    produce,
    produce_plain,
    sink_env,
    wait_until,
)
from tests.support.metrics import sample_sum
from tests.unit.deploy.test_metrics_conventions import SYNTHETIC, alert_rules, dashboard_exprs, documented, family, promql_metrics

EVENTS = 400


def queried() -> set[str]:
    """Documented names of every metric the dashboard and the alert rules query."""
    docs = documented()
    names = {n for expr in [*dashboard_exprs(), *(r["expr"] for r in alert_rules())] for n in promql_metrics(expr)} - SYNTHETIC
    return {f for n in names if (f := family(n, docs))}


def check_contract(service: str, families: dict[str, Any]) -> None:
    """Exactly the documented names and labels of ``service``; every queried one of them exposed; ready."""
    docs = documented()
    want = {name for name, row in docs.items() if service in row["services"]}
    assert set(families) == want, (service, set(families) ^ want)
    for name, fam in families.items():
        got_labels = {k for s in fam.samples for k in s.labels} - {"le"}
        assert got_labels <= set(docs[name]["labels"]), (service, name, got_labels)
    assert {q for q in queried() if service in docs[q]["services"]} <= set(families)
    assert value(families, "pipeline_service_ready") == 1.0
    assert value(families, "process_start_time_seconds") > time.time() - 600
    assert value(families, "process_resident_memory_bytes") > 0


async def scrape(url: str) -> tuple[str, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=20) as client:
        res = await client.get(f"{url}/metrics")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    return res.text, exposed(res.text)


def exposed(text: str) -> dict[str, Any]:
    """``{documented-style name: family}``: counters with ``_total``, the rest as parsed."""
    out = {}
    for fam in text_string_to_metric_families(text):
        assert convention_problems(fam.name, fam.type) == [], (fam.name, fam.type, convention_problems(fam.name, fam.type))
        out[f"{fam.name}_total" if fam.type == "counter" else fam.name] = fam
    return out


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    fam = families[name] if name in families else families[re.sub(r"_(count|sum|bucket)$", "", name)]
    samples = [s.value for s in fam.samples if s.labels == labels and s.name == name]
    assert len(samples) == 1, (name, labels, fam.samples)
    return float(samples[0])


@pytest.fixture
async def schema(postgres_dsn: str, unique_name: str) -> AsyncIterator[str]:
    name = unique_name.lower()
    yield name
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.mark.timeout(180)
async def test_bridge_metrics(remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str) -> None:
    names = BridgeNames(unique_name)
    produced = await produce_events(remote_kafka, names.remote_topic, EVENTS, partitions=2, bad_fraction=0.05)
    good, bad = len(produced.good()), len(produced.bad())
    assert bad > 0 and good + bad == EVENTS
    bridge = BridgeProcess(names, label="metrics", extra_env={"BRIDGE_LAG_INTERVAL_S": "0.5"}).start()
    try:
        await bridge.wait_ready()

        async def copied() -> bool:
            return value(exposed((await bridge.get("/metrics")).text), "bridge_consumed_records_total") == EVENTS

        await wait_until("the bridge to copy every event", copied, 120)
        await wait_until("the lag gauges", lambda: bridge_lags_zero(bridge), 30)
        text, b = await scrape(bridge.url)
        check_contract("bridge", b)
        # in = out + dead-lettered; one dead-letter counter, every stage present from the start
        assert value(b, "bridge_produced_records_total") == good
        assert sample_sum(text, "pipeline_dead_lettered_records_total", hop="bridge") == bad
        assert {x.labels["stage"] for x in b["pipeline_dead_lettered_records_total"].samples} == set(BRIDGE_STAGES)
        assert {x.labels["hop"] for x in b["pipeline_dead_lettered_records_total"].samples} == {"bridge"}
        assert {x.labels["partition"]: x.value for x in b["bridge_lag_records"].samples} == {"0": 0.0, "1": 0.0}
    finally:
        with contextlib.suppress(Exception):
            bridge.kill()
        with contextlib.suppress(Exception):
            await delete_topics(local_kafka, [names.local_topic, names.dlq_topic, names.offsets_topic])
        with contextlib.suppress(Exception):
            await delete_topics(remote_kafka, [names.remote_topic])


async def bridge_lags_zero(bridge: BridgeProcess) -> bool:
    b = exposed((await bridge.get("/metrics")).text)
    return {x.labels["partition"]: x.value for x in b["bridge_lag_records"].samples} == {"0": 0.0, "1": 0.0}


@pytest.mark.timeout(180)
async def test_sink_metrics(local_kafka: KafkaConnection, mongodb_uri: str, unique_name: str, tmp_path: Path) -> None:
    topic, dlq = unique_name, f"{unique_name}.dlq"
    await create_topic(local_kafka, topic)
    events = make_events(300, seed=3)
    await produce(local_kafka, topic, encode(events))
    await produce_plain(local_kafka, topic, [b"not json {", b"[1, 2, 3]"])
    sink = SinkProcess("sink-metrics", sink_env(topic, f"{unique_name}.sink", unique_name, dlq), tmp_path).start()
    try:
        await wait_until("the sink ready", lambda: sink.get("/ready")[0] == 200, 90)
        await wait_until("every event written", lambda: sink.metrics().get("sink_written_documents_total") == len(events), 120)
        await wait_until("the bad records dead-lettered", lambda: sink.metrics().get("sink_consumed_records_total") == len(events) + 2, 60)
        # sink_lag_records is refreshed by the scrape itself (nobody calls /lag here): it reaches 0
        # once the commits pass the transaction markers
        lag_zero = {str(p): 0.0 for p in range(PARTITIONS)}
        await wait_until("the lag gauges at 0", lambda: sink_lags(sink) == lag_zero, 60)
        _, s = await scrape(f"http://127.0.0.1:{sink.port}")
        check_contract("sink", s)
        assert value(s, "sink_duplicate_documents_total") == 0
        dead = {x.labels["stage"]: x.value for x in s["pipeline_dead_lettered_records_total"].samples}
        assert dead == {**dict.fromkeys(SINK_STAGES, 0.0), "sink.decode": 1.0, "sink.validate": 1.0}
        assert {x.labels["hop"] for x in s["pipeline_dead_lettered_records_total"].samples} == {"sink"}
        assert {x.labels["partition"]: x.value for x in s["sink_lag_records"].samples} == lag_zero
    finally:
        with contextlib.suppress(Exception):
            sink.kill()
        with contextlib.suppress(Exception):
            await drop_collection(mongodb_uri, unique_name)
        with contextlib.suppress(Exception):
            await delete_topics(local_kafka, [topic, dlq])


def sink_lags(sink: SinkProcess) -> dict[str, float]:
    _, body = sink.get("/metrics")
    return {x.labels["partition"]: x.value for x in exposed(body.decode())["sink_lag_records"].samples}


def etl_service(schema: str, tmp_path: Path, postgres_dsn: str) -> EtlService:
    env = {
        "ETL_PG_SCHEMA": schema,
        "MONGODB_DATABASE": ETL_DB,
        "MONGODB_COLLECTION": schema,
        "ETL_API_TOKEN": TOKEN,
        "ETL_REAPER_INTERVAL_SECONDS": "1",
        "ETL_RUN_LOG_DIR": str(tmp_path / "runs"),
        "ETL_SETTLE_SECONDS": "1",
        "ETL_SPARK_MASTER": "local[2]",
        "ETL_SPARK_SHUFFLE_PARTITIONS": "1",
        "ETL_READ_PARTS": "2",
        "ETL_FERRETDB_POSTGRESQL_URL": postgres_dsn.rsplit("/", 1)[0] + "/ferretdb",
    }
    return EtlService(env=env, log_path=tmp_path / "etl-api.log")


@pytest.mark.timeout(120)
async def test_etl_api_metrics(postgres_dsn: str, schema: str, tmp_path: Path) -> None:
    etl = etl_service(schema, tmp_path, postgres_dsn)
    try:
        etl.start()
        _, e = await scrape(etl.url)
        check_contract("etl-api", e)
        # no run yet: no watermark (NaN), no success (0), nothing observed, every label present
        assert math.isnan(value(e, "etl_watermark_age_seconds"))
        assert value(e, "etl_last_success_timestamp_seconds") == 0.0
        counts = {
            (x.labels["mode"], x.labels["outcome"]): x.value for x in e["etl_run_duration_seconds"].samples if x.name.endswith("_count")
        }
        assert counts == {(m, o): 0.0 for m in ("incremental", "full", "range") for o in ("succeeded", "failed")}

        # freshness comes from PostgreSQL at scrape time
        finished = datetime(2026, 5, 1, 12, 0, 7, tzinfo=UTC)
        conn = await asyncpg.connect(postgres_dsn, server_settings={"search_path": schema})
        try:
            run_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO etl_runs (run_id, mode, status, requested_at, started_at, finished_at) "
                "VALUES ($1, 'incremental', 'succeeded', $2, $2, $3)",
                run_id,
                finished - timedelta(minutes=2),
                finished,
            )
            db_now = await conn.fetchval("SELECT now()")
            await conn.execute(
                "INSERT INTO etl_watermark (name, ingested_high, run_id) VALUES ('events', $1, $2)", db_now - timedelta(minutes=90), run_id
            )
        finally:
            await conn.close()
        _, e = await scrape(etl.url)
        assert value(e, "etl_last_success_timestamp_seconds") == finished.timestamp()
        age = value(e, "etl_watermark_age_seconds")
        assert 90 * 60 <= age < 90 * 60 + 30, age

        # a finished run is observed: a run whose job process is gone, reaped by the API
        dead = await asyncio.create_subprocess_exec("true")
        await dead.wait()
        conn = await asyncpg.connect(postgres_dsn, server_settings={"search_path": schema})
        try:
            await conn.execute(
                "INSERT INTO etl_runs (run_id, mode, status, requested_at, started_at, host, pid) "
                "VALUES ($1, 'full', 'running', now() - interval '45 seconds', now() - interval '40 seconds', $2, $3)",
                uuid.uuid4(),
                socket.gethostname(),
                dead.pid,
            )
        finally:
            await conn.close()

        async def reaped() -> dict[str, Any]:
            # the counter moves when the run is marked failed, the histogram once the API has read
            # the run's row back (etl_api.metrics.on_finished): wait for both, then check exactly
            families = (await scrape(etl.url))[1]
            observed = value(families, "etl_run_duration_seconds_count", mode="full", outcome="failed")
            return families if value(families, "etl_runs_finished_total", status="failed") == 1 and observed > 0 else {}

        e = await wait_until("the reaper to fail the run", reaped, 30)
        failed_full = {x.name: x.value for x in e["etl_run_duration_seconds"].samples if x.labels == {"mode": "full", "outcome": "failed"}}
        assert failed_full["etl_run_duration_seconds_count"] == 1
        assert 40 <= failed_full["etl_run_duration_seconds_sum"] < 70
        counts = {
            (x.labels["mode"], x.labels["outcome"]): x.value for x in e["etl_run_duration_seconds"].samples if x.name.endswith("_count")
        }
        assert counts == {**dict.fromkeys(counts, 0.0), ("full", "failed"): 1.0}
        assert value(e, "etl_last_success_timestamp_seconds") == finished.timestamp()  # a failure is no success
    finally:
        etl.stop()


@pytest.mark.timeout(240)
async def test_etl_api_observes_a_succeeded_run(postgres_dsn: str, mongodb_uri: str, schema: str, tmp_path: Path) -> None:
    """A real incremental run (Spark): its duration and events read are observed once it
    succeeded, and the freshness gauges move to it."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
    collection = client[ETL_DB][schema]
    docs = make_documents(random.Random(3), 120, [date(2020, 6, 1), date(2020, 6, 2)], datetime.now(UTC))
    collection.insert_many([d.doc for d in docs], ordered=False)
    views = sum(1 for d in docs if d.doc["collection"] == "view_product_detail")
    etl = etl_service(schema, tmp_path, postgres_dsn)
    try:
        etl.start()
        await asyncio.sleep(1.2)  # past the 1 s settle margin
        async with etl.client() as api:
            res = await api.post("/runs", json={"mode": "incremental"})
            assert res.status_code == 202, res.text
            run_id = res.json()["run_id"]

            async def finished() -> dict[str, Any]:
                run: dict[str, Any] = (await api.get(f"/runs/{run_id}")).json()
                return run if run["status"] in ("succeeded", "failed") else {}

            run = await wait_until("the run to finish", finished, 180, interval=0.5)
        assert run["status"] == "succeeded", run["error"]
        assert run["reconciliation"]["events_read"] == views

        async def observed() -> dict[str, Any]:
            families = (await scrape(etl.url))[1]
            return families if value(families, "etl_run_events_read_count", mode="incremental") == 1 else {}

        e = await wait_until("the run observed", observed, 30)
        assert value(e, "etl_run_events_read_sum", mode="incremental") == views
        duration = datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])
        labels = {"mode": "incremental", "outcome": "succeeded"}
        assert value(e, "etl_run_duration_seconds_count", **labels) == 1
        assert value(e, "etl_run_duration_seconds_sum", **labels) == pytest.approx(duration.total_seconds(), abs=1e-3)
        assert value(e, "etl_runs_finished_total", status="succeeded") == 1
        assert value(e, "etl_last_success_timestamp_seconds") == pytest.approx(
            datetime.fromisoformat(run["finished_at"]).timestamp(), abs=1e-3
        )
        assert 0 <= value(e, "etl_watermark_age_seconds") < 120
    finally:
        etl.stop()
        collection.drop()
        client.close()


@pytest.mark.timeout(180)
async def test_live_metrics(local_kafka: KafkaConnection, unique_name: str, tmp_path: Path) -> None:
    await create_topics(local_kafka, [unique_name], partitions=LIVE_PARTITIONS, replication_factor=3)
    events = live_events(60, start=time.time() - 120, span_s=60, seed=4)
    assert await live_produce(local_kafka, unique_name, events) == len(events)
    env = dict(os.environ) | {
        "LIVE_LOCAL_TOPIC": unique_name,
        "LIVE_APP_ID": unique_name,
        "LIVE_HTTP_PORT": str(free_port()),
        "LIVE_HTTP_HOST": "127.0.0.1",
        "LIVE_DATA_DIR": str(tmp_path / "faust"),
        "LIVE_PG_SCHEMA": unique_name,
        "PYTHONUNBUFFERED": "1",
    }
    live = LiveProcess(env, tmp_path / "live.log").start()
    try:
        await live.wait_ready()
        await live.wait_caught_up()
        _, f = await scrape(live.url)
        check_contract("live", f)
        assert value(f, "live_events_total") == len(events)
        # the group's lag per partition, refreshed at the scrape: caught up, so 0 everywhere
        lags = {sample.labels["partition"]: sample.value for sample in f["live_lag_records"].samples}
        assert lags == {str(p): 0.0 for p in range(LIVE_PARTITIONS)}, lags
    finally:
        live.kill()
        with contextlib.suppress(Exception):
            await delete_topics(local_kafka, [unique_name])
