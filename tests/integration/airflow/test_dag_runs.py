"""pipeline_v1 run for real (``airflow dags test``) on Airflow 3.x and on Airflow 2.10, against the
real services (etl-api with Spark, bridge, sink) on the real local stack.

- The sensors wait: the sink starts with its MongoDB unreachable — its ``MONGODB_URI`` points at a
  port where nothing listens yet — so it is up but answers ``/ready`` with 503 (its own
  not-ready state, not a stub). Once ``sink_ready`` has been rescheduled on 503s, the test opens a
  plain TCP relay on that port to the real MongoDB (FerretDB); the sink connects, turns ready, writes
  its backlog, and the DAG run goes on to a real incremental ETL run and succeeds.
- ``--conf '{"mode": "range", ...}'`` issues exactly that range run (asserted on ``GET /runs``).
- Two past data intervals (DAG runs at past logical dates: what clearing an old run does) issue one
  range run each, for the interval's UTC event date ([start, end) → start.date() .. (end - 1 µs).date()).
- An invalid combination of params fails ``plan_etl_run`` and issues no ETL run.
- With the bridge down, the ETL chain runs to the end while ``bridge_ready`` still waits.
- With continuous mode on (``PUT /continuous``), an incremental DAG run issues no ``POST /runs``:
  it waits until the worker's star schema covers the events the sink stored, then reconciles
  (both versions, one worker).

One set of services serves both Airflow versions (each test only looks at the runs it issued).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import eventgen
import pytest

from infra.demo import AIRFLOW2_BIN, AIRFLOW_BIN, airflow_env, run_dag, state_changes, task_states
from shared.kafka import create_topics
from shared.settings import remote_kafka_from_env
from tests.support.processes import ServiceProcess, free_port

pytestmark = pytest.mark.timeout(900)

AIRFLOWS = {"3": AIRFLOW_BIN, "2.10": AIRFLOW2_BIN}
PARTITIONS = 3


class TcpRelay:
    """A plain TCP relay 127.0.0.1:port → target, that can be opened after its port was given out:
    before ``open()`` nothing listens there (connection refused), as when a database is down."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self._server: socket.socket | None = None

    def open(self) -> None:
        if self._server is None:
            self._server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
            threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@dataclass
class Services:
    uid: str
    work: Path
    token: str
    relay: TcpRelay
    ports: dict[str, int] = field(default_factory=lambda: {"bridge": free_port(), "sink": free_port(), "etl-api": free_port()})
    procs: dict[str, ServiceProcess] = field(default_factory=dict)

    def env(self, name: str) -> dict[str, str]:
        common = {"MONGODB_DATABASE": "kafka_data_db", "MONGODB_COLLECTION": f"af_{self.uid}"}
        local_topic = f"af_{self.uid}_processed"
        if name == "bridge":
            return {
                "BRIDGE_REMOTE_TOPIC": f"af_{self.uid}_product_views",
                "BRIDGE_LOCAL_TOPIC": local_topic,
                "BRIDGE_DLQ_TOPIC": f"{local_topic}.dlq",
                "BRIDGE_OFFSETS_TOPIC": f"{local_topic}.bridge-offsets",
                "BRIDGE_GROUP_ID": f"af_{self.uid}_bridge",
                "BRIDGE_LOCAL_PARTITIONS": str(PARTITIONS),
                "BRIDGE_HTTP_HOST": "127.0.0.1",
                "BRIDGE_HTTP_PORT": str(self.ports["bridge"]),
            }
        if name == "sink":
            return {
                **common,
                # MongoDB through the relay: unreachable until the test opens it.
                "MONGODB_URI": f"mongodb://127.0.0.1:{self.relay.port}/",
                "SINK_MONGODB_TIMEOUT_MS": "1000",
                "SINK_BACKOFF_MAX_S": "1",
                "SINK_TOPIC": local_topic,
                "SINK_DLQ_TOPIC": f"{local_topic}.dlq",
                "SINK_GROUP_ID": f"af_{self.uid}_sink",
                "SINK_HTTP_HOST": "127.0.0.1",
                "SINK_HTTP_PORT": str(self.ports["sink"]),
            }
        return {
            **common,
            "ETL_PG_SCHEMA": f"af_{self.uid}",
            "ETL_API_TOKEN": self.token,
            "ETL_HOST": "127.0.0.1",
            "ETL_PORT": str(self.ports["etl-api"]),
            "ETL_HTTP_PORT": str(self.ports["etl-api"]),
            "ETL_SETTLE_SECONDS": "0",
            "ETL_RUN_LOG_DIR": str(self.work / "etl-runs"),
            "ETL_SPARK_SHUFFLE_PARTITIONS": "4",
            # the reconcile task's GET /reconciliation/kafka reads this test's bridge
            "ETL_BRIDGE_OFFSETS_TOPIC": f"{local_topic}.bridge-offsets",
        }

    def start(self, name: str) -> ServiceProcess:
        module = {"bridge": "bridge", "sink": "sink", "etl-api": "etl_api"}[name]
        proc = ServiceProcess(name, module, self.env(name), port=self.ports[name], log_dir=self.work / "logs")
        self.procs[name] = proc.start()
        return proc

    def run_ids(self) -> set[str]:
        status, runs = self.procs["etl-api"].get("/runs?limit=500")
        assert status == 200, runs
        return {r["run_id"] for r in runs}

    def runs_since(self, before: set[str]) -> list[dict[str, Any]]:
        status, runs = self.procs["etl-api"].get("/runs?limit=500")
        assert status == 200, runs
        return [r for r in runs if r["run_id"] not in before]

    def dag(self, version: str, name: str, **kwargs: Any) -> tuple[bool, str]:
        log = self.work / f"dag-{version}-{name}.log"
        home = self.work / f"airflow-{version}"
        ok = run_dag(airflow_env(self.token, self.ports, home), log, echo=False, airflow_bin=AIRFLOWS[version], **kwargs)
        return ok, log.read_text()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    for version, airflow in AIRFLOWS.items():
        assert airflow.exists(), f"{airflow} missing (Airflow {version}): run ./pipeline setup"
    mongo = os.environ["MONGODB_URI"].split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = mongo.partition(":")
    svc = Services(
        uid=uuid.uuid4().hex[:8],
        work=tmp_path_factory.mktemp("airflow-runs"),
        token=os.environ["ETL_API_TOKEN"],
        relay=TcpRelay((host, int(port or 27017))),
    )
    remote = remote_kafka_from_env()
    asyncio.run(create_topics(remote, [f"af_{svc.uid}_product_views"], partitions=PARTITIONS, replication_factor=1))
    try:
        for name in ("etl-api", "bridge"):
            svc.start(name).wait_ready(120)
        records = list(eventgen.generate(200, seed=int(svc.uid, 16) % 1000, bad_fraction=0.0))
        asyncio.run(eventgen.produce(records, remote, f"af_{svc.uid}_product_views", progress=False, partitions=PARTITIONS))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, lag = svc.procs["bridge"].get("/lag")
            if status == 200 and lag.get("total_lag") == 0 and lag.get("partitions"):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"bridge did not copy the events: {lag}")
        yield svc
    finally:
        for proc in svc.procs.values():
            proc.stop_quietly()
        svc.relay.close()


def restart_sink_without_mongodb(svc: Services) -> ServiceProcess:
    if "sink" in svc.procs:
        svc.procs["sink"].stop_quietly()
    svc.relay.close()
    sink = svc.start("sink")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sink.get("/ready")[0] != 503:
        time.sleep(0.5)
    status, body = sink.get("/ready")
    assert status == 503, (status, body, sink.tail())
    return sink


def ensure_sink_ready(svc: Services) -> None:
    if "sink" not in svc.procs or not svc.procs["sink"].alive:
        restart_sink_without_mongodb(svc)
    svc.relay.open()
    svc.procs["sink"].wait_ready(120)


@pytest.mark.parametrize("version", list(AIRFLOWS))
def test_sink_ready_waits_through_503_then_the_run_succeeds(services: Services, version: str) -> None:
    sink = restart_sink_without_mongodb(services)
    before = services.run_ids()
    log = services.work / f"dag-{version}-wait.log"
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(zip(("ok", "text"), services.dag(version, "wait"), strict=True)))
    t0 = time.monotonic()
    thread.start()
    # The sink stays unreachable-from-MongoDB until sink_ready was rescheduled twice on a 503.
    while time.monotonic() - t0 < 300 and thread.is_alive():
        text = log.read_text() if log.exists() else ""
        if state_changes(text, "sink_ready").count("up_for_reschedule") >= 2:
            break
        time.sleep(1)
    assert sink.get("/ready")[0] == 503, "the sink became ready on its own: the test proves nothing"
    services.relay.open()
    thread.join(600)
    assert not thread.is_alive()
    ok, text = result["ok"], result["text"]
    assert ok, text[-6000:] + "\n" + sink.tail()
    changes = state_changes(text, "sink_ready")
    assert changes.count("up_for_reschedule") >= 2 and changes[-1] == "success", changes
    assert "answered 503" in text
    states = task_states(text)
    for task in ("plan_etl_run", "sink_ready", "capture_end_offsets", "sink_caught_up", "start_etl_run", "wait_etl_run", "reconcile"):
        assert states.get(task) == "success", (task, states)
    assert states.get("bridge_ready") == "success", states  # informational, but the bridge is up here
    runs = services.runs_since(before)
    assert [(r["mode"], r["date_from"], r["date_to"], r["status"]) for r in runs] == [("incremental", None, None, "succeeded")]


@pytest.mark.parametrize("version", list(AIRFLOWS))
def test_range_params_issue_exactly_that_range_run(services: Services, version: str) -> None:
    ensure_sink_ready(services)
    before = services.run_ids()
    ok, text = services.dag(version, "range", conf={"mode": "range", "date_from": "2026-11-01", "date_to": "2026-11-03"})
    assert ok, text[-6000:]
    runs = services.runs_since(before)
    assert [(r["mode"], r["date_from"], r["date_to"], r["status"]) for r in runs] == [("range", "2026-11-01", "2026-11-03", "succeeded")]


@pytest.mark.parametrize("version", list(AIRFLOWS))
def test_past_intervals_issue_range_runs_for_their_event_dates(services: Services, version: str) -> None:
    """`dags test` at a past logical date runs the hourly interval that ended then (both
    versions infer a manual run's interval the same way): 06:00 → [05:00, 06:00) → that day;
    00:00 → [23:00, 00:00) → the day before (the interval's end is exclusive)."""
    ensure_sink_ready(services)
    issued = []
    for name, logical, date in (("past1", "2026-11-29T06:00:00", "2026-11-29"), ("past2", "2026-12-01T00:00:00", "2026-11-30")):
        before = services.run_ids()
        ok, text = services.dag(version, name, logical_date=datetime.fromisoformat(logical).replace(tzinfo=UTC))
        assert ok, text[-6000:]
        issued += [(r["mode"], r["date_from"], r["date_to"], r["status"]) for r in services.runs_since(before)]
        assert issued[-1] == ("range", date, date, "succeeded"), issued
    assert len(issued) == 2


@pytest.mark.parametrize("version", list(AIRFLOWS))
def test_invalid_params_fail_before_any_etl_run(services: Services, version: str) -> None:
    ensure_sink_ready(services)
    before = services.run_ids()
    ok, text = services.dag(version, "invalid", conf={"mode": "range", "date_from": "2026-11-03", "date_to": "2026-11-01"})
    assert not ok
    assert task_states(text).get("plan_etl_run") == "failed", task_states(text)
    assert "date_to 2026-11-01 is before date_from 2026-11-03" in text
    assert services.runs_since(before) == []


@pytest.mark.parametrize("version", list(AIRFLOWS))
def test_the_etl_does_not_wait_for_the_bridge(services: Services, version: str) -> None:
    """With the bridge down (a remote outage), the ETL of what MongoDB holds still runs to the end
    while bridge_ready keeps poking; the bridge comes back afterwards and the DAG run succeeds."""
    ensure_sink_ready(services)
    services.procs["bridge"].stop_quietly()
    before = services.run_ids()
    log = services.work / f"dag-{version}-nobridge.log"
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(zip(("ok", "text"), services.dag(version, "nobridge"), strict=True)))
    thread.start()
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and thread.is_alive():
            text = log.read_text() if log.exists() else ""
            if task_states(text).get("reconcile") == "success":
                break
            time.sleep(1)
        text = log.read_text()
        assert task_states(text).get("reconcile") == "success", text[-6000:]
        # The whole ETL chain finished while the bridge was still down and bridge_ready waiting.
        assert set(state_changes(text, "bridge_ready")) == {"up_for_reschedule"}, state_changes(text, "bridge_ready")
    finally:
        services.start("bridge").wait_ready(120)
        thread.join(600)
    assert result["ok"], result["text"][-6000:]
    assert task_states(result["text"])["bridge_ready"] == "success"
    runs = services.runs_since(before)
    assert [(r["mode"], r["status"]) for r in runs] == [("incremental", "succeeded")]


def test_with_continuous_mode_on_the_worker_does_the_incremental_run(services: Services) -> None:
    """``PUT /continuous`` (the worker starts), new events streamed, then a DAG run on each version:
    choose_etl_path → ensure_continuous → wait_continuous → reconcile, start_etl_run and
    wait_etl_run never run, and no one-off run is issued (only the worker's micro-batches);
    wait_continuous logs the star schema reaching the target. Continuous mode is turned off
    again (DELETE) and the worker gone before the test ends: the other tests expect one-off runs."""
    import httpx

    ensure_sink_ready(services)
    api = f"http://127.0.0.1:{services.ports['etl-api']}"
    headers = {"Authorization": f"Bearer {services.token}"}
    put = httpx.put(f"{api}/continuous", headers=headers, timeout=30)
    assert put.status_code == 200 and put.json()["desired"] is True, put.text
    try:
        remote = remote_kafka_from_env()
        for version in AIRFLOWS:
            records = list(eventgen.generate(60, seed=len(version), bad_fraction=0.0))
            asyncio.run(eventgen.produce(records, remote, f"af_{services.uid}_product_views", progress=False, partitions=PARTITIONS))
            before = services.run_ids()
            ok, text = services.dag(version, "continuous")
            assert ok, text[-6000:]
            states = task_states(text)
            for task in ("choose_etl_path", "ensure_continuous", "wait_continuous", "reconcile"):
                assert states.get(task) == "success", (version, task, states)
            assert "start_etl_run" not in states and "wait_etl_run" not in states, states  # skipped by the branch
            assert "the worker does it" in text, text[-6000:]
            assert re.search(r"star schema as of \S+ \([\d.]+ s behind\), \d+ micro-batch", text), text[-6000:]
            assert {r["mode"] for r in services.runs_since(before)} <= {"continuous"}
    finally:
        gone = httpx.delete(f"{api}/continuous", headers=headers, timeout=30)
        assert gone.status_code == 200, gone.text
        deadline = time.monotonic() + 120  # the worker finishes its micro-batch, exits and releases the row
        while (body := httpx.get(f"{api}/continuous", headers=headers, timeout=30).json())["owner_token"] is not None:
            assert time.monotonic() < deadline, body
            time.sleep(1)


def test_a_2_10_backfill_issues_one_range_run_per_interval(services: Services) -> None:
    """A real backfill (run_type backfill) on Airflow 2.10, where ``airflow dags backfill`` runs
    without a scheduler: the hourly intervals at 23:00 and 00:00 issue range runs for 11-29 and
    11-30, one after the other (max_active_runs=1). Airflow 3's ``airflow backfill create`` needs
    a running scheduler and api-server, so 3.x is covered by the past-interval runs above."""
    ensure_sink_ready(services)
    before = services.run_ids()
    home = services.work / "airflow-2.10-backfill"
    env = airflow_env(services.token, services.ports, home)
    env["PATH"] = f"{AIRFLOW2_BIN.parent}:{env['PATH']}"  # its executor starts `airflow tasks run`
    subprocess.run([str(AIRFLOW2_BIN), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    argv = [str(AIRFLOW2_BIN), "dags", "backfill", "pipeline_v1", "-s", "2026-11-29T23:00:00+00:00", "-e", "2026-11-30T00:00:00+00:00"]
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=800)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    runs = sorted(services.runs_since(before), key=lambda r: r["requested_at"])
    assert [(r["mode"], r["date_from"], r["date_to"], r["status"]) for r in runs] == [
        ("range", "2026-11-29", "2026-11-29", "succeeded"),
        ("range", "2026-11-30", "2026-11-30", "succeeded"),
    ]


def test_reconcile_fails_naming_the_hour_of_a_seeded_disagreement(services: Services) -> None:
    """A product view the star schema counts is deleted from MongoDB: the DAG's reconcile task
    fails (no retry), naming the document's ingest hour and the difference of its event date;
    the ETL run itself succeeded. Airflow 3 only: the check is a plain HTTP call in both versions."""
    import httpx
    from pymongo import MongoClient

    ensure_sink_ready(services)
    api = f"http://127.0.0.1:{services.ports['etl-api']}"
    headers = {"Authorization": f"Bearer {services.token}"}
    posted = httpx.post(f"{api}/runs", json={"mode": "incremental"}, headers=headers, timeout=30)
    assert posted.status_code == 202, posted.text
    deadline = time.monotonic() + 300
    while (status := services.procs["etl-api"].get(f"/runs/{posted.json()['run_id']}")[1]["status"]) not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, "the ETL run did not finish"
        time.sleep(1)
    assert status == "succeeded"
    with MongoClient(os.environ["MONGODB_URI"]) as client:
        coll = client["kafka_data_db"][f"af_{services.uid}"]
        gone = coll.find_one({"collection": "view_product_detail"})
        assert gone is not None
        assert coll.delete_one({"_id": gone["_id"]}).deleted_count == 1
        try:
            before = services.run_ids()
            ok, text = services.dag("3", "disagree")
            assert not ok
            states = task_states(text)
            assert states.get("wait_etl_run") == "success" and states.get("reconcile") == "failed", states
            assert f"raw store and star schema disagree in ingest hours {gone['ingest_hour']}" in text, text[-6000:]
            assert f'"event_date": "{gone["event_date"]}"' in text and '"difference": -1' in text
            assert [(r["mode"], r["status"]) for r in services.runs_since(before)] == [("incremental", "succeeded")]
        finally:
            coll.insert_one(gone)  # the raw store agrees again for whatever runs next
