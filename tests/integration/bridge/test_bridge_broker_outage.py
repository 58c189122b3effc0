"""Brokers stopped and restarted mid-stream: the bridge waits, resumes by itself, exactly once.

The shared stack's brokers are never stopped (other suites run against them at the same time),
so these tests run the bridge between two private clusters of their own
(``tests/support/kafka_clusters.py``: a 3-broker "local" and a 1-broker SASL "remote" cluster,
started with the stack's code in a temporary directory on free ports).

Each test: a backlog of generator events (bad ones among them) on the remote topic; the bridge
copies it in small transactions (10 records), so it is mid-stream when *every* broker of one
cluster is stopped — SIGTERM (clean shutdown) or SIGKILL (crash) — and kept down for some
seconds. While they are down the bridge must stay alive, say not-ready and back off (bounded).
More events are produced (during the outage when the remote cluster is up, else after it).
After the restart, with the same data directories and ports, the bridge must become ready by
itself and copy everything: the local topic holds exactly the valid events (by ``event_id``,
``read_committed``), the DLQ exactly the bad records, each once.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from shared.kafka import KafkaConnection
from tests.integration.bridge.helpers import (
    ARTIFACTS,
    BridgeNames,
    BridgeProcess,
    Produced,
    produce_events,
    stored_positions,
    wait_caught_up,
)
from tests.integration.bridge.test_bridge_crash import assert_exactly_once
from tests.support.kafka_clusters import PrivateKafka

# One worker runs the module: its private clusters (4 brokers) start once, not once per worker.
pytestmark = pytest.mark.xdist_group("private_kafka")

BACKLOG = 2500  # copied 10 records per transaction: seconds of work, so the outage hits mid-stream
MORE = 500  # produced during (remote cluster up) or after the outage
DOWN_S = 6.0  # how long the cluster stays down once the bridge said not-ready
BACKOFF_MAX_S = 2.0


@pytest.fixture(scope="module")
def clusters() -> Iterator[PrivateKafka]:
    kafka = PrivateKafka()
    try:
        kafka.start()
        yield kafka
    finally:
        kafka.close(logs_to=ARTIFACTS / "private-kafka")  # the brokers' logs, for a post-mortem


async def wait_ready_status(bridge: BridgeProcess, status: int, timeout_s: float) -> str:
    """Waits until ``GET /ready`` answers ``status``; returns the reason it gave."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        assert bridge.proc is not None and bridge.proc.poll() is None, f"the bridge must wait, not exit:\n{bridge.tail()}"
        try:
            response = await bridge.get("/ready")
            last = response.text
            if response.status_code == status:
                return str(response.json().get("reason", ""))
        except httpx.HTTPError as exc:
            last = repr(exc)
        await asyncio.sleep(0.2)
    raise AssertionError(f"/ready never answered {status} in {timeout_s}s (last: {last}); log:\n{bridge.tail()}")


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill9"])
@pytest.mark.parametrize("cluster", ["local", "remote"])
async def test_all_brokers_of_a_cluster_stopped_mid_stream_then_restarted_exactly_once(
    cluster: str, sig: signal.Signals, clusters: PrivateKafka, unique_name: str
) -> None:
    remote, local = clusters.connection("remote"), clusters.connection("local")
    names = BridgeNames(unique_name)
    first = await produce_events(remote, names.remote_topic, BACKLOG, partitions=2, bad_fraction=0.02, seed=7)
    bridge = BridgeProcess(
        names,
        label=f"broker-outage-{cluster}-{sig.name}",
        extra_env={
            **clusters.client_env(),
            "BRIDGE_MAX_BATCH_RECORDS": "10",
            "BRIDGE_BACKOFF_INITIAL_S": "0.5",
            "BRIDGE_BACKOFF_MAX_S": str(BACKOFF_MAX_S),
            "BRIDGE_LAG_INTERVAL_S": "1",
            "BRIDGE_TRANSACTION_DEADLINE_S": "5",
            "BRIDGE_CLOSE_TIMEOUT_S": "2",
        },
    )
    try:
        bridge.start()
        await bridge.wait_copying(timeout_s=90)
        before = await stored_positions(local, names.offsets_topic)
        assert sum(before.values()) < BACKLOG, f"the outage must hit mid-stream, but the bridge already copied {before}"

        # Every broker of the cluster at once; the bridge must notice, stay alive and wait.
        killed = await asyncio.to_thread(clusters.stop, cluster, sig)
        down_at = time.monotonic()
        reason = await wait_ready_status(bridge, 503, timeout_s=40)
        noticed_s = time.monotonic() - down_at
        more: Produced | None = None
        if cluster == "local":  # the source keeps flowing while the target is down
            more = await produce_events(remote, names.remote_topic, MORE, partitions=2, bad_fraction=0.02, seed=8)
        # Polled throughout, not once: a session restarting against a cluster that is down was
        # briefly ready (its remote check passed before its take-over failed).
        answers: list[int] = []
        until = time.monotonic() + DOWN_S
        while time.monotonic() < until:
            answers.append((await bridge.get("/ready")).status_code)
            await asyncio.sleep(0.01)
        assert set(answers) == {503}, f"ready {answers.count(200)} times of {len(answers)} while the {cluster} cluster was down"
        assert bridge.proc is not None and bridge.proc.poll() is None, f"the bridge exited during the outage:\n{bridge.tail()}"
        assert (await bridge.get("/health")).status_code == 200
        assert (await bridge.get("/ready")).status_code == 503

        await asyncio.to_thread(clusters.start, cluster)
        up_at = time.monotonic()
        await bridge.wait_ready(timeout_s=120)
        ready_after_s = time.monotonic() - up_at
        if more is None:  # the source is back: new events flow again
            more = await produce_events(remote, names.remote_topic, MORE, partitions=2, bad_fraction=0.02, seed=8)
        produced = Produced(first.records + more.records)
        await wait_caught_up(local, names.offsets_topic, produced, names.remote_topic, timeout_s=150)
        code, _ = bridge.terminate()
        assert code == 0, bridge.tail()
    finally:
        bridge.stop_quietly()

    events, dead = await assert_exactly_once(local, names, produced)
    assert (events, dead) == (len(produced.good()), len(produced.bad()))
    # Backoff stayed bounded: every announced delay is at most BRIDGE_BACKOFF_MAX_S.
    delays = [float(d) for d in re.findall(r"restarting in ([0-9.]+)s", bridge.log_path.read_text())]
    assert all(d <= BACKOFF_MAX_S for d in delays), delays
    print(
        f"{cluster} {sig.name} (killed after SIGTERM timeout: {killed}): not-ready {noticed_s:.1f}s after the stop "
        f"({reason[:120]!r}); ready {ready_after_s:.1f}s after the restart; {len(delays)} session restarts; "
        f"{events} events + {dead} dead letters exactly once"
    )


def test_private_clusters_are_not_the_shared_stack(
    clusters: PrivateKafka, local_kafka: KafkaConnection, remote_kafka: KafkaConnection
) -> None:
    """A guard: the brokers these tests stop are never the shared stack's."""
    mine = set(clusters.env["LOCAL_KAFKA_BOOTSTRAP_SERVERS"].split(",")) | {clusters.env["REMOTE_KAFKA_BOOTSTRAP_SERVERS"]}
    shared = set(local_kafka.bootstrap_servers.split(",")) | set(remote_kafka.bootstrap_servers.split(","))
    assert not mine & shared
    assert all(str(clusters.home) in str(log) for log in clusters.log_files())
