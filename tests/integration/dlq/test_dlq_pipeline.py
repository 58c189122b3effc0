"""Issue 29's proofs through running processes: one bridge, one sink and one etl-api (its continuous
worker) on topics, a collection and a schema of their own, shared by the module's two tests.

1. ``test_dead_letters_of_every_stage_counted_and_replayed_into_the_star``: a generated stream with
   bad records of every kind, events from two days ahead, a sink-refused NUL, oversized documents,
   a conflicting duplicate and foreign records on the local topic → ``dlq stats`` equals the counts
   computed here; with ``BRIDGE_EVENT_TIME_MAX_AHEAD_S`` widened, ``dlq replay --stage
   bridge.validate --class ImplausibleEventTime`` stores those events once and the ETL counts them;
   the same replay again and ``--dry-run`` change nothing; the sink's size letters, replayed after
   the limit was raised, are stored once and counted.
2. ``test_mutating_fields_nothing_counts_by_never_costs_a_view``: the Hypothesis strategy of
   ``tests/unit/bridge/test_fields_nothing_counts_by.py`` as one large example through the
   processes: every mutated event is stored and counted on the dimension member computed here.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import eventgen
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from eventgen.catalog import BOT_AGENTS
from eventgen.generate import GLAMIRA, SEED, GeneratedRecord
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient

from shared.dlq import HEADER_STAGE, read_dead_letter_headers
from shared.event import DEFAULT_PRODUCT_VIEW_TYPES, SEED_COLLECTION
from shared.kafka import create_topics
from shared.settings import local_kafka_from_env, remote_kafka_from_env
from tests.conftest import REPO
from tests.integration.e2e.test_pipeline import read_committed
from tests.integration.fuzz.test_fuzz_hops import ferretdb_refuses
from tests.support.processes import ServiceProcess, free_port
from tests.unit.bridge.test_fields_nothing_counts_by import mutated
from tests.unit.bridge.test_records_property import expected_id

pytestmark = pytest.mark.timeout(300)

DATABASE = "dlq_pipeline_tests"
PARTITIONS = 3
SINK_SMALL_DOCUMENTS = 8192  # the sink's limit at first: the padded events below are refused (sink.size)
WIDENED_AHEAD_S = 3 * 86_400
# What each bad kind of the generator is refused as, written out here (bridge README, "Refused records").
REFUSAL_OF_KIND = {
    "not_json": ("bridge.decode", "NotJSON"),
    "not_utf8": ("bridge.decode", "NotUTF8"),
    "json_array": ("bridge.validate", "NotAnObject"),
    "missing_product_id": ("bridge.validate", "MissingField"),
    "wrong_types": ("bridge.validate", "WrongType"),
    "oversized": ("bridge.decode", "OversizedRecord"),
    "empty": ("bridge.decode", "EmptyRecord"),
}
Grain = tuple[date, str, str | None, str | None, str | None]


@dataclass
class Running:
    uid: str
    work: Path
    token: str
    ports: dict[str, int]
    procs: dict[str, ServiceProcess]

    @property
    def remote_topic(self) -> str:
        return f"dq_{self.uid}_views"

    @property
    def local_topic(self) -> str:
        return f"dq_{self.uid}_processed"

    @property
    def dlq_topic(self) -> str:
        return f"dq_{self.uid}_processed.dlq"

    @property
    def collection(self) -> str:
        return f"dq_{self.uid}"

    @property
    def schema(self) -> str:
        return f"dq_{self.uid}"

    def env(self, name: str) -> dict[str, str]:
        common = {"MONGODB_DATABASE": DATABASE, "MONGODB_COLLECTION": self.collection}
        if name == "bridge":
            return {
                "BRIDGE_REMOTE_TOPIC": self.remote_topic,
                "BRIDGE_LOCAL_TOPIC": self.local_topic,
                "BRIDGE_DLQ_TOPIC": self.dlq_topic,
                "BRIDGE_OFFSETS_TOPIC": f"{self.local_topic}.bridge-offsets",
                "BRIDGE_GROUP_ID": f"dq_{self.uid}_bridge",
                "BRIDGE_LOCAL_PARTITIONS": str(PARTITIONS),
                "BRIDGE_HTTP_HOST": "127.0.0.1",
                "BRIDGE_HTTP_PORT": str(self.ports["bridge"]),
            }
        if name == "sink":
            return {
                **common,
                "SINK_TOPIC": self.local_topic,
                "SINK_DLQ_TOPIC": self.dlq_topic,
                "SINK_GROUP_ID": f"dq_{self.uid}_sink",
                "SINK_HTTP_HOST": "127.0.0.1",
                "SINK_HTTP_PORT": str(self.ports["sink"]),
                "SINK_MAX_DOCUMENT_BYTES": str(SINK_SMALL_DOCUMENTS),
            }
        return {
            **common,
            "ETL_PG_SCHEMA": self.schema,
            "ETL_API_TOKEN": self.token,
            "ETL_HOST": "127.0.0.1",
            "ETL_PORT": str(self.ports["etl-api"]),
            "ETL_HTTP_PORT": str(self.ports["etl-api"]),
            "ETL_SETTLE_SECONDS": "1",
            "ETL_RUN_LOG_DIR": str(self.work / "etl-runs"),
            "ETL_SPARK_MASTER": "local[2]",
            "ETL_SPARK_SHUFFLE_PARTITIONS": "2",
            "ETL_READ_PARTS": "2",
            "ETL_BRIDGE_OFFSETS_TOPIC": f"{self.local_topic}.bridge-offsets",
            "ETL_FERRETDB_POSTGRESQL_URL": os.environ["POSTGRES_DSN"].rsplit("/", 1)[0] + "/ferretdb",
            "ETL_CONTINUOUS": "true",
            "ETL_CONTINUOUS_INTERVAL_S": "1",
            # The ETL reads the plausible window too (against ingested_at): an operator who widens
            # the bridge's to replay widens the ETL's with it, or the replayed views are skipped
            # as implausible_event_time (docs/operations.md, "Replay").
            "ETL_EVENT_TIME_MAX_AHEAD_S": str(WIDENED_AHEAD_S),
        }

    def process(self, name: str, **extra: str) -> ServiceProcess:
        module = {"bridge": "bridge", "sink": "sink", "etl-api": "etl_api"}[name]
        return ServiceProcess(name, module, {**self.env(name), **extra}, port=self.ports[name], log_dir=self.work / "logs")

    def dlq_env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DLQ_TOPIC": self.dlq_topic,
            "DLQ_LOCAL_TOPIC": self.local_topic,
            "DLQ_TRANSACTIONAL_ID": f"dq_{self.uid}_replay",
            **extra,
        }
        if "BRIDGE_EVENT_TIME_MAX_AHEAD_S" not in extra:  # the bridge's default window, whatever the caller's shell says
            env.pop("BRIDGE_EVENT_TIME_MAX_AHEAD_S", None)
        return env

    def mongo(self) -> list[dict[str, Any]]:
        client: MongoClient[dict[str, Any]] = MongoClient(os.environ["MONGODB_URI"])
        try:
            return list(client[DATABASE][self.collection].find({}))
        finally:
            client.close()


def dlq(env: dict[str, str], *args: str) -> tuple[int, Any]:
    done = subprocess.run([sys.executable, "-m", "shared.dlqtool", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, orjson.loads(done.stdout)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    uid = uuid.uuid4().hex[:8]
    run = Running(uid, tmp_path_factory.mktemp("dlq_pipeline"), os.environ["ETL_API_TOKEN"], {}, {})
    run.ports = {"bridge": free_port(), "sink": free_port(), "etl-api": free_port()}
    asyncio.run(create_topics(remote_kafka_from_env(), [run.remote_topic], partitions=PARTITIONS, replication_factor=1))
    run.procs = {name: run.process(name).start() for name in ("etl-api", "bridge", "sink")}
    try:
        for p in run.procs.values():
            p.wait_ready(120)
        yield run
    finally:
        for p in run.procs.values():
            p.stop_quietly()
        client: MongoClient[dict[str, Any]] = MongoClient(os.environ["MONGODB_URI"])
        client[DATABASE].drop_collection(run.collection)
        client.close()

        async def drop_schema() -> None:
            conn = await asyncpg.connect(os.environ["POSTGRES_DSN"])
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{run.schema}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop_schema())


# ---------------------------------------------------------------- waiting for the processes


def dead_stages(run: Running) -> Counter[str]:
    """Dead letters by stage, read_committed."""
    letters = asyncio.run(read_committed(local_kafka_from_env(), run.dlq_topic))
    return Counter(read_dead_letter_headers(m.headers)[HEADER_STAGE] for m in letters)


def wait_caught_up(proc: ServiceProcess, timeout: float = 120) -> None:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        status, body = proc.get("/lag")
        last = body
        if status == 200 and isinstance(body, dict) and body.get("total_lag") == 0 and body.get("partitions"):
            return
        time.sleep(0.3)
    raise AssertionError(f"{proc.label} did not catch up in {timeout}s: {last}\n{proc.tail()}")


def wait_stored(run: Running, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The collection once it holds ``count`` documents (then a moment more, to see nothing else lands)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        docs = run.mongo()
        if len(docs) >= count:
            wait_caught_up(run.procs["sink"])
            return run.mongo()
        time.sleep(0.3)
    raise AssertionError(f"{len(docs)} documents stored, {count} expected\n{run.procs['sink'].tail()}")


def new_docs(run: Running, before: set[Any], count: int) -> list[dict[str, Any]]:
    """The documents stored since ``before`` (ids), once there are ``count`` of them."""
    return [d for d in wait_stored(run, len(before) + count) if d["_id"] not in before]


def wait_star_as_of(run: Running, moment: datetime, timeout: float = 120) -> None:
    """Until the continuous worker's star counts everything ingested up to ``moment``."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        status, body = run.procs["etl-api"].get("/continuous")
        last = body
        if status == 200 and body.get("star_as_of") and datetime.fromisoformat(body["star_as_of"]) >= moment:
            return
        time.sleep(0.5)
    raise AssertionError(f"the star is not as of {moment} after {timeout}s: {last}\n{run.procs['etl-api'].tail()}")


def star_views(run: Running, dates: set[date]) -> Counter[Grain]:
    """view_count by (date, product_id, store_id, referrer_url, device_id) of the given dates; the
    unknown member's natural key ('') as None."""

    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(os.environ["POSTGRES_DSN"])
        s = f'"{run.schema}"'
        try:
            return await conn.fetch(
                f"""SELECT d.date, p.product_id, c.store_id, r.referrer_url, v.device_id, f.view_count
                    FROM {s}.fact_product_views f JOIN {s}.dim_date d USING (date_key) JOIN {s}.dim_product p USING (product_key)
                    JOIN {s}.dim_country c USING (country_key) JOIN {s}.dim_referrer r USING (referrer_key)
                    JOIN {s}.dim_device v USING (device_key) WHERE d.date = ANY($1::date[])""",
                sorted(dates),
            )
        finally:
            await conn.close()

    got: Counter[Grain] = Counter()
    for r in asyncio.run(read()):
        key = (r["date"], r["product_id"] or None, r["store_id"] or None, r["referrer_url"] or None, r["device_id"] or None)
        assert key not in got, f"two fact rows of one grain: {key}"
        got[key] = r["view_count"]
    return got


# ---------------------------------------------------------------- the expected star, in plain Python


def event_date(event: dict[str, Any]) -> date:
    if "time_stamp" in event:
        return datetime.fromtimestamp(int(event["time_stamp"]), UTC).date()
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).astimezone(UTC).date()


def member_id(raw: Any) -> str | None:
    """A store or device id as the star sees it: an id the bridge made a string, else the unknown member."""
    kept = expected_id(raw)
    return kept or None if isinstance(kept, str) else None


def grain(event: dict[str, Any]) -> Grain | None:
    """Where the star counts the event, or None when it is not a view (other type, a crawler)."""
    agent = event.get("user_agent")
    if event.get("collection", SEED_COLLECTION) not in DEFAULT_PRODUCT_VIEW_TYPES or (isinstance(agent, str) and agent in BOT_AGENTS):
        return None
    referrer = event.get("referrer_url")
    return (
        event_date(event),
        str(event["product_id"]).strip(),
        member_id(event.get("store_id")),
        referrer if isinstance(referrer, str) and referrer else None,
        member_id(event.get("device_id")),
    )


def expected_views(events: list[dict[str, Any]]) -> Counter[Grain]:
    return Counter(g for g in map(grain, events) if g is not None)


# ---------------------------------------------------------------- proof 1: dead letters and replay


def glamira(i: int, when: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "_id": f"{0xD1A0000 + i:024x}",
        "time_stamp": int(when.timestamp()),
        "collection": "view_product_detail",
        "product_id": str(90_000 + i),
        "store_id": "6",
        "device_id": f"dev-{i}",
        "referrer_url": "https://www.google.com/",
        **fields,
    }


def record(event: dict[str, Any], kind: str = GLAMIRA) -> GeneratedRecord:
    key = str(event.get("device_id", "k")).encode()
    return GeneratedRecord(kind, key, orjson.dumps(event), event.get("_id"), event.get("collection"), event)


def test_dead_letters_of_every_stage_counted_and_replayed_into_the_star(running: Running) -> None:
    run, sink = running, running.procs["sink"]
    generated = list(eventgen.generate(300, seed=2929, bad_fraction=0.1, start=date(2021, 2, 1), days=2))
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    future = [glamira(i, ahead + timedelta(minutes=i)) for i in range(3)]
    future_seed = {"product_id": "91000", "device_id": "dev-s", "store_id": "6", "timestamp": f"{ahead:%Y-%m-%dT%H:%M:%SZ}"}
    padded = [glamira(10 + i, datetime(2021, 2, 1, 12, tzinfo=UTC), padding="x" * 10_000) for i in range(2)]
    conflicting = [glamira(20, datetime(2021, 2, 2, 9, tzinfo=UTC), resolution=r) for r in ("1920x1080", "800x600")]
    nul = glamira(30, datetime(2021, 2, 2, 10, tzinfo=UTC), user_agent="Mozilla\x00/5.0")  # FerretDB refuses a NUL
    crafted = [*map(record, future), record(future_seed, SEED), *map(record, padded), *map(record, conflicting), record(nul)]
    records = generated + crafted
    foreign = [b"{not json", b"[1, 2]"]  # another producer writing to the local topic

    async def produce() -> eventgen.Manifest:
        manifest = await eventgen.produce(records, remote_kafka_from_env(), run.remote_topic, progress=False, partitions=PARTITIONS)
        producer = AIOKafkaProducer(**local_kafka_from_env().client_kwargs(), acks="all")
        await producer.start()
        try:
            for value in foreign:
                await producer.send_and_wait(run.local_topic, value, key=b"foreign")
        finally:
            await producer.stop()
        return manifest

    _, stats_before = dlq(run.dlq_env(), "stats", "--json")
    letters_before = Counter({(r["stage"], r["error_class"]): r["count"] for r in stats_before["classes"]})
    ids_before = {d["_id"] for d in run.mongo()}  # the other test's, when it ran first
    manifest = asyncio.run(produce())
    coords = [(m.partition, m.offset) for m in manifest.records]
    seed_id = manifest.records[len(generated) + len(future)].event_id
    assert seed_id is not None

    valid = [r.event for r in generated if r.event is not None]
    stored_first = [*valid, *conflicting[:1]]
    wait_caught_up(run.procs["bridge"])
    docs = new_docs(run, ids_before, len(stored_first))
    wait_caught_up(sink)

    # dlq stats: every stage, counted here from what was produced.
    expected_letters = Counter(REFUSAL_OF_KIND[r.kind] for r in generated if r.kind in REFUSAL_OF_KIND)
    expected_letters[("bridge.validate", "ImplausibleEventTime")] += len(future) + 1
    expected_letters[("sink.size", "DocumentTooLarge")] += len(padded)
    expected_letters[("sink.conflict", "ConflictingDuplicate")] += 1
    expected_letters[("sink.write", "InternalError")] += 1
    expected_letters[("sink.decode", "JSONDecodeError")] += 1
    expected_letters[("sink.validate", "NotAnObject")] += 1
    _, stats = dlq(run.dlq_env(), "stats", "--json")
    got_letters = Counter({(r["stage"], r["error_class"]): r["count"] for r in stats["classes"]}) - letters_before
    assert got_letters == expected_letters, stats
    assert {r["hop"] for r in stats["classes"]} == {"bridge", "sink"}
    assert stats["total"] - stats_before["total"] == sum(expected_letters.values()) == 30 + 4 + 2 + 1 + 1 + 2
    assert {d["_id"] for d in docs} == {m.event_id for m in manifest.records if m.kind in (GLAMIRA, SEED)} - {
        *(e["_id"] for e in [*future, *padded, nul]),
        seed_id,
    }
    assert len(docs) == len(stored_first)

    def views_now() -> Counter[Grain]:
        return star_views(run, dates)

    dates = {date(2021, 2, 1), date(2021, 2, 2), date(2021, 2, 3), ahead.date(), (ahead + timedelta(minutes=len(future))).date()}
    # (no star check here: the worker's first micro-batch, its JVM warming up, overlaps the replay)

    # Widened: a dry run says what would happen and writes nothing.
    widened = run.dlq_env(BRIDGE_EVENT_TIME_MAX_AHEAD_S=str(WIDENED_AHEAD_S))
    select = ["--stage", "bridge.validate", "--class", "ImplausibleEventTime", "--json"]
    local_before = len(asyncio.run(read_committed(local_kafka_from_env(), run.local_topic)))
    rc, dry = dlq(widened, "replay", *select, "--dry-run")
    assert (rc, dry["dry_run"], dry["replayed"], dry["refused_again"], dry["already_present"]) == (0, True, 4, 0, 0)
    assert len(asyncio.run(read_committed(local_kafka_from_env(), run.local_topic))) == local_before

    # The replay: those four stored once, with the event_id the bridge gives them, and counted.
    rc, replay = dlq(widened, "replay", *select)
    assert (rc, replay["replayed"], replay["refused_again"], replay["already_present"], replay["parked"]) == (0, 4, 0, 0, 0)
    after_replay = [*stored_first, *future, future_seed]
    docs = new_docs(run, ids_before, len(after_replay))
    assert len(docs) == len(after_replay)
    by_id = {d["_id"]: d for d in docs}
    for event, event_id in [*((e, e["_id"]) for e in future), (future_seed, seed_id)]:
        doc = by_id[event_id]
        assert doc["product_id"] == event["product_id"]
        assert datetime.fromisoformat(doc["event_time"].replace("Z", "+00:00")) == (
            datetime.fromtimestamp(event["time_stamp"], UTC) if "time_stamp" in event else ahead
        )
        assert (doc["source_topic"], doc["source_partition"], doc["source_offset"]) == (
            run.remote_topic,
            *coords[len(generated) + (future.index(event) if event in future else len(future))],
        )
    wait_star_as_of(run, datetime.now(UTC))
    assert views_now() == expected_views(after_replay)

    # The same replay again: nothing written, nothing stored, nothing counted twice.
    rc, again = dlq(widened, "replay", *select)
    assert (rc, again["replayed"], again["already_present"], again["refused_again"]) == (0, 0, 4, 0)

    # The sink's size letters, replayed once the limit was raised: stored once, counted.
    sink.stop_quietly()
    run.procs["sink"] = sink = run.process("sink", SINK_MAX_DOCUMENT_BYTES=str(16 << 20)).start()
    sink.wait_ready(60)
    rc, sized = dlq(run.dlq_env(), "replay", "--stage", "sink.size", "--json")
    assert (rc, sized["replayed"], sized["refused_again"], sized["already_present"]) == (0, 2, 0, 0)
    final = [*after_replay, *padded]
    docs = new_docs(run, ids_before, len(final))
    assert sorted(d["_id"] for d in docs) == sorted({d["_id"] for d in docs})
    assert len(docs) == len(final)
    assert {by["_id"]: len(by["padding"]) for by in docs if "padding" in by} == {e["_id"]: 10_000 for e in padded}
    wait_star_as_of(run, datetime.now(UTC))
    assert views_now() == expected_views(final)
    assert sum(expected_views(final).values()) - sum(expected_views(stored_first).values()) == 6  # 4 replayed + 2 sized
    print(
        f"\ndlq stats {dict(expected_letters)}; replay ahead: dry {dry['replayed']}, replayed {replay['replayed']}, "
        f"again already present {again['already_present']}; sink.size replayed {sized['replayed']}; "
        f"documents {len(docs)}, views counted {sum(views_now().values())}"
    )


# ---------------------------------------------------------------- proof 2: the property, through the processes

PROPERTY_DATES = {date(2020, 6, 1), date(2020, 6, 2), date(2020, 6, 3), date(2020, 6, 4)}  # the unit test's EVENTS


@settings(max_examples=1, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
@given(pairs=st.lists(mutated(), min_size=150, max_size=150, unique_by=lambda pair: id(pair[0])))
def test_mutating_fields_nothing_counts_by_never_costs_a_view(running: Running, pairs: list[tuple[dict, dict]]) -> None:
    run = running
    events = [event for _, event in pairs]
    dead_before = dead_stages(run)
    stored_before = {d["_id"] for d in run.mongo()}
    records = [
        GeneratedRecord(GLAMIRA, str(i).encode(), json.dumps(e).encode(), e["_id"], e["collection"], e)
        if "collection" in e
        else GeneratedRecord(SEED, str(i).encode(), json.dumps(e).encode(), None, None, e)
        for i, e in enumerate(events)
    ]
    asyncio.run(eventgen.produce(records, remote_kafka_from_env(), run.remote_topic, progress=False, partitions=PARTITIONS))
    # FerretDB on PostgreSQL refuses a NUL in a string and an array directly in an array (MongoDB
    # stores both): those few go to sink.write, which is the store's refusal, not the pipeline's.
    storable = [e for e in events if ferretdb_refuses(e) is None]
    wait_caught_up(run.procs["bridge"])
    docs = wait_stored(run, len(stored_before) + len(storable))
    new = [d for d in docs if d["_id"] not in stored_before]
    assert len(new) == len(storable)
    assert dead_stages(run) - dead_before == Counter({"sink.write": len(events) - len(storable)}) - Counter()
    wait_star_as_of(run, datetime.now(UTC))
    assert star_views(run, PROPERTY_DATES) == expected_views(storable)
    views = sum(expected_views(storable).values())
    print(f"\nproperty: {len(events)} mutated events, {len(storable)} storable on FerretDB, {views} views counted")
