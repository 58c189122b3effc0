"""Waiting until a Kafka cluster is whole again after a broker was stopped: every broker
registered (a topic of replication factor 3 can be created) and no partition under-replicated
(every follower caught up). A test that stopped a broker of the shared stack waits for this
before it lets other tests run again."""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient

from shared.kafka import KafkaConnection


async def under_replicated(admin: AIOKafkaAdminClient) -> list[tuple[str, int]]:
    described = await admin.describe_topics()  # every topic's metadata
    return sorted((t["topic"], p["partition"]) for t in described for p in t.get("partitions", ()) if len(p["isr"]) < len(p["replicas"]))


async def wait_cluster_whole(conn: KafkaConnection, brokers: int, timeout: float = 180) -> None:
    """Returns once ``brokers`` brokers are registered and no partition is under-replicated;
    AssertionError naming what is missing after ``timeout``."""
    admin = AIOKafkaAdminClient(**conn.client_kwargs())
    await admin.start()
    try:
        deadline, seen, under = time.monotonic() + timeout, 0, [("?", -1)]
        while time.monotonic() < deadline:
            seen = len((await admin.describe_cluster())["brokers"])
            if seen == brokers:
                under = await under_replicated(admin)
                if not under:
                    return
            await asyncio.sleep(1)
        raise AssertionError(f"the cluster is not whole after {timeout:.0f}s: {seen}/{brokers} brokers, under-replicated {under[:10]}")
    finally:
        await admin.close()
