"""MongoDB side of the sink: one client, the indexes the ETL reads by, and one idempotent write.

:meth:`MongoWriter.insert` is a single attempt that classifies what happened to each document:
inserted, duplicate (``_id`` already there, code 11000: an event written before, e.g. by a run
whose offsets were not committed), refused (MongoDB will never take it), or to retry (outage,
transient server error, write-concern error). The retry policy lives in the caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bson.errors import InvalidDocument
from pymongo import ASCENDING, AsyncMongoClient, IndexModel, WriteConcern
from pymongo.errors import BulkWriteError, PyMongoError

from sink.documents import STAGE_ENCODE, STAGE_WRITE, encoding_error
from sink.settings import BSON_MAX_DOCUMENT_BYTES, SinkSettings

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
# Server error codes that say "try again later", not "this document is bad".
TRANSIENT_CODES = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50, 16500, 112, 117, 133, 134, 64, 79, 100})

# The indexes the ETL reads by: new events hour by hour, a date's events, each in PARTS slices.
INDEXES = (
    IndexModel([("ingest_hour", ASCENDING), ("part", ASCENDING)]),
    IndexModel([("event_date", ASCENDING), ("part", ASCENDING)]),
)


def wants_read_indexes(setting: str, ferretdb_version: str | None) -> bool:
    """Whether to create ``INDEXES`` (``SINK_READ_INDEXES``): "create", "skip", or "auto" = on
    MongoDB only. FerretDB 1.24 serves no query from them: it turns an equality filter into
    jsonb containment (``_jsonb -> 'f' @> v``), which a btree cannot serve, on PostgreSQL (where
    the ETL builds its own GIN read index) and pushes no filter down at all on SQLite."""
    if setting == "auto":
        return ferretdb_version is None
    return setting == "create"


class MongoUnavailableError(Exception):
    """The attempt failed as a whole (connection, timeout, server busy): retry the batch later.
    ``timed_out``: it ran out of time (the caller then retries with fewer documents per attempt)."""

    retriable = True

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass
class InsertOutcome:
    """What one ``insert_many`` attempt did to each document, by its index in the attempt."""

    inserted: int = 0
    duplicates: int = 0
    retry: list[int] = field(default_factory=list)  # transient per-document errors
    refused: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # index → (stage, class, message)


class MongoWriter:
    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        timeout = settings.mongodb_timeout_ms
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_uri.get_secret_value(),
            serverSelectionTimeoutMS=timeout,
            connectTimeoutMS=timeout,
            socketTimeoutMS=max(60_000, timeout),
            appname="pipeline-sink",
        )
        self.write_concern: WriteConcern | None = None
        self.collection = self.client[settings.mongodb_database][settings.mongodb_collection]

    async def prepare(self) -> str:
        """Pings, picks the write concern, creates the indexes (idempotent). Raises ``MongoUnavailableError``."""
        try:
            hello = await self.client.admin.command("hello")
            replica_set = hello.get("setName")
            w: int | str
            if self.settings.write_concern == "auto":
                w = "majority" if replica_set else 1
            else:
                w = int(self.settings.write_concern) if self.settings.write_concern.isdigit() else self.settings.write_concern
            self.write_concern = WriteConcern(w=w, j=self.settings.write_journal)
            base = self.client[self.settings.mongodb_database][self.settings.mongodb_collection]
            self.collection = base.with_options(write_concern=self.write_concern)
            ferretdb = (await self.client.admin.command("buildInfo")).get("ferretdbVersion")
            indexes = wants_read_indexes(self.settings.read_indexes, ferretdb)
            if indexes:
                # One index per command, and only missing ones: FerretDB 1.24 panics (and drops the
                # connection) on a createIndexes naming two indexes that both exist already.
                existing = {tuple(spec["key"]) for spec in (await base.index_information()).values()}
                for index in INDEXES:
                    if tuple(index.document["key"].items()) not in existing:
                        await base.create_indexes([index])
        except PyMongoError as exc:
            raise MongoUnavailableError(f"{type(exc).__name__}: {exc}") from exc
        server = f"FerretDB {ferretdb}" if ferretdb else "MongoDB"
        done = "ensured" if indexes else "not created"
        return f"w={w} (replica set: {replica_set or 'none'}); {server}, read indexes {done} (read_indexes={self.settings.read_indexes})"

    async def insert(self, docs: list[dict[str, Any]]) -> InsertOutcome:
        """One unordered ``insert_many`` of ``docs``. Raises ``MongoUnavailableError`` when it failed as a whole."""
        out = InsertOutcome()
        try:
            result = await self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            details = exc.details
            if details.get("writeConcernErrors"):
                # Applied but not acknowledged as asked: not durable enough to commit offsets.
                # Retrying everything is safe: what did land comes back as duplicates.
                raise MongoUnavailableError(f"write concern error: {details['writeConcernErrors'][0].get('errmsg')}") from exc
            out.inserted = details.get("nInserted", 0)
            for error in details.get("writeErrors", []):
                index, code = error["index"], error.get("code")
                if code == DUPLICATE_KEY:
                    out.duplicates += 1
                elif code in TRANSIENT_CODES:
                    out.retry.append(index)
                else:
                    out.refused[index] = (STAGE_WRITE, f"MongoError{code}", str(error.get("errmsg", "")))
            return out
        except (InvalidDocument, OverflowError) as exc:
            # The driver could not encode some document; which ones, we find out one by one.
            # Nothing of this attempt can be assumed written: retry the encodable ones.
            log.warning("batch not encodable (%s): checking documents one by one", exc)
            for i, doc in enumerate(docs):
                reason = encoding_error(doc, min(self.settings.max_document_bytes, BSON_MAX_DOCUMENT_BYTES))
                if reason is None:
                    out.retry.append(i)
                else:
                    out.refused[i] = (STAGE_ENCODE, reason.split(":", 1)[0], reason)
            return out
        except PyMongoError as exc:
            raise MongoUnavailableError(f"{type(exc).__name__}: {exc}", timed_out=exc.timeout) from exc
        out.inserted = len(result.inserted_ids)
        return out

    async def close(self) -> None:
        await self.client.close()
