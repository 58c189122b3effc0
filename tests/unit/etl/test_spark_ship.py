"""Shipping the job's code to non-local Spark masters: the zip, and the settings that reach the job."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from etl_api.settings import EtlSettings
from etl_api.spark import code_archive, is_local_master

from tests.conftest import REPO


def test_local_masters_are_recognised() -> None:
    assert [is_local_master(m) for m in ("local", "local[*]", "local[2]", "local-cluster[2,1,1024]")] == [True] * 4
    assert [is_local_master(m) for m in ("spark://10.0.0.5:7077", "yarn", "k8s://https://api:6443")] == [False] * 3


def test_code_archive_holds_both_packages_and_data_and_is_reproducible(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = code_archive(tmp_path / "a"), code_archive(tmp_path / "b")
    assert first.name == second.name and first.name.startswith("etl_api-") and first.read_bytes() == second.read_bytes()
    names = set(zipfile.ZipFile(first).namelist())
    expected_etl = {p.relative_to(REPO / "services" / "etl-api").as_posix() for p in (REPO / "services/etl-api/etl_api").rglob("*.py")}
    expected_shared = {p.relative_to(REPO).as_posix() for p in (REPO / "shared").rglob("*.py")}
    assert names == expected_etl | expected_shared | {"etl_api/data/site_countries.csv"}


def test_code_archive_imports_and_reads_its_data_without_the_checkout(tmp_path: Path) -> None:
    archive = code_archive(tmp_path)
    probe = (
        "import sys\n"
        f"repo = {str(REPO)!r}\n"
        "sys.path = [p for p in sys.path if not (p == repo or p.startswith(repo + '/services') or p.startswith(repo + '/tools'))]\n"
        f"sys.path.insert(0, {str(archive)!r})\n"
        "import etl_api.enrich as e, etl_api.extract as x, shared.event as s\n"
        "print(e.__file__); print(s.__file__); print(e.country_of_site('glamira.com.vn')); print(x.PARTS)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/").stdout.splitlines()
    assert out == [
        f"{archive}/etl_api/enrich.py",
        f"{archive}/shared/event.py",
        "Country(code='VN', name='Vietnam', region='Asia')",
        "16",
    ]


def test_cluster_settings_reach_the_job_process(monkeypatch) -> None:
    monkeypatch.setenv("POSTGRES_DSN", "postgresql://u:p@h/db")
    monkeypatch.setenv("ETL_SPARK_MASTER", "spark://10.0.0.5:7077")
    monkeypatch.setenv("ETL_SPARK_PYTHON", "/opt/etl/bin/python")
    monkeypatch.setenv("ETL_SPARK_CONF", '{"spark.executor.memory": "2g", "spark.driver.host": "10.0.0.9"}')
    monkeypatch.setenv("ETL_FERRETDB_POSTGRESQL_URL", "postgresql://f:secret@h/ferretdb")
    settings = EtlSettings()  # type: ignore[call-arg]
    assert settings.spark_conf == {"spark.executor.memory": "2g", "spark.driver.host": "10.0.0.9"}
    env = settings.job_environment()
    assert env["ETL_SPARK_MASTER"] == "spark://10.0.0.5:7077"
    assert env["ETL_SPARK_PYTHON"] == "/opt/etl/bin/python"
    assert json.loads(env["ETL_SPARK_CONF"]) == {"spark.executor.memory": "2g", "spark.driver.host": "10.0.0.9"}
    assert env["ETL_FERRETDB_POSTGRESQL_URL"] == "postgresql://f:secret@h/ferretdb"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert EtlSettings().model_dump() == settings.model_dump()  # type: ignore[call-arg]
    assert settings.masked()["ferretdb_postgresql_url"] == "***"
