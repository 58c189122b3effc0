"""The read's enrichment (``extract.enriched_row``) cleans the raw user agent, referrer and page
URL in Python exactly as ``clean_events`` cleans them in Spark: the lookups see what the star
schema's columns hold. Generated texts: whitespace of every kind around them, the null-like words
in any case, non-ASCII letters whose lower case is not one character."""

from __future__ import annotations

from etl_api import transform
from etl_api.enrich import ENRICHED_FIELDS, clean_text, enrichment
from etl_api.extract import RAW_FIELDS, enriched_row
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from tests.unit.etl.test_transform import IPHONE

WORDS = ("", "null", "NULL", "None", "nan", "NaN", "undefined", "UNDEFINED", "UNDEFİNED", "nuLL", "none ", "İ", "ǅ", "ß")
EDGES = (" ", "  ", "\t", "\n", "\u00a0", "\u3000", "")
TEXTS = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.builds(lambda a, w, b: a + w + b, st.sampled_from(EDGES), st.sampled_from(WORDS), st.sampled_from(EDGES)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TEXTS, min_size=1, max_size=40))
def test_clean_text_is_what_spark_cleans(spark: SparkSession, texts: list[str | None]) -> None:
    schema = T.StructType([T.StructField("i", T.IntegerType()), T.StructField("t", T.StringType())])
    df = spark.createDataFrame(list(enumerate(texts)), schema)
    got = [r["c"] for r in df.select("i", transform._clean_text(F.col("t")).alias("c")).orderBy("i").collect()]
    assert got == [clean_text(t) for t in texts]


def test_an_enriched_row_is_the_raw_row_then_its_enrichment() -> None:
    ua = f"  {IPHONE} "
    values = {f: None for f in RAW_FIELDS} | {
        "user_agent": ua,
        "referrer_url": "NULL",
        "current_url": " https://www.glamira.fr/glamira-pendant-viktor.html ",
    }
    row = tuple(values[f] for f in RAW_FIELDS)
    out = enriched_row(row, ("glamira",))
    assert out[: len(RAW_FIELDS)] == row
    assert dict(zip(ENRICHED_FIELDS, out[len(RAW_FIELDS) :], strict=True)) == {
        "device_type": "mobile",
        "browser": "Mobile Safari",
        "browser_info": "Mobile Safari 13.0 / iOS 13.3",
        "os": "iOS 13.3",
        "is_bot": False,
        "referrer_domain": None,
        "referrer_type": "direct",
        "site_domain": "glamira.fr",
        "country_code": "FR",
        "country_name": "France",
        "region": "Europe",
        "product_slug": "glamira-pendant-viktor",
        "product_name": "Glamira Pendant Viktor",
        "category": "pendant",
    }
    assert enrichment(None, None, None) == ("unknown", None, None, None, False, None, "direct", *(None,) * 7)
