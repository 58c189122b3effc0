"""Stopping a broker of the shared stack and starting it again, which returns only once the
cluster is whole: every broker registered (a topic of replication factor 3 can be created) and no
partition under-replicated (every follower caught up). A test that stopped a broker starts it
with :func:`start_broker` before it lets other tests run again."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient

from shared.kafka import KafkaConnection
from tests.conftest import REPO


def _stack(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "infra.stack", *args], cwd=REPO, check=True, timeout=240)


async def stop_broker(name: str) -> None:
    """``infra.stack stop name`` (e.g. kafka-local-2)."""
    await asyncio.to_thread(_stack, "stop", name)


async def start_broker(name: str, conn: KafkaConnection, brokers: int = 3) -> None:
    """``infra.stack start name``, then :func:`wait_cluster_whole` on ``conn``'s cluster."""
    await asyncio.to_thread(_stack, "start", name)
    await wait_cluster_whole(conn, brokers)


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
