"""The SparkSession of a job (and of the transform tests): UTC, no UI, code shipped to non-local masters.

With a ``local[…]`` master the executors are threads of the driver's JVM and their Python
workers run this interpreter, which imports ``etl_api`` from the checkout. With any other master
(``spark://…``, ``yarn``, ``k8s://…``) the executors are other processes, possibly on other
machines, that have never seen this code: :func:`code_archive` zips the packages the executors
import (``etl_api`` with its data files, ``shared``) and :func:`build_spark_session` ships it
with ``SparkContext.addPyFile``, which puts it on every Python worker's ``sys.path``. The data
files (``etl_api/data/*.csv``) travel inside the zip and are read with ``importlib.resources``,
which reads from a zip as from a folder. Third-party packages (pymongo, ua-parser, tldextract)
must be installed in the executors' Python (``ETL_SPARK_PYTHON``); see the README.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from pyspark.sql import SparkSession

import etl_api
import shared
from etl_api.settings import EtlSettings

# packages the executors import: etl_api (extract, transform, enrich and their data) and shared (event contract)
SHIPPED_PACKAGES = (etl_api, shared)
_SHIPPED_SUFFIXES = (".py", ".csv")


def reserved_heap_options(driver_memory: str) -> list[str]:
    """A long-lived driver's JVM options: the heap at its maximum from the start (``-Xms`` =
    ``-Xmx``) and every page of it touched before the first micro-batch. Without them G1 starts
    at 1/64 of the machine's RAM and commits more as the batches grow (a 1 GiB driver went from
    503 to 848 MB of committed heap in its first 5 minutes under 2 000 events/s), so its RSS
    creeps towards the cap for reasons that are not a leak, and an undersized host fails hours in
    instead of at the start. With them, RSS growth is native memory only, and the heap's own
    trend is :func:`jvm_memory`'s ``old_gen_used_mb``."""
    return [f"-Xms{driver_memory}", "-XX:+AlwaysPreTouch"]


def jvm_memory(spark: SparkSession) -> dict[str, float]:
    """The driver JVM's heap in MB: ``committed`` and ``used``, and ``old_gen_used_mb`` (what
    survived young collections: it grows without bound only with a leak). Empty when the JVM
    cannot be asked."""
    try:
        management = spark.sparkContext._jvm.java.lang.management.ManagementFactory  # type: ignore[union-attr]
        heap = management.getMemoryMXBean().getHeapMemoryUsage()
        out = {"heap_committed_mb": heap.getCommitted() / 2**20, "heap_used_mb": heap.getUsed() / 2**20}
        for pool in management.getMemoryPoolMXBeans():
            if "Old Gen" in pool.getName():
                out["old_gen_used_mb"] = pool.getUsage().getUsed() / 2**20
        return {k: round(v, 1) for k, v in out.items()}
    except Exception:  # a JVM gone or a gateway closed: the numbers are a report, never a failure
        return {}


def is_local_master(master: str) -> bool:
    return master == "local" or master.startswith("local[") or master.startswith("local-cluster[")


def code_archive(directory: Path) -> Path:
    """A zip of :data:`SHIPPED_PACKAGES` (sources and data files, no bytecode) in ``directory``.

    Entries are written in sorted order with a fixed timestamp, so the same code gives the same
    bytes; the file name carries their hash (``etl_api-<sha>.zip``): Spark refuses to add two
    different files under one name in one application.
    """
    entries: list[tuple[str, bytes]] = []
    for package in SHIPPED_PACKAGES:
        root = Path(package.__file__ or "").resolve().parent
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in _SHIPPED_SUFFIXES and "__pycache__" not in path.parts:
                entries.append((f"{root.name}/{path.relative_to(root).as_posix()}", path.read_bytes()))
    digest = hashlib.sha256()
    for name, data in entries:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    target = directory / f"etl_api-{digest.hexdigest()[:12]}.zip"
    if not target.exists():
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
        tmp.replace(target)
    return target


def build_spark_session(
    master: str,
    app_name: str,
    *,
    shuffle_partitions: int = 8,
    driver_memory: str = "1g",
    python: str | None = None,
    conf: Mapping[str, str] | None = None,
    ship_code: bool | None = None,
    reserve_heap: bool = False,
) -> SparkSession:
    """A session on ``master``. ``python``: the executors' interpreter (default: this one);
    ``conf``: extra Spark properties, applied last; ``ship_code``: add the code zip to the
    session (default: for every non-local master); ``reserve_heap``: the driver's whole heap
    (``driver_memory``) committed and touched when its JVM starts (:func:`reserved_heap_options`)."""
    # Python workers must run this interpreter (the venv: pymongo, ua-parser, etl_api on its path).
    os.environ.setdefault("PYSPARK_PYTHON", python or sys.executable)
    driver_options = ["-Duser.timezone=UTC", *(reserved_heap_options(driver_memory) if reserve_heap else [])]
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.pyspark.python", python or sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", " ".join(driver_options))
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.default.parallelism", str(max(2, shuffle_partitions)))
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.adaptive.enabled", "true")
        # small partitions: the load streams them one at a time into the driver (toLocalIterator),
        # so this bounds the driver's memory whatever the data size
        .config("spark.sql.adaptive.advisoryPartitionSizeInBytes", "8m")
        .config("spark.python.worker.reuse", "true")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if ship_code if ship_code is not None else not is_local_master(master):
        archive_dir = Path(tempfile.gettempdir()) / "etl-api-code"
        archive_dir.mkdir(exist_ok=True)
        spark.sparkContext.addPyFile(str(code_archive(archive_dir)))
    return spark


def session_for(settings: EtlSettings, app_name: str, *, long_lived: bool = False) -> SparkSession:
    """The session of a job or (``long_lived``) of the continuous worker, from the
    ``ETL_SPARK_*`` settings; a long-lived one reserves its heap when
    ``ETL_CONTINUOUS_RESERVE_HEAP`` (:func:`reserved_heap_options`)."""
    return build_spark_session(
        settings.spark_master,
        app_name,
        shuffle_partitions=settings.spark_shuffle_partitions,
        driver_memory=settings.spark_driver_memory,
        python=settings.spark_python,
        conf=settings.spark_conf,
        reserve_heap=long_lived and settings.continuous_reserve_heap,
    )
