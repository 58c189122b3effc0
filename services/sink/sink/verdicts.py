"""How the sink reads a store's answer: the error-code table and its verdicts (outage, refusal,
duplicate, unknown), for MongoDB's documented codes and FerretDB 1.24.2's answers captured against
the real server (``tests/unit/sink/fixtures/ferretdb_errors.json``). Used by the writes
(:mod:`sink.mongo`), the ledger and the dead-letter producer."""

from __future__ import annotations

import enum
import re

from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from shared.errors import is_retriable


class Verdict(enum.StrEnum):
    """What a server's answer means for the documents it was about."""

    OUTAGE = "outage"  # the store cannot write now: retry with bounded backoff, not ready, never dead-letter
    REFUSAL = "refusal"  # the store refuses this document: find it (bisect), dead-letter it
    DUPLICATE = "duplicate"  # _id already stored: compare the contents (duplicate or conflict)
    UNKNOWN = "unknown"  # a server that answers, with a code not in the table: a possible refusal, confirmed by retries


DUPLICATE_KEY = 11000
FERRETDB_INTERNAL_ERROR = 1  # FerretDB wraps every backend (PostgreSQL) error into code 1, InternalError

# MongoDB's documented error codes (name, verdict). Codes absent here are UNKNOWN.
ERROR_CODES: dict[int, tuple[str, Verdict]] = {
    # duplicates
    11000: ("DuplicateKey", Verdict.DUPLICATE),
    # the document is bad
    2: ("BadValue", Verdict.REFUSAL),  # FerretDB: "$"/"." keys, +-Infinity; MongoDB: invalid values
    9: ("FailedToParse", Verdict.REFUSAL),
    14: ("TypeMismatch", Verdict.REFUSAL),
    15: ("Overflow", Verdict.REFUSAL),
    17: ("ProtocolError", Verdict.REFUSAL),
    22: ("InvalidBSON", Verdict.REFUSAL),
    52: ("DollarPrefixedFieldName", Verdict.REFUSAL),
    53: ("InvalidIdField", Verdict.REFUSAL),
    56: ("EmptyFieldName", Verdict.REFUSAL),
    57: ("DottedFieldName", Verdict.REFUSAL),
    121: ("DocumentValidationFailure", Verdict.REFUSAL),
    10334: ("BSONObjectTooLarge", Verdict.REFUSAL),
    17280: ("KeyTooLong", Verdict.REFUSAL),
    # the store cannot write now
    6: ("HostUnreachable", Verdict.OUTAGE),
    7: ("HostNotFound", Verdict.OUTAGE),
    13: ("Unauthorized", Verdict.OUTAGE),  # a configuration problem: no document is to blame
    18: ("AuthenticationFailed", Verdict.OUTAGE),
    24: ("LockTimeout", Verdict.OUTAGE),
    46: ("LockBusy", Verdict.OUTAGE),
    50: ("MaxTimeMSExpired", Verdict.OUTAGE),
    64: ("WriteConcernFailed", Verdict.OUTAGE),
    79: ("UnknownReplWriteConcern", Verdict.OUTAGE),
    89: ("NetworkTimeout", Verdict.OUTAGE),
    91: ("ShutdownInProgress", Verdict.OUTAGE),
    100: ("UnsatisfiableWriteConcern", Verdict.OUTAGE),
    112: ("WriteConflict", Verdict.OUTAGE),
    117: ("ConflictingOperationInProgress", Verdict.OUTAGE),
    133: ("FailedToSatisfyReadPreference", Verdict.OUTAGE),
    134: ("ReadConcernMajorityNotAvailableYet", Verdict.OUTAGE),
    189: ("PrimarySteppedDown", Verdict.OUTAGE),
    202: ("NetworkInterfaceExceededTimeLimit", Verdict.OUTAGE),
    262: ("ExceededTimeLimit", Verdict.OUTAGE),
    9001: ("SocketException", Verdict.OUTAGE),
    10107: ("NotWritablePrimary", Verdict.OUTAGE),
    11600: ("InterruptedAtShutdown", Verdict.OUTAGE),
    11601: ("Interrupted", Verdict.OUTAGE),
    11602: ("InterruptedDueToReplStateChange", Verdict.OUTAGE),
    13435: ("NotPrimaryNoSecondaryOk", Verdict.OUTAGE),
    13436: ("NotPrimaryOrSecondary", Verdict.OUTAGE),
    14031: ("OutOfDiskSpace", Verdict.OUTAGE),
    16500: ("RequestRateTooLarge", Verdict.OUTAGE),  # Azure Cosmos DB's MongoDB API throttling
}

# FerretDB code 1 (InternalError) carries PostgreSQL's error. Its SQLSTATE class tells who is to
# blame: 22 data exception (22P05 "unsupported Unicode escape sequence" = a NUL in a string,
# 22021 character not in repertoire, 22003 numeric out of range …) and 54 program limit exceeded
# → the document; 08 connection, 53 insufficient resources, 57 operator intervention (shutdown,
# cancel), 58 system error, 40 transaction rollback (serialization, deadlock) → an outage.
SQLSTATE_REFUSAL_CLASSES = frozenset({"22", "54"})
SQLSTATE_OUTAGE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_SQLSTATE = re.compile(r"\(SQLSTATE ([0-9A-Z]{5})\)")
# Backend connection failures FerretDB reports without a SQLSTATE (captured: "unexpected EOF" when
# its PostgreSQL connections were cut, "failed to connect to `user=… database=…`: … dial error"
# while PostgreSQL is unreachable), plus Go's usual network and context errors.
_BACKEND_DOWN = re.compile(
    r"unexpected EOF|\bEOF\b|failed to connect|dial error|dial tcp|connection refused|connection reset|broken pipe|"
    r"conn closed|closed pool|i/o timeout|context deadline exceeded|context canceled|no such host|server closed the connection|"
    r"the database system is (starting up|shutting down|in recovery mode)|too many clients",
    re.IGNORECASE,
)


def classify_code(code: int | None, message: str = "") -> Verdict:
    """The verdict for one server error ``code`` (with its message: FerretDB's code 1 depends on it)."""
    if code == FERRETDB_INTERNAL_ERROR:
        match = _SQLSTATE.search(message)
        if match is not None:
            sqlstate_class = match.group(1)[:2]
            if sqlstate_class in SQLSTATE_REFUSAL_CLASSES:
                return Verdict.REFUSAL
            if sqlstate_class in SQLSTATE_OUTAGE_CLASSES:
                return Verdict.OUTAGE
            return Verdict.UNKNOWN
        return Verdict.OUTAGE if _BACKEND_DOWN.search(message) else Verdict.UNKNOWN
    if code is None:
        return Verdict.UNKNOWN
    entry = ERROR_CODES.get(code)
    return entry[1] if entry is not None else Verdict.UNKNOWN


def code_name(code: int | None, fallback: str | None = None) -> str:
    """The documented name of a code (``InternalError`` for 1), else ``fallback`` or ``MongoError<code>``."""
    if code == FERRETDB_INTERNAL_ERROR:
        return "InternalError"
    entry = ERROR_CODES.get(code) if code is not None else None
    return entry[0] if entry is not None else (fallback or f"MongoError{code}")


def classify(exc: BaseException) -> Verdict:
    """The verdict for an exception that failed a whole ``insert_many`` (not its ``writeErrors``).

    What :func:`shared.errors.is_retriable` calls retriable (no answer: connection refused, reset
    or closed, server selection, any timeout; write-concern errors; a transient error label) is an
    outage; a ``BulkWriteError`` is UNKNOWN (its ``writeErrors`` tell more); an ``OperationFailure``
    is judged by its code (:func:`classify_code`). Anything else the driver raises is an outage
    too: nothing says a document is to blame."""
    if isinstance(exc, PyMongoError) and not is_retriable(exc):
        if isinstance(exc, BulkWriteError):
            return Verdict.OUTAGE if exc.details.get("writeConcernErrors") else Verdict.UNKNOWN
        if isinstance(exc, OperationFailure):
            details = exc.details or {}
            return classify_code(exc.code, str(details.get("errmsg", exc)))
    return Verdict.OUTAGE


def store_message(code: int | None, errmsg: str) -> str:
    """The dead-letter message of a store refusal: the server's code and its own words."""
    return f"code {code} ({code_name(code)}): {errmsg}"


STORE_CODE_RE = re.compile(r"^code (-?\d+) \(")
