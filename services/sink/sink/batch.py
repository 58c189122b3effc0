"""A batch: records cut from the stream, turned into documents and dead letters.

Contract of :func:`build_batch`: every record of the input ends in exactly one of the batch's
documents or dead letters, and the batch's ``offsets`` (next offset per partition) cover every
record. Each record is isolated: whatever building its document raises, that record alone is
dead-lettered (with its stage, class and message), never the batch. Pure: no clients, no clock
(the ingest stamp is passed in, and replaced at each write attempt).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from shared.errors import InvalidEventError, PipelineError
from shared.hops import SinkTally
from sink.documents import STAGE_BUILD, IngestStamp, document_of

log = logging.getLogger(__name__)


class BatchAbandonedError(PipelineError):
    """A batch given up uncommitted (shutdown while MongoDB is down); it will be redelivered to
    the partition's next owner. Not retriable: this process is stopping."""


@dataclass
class DeadLetter:
    record: ConsumerRecord[bytes | None, bytes | None]
    stage: str
    error_class: str
    message: str


@dataclass
class Batch:
    """Records cut from the stream, turned into documents and dead letters; ``offsets`` to commit."""

    epoch: int
    records: int = 0
    docs: list[dict[str, Any]] = field(default_factory=list)
    doc_records: list[ConsumerRecord[bytes | None, bytes | None]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    started: float = 0.0  # monotonic start of its write
    # What it did per local and remote partition, for the ledger (sink.ledger.tally_batch).
    tally: SinkTally = field(default_factory=SinkTally)


def build_batch(
    records: Iterable[ConsumerRecord[bytes | None, bytes | None]], stamp: IngestStamp, max_document_bytes: int, epoch: int
) -> Batch:
    """Documents and dead letters of ``records``; ``offsets`` = next offset per partition. Each
    record is isolated: an ``InvalidEventError`` is dead-lettered with its stage, any other
    exception from building its document with stage ``sink.build`` (its class and message)."""
    batch = Batch(epoch=epoch)
    for record in records:
        batch.records += 1
        try:
            doc = document_of(record.value, stamp, max_document_bytes)
        except InvalidEventError as exc:
            batch.dead_letters.append(DeadLetter(record, exc.stage, exc.error_class, exc.reason))
        except Exception as exc:  # one record never fails the batch: whatever it raises, it is dead-lettered
            log.warning(
                "record %s/%d/%d could not be built: %r",
                record.topic,
                record.partition,
                record.offset,
                exc,
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset, "stage": STAGE_BUILD},
            )
            batch.dead_letters.append(DeadLetter(record, STAGE_BUILD, type(exc).__name__, str(exc) or repr(exc)))
        else:
            batch.docs.append(doc)
            batch.doc_records.append(record)
        tp = TopicPartition(record.topic, record.partition)
        batch.offsets[tp] = max(batch.offsets.get(tp, 0), record.offset + 1)
    return batch
