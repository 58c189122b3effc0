"""Benchmark: the sink vs MongoDB's official Kafka sink connector vs the insert_many ceiling.

Not a test: run by hand against the running local stack (``python -m infra.stack up``)::

    .venv/bin/python bench/sink_vs_connector.py                 # 1,000,000 events
    .venv/bin/python bench/sink_vs_connector.py --events 200000 --connector-tasks 1

Same events, same FerretDB, same run:

(c) ceiling: the sink's own documents, built beforehand, inserted with ``insert_many`` (unordered,
    batches of ``--batch``) straight from memory: no Kafka, no decoding;
All three collections carry the indexes the sink creates: its two ETL read indexes
({ingest_hour, part}, {event_date, part}) when ``SINK_READ_INDEXES`` says so (by default on
MongoDB, not on FerretDB, where no query can use them), else only ``_id``; on
FerretDB-on-PostgreSQL also the sink's GIN ``_id`` lookup index (its duplicate check). Index upkeep is a
large part of FerretDB's cost per document, so peers with other indexes would not be comparable.
(a) the sink: ``python -m sink`` (default settings), timed from process start until the
    collection holds every event (its committed offsets are then checked to reach the end);
(b) the connector: ``org.mongodb.kafka:mongo-kafka-connect`` (resolved from Maven Central by
    bench/sink_connector_pom.xml into .cache/connect-plugins/) on Kafka Connect standalone
    (connect-runtime 3.9.1 from .cache/kafka-3.9.1/libs), timed the same way. ``_id`` from
    ``event_id`` (ReplaceField SMT + ProvidedInValueStrategy), ``read_committed`` like the sink,
    the sink's batch size, ``tasks.max=1``; ``--connector-mode insert`` (InsertOneDefaultStrategy,
    its fastest) or ``upsert`` (its default replace-one upsert by ``_id``: the idempotent one).

The events are produced once, idempotently (no transactions, so end offsets are reachable by
both consumers' commits). Prints events/s, the ratios and the sink's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "services" / "sink"), str(REPO / "services" / "etl-api"), str(REPO / "tools" / "eventgen")]

import orjson  # noqa: E402
from aiokafka import TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from eventgen.samples import bridged_events  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402
from sink.ferretdb import ensure_id_index  # noqa: E402
from sink.mongo import wants_read_indexes  # noqa: E402

from bench.probes import backend_cpu_seconds, cpu_seconds, ferretdb_pid, load_stack_env  # noqa: E402
from bench.sink_runs import end_offsets, last_event_ids, produce, run_connector, run_sink  # noqa: E402
from bench.sink_store import (  # noqa: E402
    DATABASE,
    backend_line,
    count,
    create_indexes,
    drop,
    ferretdb_version,
    pg_counters,
    pg_line,
    run_ceiling,
)
from infra.stack import ferretdb_backend, ferretdb_postgresql_url  # noqa: E402
from shared.kafka import create_topics  # noqa: E402


def make_values(count: int, *, clean_keys: bool, seed: int = 7) -> list[bytes]:
    """The integration tests' contract-shaped events (``eventgen.samples``). ``clean_keys`` drops the field names only
    the sink can store (``utm.source``, ``$meta``): the connector's task dies on the first one
    (``IllegalArgumentException: Invalid BSON field name $meta``), so a comparison needs them out."""
    events = bridged_events(count, seed=seed)
    rng = random.Random(seed)
    for e in events:
        # ObjectId-shaped ids like the real events' (``_id`` is 24 hex digits: a 2020 timestamp,
        # then random bytes). The samples' ids are zero-padded counters, 19+ decimal digits in a
        # row, which sends every record through the sink's exact-integer check (a second JSON
        # parse, ~10 µs): a real id does so about once in a thousand records.
        e["event_id"] = f"{0x5ED00000 + rng.randrange(1 << 20):08x}{rng.getrandbits(64):016x}"
        if clean_keys:
            e.pop("utm.source", None)
            e.pop("$meta", None)
    return [orjson.dumps(e) for e in events]


async def id_lookup_indexes(uri: str, peers: list[str]) -> None:
    """On FerretDB-on-PostgreSQL the local stack's sink builds a GIN ``_id`` index at start
    (sink/ferretdb.py; ``SINK_FERRETDB_POSTGRESQL_URL``): the sink here runs as the stack runs it,
    and the peers' collections get the same index, or they would pay less per insert."""
    if ferretdb_backend() != "postgresql" or not (await ferretdb_version(uri)):
        print("no _id lookup index (MongoDB, or FerretDB without PostgreSQL)", flush=True)
        return
    url = os.environ.setdefault("SINK_FERRETDB_POSTGRESQL_URL", ferretdb_postgresql_url(dict(os.environ)))
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
    try:
        for coll in peers:
            await client[DATABASE].create_collection(coll)
            await ensure_id_index(url, DATABASE, coll)
    finally:
        await client.close()
    print(f"_id lookup (GIN) index on the sink's and the {len(peers)} peers' collections", flush=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--batch", type=int, default=5000, help="insert_many batch of the ceiling (the sink's default batch)")
    ap.add_argument(
        "--ceiling-concurrency",
        default="1,2,4",
        help="comma list: one ceiling run per value, with that many insert_many in flight (the sink's default is 4)",
    )
    ap.add_argument(
        "--sink-inflight",
        default="4",
        help="comma list: one sink run per value of SINK_MAX_INFLIGHT_BATCHES (the sink's default is 4; 1 = one write in flight)",
    )
    ap.add_argument("--connector-tasks", type=int, default=1)
    ap.add_argument(
        "--connector-mode",
        choices=("insert", "upsert"),
        default="insert",
        help="insert: InsertOneDefaultStrategy (its fastest); upsert: its default idempotent replace-one upsert by _id",
    )
    ap.add_argument("--connector-timeout", type=float, default=1800, help="seconds; the rate is then measured on what was done")
    ap.add_argument("--skip", default="", help="comma list of runs to skip: ceiling,sink,connector")
    ap.add_argument("--order", default="ceiling,sink,connector", help="order of the runs")
    ap.add_argument(
        "--ceiling-seconds", type=float, default=0, help="cap each ceiling run's insert time (rate over what was done); 0 = no cap"
    )
    ap.add_argument("--keep", action="store_true", help="keep the collections and topic")
    ap.add_argument("--verify-count", action="store_true", help="count each collection at the end (slow on FerretDB)")
    ap.add_argument("--realistic-keys", action="store_true", help="keep 'utm.source'/'$meta' fields (the connector fails on them)")
    args = ap.parse_args()
    load_stack_env()
    from shared.settings import local_kafka_from_env

    conn = local_kafka_from_env()
    uri = os.environ["MONGODB_URI"]
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench_sink_{run_id}"
    logs = REPO / "bench" / "results"
    logs.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    print(f"run {run_id}: {args.events:,} events, topic {topic} ({args.partitions} partitions, RF 3), FerretDB {uri}{DATABASE}")
    load_start = os.getloadavg()
    print(f"load average at start: {load_start}", flush=True)

    values = make_values(args.events, clean_keys=not args.realistic_keys)
    mean = sum(map(len, values)) / len(values)
    print(f"events built: mean {mean:.0f} B of JSON", flush=True)
    results: dict[str, float] = {}
    rss: dict[int, float] = {}
    concurrencies = [int(c) for c in args.ceiling_concurrency.split(",") if c]
    inflights = [int(n) for n in args.sink_inflight.split(",") if n]
    colls = {"connector": f"connector_{run_id}"}
    colls.update({f"sink{n}": f"sink{n}_{run_id}" for n in inflights})
    colls.update({f"ceiling{c}": f"ceiling{c}_{run_id}" for c in concurrencies})
    cleanup = not (args.keep or args.verify_count)  # drop each big collection after its run
    end: dict[TopicPartition, int] = {}
    last_ids: list[str] = []

    async def ceiling_phase() -> None:
        for c in concurrencies:
            print(f"(c) ceiling: insert_many from memory, {c} in flight …", flush=True)
            p0 = await pg_counters()
            f0, b0 = cpu_seconds(ferretdb_pid()), backend_cpu_seconds()
            secs, done = await run_ceiling(uri, colls[f"ceiling{c}"], values, args.batch, c, args.ceiling_seconds)
            backend = backend_cpu_seconds() - b0
            print(f"    FerretDB CPU: {cpu_seconds(ferretdb_pid()) - f0:.1f}s; {backend_line(backend, done)}", flush=True)
            print(f"    {pg_line(p0, await pg_counters(), done)}", flush=True)
            results[f"ceiling{c}"] = done / secs
            print(f"    {secs:.1f}s for {done:,} documents; load average {os.getloadavg()}", flush=True)
            if cleanup:
                await drop(uri, colls[f"ceiling{c}"])  # FerretDB's PostgreSQL must not fill up

    async def sink_phase() -> None:
        for n in inflights:
            print(f"(a) sink: python -m sink, SINK_MAX_INFLIGHT_BATCHES={n} …", flush=True)
            p0 = await pg_counters()
            f0, b0 = cpu_seconds(ferretdb_pid()), backend_cpu_seconds()
            secs, rss[n] = await run_sink(conn, topic, colls[f"sink{n}"], end, last_ids, logs / f"sink{n}-{run_id}.log", n)
            backend = backend_cpu_seconds() - b0
            print(f"    FerretDB CPU: {cpu_seconds(ferretdb_pid()) - f0:.1f}s; {backend_line(backend, args.events)}", flush=True)
            print(f"    {pg_line(p0, await pg_counters(), args.events)}", flush=True)
            results[f"sink{n}"] = args.events / secs
            print(f"    {secs:.1f}s, peak RSS {rss[n]:.0f} MiB; load average {os.getloadavg()}", flush=True)
            if cleanup:
                await drop(uri, colls[f"sink{n}"])

    async def connector_phase() -> None:
        print(
            f"(b) connector: mongo-kafka-connect on Connect standalone, tasks.max={args.connector_tasks}, {args.connector_mode} …",
            flush=True,
        )
        p0 = await pg_counters()
        f0, b0 = cpu_seconds(ferretdb_pid()), backend_cpu_seconds()
        secs, done = await run_connector(
            conn,
            topic,
            colls["connector"],
            uri,
            end,
            last_ids,
            args.connector_tasks,
            logs / f"connector-{run_id}.log",
            args.connector_mode,
            args.batch,
            args.connector_timeout,
        )
        backend = backend_cpu_seconds() - b0
        ferret = cpu_seconds(ferretdb_pid()) - f0
        print(f"    {secs:.1f}s for {done:,} events; FerretDB CPU: {ferret:.1f}s; {backend_line(backend, done)}", flush=True)
        print(f"    {pg_line(p0, await pg_counters(), done)}", flush=True)
        print(f"    load average {os.getloadavg()}", flush=True)
        if done < args.events:
            print(f"    connector incomplete: {done / secs:,.0f} events/s over what it did", flush=True)
            results["connector (partial)"] = done / secs
        else:
            results["connector"] = done / secs
        if cleanup:
            await drop(uri, colls["connector"])

    phases = {"ceiling": ceiling_phase, "sink": sink_phase, "connector": connector_phase}
    order = [p for p in args.order.split(",") if p and p not in skip]
    if unknown := [p for p in order if p not in phases]:
        raise SystemExit(f"unknown runs in --order: {unknown}")
    try:
        await create_topics(conn, [topic], partitions=args.partitions, replication_factor=3)
        took = await produce(conn, topic, values)
        end.update(await end_offsets(conn, topic))
        last_ids.extend(await last_event_ids(conn, end))
        assert sum(end.values()) == args.events, (sum(end.values()), args.events)
        print(f"produced in {took:.1f}s ({args.events / took:,.0f}/s)", flush=True)
        # the sink creates its own indexes at start; the peers get the same ones
        setting = os.environ.get("SINK_READ_INDEXES", "auto")
        if wants_read_indexes(setting, await ferretdb_version(uri)):
            await create_indexes(uri, *(c for k, c in colls.items() if not k.startswith("sink")))
            print(f"read indexes on every collection (SINK_READ_INDEXES={setting})", flush=True)
        else:
            print(f"no read indexes, only _id (SINK_READ_INDEXES={setting})", flush=True)
        await id_lookup_indexes(uri, [c for k, c in colls.items() if not k.startswith("sink")])
        for phase in order:
            await phases[phase]()
        if args.verify_count:  # FerretDB counts by reading every document: minutes for a million
            for name, coll in colls.items():
                if name in results:
                    n = await count(uri, coll)
                    assert n == args.events, f"{name}: {n} documents, expected {args.events}"
    finally:
        if not args.keep:
            await drop(uri, *colls.values())
            admin = AIOKafkaAdminClient(**conn.client_kwargs())
            await admin.start()
            try:
                await admin.delete_topics([topic, f"{topic}.dlq"])
            except Exception as exc:  # the DLQ topic may not exist; nothing to clean then
                print(f"(topic cleanup: {exc})")
            finally:
                await admin.close()

    print()
    print(f"{'run':<44}{'events/s':>12}")
    labels = {
        **{f"ceiling{c}": f"(c) ceiling insert_many (memory, {c} in flight)" for c in concurrencies},
        **{f"sink{n}": f"(a) sink (python -m sink, {n} in flight)" for n in inflights},
        "connector": f"(b) mongo-kafka-connect {args.connector_mode}",
        "connector (partial)": f"(b) mongo-kafka-connect {args.connector_mode} (partial)",
    }
    for name, rate in results.items():
        print(f"{labels[name]:<44}{rate:>12,.0f}")
    connector = results.get("connector", results.get("connector (partial)"))
    for n in inflights:
        sink = results.get(f"sink{n}")
        if sink is None:
            continue
        if connector:
            print(f"sink ({n} in flight) / connector: {sink / connector:.2f}×  (target ≥ 1.5×)")
        for c in concurrencies:
            if f"ceiling{c}" in results:
                print(f"sink ({n} in flight) / ceiling ({c} in flight): {sink / results[f'ceiling{c}']:.0%}  (target ≥ 70 %)")
        print(f"sink ({n} in flight) peak RSS: {rss[n]:.0f} MiB")
    print(f"load average at end: {os.getloadavg()}")
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": args.events,
        "connector_mode": args.connector_mode,
        "events_per_second": results,
        "sink_peak_rss_mib": {str(n): v for n, v in rss.items()},
        "load_average": {"start": load_start, "end": os.getloadavg()},
    }
    (logs / "sink_vs_connector.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
