"""Generated records through the bridge's per-record path and the sink's write path, into the real FerretDB.

Property (issue 14): whatever a record holds, it ends stored exactly once or dead-lettered with a
reason at exactly one hop, and nothing raises out of a hop. The records are generated, not
listed: NUL and lone surrogates in strings and keys, ``$``/``.``/``%``/empty keys, nesting 1-1 100
deep, integers up to ±2**70, floats and NaN, huge strings, duplicate keys, the pipeline's own field
names, event times from 1900 to 2200, repeated ``_id``s with equal and with different content.

Every expectation is computed here from the generated source text (``json.loads`` and the
recursive helpers below), not by the code under test.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from bridge.records import Refusal, copy_record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sink.batch import build_batch
from sink.documents import IngestStamp, unescape_fields
from sink.mongo import MongoWriter
from sink.settings import SinkSettings
from sink.writes import write_documents

from shared.event import DELIVERY_FIELDS, MAX_EVENT_DEPTH, RESERVED_FIELDS, SINK_FIELDS, STRING_ID_FIELDS, kept_field_name

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
DATABASE = "fuzz_tests"
BRIDGE_STAGES = {"bridge.decode", "bridge.validate", "bridge.encode", "bridge.normalize"}
SINK_STAGES = {"sink.decode", "sink.validate", "sink.size", "sink.build", "sink.encode", "sink.write"}
NORMALIZED = {"_id", "collection", "local_time", *STRING_ID_FIELDS}  # fields the bridge may rewrite on purpose
BRIDGED_AT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
T_1900, T_2200 = int(datetime(1900, 1, 1, tzinfo=UTC).timestamp()), int(datetime(2200, 1, 1, tzinfo=UTC).timestamp())
T_2000, T_NOW = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()), int(BRIDGED_AT.timestamp())

# ------------------------------------------------------------------------------- generated records


def rarely(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int = 10) -> st.SearchStrategy[Any]:
    """``rare`` about once in ``one_in`` draws, else ``common``: most records must get past the
    bridge so that the store is fuzzed too, not only the refusals."""
    return st.integers(1, one_in).flatmap(lambda n: rare if n == 1 else common)


special = rarely(
    st.sampled_from(["\x00", "$", ".", "%", "%2E", "", "\u2028", "é", "😀", "\\", '"', "$gt"]),
    st.sampled_from(["\ud800", "\udfff"]),  # lone surrogates: no UTF-8 for them, refused at decode
)
nasty_text = st.lists(special | st.text(max_size=6), max_size=4).map("".join)
keys = nasty_text | st.sampled_from([*sorted(RESERVED_FIELDS), "orig_event_id", "_id", "product_id", "option", "$where", "a.b"])
scalars = (
    st.none()
    | st.booleans()
    | rarely(
        st.integers(-(2**62), 2**62), st.integers(-(2**70), 2**70) | st.sampled_from([-(2**63) - 1, -(2**63), 2**63 - 1, 2**63, 2**64])
    )
    | rarely(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([math.nan, math.inf, -math.inf, -0.0]))
    | nasty_text
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=12)
huge = st.sampled_from([10_000, 400_000, 1_100_000]).map(lambda n: "x" * n)
times = rarely(st.integers(T_2000, T_NOW), st.integers(T_1900, T_2200), one_in=6)
COLLECTIONS = ["view_product_detail", "view_listing_page", "select_product_option", "checkout"]


def pair(key: str, value: Any) -> str:
    return json.dumps(key) + ":" + json.dumps(value)  # ensure_ascii: lone surrogates become \ud800 escapes


@st.composite
def source_records(draw: st.DrawFn, id_pool: list[str]) -> bytes:
    """One remote record value: mostly event-shaped JSON with nasty extras, sometimes not JSON at all."""
    kind = draw(st.sampled_from(["glamira"] * 6 + ["seed"] * 2 + ["deep", "garbage"]))
    if kind == "garbage":
        return draw(st.binary(max_size=40))
    pairs: list[str] = []
    if draw(st.booleans()):
        pairs.append(pair("_id", draw(st.sampled_from(id_pool))))
    if kind == "seed":
        moment = datetime.fromtimestamp(draw(times), UTC).replace(tzinfo=None)
        pairs.append(pair("timestamp", moment.isoformat()))
    else:
        pairs.append(pair("collection", draw(st.sampled_from(COLLECTIONS))))
        pairs.append(pair("time_stamp", draw(times | times.map(lambda t: t + 0.5))))
    pairs.append(pair("product_id", draw(st.sampled_from(["1001", 1001, 2**70, "", " 77 "]))))
    pairs.append(pair("device_id", draw(st.sampled_from(["d-1", "d-2", 5]))))
    for key, value in draw(st.lists(st.tuples(keys, values), max_size=4)):
        pairs.append(pair(key, value))
    if draw(st.integers(0, 9)) == 0:
        pairs.append(pair("big", draw(huge)))
    text = "{" + ",".join(pairs)
    if kind == "deep":
        depth = draw(st.integers(1, 1100))
        text += ',"nest":' + "[" * depth + "1" + "]" * depth
    return (text + "}").encode()


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    nonce = uuid.uuid4().hex[:10]
    id_pool = [f"{nonce}-a", f"{nonce}-b", f"{nonce}-c"]
    records = draw(st.lists(source_records(id_pool), min_size=1, max_size=10))
    if draw(st.booleans()):  # the same bytes again at another offset: a duplicate, never a conflict
        records.append(draw(st.sampled_from(records)))
    return records


# ------------------------------------------------------------------- independent expectations


def depth(value: Any) -> int:
    """Nesting depth, level by level (records here nest up to 1 100 levels: no recursion)."""
    level, current = 0, [value]
    while True:
        containers = [v for v in current if isinstance(v, dict | list)]
        if not containers:
            return level
        level += 1
        current = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]


def ints(value: Any) -> Iterator[int]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from ints(v)
    elif isinstance(value, list):
        for v in value:
            yield from ints(v)


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def ferretdb_refuses(doc: dict[str, Any]) -> str | None:
    """What FerretDB 1.24 on PostgreSQL refuses that MongoDB stores (found by this test)."""
    if any("\x00" in s for s in strings(doc)):
        return "NUL in a string (PostgreSQL's jsonb has no \\u0000)"
    level = [doc]
    while level:
        if any(isinstance(v, list) and any(isinstance(x, list) for x in v) for v in level):
            return "an array directly inside an array"
        level = [c for v in level if isinstance(v, dict | list) for c in (v.values() if isinstance(v, dict) else v)]
    return None


def source_of(raw: bytes) -> dict[str, Any] | None:
    """The source object as the standard library reads it (exact ints, last duplicate key wins)."""
    try:
        doc = json.loads(raw, parse_constant=lambda c: {"NaN": math.nan}.get(c))
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def must_be_refused_by_bridge(source: dict[str, Any] | None) -> str | None:
    """A rule the bridge must apply, computed from the source alone; None when none applies for sure."""
    if source is None:
        return "not a JSON object"
    if depth(source) > MAX_EVENT_DEPTH:
        return "too deep"
    outside_ids = {k: v for k, v in source.items() if k not in STRING_ID_FIELDS}  # shallow from here on
    if any(not -(2**63) <= i < 2**63 for i in ints(outside_ids)):
        return "integer beyond int64"
    return None


def plain(value: Any) -> Any:
    """A value in a form where NaN equals NaN (for comparing)."""
    return json.loads(json.dumps(value, allow_nan=True), parse_constant=lambda c: c)


def content(doc: dict[str, Any]) -> Any:
    return plain({k: v for k, v in doc.items() if k not in DELIVERY_FIELDS})


# ---------------------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def writer(loop: asyncio.AbstractEventLoop, mongodb_uri: str) -> Iterator[MongoWriter]:
    collection = f"fuzz_{uuid.uuid4().hex[:8]}"
    settings_ = SinkSettings(mongodb_uri=mongodb_uri, mongodb_database=DATABASE, mongodb_collection=collection)
    w = MongoWriter(settings_)
    loop.run_until_complete(w.prepare())
    yield w
    # Whatever was stored, the collection stays readable as a whole (the ETL scans it): FerretDB
    # 1.24 stores a field name holding a backslash, then fails every read of the collection.
    everything = loop.run_until_complete(w.collection.find({}).to_list())
    assert len(everything) == STATS.get("sink inserted", 0)
    loop.run_until_complete(w.client[DATABASE].drop_collection(collection))
    loop.run_until_complete(w.close())


STATS: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """After the module: the outcome classes the fuzzer reached (CI keeps the log), and proof that
    the generator reached the store, not only the refusals."""
    yield
    print("\nfuzz outcomes:", json.dumps(dict(sorted(STATS.items())), indent=1))
    assert STATS.get("sink inserted", 0) > 0, f"no generated record was stored: {STATS}"


def count(what: str, n: int = 1) -> None:
    STATS[what] = STATS.get(what, 0) + n


def forget_earlier_examples(loop: asyncio.AbstractEventLoop, writer: MongoWriter, docs: list[dict[str, Any]]) -> None:
    """Source ``_id``s come from a small pool, so an earlier example may have stored one of this
    example's ids (with other content): this example's oracle knows only its own records, so those
    documents are removed first (and no longer counted as stored)."""
    ids = list({repr(d["_id"]): d["_id"] for d in docs}.values())
    if ids:
        gone = loop.run_until_complete(writer.collection.delete_many({"_id": {"$in": ids}}))
        count("sink inserted", -gone.deleted_count)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records=batches())
def test_every_generated_record_is_stored_once_or_dead_lettered_with_a_reason(
    records: list[bytes], loop: asyncio.AbstractEventLoop, writer: MongoWriter
) -> None:
    topic = f"fuzz-{uuid.uuid4().hex[:8]}"  # coordinate-derived ids are unique to this example
    outputs: list[bytes] = []
    for offset, raw in enumerate(records):
        result = copy_record(raw, b"k", topic=topic, partition=0, offset=offset, bridged_at=BRIDGED_AT)  # never raises
        source = source_of(raw)
        required = must_be_refused_by_bridge(source)
        if isinstance(result, Refusal):
            count(f"bridge {result.stage} {result.error_class}")
            assert result.stage in BRIDGE_STAGES and result.error_class and result.message, result
            continue
        assert required is None, f"the bridge copied a record it must refuse ({required}): {raw[:200]!r}"
        key, value = result
        assert isinstance(key, bytes) and key
        event = json.loads(value)
        assert source is not None
        # Nothing the source said is silently changed: every field is kept, reserved names under the prefix.
        for name, v in source.items():
            if name not in NORMALIZED:
                assert plain(event[kept_field_name(name)]) == plain(v), name
        for name in ("event_id", "event_time", "source_topic", "source_partition", "source_offset", "bridged_at"):
            assert name in event
        assert (event["source_topic"], event["source_partition"], event["source_offset"]) == (topic, 0, offset)
        moment = datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
        assert datetime(2000, 1, 1, tzinfo=UTC) <= moment <= BRIDGED_AT + timedelta(days=1)
        outputs.append(value)

    # The sink's real build step (per-record isolation included), on the bridge's outputs.
    local = [ConsumerRecord(topic, 0, i, 0, 0, b"k", v, None, 1, len(v), []) for i, v in enumerate(outputs)]
    batch = build_batch(local, IngestStamp.at(datetime.now(UTC)), writer.settings.max_document_bytes, epoch=0)
    for dead in batch.dead_letters:
        count(f"sink {dead.stage} {dead.error_class}")
        assert dead.stage in SINK_STAGES and dead.error_class and dead.message
    assert batch.records == len(outputs) == len(batch.docs) + len(batch.dead_letters)
    docs = batch.docs
    forget_earlier_examples(loop, writer, docs)
    result = loop.run_until_complete(write_documents(writer, docs))

    buckets = [*result.inserted, *result.duplicates, *result.conflicts, *result.refused]
    assert sorted(buckets) == list(range(len(docs))), "every document ends in exactly one outcome"
    ids = sorted({d["_id"] for d in docs})
    stored = {d["_id"]: d for d in loop.run_until_complete(writer.collection.find({"_id": {"$in": ids}}).to_list(None))}
    inserted_ids = [docs[i]["_id"] for i in result.inserted]
    assert len(inserted_ids) == len(set(inserted_ids)), "an event stored twice"
    assert sorted(stored) == sorted(set(inserted_ids)), "stored exactly the inserted ones"
    for i in result.inserted:
        count("sink inserted")
        expected = json.loads(batch.doc_records[i].value or b"")
        got = unescape_fields({k: v for k, v in stored[docs[i]["_id"]].items() if k not in ("_id", *SINK_FIELDS)})
        assert plain(got) == plain(expected)
    for i in result.duplicates:
        count("sink duplicate")
        assert content(stored[docs[i]["_id"]]) == content(docs[i])
    for i in result.conflicts:
        count("sink conflict")
        assert content(stored[docs[i]["_id"]]) != content(docs[i])
    for i, (stage, error_class, message) in result.refused.items():
        count(f"sink {stage} {error_class}")
        assert stage in SINK_STAGES and error_class and message
        # The only documents the store may refuse (MongoDB 7 takes both; FerretDB 1.24 neither).
        assert ferretdb_refuses(docs[i]) is not None, f"a valid document was refused: {message}"
    for i in result.inserted:
        assert ferretdb_refuses(docs[i]) is None, "FerretDB stored what it refuses elsewhere?"
