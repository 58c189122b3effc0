"""Source resets on the running bridge: what it does with a partition in incident.

The rules (what is an incident, its kinds, the reset record) are pure, in
:mod:`bridge.incidents` (:func:`~bridge.incidents.find_incident` decides whether a partition is
in one). The worker (:mod:`bridge.app`) finds incidents on take-over (before the partition's
copy starts), on its remote checks and when the broker refuses a fetch
(:meth:`SourceResets.out_of_range`); a partition found mid-session is stopped first
(:meth:`SourceResets.live_incident`: its open transaction ends, queued records are dropped, the
committed position stays). Then
:meth:`SourceResets.on_incident` applies ``BRIDGE_SOURCE_RESET_POLICY``:

- ``fail``: the incident is written to the offsets topic (durable: a restarted bridge stays
  held even after the new log has grown past the old position) and the partition is held in
  :attr:`SourceResets.incidents`: not copied, the service not ready, the reason naming it;
- a resume policy: the stored position moves to the log start or end in a transaction of the
  partition's (fencing) producer, with a reset record and the next ``source_epoch``; a
  partition stopped mid-session is sought there and copied again, with no await between the
  seek and the restart of its copy task.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from bridge.copier import Copier, PartitionCopy
from bridge.incidents import OUT_OF_RANGE, SourceIncident, find_incident, reset_record, resume_position
from bridge.metrics import BridgeMetrics
from bridge.offsets import offset_key, offset_value
from bridge.producers import open_transaction
from bridge.settings import BridgeSettings
from shared.errors import BackendUnavailableError
from shared.service import ServiceState

# The worker's one logger, as before the split (its name is in every log line).
log = logging.getLogger("bridge.app")


def now_iso() -> str:
    """Now, UTC ISO-8601 with milliseconds and ``Z`` (an incident's ``at``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SourceResets:
    """The owned partitions in incident (:attr:`incidents`; :meth:`refresh` keeps the gauge
    and readiness in step with it), and the policy applied to each new one."""

    def __init__(
        self,
        settings: BridgeSettings,
        state: ServiceState,
        metrics: BridgeMetrics,
        copies: dict[TopicPartition, PartitionCopy],
        copier: Copier,
    ) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        # The worker's owned partitions (the same dict: taken over and released by the worker)
        # and their copy tasks, stopped and restarted around an incident found mid-session.
        self.copies = copies
        self.copier = copier
        # Owned partitions in a source-reset incident under policy "fail": not copied, not ready.
        self.incidents: dict[TopicPartition, SourceIncident] = {}

    async def on_incident(self, copy: PartitionCopy, incident: SourceIncident, *, recorded: bool = False, via: str) -> int | None:
        """Applies ``BRIDGE_SOURCE_RESET_POLICY`` to a partition whose copying is stopped (or not
        started): under ``fail`` records the incident (once) and returns None: the partition is
        held; under a resume policy moves the stored position in a transaction on the
        partition's producer (a reset record, the next epoch) and returns the new position."""
        s = self.settings
        tp = copy.tp
        policy = s.source_reset_policy
        if not recorded:
            self.metrics.source_resets.labels(str(tp.partition), incident.kind).inc()
        log.error(
            "source reset incident: topic %s partition %s stored %s log start %s log end %s (%s%s; found by %s); policy %s",
            tp.topic,
            tp.partition,
            incident.stored,
            incident.log_start,
            incident.log_end,
            incident.kind,
            f", fetch position {incident.fetch_offset}" if incident.fetch_offset is not None else "",
            "the recorded incident" if recorded else via,
            policy,
            extra={
                "topic": tp.topic,
                "partition": tp.partition,
                "offsets": {"stored": incident.stored, "log_start": incident.log_start, "log_end": incident.log_end},
                "incident": incident.kind,
                "policy": policy,
            },
        )
        if policy == "fail":
            if not recorded:  # durable: a restart with "fail" must not find the log "fine" again
                value = offset_value(
                    incident.stored, source_epoch=copy.source_epoch, reset=copy.last_reset, incident=incident.as_dict(), counts=copy.counts
                )
                await self.write_offset_record(copy, value)
            self.incidents[tp] = incident
            self.refresh()
            return None
        position = resume_position(policy, incident.log_start, incident.log_end)
        reset = reset_record(incident, policy, position, now_iso())
        await self.write_offset_record(copy, offset_value(position, source_epoch=copy.source_epoch + 1, reset=reset, counts=copy.counts))
        copy.advance_epoch(reset)
        self.metrics.source_resumes.labels(str(tp.partition), policy).inc()
        self.metrics.stored_offset.labels(str(tp.partition)).set(position)
        log.warning(
            "source reset of %s partition %s resolved by policy %s: position %s -> %s (log start %s, end %s), source epoch %s",
            tp.topic,
            tp.partition,
            policy,
            incident.stored,
            position,
            incident.log_start,
            incident.log_end,
            copy.source_epoch,
            extra={
                "topic": tp.topic,
                "partition": tp.partition,
                "offsets": {
                    "stored": incident.stored,
                    "resumed_at": position,
                    "log_start": incident.log_start,
                    "log_end": incident.log_end,
                },
                "incident": incident.kind,
                "policy": policy,
            },
        )
        self.incidents.pop(tp, None)
        self.refresh()
        return position

    async def write_offset_record(self, copy: PartitionCopy, value: bytes) -> None:
        """One offsets-topic value, alone in a transaction of the partition's (fencing) producer."""
        s = self.settings
        producer = copy.producers[0]
        try:
            async with asyncio.timeout(s.transaction_deadline_s):
                async with open_transaction(producer):
                    await (await producer.send(s.offsets_topic, key=offset_key(copy.tp.topic, copy.tp.partition), value=value))
                await producer.commit_transaction()
        except TimeoutError:
            raise BackendUnavailableError(
                f"offsets record of partition {copy.tp.partition} not committed within {s.transaction_deadline_s:.0f}s"
            ) from None

    def refresh(self) -> None:
        """The incident gauge, and readiness: not ready while any owned partition is held."""
        self.metrics.source_incidents.set(len(self.incidents))
        if self.incidents:
            self.state.set_not_ready("; ".join(i.reason() for _, i in sorted(self.incidents.items())))

    async def out_of_range(self, consumer: AIOKafkaConsumer, exc: OffsetOutOfRangeError) -> None:
        """``getmany`` raised OffsetOutOfRange (``auto_offset_reset="none"``): the remote log no
        longer holds the fetch position. Never a silent reset: an incident for each partition."""
        refused = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        if not refused:
            raise exc  # cannot tell which partition: end the session, take-over checks them all
        for tp, fetch_offset in refused.items():
            copy = self.copies.get(tp)
            if copy is not None and not copy.stopping:
                await self.live_incident(consumer, copy, int(fetch_offset), None, via="fetch (OffsetOutOfRange)")

    async def live_incident(
        self, consumer: AIOKafkaConsumer, copy: PartitionCopy, fetch_offset: int, kind: str | None, *, via: str
    ) -> None:
        """Stops a copying partition (its open transaction finishes; queued records are dropped,
        the committed position stays), then applies the policy; resumes copying if it resumes."""
        tp = copy.tp
        copy.pause()
        await copy.stop()
        self.copier.raise_failure()  # its last transaction failed: the session ends, take-over re-checks
        log_start = (await asyncio.wait_for(consumer.beginning_offsets([tp]), 10))[tp]
        log_end = (await asyncio.wait_for(consumer.end_offsets([tp]), 10))[tp]
        incident = find_incident(
            tp.topic,
            tp.partition,
            stored=copy.next_offset if copy.next_offset is not None else fetch_offset,
            log_start=log_start,
            log_end=log_end,
            at=now_iso(),
            source_epoch=copy.source_epoch,
            fetch_offset=fetch_offset,
            unexplained=kind or OUT_OF_RANGE,
        )
        assert incident is not None  # an unexplained position is an incident of kind ``unexplained``
        position = await self.on_incident(copy, incident, via=via)
        if position is None or self.copies.get(tp) is not copy:
            return  # held (policy fail), or revoked meanwhile
        copy.restart_at(position)
