"""From a record value to the MongoDB document: pure, no clients, no clock, no env.

The document is the bridge's event (every field kept, in order) with:

- ``_id`` = ``event_id`` first, so a redelivered event hits the unique ``_id`` index and is
  counted as already written instead of being stored twice;
- ``ingested_at`` (UTC ISO-8601 with milliseconds and ``Z``), ``ingest_hour``
  (``YYYY-MM-DDTHH`` of ``ingested_at``) and ``ingest_second`` (``YYYY-MM-DDTHH:MM:SS``, its
  first 19 characters): the ETL reads new events hour by hour, or second by second, with
  equality filters, the only filters FerretDB pushes down;
- ``event_date`` (``YYYY-MM-DD`` of ``event_time`` in UTC): a date's events, for recomputing it;
- ``part`` (:func:`shared.event.part_of` of ``event_id``, 0..15): the ETL reads one hour or date
  in parallel slices, ``{ingest_hour, part}`` and ``{event_date, part}``, both indexed.

Field names MongoDB refuses are escaped, reversibly, at any depth (objects inside arrays too).
The escape character is ``%`` followed by two hex digits, as in URLs:

====================  =========  ===============================================
in a field name       becomes    why
====================  =========  ===============================================
``%`` (anywhere)      ``%25``    the escape character itself, so escaping is reversible
``.`` (anywhere)      ``%2E``    MongoDB reads a dot as a path separator
``$`` (first char)    ``%24``    a leading ``$`` marks an operator; ``$`` elsewhere is kept
NUL (anywhere)        ``%00``    BSON field names are C strings
U+0001..U+001F        ``%01``..  FerretDB 1.24 refuses them in a field name (invalid JSON)
``"`` (anywhere)      ``%22``    FerretDB 1.24 refuses it in a field name (invalid JSON)
``\\`` (anywhere)      ``%5C``    FerretDB 1.24 *stores* it, then fails every read of the
                                 collection (``sjson.Unmarshal: missing key``): one such
                                 record would stop the ETL for good
====================  =========  ===============================================

The last three are escaped on MongoDB too (one document contract for both stores).
:func:`unescape_key` / :func:`unescape_fields` undo it exactly. Values are never changed. A key
without any of these characters is stored as is (the common case). A field name can only hold a
``"``, a ``\\`` or a control character if the record's JSON text holds a backslash (JSON escapes
them), so records without one skip those checks (:func:`document_of`).

Records that cannot become a document raise :class:`InvalidEventError` whose ``stage`` goes into
the dead-letter headers: ``sink.decode`` (not JSON, nested too deep, an integer beyond int64, a
lone surrogate, NaN), ``sink.validate`` (not an object, no usable
``event_id`` or ``event_time``, an own ``_id`` or a sink-owned field name), ``sink.size`` (the
BSON document is larger than the limit).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import bson
import orjson
from bson.errors import InvalidDocument

from shared.errors import InvalidEventError
from shared.event import MAX_EVENT_DEPTH, SINK_FIELDS, part_of
from shared.isotime import parse_iso_instant
from shared.jsonvalues import JsonValueError, loads_checked

STAGE_DECODE = "sink.decode"
STAGE_VALIDATE = "sink.validate"
STAGE_SIZE = "sink.size"
STAGE_ENCODE = "sink.encode"  # the driver could not encode the document (e.g. an int beyond 64 bits)
STAGE_WRITE = "sink.write"  # the store refused the document itself (found by bisection, see sink.writes)
STAGE_CONFLICT = "sink.conflict"  # its _id is stored with different content (see sink.writes)
STAGE_BUILD = "sink.build"  # building its document raised something unexpected (see sink.batch.build_batch)

# A JSON text expands at most ~6.5× into BSON (a 1-digit number in a long array costs 2 bytes in
# JSON and up to 13 in BSON). Values below limit / 8 cannot exceed the limit, so the exact (and
# costly: a second encoding) BSON size is computed only for larger ones.
_JSON_TO_BSON_BOUND = 8
_SINK_FIELDS_ALLOWANCE = 1024

_UNESCAPE_RE = re.compile("%(25|2E|24|22|5C|[01][0-9A-F])")
_ESCAPE_DEEP_RE = re.compile('["\\\\\x00-\x1f]')  # escaped as %XX after % and . (see the table)


@dataclass(frozen=True)
class IngestStamp:
    """When documents were ingested: taken at the start of each ``insert_many`` attempt, for every
    document of that attempt (see :func:`restamp`)."""

    ingested_at: str
    ingest_hour: str
    ingest_second: str

    @classmethod
    def at(cls, now: datetime) -> IngestStamp:
        """The stamp of instant ``now``, truncated to the millisecond (never rounded up)."""
        utc = now.astimezone(UTC)
        second = f"{utc:%Y-%m-%dT%H:%M:%S}"
        return cls(f"{second}.{utc.microsecond // 1000:03d}Z", second[:13], second)


def restamp(docs: Iterable[dict[str, Any]], stamp: IngestStamp) -> None:
    """Sets ``ingested_at``, ``ingest_hour`` and ``ingest_second`` of ``docs`` (built by
    :func:`build_document`, so the keys exist and keep their place) to ``stamp``, in place.

    The sink calls it at the start of every write attempt: a document becomes visible in MongoDB
    during the attempt that inserts it, never long after its ``ingested_at``, however long the
    batch was retried before. The ETL reads ``watermark < ingested_at <= now - settle margin``
    (or up to the sinks' visibility leases, :mod:`shared.visibility`), so a stamp taken when the
    batch was built could fall behind a watermark the ETL already moved past while MongoDB was
    down, and its events would never be read.
    """
    at, hour, second = stamp.ingested_at, stamp.ingest_hour, stamp.ingest_second
    for doc in docs:
        doc["ingested_at"] = at
        doc["ingest_hour"] = hour
        doc["ingest_second"] = second


def _needs_escape_plain(key: str) -> bool:
    """For a record whose JSON text holds no backslash: no ``"``, ``\\`` or control character possible."""
    return key[:1] == "$" or "." in key or "%" in key


def key_needs_escape(key: str) -> bool:
    return key[:1] == "$" or "." in key or "%" in key or _ESCAPE_DEEP_RE.search(key) is not None


def escape_key(key: str) -> str:
    """One field name made acceptable to MongoDB and FerretDB (see the module docstring); reversible."""
    out = key.replace("%", "%25").replace(".", "%2E")
    out = _ESCAPE_DEEP_RE.sub(lambda m: f"%{ord(m.group(0)):02X}", out)
    return "%24" + out[1:] if out[:1] == "$" else out


def unescape_key(key: str) -> str:
    """The original field name of an escaped one: ``unescape_key(escape_key(k)) == k``."""
    return _UNESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), key) if "%" in key else key


def escape_fields(value: Any, needs_escape: Callable[[str], bool] = key_needs_escape) -> Any:
    """``value`` with every field name escaped at any depth; the same object when none needed it.

    One pass, each field looked at once: the common case (nothing to escape) builds nothing, and
    a container is copied from its first changed field on, reusing the work done to find it (a
    second walk of a changed child would make nested escapes cost 2^depth)."""
    if type(value) is dict:
        items = iter(value.items())
        done = 0
        for k, v in items:
            ek = escape_key(k) if needs_escape(k) else k
            ev = escape_fields(v, needs_escape) if type(v) is dict or type(v) is list else v
            if ek is not k or ev is not v:
                break
            done += 1
        else:
            return value
        out = dict(islice(value.items(), done))
        out[ek] = ev
        for k, v in items:
            out[escape_key(k) if needs_escape(k) else k] = escape_fields(v, needs_escape) if type(v) is dict or type(v) is list else v
        return out
    if type(value) is list:
        rest = iter(value)
        done = 0
        for v in rest:
            if type(v) is dict or type(v) is list:
                ev = escape_fields(v, needs_escape)
                if ev is not v:
                    break
            done += 1
        else:
            return value
        return [*value[:done], ev, *(escape_fields(v, needs_escape) if type(v) is dict or type(v) is list else v for v in rest)]
    return value


def unescape_fields(value: Any) -> Any:
    """The inverse of :func:`escape_fields`: a stored document's fields as the event had them."""
    if isinstance(value, dict):
        return {unescape_key(k): unescape_fields(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape_fields(v) for v in value]
    return value


def decode_event(value: bytes | None) -> dict[str, Any]:
    """The JSON object of a record value; raises ``InvalidEventError`` (decode/validate).

    :func:`shared.jsonvalues.loads_checked` (orjson): nesting deeper than
    ``shared.event.MAX_EVENT_DEPTH`` (``TooDeep``) and integers outside BSON's signed 64 bits
    (``IntegerOutOfRange``; the bridge already turned id integers into strings) are refused here,
    not stored inexactly. What orjson refuses is refused, with a clearer reason where the standard
    library would have read it: a lone surrogate (``\\ud800``) has no UTF-8 form, so the driver could
    not encode it (``LoneSurrogate``); ``NaN``/``Infinity`` are not JSON (RFC 8259), and FerretDB
    drops the connection on a NaN, which would look like an outage forever (``NonFiniteNumber``)."""
    if value is None:
        raise InvalidEventError("record has no value (tombstone)", stage=STAGE_VALIDATE, error_class="EmptyRecord")
    try:
        event = loads_checked(value, max_depth=MAX_EVENT_DEPTH)
    except JsonValueError as exc:
        raise InvalidEventError(exc.reason, stage=STAGE_DECODE, error_class=exc.error_class) from None
    except orjson.JSONDecodeError as exc:
        raise _not_json(value, exc) from None
    if type(event) is not dict:
        raise InvalidEventError(f"value is a JSON {type(event).__name__}, not an object", stage=STAGE_VALIDATE, error_class="NotAnObject")
    return event


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _not_json(value: bytes, exc: orjson.JSONDecodeError) -> InvalidEventError:
    """Why orjson refused ``value``: not JSON at all, or a lone surrogate / non-finite number."""
    try:
        json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return InvalidEventError(f"value is not JSON: {exc}", stage=STAGE_DECODE, error_class=type(exc).__name__)
    if _SURROGATE_ESCAPE.search(value):
        reason = f"a string holds a lone UTF-16 surrogate escape, which has no UTF-8 form: {exc}"
        return InvalidEventError(reason, stage=STAGE_DECODE, error_class="LoneSurrogate")
    return InvalidEventError(
        f"a number is NaN or infinite, which JSON does not allow and the store cannot keep: {exc}",
        stage=STAGE_DECODE,
        error_class="NonFiniteNumber",
    )


def event_date_of(event_time: Any) -> str:
    """``YYYY-MM-DD`` (UTC) of an ISO-8601 ``event_time``; raises ``InvalidEventError``."""
    if type(event_time) is not str:
        raise InvalidEventError(f"event_time is {type(event_time).__name__}, not an ISO-8601 string", stage=STAGE_VALIDATE)
    # The contract's form, "2020-06-04T10:21:27.000Z", is by far the most common: no parsing.
    if len(event_time) == 24 and event_time[-1] == "Z" and event_time[10] == "T" and event_time[4] == event_time[7] == "-":
        date = event_time[:10]
        try:  # a real calendar date; strptime would cost ~30× more
            dt.date(int(date[:4]), int(date[5:7]), int(date[8:10]))
        except ValueError:
            pass
        else:
            return date
    try:  # any ISO-8601 / RFC 3339 form (lowercase t and z, offsets, any fraction)
        parsed = parse_iso_instant(event_time)
    except ValueError as exc:
        raise InvalidEventError(f"event_time {event_time[:64]!r} is not ISO-8601", stage=STAGE_VALIDATE) from exc
    if parsed.tzinfo is None:
        raise InvalidEventError(f"event_time {event_time[:64]!r} has no time zone", stage=STAGE_VALIDATE)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d")


def build_document(event: dict[str, Any], stamp: IngestStamp, *, text_has_backslash: bool = True) -> dict[str, Any]:
    """The MongoDB document of a decoded event (see the module docstring). Does not check size.
    ``text_has_backslash=False`` (the record's JSON text holds none) skips the checks for what
    only a backslash escape can put into a field name."""
    event_id = event.get("event_id")
    if type(event_id) is not str or not event_id:
        raise InvalidEventError(f"event_id is {event_id!r:.64}, not a non-empty string", stage=STAGE_VALIDATE, error_class="MissingEventId")
    if "_id" in event and event["_id"] != event_id:
        raise InvalidEventError("event carries its own _id, different from event_id", stage=STAGE_VALIDATE, error_class="ConflictingId")
    clash = [f for f in SINK_FIELDS if f in event]
    if clash:
        raise InvalidEventError(f"event carries sink-owned field(s) {clash}", stage=STAGE_VALIDATE, error_class="ReservedField")
    event_date = event_date_of(event.get("event_time"))
    doc: dict[str, Any] = {"_id": event_id}
    doc.update(escape_fields(event, key_needs_escape if text_has_backslash else _needs_escape_plain))
    doc["ingested_at"] = stamp.ingested_at
    doc["ingest_hour"] = stamp.ingest_hour
    doc["ingest_second"] = stamp.ingest_second
    doc["event_date"] = event_date
    doc["part"] = part_of(event_id)
    return doc


def check_size(doc: dict[str, Any], value_bytes: int, max_document_bytes: int) -> None:
    """Raises ``InvalidEventError`` (stage ``sink.size``) when the BSON document exceeds the limit."""
    if value_bytes * _JSON_TO_BSON_BOUND + _SINK_FIELDS_ALLOWANCE <= max_document_bytes:
        return
    size = len(bson.encode(doc))
    if size > max_document_bytes:
        raise InvalidEventError(
            f"BSON document is {size} bytes, more than the limit of {max_document_bytes}", stage=STAGE_SIZE, error_class="DocumentTooLarge"
        )


def document_of(value: bytes | None, stamp: IngestStamp, max_document_bytes: int) -> dict[str, Any]:
    """Record value → MongoDB document, or ``InvalidEventError`` saying which stage refused it."""
    doc = build_document(decode_event(value), stamp, text_has_backslash=value is None or b"\\" in value)
    check_size(doc, len(value or b""), max_document_bytes)
    return doc


def encoding_error(doc: dict[str, Any], max_document_bytes: int) -> str | None:
    """Why the driver cannot encode ``doc`` to BSON within the size limit, or None when it can."""
    try:
        size = len(bson.encode(doc))
    except (InvalidDocument, OverflowError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if size > max_document_bytes:
        return f"DocumentTooLarge: BSON document is {size} bytes, more than the limit of {max_document_bytes}"
    return None
