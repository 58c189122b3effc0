"""The generator against the real remote cluster (SASL/PLAIN): what the manifest says is on the topic."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from eventgen import Manifest, generate, plan_counts, produce

from shared.event import BAD_KINDS, event_id_from_coordinates
from shared.kafka import KafkaConnection
from tests.conftest import REPO

Records = dict[tuple[int, int], tuple[bytes | None, bytes]]


async def read_topic(conn: KafkaConnection, topic: str) -> tuple[int, Records]:
    """Every record of ``topic`` from the beginning to the end offsets: (partition count, records)."""
    consumer = AIOKafkaConsumer(
        **conn.client_kwargs(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata of every topic
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        assert partitions, f"topic {topic} missing"
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: Records = {}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batches.items():
                for m in messages:
                    assert (tp.partition, m.offset) not in found
                    found[(tp.partition, m.offset)] = (m.key, m.value)
        assert len(found) == sum(ends.values())
        return len(partitions), found
    finally:
        await consumer.stop()


@pytest.mark.timeout(180)
async def test_produced_records_match_the_manifest_exactly(remote_kafka: KafkaConnection, unique_name: str, tmp_path: Path) -> None:
    records = list(generate(2000, seed=2024, bad_fraction=0.05))
    async with asyncio.timeout(150):
        manifest = await produce(records, remote_kafka, unique_name, progress=False, partitions=6, args={"seed": 2024})
        partition_count, found = await read_topic(remote_kafka, unique_name)

    expected_counts = plan_counts(2000, 0.05, 0.1)
    assert expected_counts == {"glamira": 1710, "seed": 190, "not_json": 15, "not_utf8": 15, **dict.fromkeys(BAD_KINDS[2:], 14)}
    assert partition_count == 6
    assert manifest.topic == unique_name and manifest.args == {"seed": 2024}
    assert manifest.total == len(found) == 2000
    assert manifest.counts == expected_counts == Counter(r.kind for r in records)
    assert manifest.collections == Counter(r.collection for r in records if r.kind == "glamira")

    # every record is where the manifest says, with the same kind, key and bytes, once
    per_key_partition: dict[bytes | None, set[int]] = {}
    for record, entry in zip(records, manifest.records, strict=True):
        assert entry.kind == record.kind
        assert found[(entry.partition, entry.offset)] == (record.key, record.value)
        per_key_partition.setdefault(record.key, set()).add(entry.partition)
    assert len({(e.partition, e.offset) for e in manifest.records}) == 2000
    # offsets are dense from 0 in every partition: nothing duplicated by retries, nothing lost
    for partition, end in manifest.end_offsets().items():
        assert sorted(e.offset for e in manifest.records if e.partition == partition) == list(range(end))
    # keyed by device_id: one visitor's records share a partition (per-visitor order kept)
    assert all(len(parts) == 1 for parts in per_key_partition.values())
    assert len(set().union(*per_key_partition.values())) == 6

    # ids the pipeline must assign
    expected_ids = []
    for record, entry in zip(records, manifest.records, strict=True):
        if record.kind == "glamira":
            assert entry.event_id == record.event_id
            expected_ids.append(record.event_id)
        elif record.kind == "seed":
            expected_ids.append(event_id_from_coordinates(unique_name, entry.partition, entry.offset))
        else:
            assert entry.event_id is None
    assert manifest.valid_event_ids() == expected_ids and len(set(expected_ids)) == 1900
    assert manifest.bad_coordinates() == {(e.partition, e.offset): e.kind for e in manifest.records if e.kind in BAD_KINDS}
    assert Counter(manifest.bad_coordinates().values()) == {k: expected_counts[k] for k in BAD_KINDS}
    oversized = [found[c][1] for c, kind in manifest.bad_coordinates().items() if kind == "oversized"]
    assert len(oversized) == 14 and all(len(v) > 1_000_000 for v in oversized)

    path = tmp_path / "manifest.json"
    manifest.write(path)
    assert Manifest.read(path) == manifest


@pytest.mark.timeout(180)
async def test_cli_produces_the_library_records_at_the_requested_rate(
    remote_kafka: KafkaConnection, unique_name: str, tmp_path: Path
) -> None:
    manifest_path = tmp_path / "run.json"
    command = [
        sys.executable, "-m", "eventgen",
        "--count", "300", "--seed", "5", "--bad-fraction", "0.1", "--seed-shape-fraction", "0.2",
        "--start", "2020-05-10", "--days", "2", "--topic", unique_name, "--partitions", "3",
        "--rate", "1000", "--manifest", str(manifest_path), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tools' / 'eventgen'}"}
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 150)
    elapsed = time.monotonic() - began
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert elapsed >= 0.299  # 300 records at 1000/s cannot take less

    manifest = Manifest.read(manifest_path)
    expected = list(generate(300, seed=5, bad_fraction=0.1, seed_shape_fraction=0.2, start=date(2020, 5, 10), days=2))
    assert manifest.args == {"count": 300, "seed": 5, "bad_fraction": 0.1, "seed_shape_fraction": 0.2, "start": "2020-05-10", "days": 2}
    assert (
        manifest.counts
        == plan_counts(300, 0.1, 0.2)
        == {"glamira": 216, "seed": 54, **dict.fromkeys(BAD_KINDS[:2], 5), **dict.fromkeys(BAD_KINDS[2:], 4)}
    )
    async with asyncio.timeout(60):
        partition_count, found = await read_topic(remote_kafka, unique_name)
    assert partition_count == 3 and len(found) == 300
    for record, entry in zip(expected, manifest.records, strict=True):
        assert entry.kind == record.kind
        assert found[(entry.partition, entry.offset)] == (record.key, record.value)
    assert '"total":300' in stdout.decode()
