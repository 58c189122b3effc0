"""pipeline_v1: drive the product-view pipeline over HTTP, one DAG run per data interval.

The DAG file is configuration: no I/O at import. Services are reached through Airflow HTTP
connections given as environment variables (nothing stored in Airflow's database):

    AIRFLOW_CONN_BRIDGE_API=http://127.0.0.1:8101
    AIRFLOW_CONN_SINK_API=http://127.0.0.1:8102
    AIRFLOW_CONN_ETL_API=http://:<token>@127.0.0.1:8103     (the password is the bearer token)

Tasks: bridge and sink ready → the local topic's end offsets captured from the sink's ``/lag``
→ wait until the sink's committed offsets reach them → ``POST /runs`` on the ETL API (run id to
XCom) → wait for the run to succeed (fail at once if it failed) → reconciliation check.
Re-running a DAG run is safe: the ETL run is incremental and idempotent.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pendulum
from airflow.exceptions import AirflowFailException
from airflow.providers.http.operators.http import HttpOperator
from airflow.providers.http.sensors.http import HttpSensor

from airflow import DAG

ETL_TERMINAL_FAILURES = {"failed"}


def end_offsets(response: Any) -> dict[str, int]:
    """The local topic's end offset per partition, from the sink's ``/lag``."""
    return {str(p["partition"]): int(p["end"]) for p in response.json()["partitions"]}


def sink_reached(response: Any, ti: Any) -> bool:
    """True once the sink's committed offset of every partition reached the captured end."""
    target: dict[str, int] = ti.xcom_pull(task_ids="capture_end_offsets")
    committed = {str(p["partition"]): p["committed"] or 0 for p in response.json()["partitions"]}
    return all(committed.get(part, 0) >= end for part, end in target.items())


def run_id(response: Any) -> str:
    return str(response.json()["run_id"])


def run_finished(response: Any) -> bool:
    """True on success; raises (no retry) when the ETL run failed."""
    body = response.json()
    if body["status"] in ETL_TERMINAL_FAILURES:
        raise AirflowFailException(f"ETL run {body.get('run_id')} failed: {body.get('error')}")
    return bool(body["status"] == "succeeded")


def reconciled(response: Any) -> bool:
    """The run's own reconciliation: valid product views read == what the run added to
    sum(view_count) of the dates it wrote (written after − before: an incremental run merges
    its new views into the dates' existing facts; ``view_count_before`` is 0 when it replaced
    them, and absent in runs from before merging). Anything else fails the task, loudly, without
    retry."""
    body = response.json()
    rec = body.get("reconciliation") or {}
    views, written, before = rec.get("valid_views"), rec.get("view_count_written"), rec.get("view_count_before", 0)
    if body.get("status") != "succeeded" or views is None or written is None or views != written - before:
        raise AirflowFailException(f"ETL run {body.get('run_id')} does not reconcile: {json.dumps(rec)}")
    return True


default_args = {
    "owner": "data-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(minutes=30),
}

with DAG(
    dag_id="pipeline_v1",
    description="remote Kafka → local Kafka → MongoDB → Spark → PostgreSQL star schema",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["product-views"],
) as dag:
    bridge_ready = HttpSensor(task_id="bridge_ready", http_conn_id="bridge_api", endpoint="ready", poke_interval=5, timeout=300)
    sink_ready = HttpSensor(task_id="sink_ready", http_conn_id="sink_api", endpoint="ready", poke_interval=5, timeout=300)
    capture_end_offsets = HttpOperator(
        task_id="capture_end_offsets", http_conn_id="sink_api", endpoint="lag", method="GET", response_filter=end_offsets, log_response=True
    )
    sink_caught_up = HttpSensor(
        task_id="sink_caught_up",
        http_conn_id="sink_api",
        endpoint="lag",
        response_check=sink_reached,
        poke_interval=5,
        timeout=1800,
    )
    start_etl_run = HttpOperator(
        task_id="start_etl_run",
        http_conn_id="etl_api",
        endpoint="runs",
        method="POST",
        data=json.dumps({"mode": "incremental"}),
        headers={"Content-Type": "application/json", "Authorization": "Bearer {{ conn.etl_api.password }}"},
        response_check=lambda response: response.status_code == 202,
        response_filter=run_id,
        retries=0,  # a second POST while the first run is active answers 409: fail loudly instead
    )
    wait_etl_run = HttpSensor(
        task_id="wait_etl_run",
        http_conn_id="etl_api",
        endpoint="runs/{{ ti.xcom_pull(task_ids='start_etl_run') }}",
        response_check=run_finished,
        poke_interval=5,
        timeout=3600,
    )
    reconcile = HttpOperator(
        task_id="reconcile",
        http_conn_id="etl_api",
        endpoint="runs/{{ ti.xcom_pull(task_ids='start_etl_run') }}",
        method="GET",
        response_check=reconciled,
        retries=0,
    )

    [bridge_ready, sink_ready] >> capture_end_offsets >> sink_caught_up >> start_etl_run >> wait_etl_run >> reconcile
