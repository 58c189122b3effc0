"""The job's one-pass count of rows and touched dates."""

from __future__ import annotations

from datetime import date

from etl_api.job import count_by_date
from pyspark.sql import SparkSession
from pyspark.sql import types as T


def test_count_by_date_counts_every_row_and_lists_non_null_dates_sorted(spark: SparkSession) -> None:
    schema = T.StructType([T.StructField("event_date", T.DateType()), T.StructField("x", T.StringType())])
    rows = [(date(2020, 6, 2), "a"), (None, "b"), (date(2020, 6, 1), "c"), (date(2020, 6, 2), "d"), (None, "e")]
    assert count_by_date(spark.createDataFrame(rows, schema)) == (5, [date(2020, 6, 1), date(2020, 6, 2)])
    assert count_by_date(spark.createDataFrame([], schema)) == (0, [])
