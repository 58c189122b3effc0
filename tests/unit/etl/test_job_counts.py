"""The job's one-pass count of rows and touched dates."""

from __future__ import annotations

from datetime import date

from etl_api.reading import count_by_date, read_partitions, shuffle_partitions
from pyspark.sql import SparkSession
from pyspark.sql import types as T


def test_count_by_date_counts_every_row_and_lists_non_null_dates_sorted(spark: SparkSession) -> None:
    schema = T.StructType([T.StructField("event_date", T.DateType()), T.StructField("x", T.StringType())])
    rows = [(date(2020, 6, 2), "a"), (None, "b"), (date(2020, 6, 1), "c"), (date(2020, 6, 2), "d"), (None, "e")]
    assert count_by_date(spark.createDataFrame(rows, schema)) == (5, [date(2020, 6, 1), date(2020, 6, 2)])
    assert count_by_date(spark.createDataFrame([], schema)) == (0, [])


def test_read_partitions_bound_the_rows_of_each_partition() -> None:
    assert [read_partitions(n, 100_000) for n in (0, 1, 100_000, 100_001, 3_000_000)] == [0, 1, 1, 2, 30]


def test_a_full_run_never_shuffles_into_fewer_partitions_than_it_reads() -> None:
    assert [shuffle_partitions(8, n) for n in (0, 8, 9, 30)] == [8, 8, 9, 30]
