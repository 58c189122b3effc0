"""One SparkSession (local[2], UTC) for every transform test of the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from etl_api.spark import build_spark_session
from pyspark.sql import SparkSession


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = build_spark_session("local[2]", "etl-unit-tests", shuffle_partitions=2)
    yield session
    session.stop()
