"""The DAG imports cleanly in the real Airflow 3.x virtualenv (the default) and in the Airflow 2.10
one, with the same task graph, params, sensor settings and asset on both; its reconciliation check
accepts a run that replaced or merged facts and refuses anything else; its run planning maps
params and data intervals to the documented ``POST /runs`` bodies; with continuous mode desired
an incremental run takes the continuous path (no ``POST /runs``), every other run and continuous
mode off or unknown the one-off run's path, and the continuous path waits for a healthy worker
whose star schema reached the target instant."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import REPO

AIRFLOW_PYS = {"3": REPO / ".venv-airflow" / "bin" / "python", "2.10": REPO / ".venv-airflow2" / "bin" / "python"}

PROBE = r"""
import json
import pendulum
from airflow.models import DagBag
bag = DagBag(dag_folder="airflow/dags")  # examples off by AIRFLOW__CORE__LOAD_EXAMPLES
dag = bag.get_dag("pipeline_v1")

def reconciled_cases():
    import importlib.util
    spec = importlib.util.spec_from_file_location("pipeline_v1_probe", "airflow/dags/pipeline_v1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    class Response:
        def __init__(self, body):
            self.body = body

        def json(self):
            return self.body

    def ok(rec, status="succeeded"):
        try:
            return mod.reconciled(Response({"status": status, "reconciliation": rec}))
        except Exception as exc:
            return type(exc).__name__

    return [
        ok({"valid_views": 5, "view_count_written": 5}),  # replaced dates (or a run from before merging)
        ok({"valid_views": 5, "view_count_written": 12, "view_count_before": 7}),  # merged into 7 existing views
        ok({"valid_views": 5, "view_count_written": 12, "view_count_before": 0}),
        ok({"valid_views": 5, "view_count_written": 11, "view_count_before": 7}),
        ok({"valid_views": 5}),
        ok({"valid_views": 5, "view_count_written": 5}, status="failed"),
    ]

def hours_cases():
    import importlib.util
    spec = importlib.util.spec_from_file_location("pipeline_v1_hours", "airflow/dags/pipeline_v1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = []
    late = {"ingest_hour": "2026-12-03T09", "status": "late", "mongodb": 4, "accounted": 3,
            "dates": [{"event_date": "2026-12-03", "mongodb": 4, "accounted": 3, "difference": 1}]}
    for body in ({"ok": True, "disagreeing_hours": [], "hours": []},
                 {"ok": False, "disagreeing_hours": ["2026-12-03T09"], "hours": [late]},
                 {"detail": "no ok field"}):
        try:
            out.append(mod.hours_agree(body))
        except Exception as exc:
            out.append([type(exc).__name__, str(exc)[:120]])
    return out
def partitions_cases():
    import importlib.util
    spec = importlib.util.spec_from_file_location("pipeline_v1_partitions", "airflow/dags/pipeline_v1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = []
    missing = {"source_topic": "t", "source_partition": 1, "status": "missing", "documents": 4}
    fine = {"source_topic": "t", "source_partition": 0, "status": "ok", "documents": 5}
    for body in ({"ok": True, "disagreeing_partitions": [], "partitions": [fine]},
                 {"ok": False, "disagreeing_partitions": ["t/1"], "partitions": [fine, missing]},
                 {"detail": "no ok field"}):
        try:
            out.append(mod.partitions_agree(body))
        except Exception as exc:
            out.append([type(exc).__name__, str(exc)[:120]])
    return out
def plans():
    import importlib.util
    from datetime import datetime, timezone
    spec = importlib.util.spec_from_file_location("pipeline_v1_plan", "airflow/dags/pipeline_v1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    now = datetime(2026, 12, 2, 9, 30, tzinfo=timezone.utc)

    def at(text):
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)

    def plan(params, run_type="manual", start="2026-12-02T08:00", end="2026-12-02T09:00"):
        try:
            return mod.run_body(params, run_type, at(start), at(end), now)
        except Exception as exc:
            return type(exc).__name__

    inc = {"mode": "incremental", "date_from": None, "date_to": None}
    return [
        plan(inc, "scheduled"),  # the interval that just ended
        plan(inc, "manual", "2026-12-02T06:00", "2026-12-02T07:00"),  # ended 2.5 h ago: a cleared run
        plan(inc, "scheduled", "2026-11-30T23:00", "2026-12-01T00:00"),  # the end is exclusive
        plan(inc, "backfill"),  # a backfill is a range run even for a recent interval
        plan({"mode": "full"}, "manual", "2026-11-01T00:00", "2026-11-01T01:00"),
        plan({"mode": "range", "date_from": "2026-11-01", "date_to": "2026-11-03"}),
        plan({"mode": "range", "date_from": "2026-11-03", "date_to": "2026-11-01"}),
        plan({"mode": "range", "date_from": "2026-11-01"}),
        plan({"mode": "range", "date_from": "2025-01-01", "date_to": "2026-01-02"}),  # 367 dates
        plan({"mode": "full", "date_from": "2026-11-01"}),
        plan({"mode": "weekly"}),
    ]

def continuous_cases():
    import importlib.util
    from datetime import datetime, timezone
    spec = importlib.util.spec_from_file_location("pipeline_v1_continuous", "airflow/dags/pipeline_v1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    on = {"desired": True, "alive": True, "state": "running", "reason": None,
          "star_as_of": "2026-12-02T09:29:50+00:00", "behind_seconds": 10.5, "batches": 7}
    paths = [
        mod.etl_path({"mode": "incremental"}, on),
        mod.etl_path({"mode": "incremental"}, on | {"alive": False}),  # a dead worker: ensure_continuous relaunches it
        mod.etl_path({"mode": "incremental"}, on | {"desired": False}),
        mod.etl_path({"mode": "incremental"}, None),  # an ETL API without /continuous (404)
        mod.etl_path({"mode": "range", "date_from": "2026-12-02", "date_to": "2026-12-02"}, on),  # backfills POST
        mod.etl_path({"mode": "full"}, on),
    ]
    healthy = [
        mod.worker_healthy(on),
        mod.worker_healthy(on | {"alive": False, "reason": "no heartbeat for 70s"}),
        mod.worker_healthy(on | {"state": "waiting", "reason": "MongoDB: timed out"}),
        mod.worker_healthy(on | {"behind_seconds": 600.0}),
        mod.worker_healthy(on | {"behind_seconds": None, "star_as_of": None}),
        mod.worker_healthy(on | {"desired": False}),
        mod.worker_healthy(on | {"alive": False, "reason": None}),
        mod.worker_healthy(on | {"state": None}),
    ]
    now = datetime(2026, 12, 2, 9, 31, tzinfo=timezone.utc)
    targets = [
        mod.freshness_target(on, now).isoformat(),  # the ETL API's clock: star_as_of + behind_seconds
        mod.freshness_target(on | {"star_as_of": None, "behind_seconds": None}, now).isoformat(),  # nothing loaded: the DAG's
    ]
    target = datetime(2026, 12, 2, 9, 30, tzinfo=timezone.utc)

    def caught(status):
        try:
            return list(mod.continuous_caught_up(status, target))
        except Exception as exc:
            return [type(exc).__name__, str(exc)]

    waits = [
        caught(on),  # alive, 10 s behind, but short of the target
        caught(on | {"star_as_of": "2026-12-02T09:30:00.5+00:00"}),
        caught(on | {"star_as_of": "2026-12-02T09:30:00.5Z", "state": "yielding", "reason": "another run is queued or running"}),
        caught(on | {"star_as_of": "2026-12-02T09:30:00.5+00:00", "behind_seconds": 900}),
        caught(on | {"desired": False}),
    ]

    class Response:
        def __init__(self, code, body=None):
            self.status_code, self.body, self.text = code, body, "{}"

        def json(self):
            return self.body

    def status(code):
        try:
            return mod.continuous_status(Response(code, on))
        except Exception as exc:
            return type(exc).__name__

    wm = "2026-12-02T09:29:50+00:00"
    def again(ok, watermark, hours):
        return mod.only_the_watermark_hour_disagrees({"ok": ok, "watermark": watermark, "disagreeing_hours": hours})

    recheck = [
        again(False, wm, ["2026-12-02T09"]),
        again(False, "2026-12-02T10:29:50+01:00", ["2026-12-02T09"]),  # the same instant, another offset
        again(True, wm, []),
        again(False, wm, ["2026-12-02T08"]),
        again(False, wm, ["2026-12-02T08", "2026-12-02T09"]),
        again(False, None, ["2026-12-02T09"]),
    ]
    return {"paths": paths, "healthy": healthy, "targets": targets, "waits": waits, "recheck": recheck,
            "status": [status(200) == on, status(404), status(503), status(401)]}

def accepted_cases():
    import importlib.util
    spec = importlib.util.spec_from_file_location("pipeline_v1_accept", "airflow/dags/pipeline_v1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    class Response:
        def __init__(self, code):
            self.status_code, self.text = code, "{}"

    def check(code):
        try:
            return mod.etl_run_accepted(Response(code))
        except Exception as exc:
            return type(exc).__name__

    return [check(202), check(409), check(401), check(422)]

def task_info(t):
    return {
        "mode": getattr(t, "mode", None),
        "timeout": getattr(t, "timeout", None),
        "poke_interval": getattr(t, "poke_interval", None),
        "soft_fail": getattr(t, "soft_fail", None),
        "execution_timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None,
        "retries": t.retries,
        "outlets": sorted(getattr(o, "uri", str(o)) for o in t.outlets),
        "callback": bool(t.on_failure_callback),
        "check_response": (getattr(t, "extra_options", None) or {}).get("check_response"),
        "accepted": accepted_cases() if t.task_id == "start_etl_run" else None,
        "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
    }

def hourly_interval(run_after):
    timetable = dag.timetable
    try:  # Airflow 3: the DAG holds the task SDK's timetable; the scheduler uses the core one
        from airflow.serialization.encoders import coerce_to_core_timetable
        timetable = coerce_to_core_timetable(timetable)
    except ImportError:
        pass
    return [str(x) for x in timetable.infer_manual_data_interval(run_after=run_after)]

print(json.dumps({
    "tasks": {t.task_id: task_info(t) for t in dag.tasks},
    "params": {k: dag.params.get_param(k).schema for k in dag.params},
    "param_defaults": {k: dag.params[k] for k in dag.params},
    "tags": sorted(dag.tags),
    "doc_md": bool(dag.doc_md),
    "interval": hourly_interval(pendulum.datetime(2026, 12, 1, tz="UTC")),
    "plans": plans(),
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "edges": sorted([t.task_id, d] for t in dag.tasks for d in sorted(t.downstream_task_ids)),
    "retries": dag.default_args.get("retries"),
    "timeout": str(dag.default_args.get("execution_timeout")),
    "catchup": dag.catchup,
    "max_active_runs": dag.max_active_runs,
    "reconciled": reconciled_cases(),
    "hours_agree": hours_cases(),
    "partitions_agree": partitions_cases(),
    "continuous": continuous_cases(),
}))
"""


STAR_SCHEMA_URI = "warehouse://product-views/star-schema"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("version", list(AIRFLOW_PYS))
def test_dagbag_imports_pipeline_v1_with_the_expected_graph(tmp_path, version: str) -> None:
    airflow_py = AIRFLOW_PYS[version]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "True"}
    migrate = subprocess.run([str(airflow_py.with_name("airflow")), "db", "migrate"], env=env, capture_output=True, text=True, timeout=150)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    res = subprocess.run([str(airflow_py), "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    assert info["dag_ids"] == ["pipeline_v1"]
    # bridge_ready is informational: nothing waits on it (a remote outage must not block the ETL).
    # choose_etl_path: the one-off run (start_etl_run) or the continuous worker (ensure_continuous);
    # reconcile runs after whichever ran.
    assert info["edges"] == [
        ["capture_end_offsets", "sink_caught_up"],
        ["choose_etl_path", "ensure_continuous"],
        ["choose_etl_path", "start_etl_run"],
        ["ensure_continuous", "wait_continuous"],
        ["plan_etl_run", "sink_ready"],
        ["sink_caught_up", "choose_etl_path"],
        ["sink_ready", "capture_end_offsets"],
        ["start_etl_run", "wait_etl_run"],
        ["wait_continuous", "reconcile"],
        ["wait_etl_run", "reconcile"],
    ]
    assert (info["retries"], info["timeout"], info["catchup"], info["max_active_runs"]) == (2, "0:05:00", False, 1)
    tasks = info["tasks"]
    sensors = {"bridge_ready": 300, "sink_ready": 900, "sink_caught_up": 1800, "wait_etl_run": 3600, "wait_continuous": 3600}
    for task_id, timeout in sensors.items():
        t = tasks[task_id]
        # reschedule: no worker slot between pokes; execution_timeout bounds one poke, far below the
        # sensor's own timeout (the whole wait); every status reaches the response_check.
        assert (t["mode"], t["timeout"], t["execution_timeout"], t["check_response"]) == ("reschedule", timeout, 120.0, False), (task_id, t)
        assert t["poke_interval"] * 10 <= timeout
    assert tasks["bridge_ready"]["soft_fail"] is True and tasks["bridge_ready"]["retries"] == 0
    assert [t["soft_fail"] for k, t in tasks.items() if k in sensors and k != "bridge_ready"] == [False] * 4
    assert {k: t["retries"] for k, t in tasks.items() if t["retries"] == 0} == {"plan_etl_run": 0, "bridge_ready": 0, "reconcile": 0}
    assert tasks["start_etl_run"]["retries"] == 8  # waits out another active ETL run (409)
    assert tasks["choose_etl_path"]["retries"] == 4  # an ETL API restarting (5xx) is asked again
    assert {k for k, t in tasks.items() if t["trigger_rule"] != "all_success"} == {"reconcile"}
    assert tasks["reconcile"]["trigger_rule"] == "none_failed_min_one_success"
    assert {t["poke_interval"] for t in tasks.values() if t["mode"]} == {30}  # PIPELINE_V1_POKE_SECONDS unset
    assert all(t["callback"] for t in tasks.values())
    # 409 (another run active) is retried; any other refusal fails at once.
    assert tasks["start_etl_run"]["accepted"] == [True, "AirflowException", "AirflowFailException", "AirflowFailException"]
    assert {k: t["outlets"] for k, t in tasks.items() if t["outlets"]} == {"reconcile": [STAR_SCHEMA_URI]}
    assert info["param_defaults"] == {"mode": "incremental", "date_from": None, "date_to": None}
    assert info["params"]["mode"]["enum"] == ["incremental", "full", "range"]
    assert info["params"]["date_from"]["format"] == info["params"]["date_to"]["format"] == "date"
    assert set(info["tags"]) >= {"product-views", "etl"} and info["doc_md"]
    # An hourly data interval, the same on both versions (explicit CronDataIntervalTimetable:
    # Airflow 3's default for a cron string would be a zero-length interval).
    assert info["interval"] == ["2026-11-30 23:00:00+00:00", "2026-12-01 00:00:00+00:00"]
    fail = "AirflowFailException"
    rng = {"mode": "range", "date_from": "2026-11-01", "date_to": "2026-11-03"}
    assert info["plans"] == [
        {"mode": "incremental"},
        {"mode": "range", "date_from": "2026-12-02", "date_to": "2026-12-02"},
        {"mode": "range", "date_from": "2026-11-30", "date_to": "2026-11-30"},
        {"mode": "range", "date_from": "2026-12-02", "date_to": "2026-12-02"},
        {"mode": "full"},
        rng,
        fail,
        fail,
        fail,
        fail,
        fail,
    ]
    assert info["reconciled"] == [True, True, fail, fail, fail, fail]
    cont = info["continuous"]
    run_path, continuous_path = "start_etl_run", "ensure_continuous"
    assert cont["paths"] == [continuous_path, continuous_path, run_path, run_path, run_path, run_path]
    assert cont["healthy"] == [
        None,
        "no live worker (no heartbeat for 70s)",
        "worker waiting: MongoDB: timed out",
        "the star schema is 600 s behind (threshold 600 s)",
        "the star schema has no freshness yet (nothing loaded)",
        "continuous mode is off",
        "no live worker",
        "worker starting",
    ]
    assert cont["targets"] == ["2026-12-02T09:30:00.500000+00:00", "2026-12-02T09:31:00+00:00"]
    assert cont["waits"] == [
        [False, "star schema as of 2026-12-02 09:29:50+00:00, waiting for 2026-12-02T09:30:00+00:00"],
        [True, "star schema as of 2026-12-02T09:30:00.500000+00:00 (10.5 s behind), 7 micro-batches"],
        [True, "star schema as of 2026-12-02T09:30:00.500000+00:00 (10.5 s behind), 7 micro-batches"],  # yielding is healthy
        [False, "the star schema is 900 s behind (threshold 600 s)"],
        [fail, "continuous mode was turned off (DELETE /continuous) while waiting for the star schema"],
    ]
    assert cont["status"] == [True, None, "AirflowException", fail]
    # continuous path: only a disagreement in the watermark's hour (a micro-batch committed during the check) is asked again
    assert cont["recheck"] == [True, True, False, False, False, False]
    # the cross-hop check names the disagreeing hour and its difference
    assert info["partitions_agree"] == [
        True,
        [
            fail,
            'the Kafka hops disagree in remote partitions t/1: [{"source_topic": "t", "source_partition": 1, "status": "missing", "do',
        ],
        [fail, "the Kafka hops disagree in remote partitions ?: []"],
    ]
    assert info["hours_agree"] == [
        True,
        [fail, 'raw store and star schema disagree in ingest hours 2026-12-03T09: [{"ingest_hour": "2026-12-03T09", "status": "late", "m'],
        [fail, "raw store and star schema disagree in ingest hours ?: [] (late: documents visible after their hour was read, counted by "],
    ]
