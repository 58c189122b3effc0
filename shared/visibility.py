"""Visibility leases: which ingested documents the ETL may read without ever skipping one.

The sink stamps ``ingested_at`` at the start of each write attempt, and a document becomes
visible only when MongoDB acknowledges the attempt (or, for an attempt the client gave up on,
when the server finishes it: at most ``attempt_timeout_s`` after it started, the bound sent as
``maxTimeMS``). A reader that reads ``ingested_at <= T`` must therefore know that no document
stamped at or before ``T`` is still on its way. Every sink process publishes that fact:

- one document per sink process in the collection :data:`COLLECTION` beside the events,
  ``_id`` = ``"{collection}/{instance}"`` (:func:`lease_document`);
- ``visible_through``: every document this process stamped at or before it is visible. It is
  computed as the start of its oldest write attempt that may still land, less 1 ms, or, with no
  such attempt, the time of computing less 1 ms (any later attempt is stamped after it);
- ``published_at``: when it was computed (the sink's clock). The sink **starts no write attempt
  later than** ``published_at + lease_s`` of its last successful publication: a sink that cannot
  publish stops writing, so a process that died or was cut off can add nothing visible after
  :meth:`Lease.settled_at` = ``published_at + lease_s + attempt_timeout_s`` + 1 s of slack;
- a sink publishes before its first attempt and deletes its document on a clean stop.

A reader computes its bound with :func:`visible_bound`: the smallest ``visible_through`` of the
leases not yet settled, and never later than its own clock less ``skew_s`` (a sink that starts
after the read stamps after its first publication, which is after that instant as long as the
clocks agree within ``skew_s``). Everything stamped at or before the bound is visible now, and
stays so: the bound is a fact about the past.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import PipelineError

COLLECTION = "sink_visibility"
ONE_MS = timedelta(milliseconds=1)
# An attempt may reach the server a little after it started, and the server's maxTimeMS counts
# from its receipt: a pinned attempt is held this long beyond its timeout (the sink's PIN_SLACK).
LANDING_SLACK = timedelta(seconds=1)


def iso_ms(at: datetime) -> str:
    """``at`` as the sink writes instants: UTC, milliseconds, ``Z`` (truncated, never rounded up)."""
    utc = at.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def parse_instant(text: str) -> datetime:
    """An ISO-8601 instant; naive means UTC."""
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def lease_id(collection: str, instance: str) -> str:
    return f"{collection}/{instance}"


@dataclass(frozen=True)
class Lease:
    """One sink process's published visibility (see the module)."""

    instance: str
    visible_through: datetime
    published_at: datetime
    lease_s: float
    attempt_timeout_s: float

    def settled_at(self) -> datetime:
        """From this instant on, nothing this process stamped can still become visible (on a
        server that honours ``maxTimeMS`` on inserts; FerretDB 1.24 does not: the ETL's heal check
        is the net for that)."""
        return self.published_at + timedelta(seconds=self.lease_s + self.attempt_timeout_s) + LANDING_SLACK


def lease_document(
    collection: str, instance: str, visible_through: datetime, published_at: datetime, lease_s: float, attempt_timeout_s: float
) -> dict[str, Any]:
    return {
        "_id": lease_id(collection, instance),
        "collection": collection,
        "instance": instance,
        "visible_through": iso_ms(visible_through),
        "published_at": iso_ms(published_at),
        "lease_s": float(lease_s),
        "attempt_timeout_s": float(attempt_timeout_s),
    }


class MalformedLeaseError(PipelineError, ValueError):
    """A lease document a reader cannot interpret: it must not read past it (see :func:`visible_bound`).
    Not retriable: the document stays malformed until a sink publishes over it or it is removed."""


def parse_lease(doc: Mapping[str, Any]) -> Lease:
    """A lease document as a :class:`Lease`; :class:`MalformedLeaseError` naming the document otherwise."""
    try:
        lease_s, timeout_s = float(doc["lease_s"]), float(doc["attempt_timeout_s"])
        if not (lease_s >= 0 and timeout_s >= 0):  # NaN too
            raise ValueError("lease_s and attempt_timeout_s must be non-negative numbers")
        return Lease(
            instance=str(doc.get("instance") or doc.get("_id")),
            visible_through=parse_instant(str(doc["visible_through"])),
            published_at=parse_instant(str(doc["published_at"])),
            lease_s=lease_s,
            attempt_timeout_s=timeout_s,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedLeaseError(f"visibility lease {doc.get('_id')!r} is malformed ({type(exc).__name__}: {exc})") from exc


def visible_bound(leases: Iterable[Lease], now: datetime, skew_s: float) -> datetime:
    """The latest ``ingested_at`` a reader may read up to at ``now`` (its own clock): at most
    ``now - skew_s``, and at most the ``visible_through`` of every lease that is not settled
    ``skew_s`` before ``now``."""
    skew = timedelta(seconds=skew_s)
    bound = now - skew
    for lease in leases:
        if lease.settled_at() + skew >= now:
            bound = min(bound, lease.visible_through)
    return bound
