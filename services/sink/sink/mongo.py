"""MongoDB side of the sink: one client, the indexes the ETL reads by, one classified write.

:meth:`MongoWriter.insert` is a single unordered ``insert_many`` attempt that tells, from what the
server (or the driver) answered, what happened (the table of :mod:`sink.verdicts`):

- per document (``BulkWriteError.writeErrors``): inserted, duplicate ``_id`` (11000), refused
  (a code that says the document is bad), to retry (a code that says "not now"), or uncertain (a
  code this table does not know: the caller confirms it by retrying before dead-lettering);
- for the attempt as a whole: an outage (:class:`MongoUnavailableError`: no connection, timeout,
  server shutting down, not primary, FerretDB's backend unreachable …) or a refusal of the whole
  batch (:class:`MongoBatchRefusedError`: FerretDB on PostgreSQL refuses the whole
  ``insert_many`` for one bad document, e.g. a NUL in a string value). Which documents are bad,
  and the retry policy, are the caller's (``sink.writes``).

The classification is a table, not a guess (:mod:`sink.verdicts`): codes from MongoDB's
documented error codes (``src/mongo/base/error_codes.yml``) and FerretDB 1.24.2's answers captured
against the real server (``tests/unit/sink/fixtures/ferretdb_errors.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymongo
from bson.errors import InvalidDocument
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, AsyncMongoClient, IndexModel, WriteConcern
from pymongo.errors import BulkWriteError, CollectionInvalid, OperationFailure, PyMongoError, ServerSelectionTimeoutError

from shared.errors import BackendUnavailableError, ConfigError, PipelineError
from sink.documents import STAGE_ENCODE, STAGE_WRITE, encoding_error
from sink.ferretdb import POSTGRES_FAILURES, StoredIds, ensure_id_index
from sink.settings import BSON_MAX_DOCUMENT_BYTES, SinkSettings
from sink.verdicts import Verdict, classify, classify_code, code_name, store_message

log = logging.getLogger(__name__)


# Point lookups by _id in flight at once while reading the stored copies of duplicates.
STORED_LOOKUP_CONCURRENCY = 16

# The indexes the ETL reads by: new events hour by hour, a date's events, each in PARTS slices;
# new events second by second (the continuous mode's equality reads on ``ingest_second``).
INDEXES = (
    IndexModel([("ingest_hour", ASCENDING), ("part", ASCENDING)]),
    IndexModel([("event_date", ASCENDING), ("part", ASCENDING)]),
    IndexModel([("ingest_second", ASCENDING)]),
)


def wants_read_indexes(setting: str, ferretdb_version: str | None) -> bool:
    """Whether to create ``INDEXES`` (``SINK_READ_INDEXES``): "create", "skip", or "auto" = on
    MongoDB only. FerretDB 1.24 serves no query from them: it turns an equality filter into
    jsonb containment (``_jsonb -> 'f' @> v``), which a btree cannot serve, on PostgreSQL (where
    the ETL builds its own GIN read index) and pushes no filter down at all on SQLite."""
    if setting == "auto":
        return ferretdb_version is None
    return setting == "create"


class MongoUnavailableError(BackendUnavailableError):
    """The attempt failed as a whole and no document is to blame (connection, timeout, server
    shutting down, backend unreachable): retry later, unchanged (retriable). ``timed_out``: it ran
    out of time (the caller then retries with fewer documents per attempt). ``sent``: False when
    nothing was sent (no server to send it to), so nothing of it can land later. ``reason`` labels
    ``sink_write_retries_total``."""

    reason = "unavailable"

    def __init__(self, message: str, *, timed_out: bool = False, sent: bool = True) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.sent = sent


class MongoSlowQueryError(MongoUnavailableError):
    """A read ran out of its ``bound`` (seconds) while the server answers a ping: the query is
    slow, the store is up. Retried with a longer bound (``sink.writes``), counted apart."""

    reason = "slow_query"

    def __init__(self, message: str, *, bound: float) -> None:
        super().__init__(message, timed_out=True)
        self.bound = bound


class MongoBatchRefusedError(PipelineError):
    """The server answered and refused the whole ``insert_many`` (FerretDB on PostgreSQL refuses
    a whole batch for one bad document); not retriable as it is. ``verdict`` is REFUSAL (a code that blames the data) or
    UNKNOWN (a code not in the table). Documents before the bad one may have landed anyway."""

    def __init__(self, code: int | None, error_class: str, message: str, verdict: Verdict) -> None:
        super().__init__(message)
        self.code = code
        self.error_class = error_class
        self.message = message
        self.verdict = verdict


@contextlib.contextmanager
def backend_outage_retriable() -> Iterator[None]:
    """An ``OperationFailure`` that :func:`classify` calls an outage becomes a
    ``MongoUnavailableError`` (retriable), whatever the operation: FerretDB answers a read or an
    update with code 1 (InternalError, "failed to connect … dial error") while its PostgreSQL is
    unreachable, which ``shared.errors.is_retriable`` alone would call a refusal (a crash)."""
    try:
        yield
    except OperationFailure as exc:
        if classify(exc) is Verdict.OUTAGE:
            raise MongoUnavailableError(f"{type(exc).__name__}: {exc}") from exc
        raise


@dataclass
class InsertOutcome:
    """What one ``insert_many`` attempt did to each document, by its index in the attempt.
    Indices in none of the lists/dicts were inserted."""

    inserted: int = 0
    duplicates: list[int] = field(default_factory=list)  # duplicate _id: compare with the stored one
    retry: list[int] = field(default_factory=list)  # transient per-document errors (outage codes)
    resend: list[int] = field(default_factory=list)  # not written for another document's sake (encoding): send again now
    refused: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # index → (stage, class, message)
    uncertain: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # unknown codes: confirm by retrying


class MongoWriter:
    """The sink's MongoDB client. ``attempt_timeout`` (seconds, asked before every call) bounds
    each ``insert_many``, ``find`` and ``ping`` through ``pymongo.timeout``; the sink shortens it
    once stopping."""

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
        self.attempt_timeout: Callable[[], float] = lambda: settings.write_attempt_timeout_s
        self.stored_ids: StoredIds | None = None  # FerretDB with its PostgreSQL URL: duplicates asked first

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
            lookups = await self._prepare_id_lookups(ferretdb)
        except PyMongoError as exc:
            raise MongoUnavailableError(f"{type(exc).__name__}: {exc}") from exc
        server = f"FerretDB {ferretdb}" if ferretdb else "MongoDB"
        done = "ensured" if indexes else "not created"
        reads = f"read indexes {done} (read_indexes={self.settings.read_indexes})"
        return f"w={w} (replica set: {replica_set or 'none'}); {server}, {reads}; {lookups}"

    async def _prepare_id_lookups(self, ferretdb: str | None) -> str:
        """On FerretDB with ``ferretdb_postgresql_url``: the collection and the sink's GIN ``_id``
        index (:mod:`sink.ferretdb`). Returns what serves the duplicate check's lookups."""
        if ferretdb is None:
            return "_id lookups: MongoDB's _id index"
        url = self.settings.ferretdb_postgresql_url
        if url is None:
            log.warning("FerretDB without SINK_FERRETDB_POSTGRESQL_URL: each _id lookup of the duplicate check scans the whole collection")
            return "_id lookups: collection scans (no SINK_FERRETDB_POSTGRESQL_URL)"
        database = self.client[self.settings.mongodb_database]
        name = self.settings.mongodb_collection
        if name not in await database.list_collection_names(filter={"name": name}):
            with contextlib.suppress(CollectionInvalid, OperationFailure):  # created meanwhile by another sink
                await database.create_collection(name)
        try:
            index = await ensure_id_index(url.get_secret_value(), self.settings.mongodb_database, name)
        except POSTGRES_FAILURES as exc:
            raise MongoUnavailableError(f"FerretDB's PostgreSQL (SINK_FERRETDB_POSTGRESQL_URL): {type(exc).__name__}: {exc}") from exc
        if index is None:
            # The collection exists (ensured above): the URL names another store than FerretDB's.
            raise ConfigError(
                f"SINK_FERRETDB_POSTGRESQL_URL holds no FerretDB table for {self.settings.mongodb_database}.{name}: "
                "it must name the PostgreSQL database of the FerretDB in MONGODB_URI (unset it for MongoDB or FerretDB on SQLite)"
            )
        self.stored_ids = StoredIds(url.get_secret_value(), self.settings.mongodb_database, name)
        return f"_id lookups: GIN index {index}; stored _ids asked before each insert"

    async def insert(self, docs: list[dict[str, Any]]) -> InsertOutcome:
        """One unordered ``insert_many`` of ``docs``, classified (see the module docstring).
        Raises ``MongoUnavailableError`` (outage) or ``MongoBatchRefusedError`` (whole batch refused).

        On FerretDB with its PostgreSQL URL, the documents whose ``_id`` is stored already are
        reported as duplicates without being sent (:class:`sink.ferretdb.StoredIds`: FerretDB
        inserts a chunk holding one duplicate document by document)."""
        await self._server_selectable()
        stored = await self.stored_ids.present([d.get("_id") for d in docs]) if self.stored_ids is not None else None
        if not stored:
            return await self._insert_many(docs)
        sent = [i for i, d in enumerate(docs) if d.get("_id") not in stored]
        out = await self._insert_many([docs[i] for i in sent]) if sent else InsertOutcome()
        return InsertOutcome(
            inserted=out.inserted,
            duplicates=sorted([i for i, d in enumerate(docs) if d.get("_id") in stored] + [sent[j] for j in out.duplicates]),
            retry=[sent[j] for j in out.retry],
            resend=[sent[j] for j in out.resend],
            refused={sent[j]: v for j, v in out.refused.items()},
            uncertain={sent[j]: v for j, v in out.uncertain.items()},
        )

    async def _insert_many(self, docs: list[dict[str, Any]]) -> InsertOutcome:
        out = InsertOutcome()
        try:
            with pymongo.timeout(self.attempt_timeout()):
                result = await self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            details = exc.details
            if details.get("writeConcernErrors"):
                # Applied but not acknowledged as asked: not durable enough to commit offsets.
                # Retrying everything is safe: what did land comes back as duplicates.
                raise MongoUnavailableError(f"write concern error: {details['writeConcernErrors'][0].get('errmsg')}") from exc
            out.inserted = details.get("nInserted", 0)
            for error in details.get("writeErrors", []):
                index, code, errmsg = error["index"], error.get("code"), str(error.get("errmsg", ""))
                verdict = classify_code(code, errmsg)
                if verdict is Verdict.DUPLICATE:
                    out.duplicates.append(index)
                elif verdict is Verdict.OUTAGE:
                    out.retry.append(index)
                elif verdict is Verdict.REFUSAL:
                    out.refused[index] = (STAGE_WRITE, code_name(code), store_message(code, errmsg))
                else:
                    out.uncertain[index] = (STAGE_WRITE, code_name(code), store_message(code, errmsg))
            return out
        except (InvalidDocument, OverflowError) as exc:
            # The driver could not encode some document; which ones, we find out one by one.
            # Nothing of this attempt can be assumed written: retry the encodable ones.
            log.warning("batch not encodable (%s): checking documents one by one", exc)
            for i, doc in enumerate(docs):
                reason = encoding_error(doc, min(self.settings.max_document_bytes, BSON_MAX_DOCUMENT_BYTES))
                if reason is None:
                    out.resend.append(i)
                else:
                    out.refused[i] = (STAGE_ENCODE, reason.split(":", 1)[0], reason)
            return out
        except PyMongoError as exc:
            raise _whole_batch_error(exc) from exc
        out.inserted = len(result.inserted_ids)
        return out

    async def _server_selectable(self) -> None:
        """With no writable server known (down, or marked unknown after a network error): a
        ``ping`` within ``mongodb_timeout_ms`` first. Inside ``pymongo.timeout`` the driver waits for
        a server up to the whole timeout, so an attempt would otherwise wait up to
        ``write_attempt_timeout_s`` for a server that is down, saying nothing (not ready late).
        Raises ``MongoUnavailableError`` with ``sent=False``: nothing was sent."""
        if self.client.topology_description.has_writable_server():
            return
        try:
            with pymongo.timeout(min(self.attempt_timeout(), self.settings.mongodb_timeout_ms / 1000)):
                await self.client.admin.command("ping")
        except PyMongoError as exc:
            raise MongoUnavailableError(f"{type(exc).__name__}: {exc}", sent=False) from exc

    async def stored(
        self, ids: Sequence[Any], bound_s: float | None = None, accept: Callable[[Any, dict[str, Any]], bool] | None = None
    ) -> dict[Any, RawBSONDocument]:
        """The stored documents of ``ids``, as the server's exact BSON: one ``find({_id: id})``
        per id, ``STORED_LOOKUP_CONCURRENCY`` at a time, each bounded by ``bound_s`` (default:
        the attempt timeout). An equality on ``_id`` is the one filter both stores serve from an
        index (MongoDB's ``_id`` index; on FerretDB the sink's GIN index, :mod:`sink.ferretdb`);
        ``$in`` is not pushed down by FerretDB 1.24 and scans the whole collection.
        Raises ``MongoSlowQueryError`` when a lookup ran out of time and the server still answers
        a ping, else ``MongoUnavailableError``.

        ``accept`` (on FerretDB with its PostgreSQL URL): the documents are first read from
        FerretDB's table in one query and decoded here, off the event loop
        (:meth:`sink.ferretdb.StoredIds.documents`); a document ``accept`` takes (called with the
        decoded dict: the caller's "equal to what I would write") is returned as read, every other
        id is read through FerretDB as above. So a decoding this sink got wrong
        can only send a document the slow way, never make a conflict look like a duplicate's
        equal copy: a redelivered batch of thousands of duplicates costs one query instead of a
        FerretDB ``find`` each (25 000 of them held a restarted sink for minutes in the hour soak)."""
        found: dict[Any, RawBSONDocument] = {}
        if accept is not None and self.stored_ids is not None:
            found = await self.stored_ids.documents(ids, accept) or {}
            ids = [i for i in ids if i not in found]
            if not ids:
                return found
        return found | await self._stored_through_server(ids, bound_s)

    async def _stored_through_server(self, ids: Sequence[Any], bound_s: float | None) -> dict[Any, RawBSONDocument]:
        raw = self.collection.with_options(codec_options=self.collection.codec_options.with_options(document_class=RawBSONDocument))
        bound = bound_s if bound_s is not None else self.attempt_timeout()
        gate = asyncio.Semaphore(STORED_LOOKUP_CONCURRENCY)

        async def one(_id: Any) -> RawBSONDocument | None:
            async with gate:
                with pymongo.timeout(bound):
                    found: RawBSONDocument | None = await raw.find_one({"_id": _id})
                    return found

        try:
            found = await asyncio.gather(*(one(_id) for _id in dict.fromkeys(ids)))
        except PyMongoError as exc:
            if exc.timeout and not isinstance(exc, ServerSelectionTimeoutError) and await self.healthy():
                message = f"lookup of {len(ids)} stored duplicate(s) by _id took over {bound:g} s: {exc}"
                raise MongoSlowQueryError(message, bound=bound) from exc
            raise MongoUnavailableError(f"{type(exc).__name__}: {exc}", timed_out=exc.timeout) from exc
        return {doc["_id"]: doc for doc in found if doc is not None}

    async def healthy(self) -> bool:
        """Whether the server answers a ``ping`` now. FerretDB's ping asks its backend too (it
        fails with code 1 while PostgreSQL is unreachable): a refusal confirmed while the server is
        healthy is about the document, not the store."""
        try:
            with pymongo.timeout(self.attempt_timeout()):
                await self.client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def close(self) -> None:
        if self.stored_ids is not None:
            await self.stored_ids.close()
        await self.client.close()


def _whole_batch_error(exc: PyMongoError) -> MongoUnavailableError | MongoBatchRefusedError:
    verdict = classify(exc)
    if verdict is Verdict.OUTAGE or not isinstance(exc, OperationFailure):
        # Out of time while the server was working on it (the caller then halves the attempt);
        # not when no server could even be selected (down: a smaller attempt would not help).
        timed_out = exc.timeout and not isinstance(exc, ServerSelectionTimeoutError)
        return MongoUnavailableError(f"{type(exc).__name__}: {exc}", timed_out=timed_out)
    if verdict is Verdict.DUPLICATE:  # a duplicate key can only blame one document, not a whole batch
        verdict = Verdict.UNKNOWN
    details = exc.details or {}
    errmsg = str(details.get("errmsg", exc))
    return MongoBatchRefusedError(exc.code, code_name(exc.code, details.get("codeName")), store_message(exc.code, errmsg), verdict)
