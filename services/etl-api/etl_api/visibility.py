"""Up to which ``ingested_at`` a run may read: the sink's visibility leases (:mod:`shared.visibility`).

``high`` = the smallest ``visible_through`` of the sink processes' leases that are not settled,
and never later than now − ``ETL_SETTLE_SECONDS`` (the clocks' skew margin, 2 s by default).
Every document stamped at or before ``high`` is visible when the run reads, so a window that
ends there never skips one; freshness is bounded by the sinks' publication interval and their
oldest write attempt, not by a fixed margin. ``ETL_VISIBILITY_LEASES=false`` ignores the leases
(for writers that publish none): the margin alone must then exceed the longest write attempt
(``SINK_WRITE_ATTEMPT_TIMEOUT_S``), e.g. ``ETL_SETTLE_SECONDS=120``.

A lease document that cannot be read is an error (:class:`shared.visibility.MalformedLeaseError`):
the run or micro-batch fails and is retried, it never reads past a sink it cannot judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from etl_api.settings import EtlSettings
from shared.visibility import COLLECTION, Lease, parse_lease, visible_bound


@dataclass(frozen=True)
class Visibility:
    high: datetime
    now: datetime
    leases: int  # leases that bounded the read (not settled)
    settled: int  # leases of sinks gone for good (ignored)

    def as_dict(self) -> dict[str, Any]:
        return {"high": self.high.isoformat(), "leases": self.leases, "settled_leases": self.settled}


class VisibilityReader:
    """Reads the leases of the events collection; one client for the reader's life."""

    def __init__(self, settings: EtlSettings) -> None:
        self.settings = settings
        self._client: AsyncMongoClient[dict[str, Any]] | None = None

    async def read(self, now: datetime | None = None) -> Visibility:
        s = self.settings
        now = now or datetime.now(UTC)
        if not s.visibility_leases:
            return Visibility(now - timedelta(seconds=s.settle_seconds), now, 0, 0)
        if self._client is None:
            self._client = AsyncMongoClient(s.mongodb_uri, serverSelectionTimeoutMS=10_000, timeoutMS=15_000)
        docs = [d async for d in self._client[s.mongodb_database][COLLECTION].find({"collection": s.mongodb_collection})]
        leases: list[Lease] = [parse_lease(d) for d in docs]
        skew = timedelta(seconds=s.settle_seconds)
        live = sum(1 for lease in leases if lease.settled_at() + skew >= now)
        return Visibility(visible_bound(leases, now, s.settle_seconds), now, live, len(leases) - live)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
