"""The SparkSession of a job (and of the transform tests): UTC, no UI, this interpreter for workers."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession


def build_spark_session(master: str, app_name: str, *, shuffle_partitions: int = 8, driver_memory: str = "1g") -> SparkSession:
    # Python workers must run this interpreter (the venv: pymongo, ua-parser, etl_api on its path).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
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
        .getOrCreate()
    )
