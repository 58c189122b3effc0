"""A run on a non-local Spark master: a real standalone master and one worker (from the pyspark
install, on loopback) whose Python cannot import this repository's code, so the run only
succeeds when the job ships ``etl_api`` (and its data file) to the executors itself."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import sysconfig
import time
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyspark
import pytest

from tests.integration.etl.conftest import free_port
from tests.integration.etl.helpers import expected_star, make_events
from tests.integration.etl.test_star_schema import assert_star_equals, insert, run_ok, star_rows

SPARK_HOME = Path(pyspark.__file__).resolve().parent


@dataclass
class Standalone:
    url: str  # spark://127.0.0.1:<port>
    ui: str  # the master's web UI (JSON at /json/)
    worker_dir: Path
    python: str  # the executors' interpreter: the venv's packages, none of the repo's code

    def state(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.ui}/json/", timeout=5).json()
        return body


def _bare_python(root: Path) -> str:
    """A virtualenv that sees the project venv's third-party packages (one .pth line naming its
    site-packages) but not the repository (the venv's own ``pipeline-repo.pth`` is not processed)."""
    venv.create(root, with_pip=False)
    python = root / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    )
    Path(site.stdout.strip(), "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return str(python)


def _wait(check: Any, what: str, logs: list[Path], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} not up in {timeout}s:\n" + "\n".join(p.read_text()[-2000:] for p in logs if p.exists()))


@pytest.fixture
def worker_python(tmp_path: Path) -> str:
    return _bare_python(tmp_path / "worker-venv")


@pytest.fixture
def spark_standalone(tmp_path: Path, worker_python: str) -> Iterator[Standalone]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env |= {"SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "256m", "SPARK_LOG_DIR": str(tmp_path)}
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port, ui_port = free_port(), free_port()
    url, ui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    master_log, worker_log, worker_dir = tmp_path / "master.log", tmp_path / "worker.log", tmp_path / "worker-work"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with master_log.open("wb") as out:
            master = [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui_port),
            ]
            procs.append(subprocess.Popen(master, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        cluster = Standalone(url, ui, worker_dir, worker_python)
        _wait(lambda: cluster.state()["status"] == "ALIVE", "spark master", [master_log])
        with worker_log.open("wb") as out:
            worker = [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--port", str(free_port())]
            worker += ["--webui-port", str(free_port()), "--cores", "2", "--memory", "1g", "--work-dir", str(worker_dir)]
            procs.append(subprocess.Popen(worker, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        _wait(lambda: cluster.state()["aliveworkers"] == 1, "spark worker", [master_log, worker_log])
        yield cluster
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def test_worker_python_cannot_import_the_repository(worker_python: str) -> None:
    """The premise of the next test: without shipping, an executor could not import etl_api."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    deps = subprocess.run([worker_python, "-c", "import pymongo, ua_parser, tldextract, pyspark"], env=env, capture_output=True)
    assert deps.returncode == 0, deps.stderr
    for module in ("etl_api", "shared"):
        ours = subprocess.run([worker_python, "-c", f"import {module}"], env=env, capture_output=True, text=True, cwd="/")
        assert ours.returncode == 1 and f"No module named '{module}'" in ours.stderr
    assert Path(sys.executable).parent != Path(worker_python).parent


async def test_full_run_on_a_standalone_master_ships_the_code(
    spark_standalone: Standalone, make_service, mongo_collection, pg, unique_name
) -> None:
    docs = make_events(random.Random(23), 240, [date(2020, 6, 1), date(2020, 6, 2)], datetime.now(UTC) - timedelta(minutes=5))
    insert(mongo_collection, docs)
    conf = {
        "spark.executor.memory": "512m",
        "spark.cores.max": "2",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }
    svc = make_service(
        unique_name,
        ETL_SPARK_MASTER=spark_standalone.url,
        ETL_SPARK_PYTHON=spark_standalone.python,
        ETL_SPARK_CONF=json.dumps(conf),
        SPARK_LOCAL_IP="127.0.0.1",
    )
    async with svc.client() as client:
        run = await run_ok(client, {"mode": "full"})
    rows = await star_rows(pg, unique_name)
    assert_star_equals(rows, expected_star(docs), {run["run_id"]})
    assert run["reconciliation"]["events_read"] == sum(1 for d in docs if d.doc["collection"] == "view_product_detail")

    # the run was an application of this master, and its executor (on the worker) received the code zip
    apps = [a for a in spark_standalone.state()["completedapps"] if a["name"] == f"etl-{run['run_id']}"]
    assert len(apps) == 1
    shipped = sorted(p.name for p in (spark_standalone.worker_dir / apps[0]["id"]).glob("*/etl_api-*.zip"))
    assert len(shipped) == 1 and shipped[0].startswith("etl_api-"), shipped
