"""The DAG imports cleanly in the real Airflow 2.10 virtualenv and has the expected task graph;
its reconciliation check accepts a run that replaced or merged facts and refuses anything else."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import REPO

AIRFLOW_PY = REPO / ".venv-airflow" / "bin" / "python"

PROBE = r"""
import json
from airflow.models import DagBag
bag = DagBag(dag_folder="airflow/dags", include_examples=False)
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
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "edges": sorted([t.task_id, d] for t in dag.tasks for d in sorted(t.downstream_task_ids)),
    "retries": dag.default_args.get("retries"),
    "timeout": str(dag.default_args.get("execution_timeout")),
    "catchup": dag.catchup,
    "max_active_runs": dag.max_active_runs,
    "reconciled": reconciled_cases(),
}))
"""


@pytest.mark.timeout(180)
def test_dagbag_imports_pipeline_v1_with_the_expected_graph(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "True"}
    migrate = subprocess.run([str(AIRFLOW_PY.with_name("airflow")), "db", "migrate"], env=env, capture_output=True, text=True, timeout=150)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    res = subprocess.run([str(AIRFLOW_PY), "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    assert info["dag_ids"] == ["pipeline_v1"]
    assert info["edges"] == [
        ["bridge_ready", "capture_end_offsets"],
        ["capture_end_offsets", "sink_caught_up"],
        ["sink_caught_up", "start_etl_run"],
        ["sink_ready", "capture_end_offsets"],
        ["start_etl_run", "wait_etl_run"],
        ["wait_etl_run", "reconcile"],
    ]
    assert (info["retries"], info["timeout"], info["catchup"], info["max_active_runs"]) == (2, "0:30:00", False, 1)
    fail = "AirflowFailException"
    assert info["reconciled"] == [True, True, fail, fail, fail, fail]
