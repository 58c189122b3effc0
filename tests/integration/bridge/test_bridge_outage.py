"""A cluster the bridge cannot reach: it waits (not ready, bounded backoff) and resumes by itself.

The shared stack's brokers are never stopped from a test (other suites use them at the same
time), so the outage is a bootstrap address with nothing listening; then a TCP proxy to the real
cluster starts on that address. Clients bootstrap through the proxy and then reach the brokers
at their advertised addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
import pytest

from shared.kafka import KafkaConnection
from tests.integration.bridge.helpers import BridgeNames, BridgeProcess, free_port, produce_events, read_topic, wait_caught_up


async def start_proxy(port: int, target: str) -> asyncio.Server:
    host, target_port = target.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(target_port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", port)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", ["local", "remote"])
async def test_unreachable_cluster_means_not_ready_then_resumes_exactly_once(
    cluster: str, remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    names = BridgeNames(unique_name)
    produced = await produce_events(remote_kafka, names.remote_topic, 600, partitions=2, bad_fraction=0.02)
    port = free_port()
    real = (local_kafka if cluster == "local" else remote_kafka).bootstrap_servers.split(",")[0]
    bridge = BridgeProcess(names, label=f"outage-{cluster}", extra_env={f"{cluster.upper()}_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
    proxy: asyncio.Server | None = None
    try:
        bridge.start()
        deadline = time.monotonic() + 30
        while True:  # the HTTP surface is up and says why it is not ready
            with contextlib.suppress(Exception):
                response = await bridge.get("/ready")
                if response.status_code == 503 and "retrying in" in response.json()["reason"]:
                    break
            assert time.monotonic() < deadline, bridge.tail()
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # several backoff rounds
        assert bridge.proc is not None and bridge.proc.poll() is None, "the bridge must wait, not exit"
        assert (await bridge.get("/ready")).status_code == 503
        assert (await bridge.get("/health")).status_code == 200
        assert bridge.log_path.read_text().count("restarting in") >= 2

        proxy = await start_proxy(port, real)
        await bridge.wait_ready(timeout_s=40)
        await wait_caught_up(local_kafka, names.offsets_topic, produced, names.remote_topic, timeout_s=60)
        code, _ = bridge.terminate()
        assert code == 0
    finally:
        bridge.stop_quietly()
        if proxy is not None:
            proxy.close()
    ids = [orjson.loads(r.value)["event_id"] for r in await read_topic(local_kafka, names.local_topic)]
    assert len(ids) == len(set(ids)) and set(ids) == {r.event_id for _, _, r in produced.good()}
    assert len(await read_topic(local_kafka, names.dlq_topic)) == len(produced.bad())
