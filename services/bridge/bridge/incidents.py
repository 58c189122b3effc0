"""Source resets (issue 15): when a stored position no longer fits the remote log. Pure.

A remote partition's committed position ``N`` means "everything before N is copied". If the
remote log now ends below ``N`` (the topic was deleted and recreated, or truncated) or starts
above it (retention deleted records never copied), the offsets no longer name the records they
named: copying on would skip data silently. That is an **incident** for the partition, handled
by ``BRIDGE_SOURCE_RESET_POLICY``:

- ``fail`` (default): the partition is not copied (the others are), the service is not ready
  and says why, until an operator restarts it with a resume policy;
- ``resume_from_earliest`` / ``resume_from_latest``: the stored position moves to the log's
  start / end in a transaction on the partition's producer, which writes a reset record
  (:func:`reset_record`) and a new ``source_epoch`` (ids derived from coordinates change with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import TopicPartition

from shared.offsets import StoredOffset

Policy = Literal["fail", "resume_from_earliest", "resume_from_latest"]
POLICIES: tuple[Policy, ...] = ("fail", "resume_from_earliest", "resume_from_latest")

ABOVE_END = "above_end"  # the log ends below the position: deleted and recreated, or truncated
BELOW_START = "below_start"  # the log starts above the position: retention deleted uncopied records
OUT_OF_RANGE = "out_of_range"  # the broker refused a fetch (OffsetOutOfRange) and no bound explains it any more


def classify_position(position: int, log_start: int, log_end: int) -> str | None:
    """``ABOVE_END``, ``BELOW_START`` or None (``log_start <= position <= log_end``: fine; a
    position equal to the end is caught up)."""
    if position > log_end:
        return ABOVE_END
    if position < log_start:
        return BELOW_START
    return None


@dataclass(frozen=True)
class SourceIncident:
    """A remote partition whose stored position does not fit its log."""

    topic: str
    partition: int
    kind: str
    stored: int  # the committed position (next offset to copy)
    log_start: int
    log_end: int
    detected_at: str  # UTC ISO-8601
    fetch_offset: int | None = None  # the fetch position the broker refused, when detected mid-session
    source_epoch: int = 0

    def reason(self) -> str:
        why = {
            ABOVE_END: "is above the log end (topic deleted and recreated, or truncated)",
            BELOW_START: "is below the log start (retention deleted records not copied yet)",
        }.get(self.kind, "was refused by the broker (OffsetOutOfRange)")
        fetch = f", fetch position {self.fetch_offset}" if self.fetch_offset is not None else ""
        return (
            f"source reset on {self.topic}/{self.partition}: stored position {self.stored}{fetch} {why};"
            f" log start {self.log_start}, log end {self.log_end}; not copied until an operator sets"
            " BRIDGE_SOURCE_RESET_POLICY=resume_from_earliest|resume_from_latest"
        )

    def as_dict(self) -> dict[str, Any]:
        """For the offsets topic's ``incident`` field and ``GET /lag``."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "stored": self.stored,
            "log_start": self.log_start,
            "log_end": self.log_end,
            "at": self.detected_at,
        }
        if self.fetch_offset is not None:
            out["fetch_offset"] = self.fetch_offset
        return out


def find_incident(
    topic: str,
    partition: int,
    *,
    stored: int,
    log_start: int,
    log_end: int,
    at: str,
    source_epoch: int = 0,
    recorded: dict[str, Any] | None = None,
    fetch_offset: int | None = None,
    unexplained: str | None = None,
) -> SourceIncident | None:
    """Whether a partition is in incident: the one place that decides it.

    - ``recorded``: an incident the offsets topic holds (written under policy ``fail``): it stays
      until a resume clears it, even once the new log has grown past the old position; its own
      kind and time win.
    - ``fetch_offset``: the partition is copying and this is how far it has fetched (records in
      memory are not lost): that position, not the committed one, is compared with the log.
      ``unexplained`` is the kind to report when the bounds read now no longer explain why it
      was found outside (the broker refused the fetch: :data:`OUT_OF_RANGE`).
    - otherwise the committed position ``stored`` is compared with ``[log_start, log_end]``.

    ``at`` is the detection time (UTC ISO-8601) when the incident is new.
    """
    if recorded is not None:
        kind = str(recorded.get("kind") or classify_position(stored, log_start, log_end) or "recorded")
        return SourceIncident(topic, partition, kind, stored, log_start, log_end, str(recorded.get("at") or at), source_epoch=source_epoch)
    position = stored if fetch_offset is None else fetch_offset
    found = classify_position(position, log_start, log_end) or unexplained
    if found is None:
        return None
    return SourceIncident(topic, partition, found, stored, log_start, log_end, at, fetch_offset, source_epoch)


@dataclass(frozen=True)
class StartPosition:
    """Where a partition taken over starts, before the policy: its stored position (or, never
    copied, the ``BRIDGE_START_FROM`` end of the log) and the incident that position is in."""

    position: int
    incident: SourceIncident | None = None


def plan_positions(
    tps: Sequence[TopicPartition],
    states: Mapping[tuple[str, int], StoredOffset],
    first: Mapping[TopicPartition, int],
    log_starts: Mapping[TopicPartition, int],
    log_ends: Mapping[TopicPartition, int],
    at: str,
) -> dict[TopicPartition, StartPosition]:
    """The take-over's positions, read after the fencing (so final): a stored partition starts at
    its stored position, checked against its log (``log_starts``/``log_ends``, read for the stored
    ones); one never copied starts at ``first`` (nothing to check: it was just read from the log)."""
    plan: dict[TopicPartition, StartPosition] = {}
    for tp in tps:
        state = states.get((tp.topic, tp.partition))
        if state is None:
            plan[tp] = StartPosition(first[tp])
            continue
        incident = find_incident(
            tp.topic,
            tp.partition,
            stored=state.next_offset,
            log_start=log_starts[tp],
            log_end=log_ends[tp],
            at=at,
            source_epoch=state.source_epoch,
            recorded=state.incident,
        )
        plan[tp] = StartPosition(state.next_offset, incident)
    return plan


def resume_position(policy: Policy, log_start: int, log_end: int) -> int:
    """Where a resume policy moves the position."""
    if policy == "resume_from_earliest":
        return log_start
    if policy == "resume_from_latest":
        return log_end
    raise ValueError(f"policy {policy!r} does not resume")


def reset_record(incident: SourceIncident, policy: Policy, new_position: int, at: str) -> dict[str, Any]:
    """What the offsets topic records about a resume (the value's ``reset`` field)."""
    return {
        "policy": policy,
        "kind": incident.kind,
        "old_position": incident.stored,
        "new_position": new_position,
        "log_start": incident.log_start,
        "log_end": incident.log_end,
        "old_epoch": incident.source_epoch,
        "new_epoch": incident.source_epoch + 1,
        "at": at,
    }
