"""End to end on the real stack, driven by a real Airflow run of pipeline_v1.

generator → remote Kafka → bridge → local Kafka → sink → MongoDB → the ETL's continuous worker
(micro-batches, Spark) → star schema, while bridge and sink are kill -9-ed and restarted and one
local broker is down for a while; then the DAG, which finds continuous mode on, checks the worker
and reconciles. At the end: MongoDB holds every valid event exactly once, the DLQ every bad one
exactly once, and sum(view_count) equals the number of valid product-view events counted here,
in plain Python, from the generator's own records. The other tests drive one-off runs
(POST /runs) through the DAG.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import eventgen
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from eventgen.catalog import BOT_AGENTS
from pymongo import AsyncMongoClient

from infra.demo import airflow_env, run_dag, state_changes, task_states
from shared.dlq import HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_STAGE, read_dead_letter_headers
from shared.event import DEFAULT_PRODUCT_VIEW_TYPES, SEED_COLLECTION
from shared.kafka import KafkaConnection, create_topics
from tests.integration.etl.conftest import workers_of
from tests.support.exclusive import async_exclusive_section
from tests.support.kafka_whole import start_broker, stop_broker
from tests.support.processes import ServiceProcess, free_port

pytestmark = pytest.mark.timeout(900)

DATABASE = "kafka_data_db"
PARTITIONS = 3


@dataclass
class Pipeline:
    """One isolated pipeline: its own topics, groups, collection, schema, ports and processes."""

    uid: str
    work: Path
    token: str
    ports: dict[str, int] = field(default_factory=lambda: {"bridge": free_port(), "sink": free_port(), "etl-api": free_port()})

    @property
    def remote_topic(self) -> str:
        return f"e2e_{self.uid}_product_views"

    @property
    def local_topic(self) -> str:
        return f"e2e_{self.uid}_processed"

    @property
    def dlq_topic(self) -> str:
        return f"e2e_{self.uid}_processed.dlq"

    @property
    def collection(self) -> str:
        return f"e2e_{self.uid}"

    @property
    def schema(self) -> str:
        return f"e2e_{self.uid}"

    def env(self, name: str) -> dict[str, str]:
        common = {"MONGODB_DATABASE": DATABASE, "MONGODB_COLLECTION": self.collection}
        if name == "bridge":
            return {
                "BRIDGE_REMOTE_TOPIC": self.remote_topic,
                "BRIDGE_LOCAL_TOPIC": self.local_topic,
                "BRIDGE_DLQ_TOPIC": self.dlq_topic,
                "BRIDGE_OFFSETS_TOPIC": f"{self.local_topic}.bridge-offsets",
                "BRIDGE_GROUP_ID": f"e2e_{self.uid}_bridge",
                "BRIDGE_LOCAL_PARTITIONS": str(PARTITIONS),
                "BRIDGE_HTTP_HOST": "127.0.0.1",
                "BRIDGE_HTTP_PORT": str(self.ports["bridge"]),
            }
        if name == "sink":
            return {
                **common,
                "SINK_TOPIC": self.local_topic,
                "SINK_DLQ_TOPIC": self.dlq_topic,
                "SINK_GROUP_ID": f"e2e_{self.uid}_sink",
                "SINK_HTTP_HOST": "127.0.0.1",
                "SINK_HTTP_PORT": str(self.ports["sink"]),
            }
        return {
            **common,
            "ETL_PG_SCHEMA": self.schema,
            "ETL_API_TOKEN": self.token,
            "ETL_HOST": "127.0.0.1",
            "ETL_PORT": str(self.ports["etl-api"]),
            "ETL_HTTP_PORT": str(self.ports["etl-api"]),
            "ETL_SETTLE_SECONDS": "2",
            "ETL_RUN_LOG_DIR": str(self.work / "etl-runs"),
            "ETL_SPARK_SHUFFLE_PARTITIONS": "4",
            "ETL_BRIDGE_OFFSETS_TOPIC": f"{self.local_topic}.bridge-offsets",
        }

    def process(self, name: str, label: str | None = None) -> ServiceProcess:
        module = {"bridge": "bridge", "sink": "sink", "etl-api": "etl_api"}[name]
        return ServiceProcess(label or name, module, self.env(name), port=self.ports[name], log_dir=self.work / "logs")


async def read_committed(conn: KafkaConnection, topic: str) -> list:
    consumer = AIOKafkaConsumer(**conn.client_kwargs(), enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list = []
        deadline = time.monotonic() + 60
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]] and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(*parts, timeout_ms=500)).values():
                out.extend(msgs)
        return out
    finally:
        await consumer.stop()


async def wait_lag_zero(proc: ServiceProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        status, body = proc.get("/lag")
        last = body
        if status == 200 and isinstance(body, dict) and body.get("total_lag") == 0 and body.get("partitions"):
            return
        await asyncio.sleep(1)
    raise AssertionError(f"{proc.label} did not catch up in {timeout}s: {last}\n{proc.tail()}")


def expected_views(records: list[eventgen.GeneratedRecord]) -> int:
    """Valid product views the star schema must count: by the configured collections, bots excluded."""
    n = 0
    for r in records:
        if r.event is None:
            continue
        collection = r.event.get("collection", SEED_COLLECTION)
        if collection in DEFAULT_PRODUCT_VIEW_TYPES and r.event.get("user_agent") not in BOT_AGENTS:
            n += 1
    return n


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    yield Pipeline(uid=uuid.uuid4().hex[:8], work=tmp_path, token=os.environ["ETL_API_TOKEN"])


async def test_end_to_end_exactly_once_under_faults(
    pipeline: Pipeline, remote_kafka: KafkaConnection, local_kafka: KafkaConnection
) -> None:
    rng = random.Random(int(pipeline.uid, 16))
    count, rate = 4000, 200.0  # ~20 s of traffic for the faults to land in
    records = list(eventgen.generate(count, seed=rng.randrange(1 << 30), bad_fraction=0.03))
    await create_topics(remote_kafka, [pipeline.remote_topic], partitions=PARTITIONS, replication_factor=1)

    etl = pipeline.process("etl-api")
    etl.env.update({"ETL_CONTINUOUS": "true", "ETL_CONTINUOUS_INTERVAL_S": "2"})
    etl.start()
    bridge = pipeline.process("bridge").start()
    sink = pipeline.process("sink").start()
    procs = [etl, bridge, sink]
    try:
        for p in procs:
            await asyncio.to_thread(p.wait_ready, 120)
        # The stream and its faults run alone (an exclusive section: the broker stop is felt by every
        # test) until the bridge caught up through the restarted broker and the cluster is whole again
        # (every broker registered, no partition under-replicated); the services' start before,
        # and the sink's catch-up, the ETL, the DAG run and the checks after, beside other tests.
        async with async_exclusive_section():
            broker_down = False
            try:
                producing = asyncio.create_task(
                    eventgen.produce(records, remote_kafka, pipeline.remote_topic, rate=rate, progress=False, partitions=PARTITIONS)
                )

                # Faults at random moments of the stream: kill -9 and restart bridge and sink, one broker down.
                duration = count / rate
                moments = sorted(rng.uniform(0.1, 0.9) * duration for _ in range(4))
                started = time.monotonic()
                faults = ["kill bridge", "stop broker", "kill sink", "kill bridge"]
                for moment, fault in zip(moments, faults, strict=True):
                    await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
                    print(f"t={time.monotonic() - started:5.1f}s {fault}", flush=True)
                    if fault == "stop broker":
                        await stop_broker("kafka-local-2")
                        broker_down = True
                        continue
                    victim = bridge if fault == "kill bridge" else sink
                    victim.kill()
                    await asyncio.sleep(rng.uniform(0.5, 2.0))
                    victim.start()
                manifest = await asyncio.wait_for(producing, timeout=300)
                await asyncio.sleep(5)  # let the outage overlap the tail of the stream too
                # back and whole: other tests create topics of replication factor 3 as soon as the section ends
                await start_broker("kafka-local-2", local_kafka)
                broker_down = False
                await wait_lag_zero(bridge, 240)
            finally:
                if broker_down:  # back before the other tests run again
                    await start_broker("kafka-local-2", local_kafka)

        await wait_lag_zero(sink, 240)
        # the continuous worker counts everything the sink stored, without any run being asked for
        views = expected_views(records)
        counted = await wait_counted(pipeline.schema, views, 180)
        assert counted == views, etl.tail()

        ok = await asyncio.to_thread(
            run_dag, airflow_env(pipeline.token, pipeline.ports, pipeline.work / "airflow"), pipeline.work / "dag.log", echo=True
        )
        assert ok, (pipeline.work / "dag.log").read_text()[-5000:] + "\n" + etl.tail()

        # 1. MongoDB: every valid event exactly once, nothing else.
        valid_ids = manifest.valid_event_ids()
        assert len(valid_ids) == len(set(valid_ids)) == sum(1 for r in records if r.event is not None)
        client: AsyncMongoClient = AsyncMongoClient(os.environ["MONGODB_URI"])
        try:
            stored = [d["_id"] for d in await client[DATABASE][pipeline.collection].find({}, {"_id": 1}).to_list()]
        finally:
            await client.close()
        assert len(stored) == len(set(stored))
        assert set(stored) == set(valid_ids)

        # 2. The local topic (read_committed): every valid event exactly once — the bridge's own proof.
        local = await read_committed(local_kafka, pipeline.local_topic)
        import orjson

        local_ids = Counter(orjson.loads(m.value)["event_id"] for m in local)
        assert set(local_ids) == set(valid_ids)
        assert [i for i, n in local_ids.items() if n > 1] == []

        # 3. The DLQ: every bad record exactly once, with where it came from.
        dead = await read_committed(local_kafka, pipeline.dlq_topic)
        headers = [read_dead_letter_headers(m.headers) for m in dead]
        coords = Counter(
            (int(h[HEADER_SOURCE_PARTITION]), int(h[HEADER_SOURCE_OFFSET])) for h in headers if h[HEADER_STAGE].startswith("bridge")
        )
        assert set(coords) == set(manifest.bad_coordinates())
        assert max(coords.values()) == 1

        # 4. The star schema: sum(view_count) = valid product views, counted independently here.
        conn = await asyncpg.connect(os.environ["POSTGRES_DSN"])
        try:
            total = await conn.fetchval(f"SELECT coalesce(sum(view_count), 0) FROM {pipeline.schema}.fact_product_views")
        finally:
            await conn.close()
        assert total == expected_views(records)

        # 5. GET /reconciliation/kafka: per remote partition, the bridge's, the sink's and
        # MongoDB's counts, after the kills, each exactly what the generator produced there.
        status, body = etl.get("/reconciliation/kafka", timeout=60)
        assert status == 200, body
        valid, bad = Counter[int](), Counter[int]()
        for r in manifest.records:
            (valid if r.event_id is not None else bad)[r.partition] += 1
        got = {p["source_partition"]: p for p in body["partitions"]}
        assert set(got) == set(range(PARTITIONS))
        for partition, report in got.items():
            copied = valid[partition]
            assert report == {
                "source_topic": pipeline.remote_topic,
                "source_partition": partition,
                "status": "ok",
                "bridge": {"copied": copied, "dead_lettered": bad[partition], "complete": True},
                "sink": {"consumed": copied, "stored": copied, "duplicates": 0, "dead_lettered": 0},
                "documents": copied,
                "in_flight": 0,
            }, report
        assert body["ok"] is True and body["disagreeing_partitions"] == [] and body["sink_ledger_complete"] is True
    finally:
        for p in procs:
            p.stop_quietly()
        # The continuous worker runs in its own session, so it outlives its API by design (an API
        # restart must not stop it); left running, it took a Spark JVM's CPU for the rest of the suite.
        for pid in workers_of(pipeline.schema):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def wait_counted(schema: str, views: int, timeout: float) -> int:
    """sum(view_count) once it reaches ``views`` (or what it is after ``timeout``)."""
    conn = await asyncpg.connect(os.environ["POSTGRES_DSN"])
    try:
        deadline, total = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            try:
                total = await conn.fetchval(f"SELECT coalesce(sum(view_count), 0) FROM {schema}.fact_product_views")
            except asyncpg.UndefinedTableError:
                total = 0
            if total >= views:
                return int(total)
            await asyncio.sleep(1)
        return int(total)
    finally:
        await conn.close()


async def start_all(
    pipeline: Pipeline, *, etl_env: dict[str, str] | None = None, sink_env: dict[str, str] | None = None
) -> list[ServiceProcess]:
    etl = pipeline.process("etl-api")
    etl.env.update(etl_env or {})
    sink = pipeline.process("sink")
    sink.env.update(sink_env or {})
    procs = [etl.start(), pipeline.process("bridge").start(), sink.start()]
    for p in procs:
        await asyncio.to_thread(p.wait_ready, 120)
    return procs


async def test_dag_fails_on_the_etl_task_when_the_run_fails(pipeline: Pipeline, remote_kafka: KafkaConnection) -> None:
    await create_topics(remote_kafka, [pipeline.remote_topic], partitions=PARTITIONS, replication_factor=1)
    # A Spark driver that cannot start: the run is accepted, then fails in its own process.
    etl, bridge, sink = await start_all(pipeline, etl_env={"ETL_SPARK_DRIVER_MEMORY": "1k"})
    try:
        log = pipeline.work / "dag.log"
        ok = await asyncio.to_thread(run_dag, airflow_env(pipeline.token, pipeline.ports, pipeline.work / "airflow"), log, echo=False)
        text = log.read_text()
        assert not ok
        # Airflow 3's dags test logs task states as "new_state=…" (2.10: "Marking task as …"):
        # task_states reads both.
        states = task_states(text)
        assert states.get("start_etl_run") == "success", states
        assert states.get("wait_etl_run") == "failed", (states, text[-4000:])
        assert states.get("reconcile") in (None, "upstream_failed"), states  # never ran
        status, runs = etl.get("/runs")
        assert status == 200 and len(runs) == 1
        assert runs[0]["status"] == "failed" and runs[0]["error"], runs[0]
        assert f"ETL run {runs[0]['run_id']} failed" in text
        # The DAG's on_failure_callback names the task, the ETL run and its error.
        rid = runs[0]["run_id"]
        assert f"pipeline_v1 task wait_etl_run failed (try 1): ETL run {rid}, error: ETL run {rid} failed" in text
    finally:
        for p in (etl, bridge, sink):
            p.stop_quietly()


async def test_sink_caught_up_sensor_waits_while_the_sink_lags(pipeline: Pipeline, remote_kafka: KafkaConnection) -> None:
    await create_topics(remote_kafka, [pipeline.remote_topic], partitions=PARTITIONS, replication_factor=1)
    # The sink holds its batch until it has 301 events (or 15 min): ready, but lagging, by
    # configuration, for as long as Airflow takes to start (slow on a loaded machine) and the
    # sensor to poke twice; then one more event fills the batch. (A fixed 60 s hold could end
    # before Airflow's first poke, and usually waited out several pokes more than needed.)
    hold = {"SINK_MAX_BATCH_EVENTS": "301", "SINK_MAX_BATCH_WAIT_MS": "900000"}
    # The batch is stamped `ingested_at` when it is written, i.e. just before the DAG starts the
    # run; with no settle margin the run's window (ingested_at <= its start) includes it: the
    # sensor already proved the batch durable.
    etl, bridge, sink = await start_all(pipeline, sink_env=hold, etl_env={"ETL_SETTLE_SECONDS": "0"})
    try:
        *records, last = eventgen.generate(301, seed=int(pipeline.uid, 16) % 1000, bad_fraction=0.0)
        await eventgen.produce(records, remote_kafka, pipeline.remote_topic, progress=False, partitions=PARTITIONS)
        await wait_lag_zero(bridge, 120)
        # The sink sees the topic the bridge created within its metadata refresh; then its lag is
        # 300 events plus the bridge's transaction markers, none of them committed yet.
        for _ in range(60):
            status, body = sink.get("/lag")
            if status == 200:
                break
            await asyncio.sleep(1)
        assert status == 200 and body["total_lag"] >= 300 and {p["committed"] or 0 for p in body["partitions"]} == {0}, body
        log = pipeline.work / "dag.log"
        t0 = time.monotonic()
        dag = asyncio.create_task(
            asyncio.to_thread(run_dag, airflow_env(pipeline.token, pipeline.ports, pipeline.work / "airflow"), log, echo=False)
        )
        deadline = time.monotonic() + 600
        while not dag.done() and time.monotonic() < deadline:
            if log.exists() and log.read_text(errors="replace").count("Poking: lag") >= 2:
                break
            await asyncio.sleep(0.5)
        held = sink.get("/lag")
        records.append(last)  # the 301st event: the batch is full, the sink writes it (and the DAG run can end)
        await eventgen.produce([last], remote_kafka, pipeline.remote_topic, progress=False, partitions=PARTITIONS)
        ok = await dag
        assert held[0] == 200 and {p["committed"] or 0 for p in held[1]["partitions"]} == {0}, ("the sink wrote early", held)
        text = log.read_text()
        assert ok, text[-4000:]
        # The sensor poked and waited (rescheduled) at least once before the sink's batch landed …
        changes = state_changes(text, "sink_caught_up")
        assert changes[-1] == "success" and changes.count("up_for_reschedule") >= 1, changes
        assert text.count("Poking: lag") >= 2, text[-3000:]
        assert time.monotonic() - t0 > 20
        # … and the ETL run started after it, so it counted every event.
        conn = await asyncpg.connect(os.environ["POSTGRES_DSN"])
        try:
            total = await conn.fetchval(f"SELECT coalesce(sum(view_count), 0) FROM {pipeline.schema}.fact_product_views")
        finally:
            await conn.close()
        assert total == expected_views(records)
    finally:
        for p in (etl, bridge, sink):
            p.stop_quietly()
