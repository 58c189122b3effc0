"""The replay plan: what happens to each selected letter, decided before anything is written. Pure.

:func:`plan_replay` gives each letter one :class:`Step`, in order:

1. its own replay is in the ledger → :class:`AlreadyPresent`;
2. it went through ``max_replays`` replays already → :class:`Parked` (left in the dead-letter
   topic, never replayed again by this command: a record a hop keeps refusing is not looped);
3. it cannot be replayed as it is (cut to fit the dead-letter topic, a ``sink.conflict`` that
   needs a decision, a hop without a validator here) → :class:`RefusedAgain`;
4. the validator of the hop that refused it (the bridge's rules for ``bridge.*``; a ``sink.*``
   letter is already a normalized event and goes back as it is) refuses it → :class:`RefusedAgain`
   with the new reason;
5. its ``event_id`` is in the ledger, or an earlier letter of this plan has it →
   :class:`AlreadyPresent`;
6. else :class:`Publish`: the record for the local topic, its key and original headers kept, plus
   ``dlq.replay.count`` (one more than the letter's) and ``dlq.replay.of`` (the letter).

"Already present" means: a replay of this letter, or of another letter yielding the same
``event_id``, is committed to the local topic. The ledger (a compacted topic: key the letter's
``topic/partition/offset``, value its ``event_id``) is written in the same Kafka transaction as
the replayed records, so the one is visible exactly when the others are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared import dlq
from shared.dlqtool.letters import Letter

STAGE_REPLAY = "dlq.replay"  # refusals by the replay itself, before any hop's rules
SINK_CONFLICT = "sink.conflict"


@dataclass(frozen=True)
class Refused:
    """A hop's (or the replay's) reason not to take a record: ``shared.dlq.Reason``."""

    stage: str
    error_class: str
    message: str


# A hop's validation as it is now: a letter → the local record ``(key, value)``, or why not.
Validator = Callable[[Letter], "tuple[bytes | None, bytes] | dlq.Reason"]


@dataclass(frozen=True)
class Publish:
    letter: Letter
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    event_id: str | None


@dataclass(frozen=True)
class RefusedAgain:
    letter: Letter
    reason: Refused


@dataclass(frozen=True)
class AlreadyPresent:
    letter: Letter
    event_id: str | None
    by: str  # the letter whose replay holds it


@dataclass(frozen=True)
class Parked:
    letter: Letter


Step = Publish | RefusedAgain | AlreadyPresent | Parked


@dataclass(frozen=True)
class Ledger:
    """What was replayed: letter id → the ``event_id`` of its replayed record ("" if none)."""

    entries: Mapping[str, str] = field(default_factory=dict)

    def by_event_id(self) -> dict[str, str]:
        return {event_id: letter for letter, event_id in self.entries.items() if event_id}


def event_id_of(value: bytes | None) -> str | None:
    """The ``event_id`` of a local record's value (a JSON object), None if it has none."""
    try:
        event = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    found = event.get("event_id") if isinstance(event, dict) else None
    return found if isinstance(found, str) and found else None


def as_is(letter: Letter) -> tuple[bytes | None, bytes] | dlq.Reason:
    """A ``sink.*`` letter's validator: the value is the bridge's normalized event; the sink
    itself validates it again when it reads it."""
    if letter.value is None:
        return Refused(STAGE_REPLAY, "EmptyRecord", "the letter has no value (tombstone)")
    return letter.key, letter.value


def plan_replay(letters: Iterable[Letter], *, ledger: Ledger, validators: Mapping[str, Validator], max_replays: int) -> list[Step]:
    """One :class:`Step` per letter, in the letters' order (see the module docstring)."""
    present = ledger.by_event_id()
    steps: list[Step] = []
    for letter in letters:
        if letter.letter_id in ledger.entries:
            steps.append(AlreadyPresent(letter, ledger.entries[letter.letter_id] or None, letter.letter_id))
            continue
        if letter.replay_count >= max_replays:
            steps.append(Parked(letter))
            continue
        result = _validate(letter, validators)
        if not isinstance(result, tuple):
            steps.append(RefusedAgain(letter, Refused(result.stage, result.error_class, result.message)))
            continue
        key, value = result
        event_id = event_id_of(value)
        if event_id is not None and event_id in present:
            steps.append(AlreadyPresent(letter, event_id, present[event_id]))
            continue
        if event_id is not None:
            present[event_id] = letter.letter_id
        headers = (
            *letter.headers,
            (dlq.HEADER_REPLAY_COUNT, str(letter.replay_count + 1).encode()),
            (dlq.HEADER_REPLAY_OF, letter.letter_id.encode()),
        )
        steps.append(Publish(letter, key, value, headers, event_id))
    return steps


def _validate(letter: Letter, validators: Mapping[str, Validator]) -> tuple[bytes | None, bytes] | dlq.Reason:
    if letter.truncated:
        return Refused(STAGE_REPLAY, "TruncatedLetter", "the hop cut this letter to fit the dead-letter topic: the original is lost")
    if letter.stage == SINK_CONFLICT:
        return Refused(
            STAGE_REPLAY, "NeedsDecision", "an event with this event_id and other content is stored: replaying it conflicts again"
        )
    validator = validators.get(letter.hop)
    if validator is None:
        return Refused(STAGE_REPLAY, "NoValidator", f"no replay for stage {letter.stage!r} here (bridge letters need the bridge's package)")
    return validator(letter)


def ledger_record(step: Publish | AlreadyPresent) -> tuple[bytes, bytes]:
    """The ledger's record of a replayed letter: key the letter id, value its ``event_id``."""
    return step.letter.letter_id.encode(), orjson.dumps({"event_id": step.event_id or ""})


def ledger_of(records: Iterable[tuple[bytes | None, bytes | None]]) -> Ledger:
    """The ledger from its topic's records in offset order (a later record wins; a tombstone forgets)."""
    entries: dict[str, str] = {}
    for key, value in records:
        if key is None:
            continue
        letter = key.decode(errors="replace")
        if value is None:
            entries.pop(letter, None)
            continue
        try:
            event_id = orjson.loads(value).get("event_id", "")
        except (orjson.JSONDecodeError, AttributeError):
            event_id = ""
        entries[letter] = event_id if isinstance(event_id, str) else ""
    return Ledger(entries)


def summary_of(steps: Iterable[Step]) -> dict[str, Any]:
    """Counts per outcome, and the new reasons of the letters refused again (by stage and class,
    with the newest message)."""
    counts = {"replayed": 0, "refused_again": 0, "already_present": 0, "parked": 0}
    reasons: dict[tuple[str, str], dict[str, Any]] = {}
    for step in steps:
        if isinstance(step, Publish):
            counts["replayed"] += 1
        elif isinstance(step, AlreadyPresent):
            counts["already_present"] += 1
        elif isinstance(step, Parked):
            counts["parked"] += 1
        else:
            counts["refused_again"] += 1
            row = reasons.setdefault((step.reason.stage, step.reason.error_class), {"count": 0})
            row.update(stage=step.reason.stage, error_class=step.reason.error_class, count=row["count"] + 1, message=step.reason.message)
    return {**counts, "refused_reasons": [reasons[k] for k in sorted(reasons)]}
