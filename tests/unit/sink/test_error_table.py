"""The code table: real FerretDB answers (captured, fixtures/ferretdb_errors.json) and MongoDB's
documented shapes (fixtures/mongodb_errors.json) → outage | refusal | duplicate | unknown.

Each answer is rebuilt as the exception PyMongo raised and fed to the real ``MongoWriter.insert``
(with a stand-in collection that raises it), so what is checked is what the sink does with it.
The expected verdicts are written here, from what each case is, not computed by the code."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import errors
from pymongo.results import InsertManyResult
from sink.mongo import MongoBatchRefusedError, MongoUnavailableError, MongoWriter
from sink.settings import SinkSettings
from sink.verdicts import ERROR_CODES, STORE_CODE_RE, Verdict, classify, classify_code

FIXTURES = Path(__file__).with_name("fixtures")
FERRETDB = json.loads((FIXTURES / "ferretdb_errors.json").read_text())["cases"]
MONGODB = json.loads((FIXTURES / "mongodb_errors.json").read_text())["cases"]


def rebuild(case: dict[str, Any]) -> errors.PyMongoError:
    """The exception PyMongo raised for a captured (or documented) answer."""
    kind, details = case["type"], case.get("details")
    exc: errors.PyMongoError
    if kind == "BulkWriteError":
        exc = errors.BulkWriteError(details)
    elif kind in ("OperationFailure", "ExecutionTimeout"):
        exc = getattr(errors, kind)(details["errmsg"], case["code"], details)
    else:
        exc = getattr(errors, kind)(case["message"])
    for label in case.get("labels", []):
        exc._add_error_label(label)
    assert exc.timeout == case.get("timeout", exc.timeout), "rebuilt exception differs from the captured one"
    return exc


class RaisingCollection:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def insert_many(self, docs: list[dict[str, Any]], ordered: bool) -> Any:
        assert ordered is False
        raise self.exc


async def server_known() -> None:
    """In place of MongoWriter._server_selectable: the fake collections need no server."""


async def insert_raising(exc: Exception, n: int = 3) -> Any:
    writer = MongoWriter(SinkSettings(mongodb_uri="mongodb://127.0.0.1:1/"))
    writer.collection = RaisingCollection(exc)  # type: ignore[assignment]
    writer._server_selectable = server_known  # type: ignore[method-assign]
    try:
        return await writer.insert([{"_id": f"e{i}"} for i in range(n)])
    finally:
        await writer.close()


# (case, what the sink must make of it): "outage", "refused-batch", or per-document lists.
FERRETDB_EXPECTED = {
    "nul_in_string_value": "refused-batch",  # PostgreSQL 22P05 for the whole insert_many
    "nul_in_nested_string": "refused-batch",
    "duplicate_id": {"duplicates": [0]},
    "dollar_key": {"refused": [1]},
    "dotted_key": {"refused": [1]},
    "infinity": {"refused": [1]},
    "nested_array": {"refused": [1]},
    "nan": "outage",  # FerretDB drops the connection: indistinguishable, so NaN is refused at decode
    "postgresql_down_first": "outage",  # "unexpected EOF", code 1
    "postgresql_down": "outage",  # "failed to connect … connection refused", code 1
    "ferretdb_down_pooled": "outage",
    "ferretdb_down_fresh_client": "outage",
    "ferretdb_killed_mid_insert": "outage",
    "attempt_timeout": "outage",
}


def test_every_captured_case_has_an_expectation() -> None:
    insert_cases = {name for name, case in FERRETDB.items() if "type" in case and not name.endswith("_ping")}
    assert insert_cases == set(FERRETDB_EXPECTED)


@pytest.mark.parametrize("name", sorted(FERRETDB_EXPECTED))
async def test_ferretdb_answers(name: str) -> None:
    case, expected = FERRETDB[name], FERRETDB_EXPECTED[name]
    exc = rebuild(case)
    if expected == "outage":
        assert classify(exc) is Verdict.OUTAGE
        with pytest.raises(MongoUnavailableError) as info:
            await insert_raising(exc)
        assert info.value.timed_out == (name == "attempt_timeout")
    elif expected == "refused-batch":
        assert classify(exc) is Verdict.REFUSAL
        with pytest.raises(MongoBatchRefusedError) as refused:
            await insert_raising(exc)
        assert refused.value.verdict is Verdict.REFUSAL
        assert refused.value.code == 1 and refused.value.error_class == "InternalError"
        assert "SQLSTATE 22P05" in refused.value.message
        match = STORE_CODE_RE.match(refused.value.message)
        assert match is not None and match.group(1) == "1"  # the DLQ's dlq.error.code header
    else:
        outcome = await insert_raising(exc)
        assert sorted(outcome.refused) == expected.get("refused", [])
        assert outcome.duplicates == expected.get("duplicates", [])
        assert outcome.retry == [] and outcome.uncertain == {}
        for stage, error_class, message in outcome.refused.values():
            assert (stage, error_class) == ("sink.write", "BadValue") and message.startswith("code 2 (BadValue): invalid ")


def test_a_nul_refusal_lets_the_documents_before_it_land() -> None:
    # Why sink.writes counts a later duplicate of a failed attempt's document as its own insert.
    assert FERRETDB["nul_in_string_value"]["landed"] == ["a0", "a1", "a2"]


def test_ferretdb_ping_fails_while_its_postgresql_is_down() -> None:
    # What MongoWriter.healthy relies on to tell an unknown refusal from a backend outage.
    case = FERRETDB["postgresql_down_ping"]
    assert (case["type"], case["code"]) == ("OperationFailure", 1)
    assert classify(rebuild(case)) is Verdict.OUTAGE
    assert FERRETDB["postgresql_back_ping"]["reply"] == {"ok": 1.0}


def test_ferretdb_stores_negative_zero_as_zero() -> None:
    # Why sink.writes compares -0.0 and 0.0 as equal when it looks for conflicting duplicates.
    assert FERRETDB["negative_zero"]["stored"] == "0.0"


@pytest.mark.parametrize("name", sorted(MONGODB))
async def test_mongodb_documented_shapes(name: str) -> None:
    case = MONGODB[name]
    exc, expected = rebuild(case), case["expected"]
    if expected.get("whole") == "outage":
        with pytest.raises(MongoUnavailableError):
            await insert_raising(exc)
    elif expected.get("whole") == "unknown":
        with pytest.raises(MongoBatchRefusedError) as info:
            await insert_raising(exc)
        assert info.value.verdict is Verdict.UNKNOWN and info.value.error_class == "SomethingNew"
    else:
        outcome = await insert_raising(exc)
        assert sorted(outcome.refused) == expected["refused"]
        assert outcome.duplicates == expected["duplicates"]
        assert outcome.retry == expected["retry"]
        assert sorted(outcome.uncertain) == expected["uncertain"]


@pytest.mark.parametrize(
    ("code", "message", "verdict"),
    [
        (11000, "E11000 duplicate key error", Verdict.DUPLICATE),
        (2, "BadValue", Verdict.REFUSAL),
        (121, "Document failed validation", Verdict.REFUSAL),
        (10334, "BSONObj size", Verdict.REFUSAL),
        (91, "shutting down", Verdict.OUTAGE),
        (189, "stepped down", Verdict.OUTAGE),
        (10107, "not primary", Verdict.OUTAGE),
        (424242, "new", Verdict.UNKNOWN),
        (None, "", Verdict.UNKNOWN),
        # FerretDB's code 1: the PostgreSQL SQLSTATE class decides, else the connection words.
        (1, "ERROR: unsupported Unicode escape sequence (SQLSTATE 22P05)", Verdict.REFUSAL),
        (1, "ERROR: invalid byte sequence for encoding (SQLSTATE 22021)", Verdict.REFUSAL),
        (1, "ERROR: index row size exceeds maximum (SQLSTATE 54000)", Verdict.REFUSAL),
        (1, "FATAL: terminating connection due to administrator command (SQLSTATE 57P01)", Verdict.OUTAGE),
        (1, "FATAL: the database system is starting up (SQLSTATE 57P03)", Verdict.OUTAGE),
        (1, "FATAL: sorry, too many clients already (SQLSTATE 53300)", Verdict.OUTAGE),
        (1, "ERROR: could not serialize access (SQLSTATE 40001)", Verdict.OUTAGE),
        (1, "ERROR: relation does not exist (SQLSTATE 42P01)", Verdict.UNKNOWN),
        (1, "[msg_insert.go:168 handler.(*Handler).MsgInsert] unexpected EOF", Verdict.OUTAGE),
        (1, "failed to connect to `user=pipeline database=ferretdb`: dial error", Verdict.OUTAGE),
        (1, "something FerretDB never said before", Verdict.UNKNOWN),
    ],
)
def test_classify_code(code: int | None, message: str, verdict: Verdict) -> None:
    assert classify_code(code, message) is verdict


def test_the_table_has_each_code_once_with_a_name() -> None:
    assert all(name and name[0].isupper() for name, _ in ERROR_CODES.values())
    assert ERROR_CODES[11000] == ("DuplicateKey", Verdict.DUPLICATE)


async def test_a_document_the_driver_cannot_encode_is_refused_and_the_rest_sent_again_at_once() -> None:
    from sink.writes import write_documents

    class Collection:
        def __init__(self) -> None:
            self.sent: list[list[Any]] = []

        async def insert_many(self, docs: list[dict[str, Any]], ordered: bool) -> Any:
            self.sent.append([d["_id"] for d in docs])
            if any(isinstance(d.get("n"), int) and d["n"] >= 2**63 for d in docs):
                raise OverflowError("MongoDB can only handle up to 8-byte ints")
            return InsertManyResult([d["_id"] for d in docs], acknowledged=True)

    writer = MongoWriter(SinkSettings(mongodb_uri="mongodb://127.0.0.1:1/"))
    collection = Collection()
    writer.collection = collection  # type: ignore[assignment]
    writer._server_selectable = server_known  # type: ignore[method-assign]
    outages: list[Exception] = []

    async def on_unavailable(exc: Exception) -> None:
        outages.append(exc)

    docs = [{"_id": f"e{i}", "n": 2**64 - 1 if i == 1 else i, "ingested_at": "", "ingest_hour": ""} for i in range(3)]
    try:
        result = await write_documents(writer, docs, on_unavailable=on_unavailable)
    finally:
        await writer.close()
    assert result.refused == {1: ("sink.encode", "OverflowError", "OverflowError: MongoDB can only handle up to 8-byte ints")}
    assert sorted(result.inserted) == [0, 2] and outages == []
    assert collection.sent == [["e0", "e1", "e2"], ["e0", "e2"]]


async def test_with_no_server_known_an_attempt_waits_mongodb_timeout_ms_not_its_whole_timeout() -> None:
    """pymongo.timeout bounds server selection by the attempt's timeout (60 s by default): the
    insert first pings within SINK_MONGODB_TIMEOUT_MS when no writable server is known, and an
    attempt that found no server was not sent (nothing of it can land)."""
    writer = MongoWriter(SinkSettings(mongodb_uri="mongodb://127.0.0.1:1/", mongodb_timeout_ms=300, write_attempt_timeout_s=30))
    sent: list[Any] = []

    class Recording:
        async def insert_many(self, docs: list[dict[str, Any]], ordered: bool) -> Any:
            sent.append(docs)
            raise AssertionError("sent without a server")

    writer.collection = Recording()  # type: ignore[assignment]
    started = time.monotonic()
    try:
        with pytest.raises(MongoUnavailableError, match=r"^ServerSelectionTimeoutError: ") as info:
            await writer.insert([{"_id": "e0"}])
    finally:
        await writer.close()
    assert 0.25 <= time.monotonic() - started < 5
    assert info.value.sent is False and info.value.timed_out is False and sent == []
