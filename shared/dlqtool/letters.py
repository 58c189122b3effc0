"""A dead letter as the operator sees it, the filters that select letters, and their stats. Pure.

:func:`letter_of` decodes one record of the dead-letter topic (``shared.dlq``'s contract) into a
:class:`Letter`; it never raises: a record without ``dlq.*`` headers is a letter of stage
``unknown``. :class:`Selection` is the one filter every command (stats, show, replay, export)
applies. Times are the letters' Kafka timestamps (when the hop dead-lettered them), in ms.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from shared import dlq
from shared.errors import PipelineError

UNKNOWN = "unknown"
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


class SelectionError(PipelineError):
    """A filter the operator gave cannot be understood (a time, a source coordinate)."""


@dataclass(frozen=True)
class Letter:
    """One record of the dead-letter topic, decoded."""

    topic: str  # where the letter is: the dead-letter topic
    partition: int
    offset: int
    timestamp_ms: int  # when it was dead-lettered
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]  # the original record's headers (no ``dlq.*``)
    dlq_headers: dict[str, str] = field(hash=False)

    @property
    def stage(self) -> str:
        return self.dlq_headers.get(dlq.HEADER_STAGE) or UNKNOWN

    @property
    def hop(self) -> str:
        return self.stage.split(".", 1)[0] if "." in self.stage else UNKNOWN

    @property
    def error_class(self) -> str:
        return self.dlq_headers.get(dlq.HEADER_ERROR_CLASS) or UNKNOWN

    @property
    def message(self) -> str:
        return self.dlq_headers.get(dlq.HEADER_ERROR_MESSAGE, "")

    @property
    def source_topic(self) -> str | None:
        return self.dlq_headers.get(dlq.HEADER_SOURCE_TOPIC)

    @property
    def source_partition(self) -> int | None:
        return _int(self.dlq_headers.get(dlq.HEADER_SOURCE_PARTITION))

    @property
    def source_offset(self) -> int | None:
        return _int(self.dlq_headers.get(dlq.HEADER_SOURCE_OFFSET))

    @property
    def source_epoch(self) -> int:
        return _int(self.dlq_headers.get(dlq.HEADER_SOURCE_EPOCH)) or 0

    @property
    def replay_count(self) -> int:
        """How many replays this record went through before it was dead-lettered (again)."""
        return max(0, _int(self.dlq_headers.get(dlq.HEADER_REPLAY_COUNT)) or 0)

    @property
    def truncated(self) -> bool:
        """Whether the hop had to cut the record to fit it in the dead-letter topic."""
        return any(h in self.dlq_headers for h in (dlq.HEADER_VALUE_TRUNCATED_FROM, dlq.HEADER_HEADERS_DROPPED, dlq.HEADER_KEY_DROPPED))

    @property
    def letter_id(self) -> str:
        """Where the letter is, ``topic/partition/offset``: the replay ledger's key."""
        return f"{self.topic}/{self.partition}/{self.offset}"


def letter_of(
    topic: str, partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> Letter:
    """The :class:`Letter` of one record of the dead-letter topic. Never raises."""
    headers = [(k, v if v is not None else b"") for k, v in headers or ()]
    original = tuple((k, v) for k, v in headers if not k.startswith("dlq."))
    return Letter(topic, partition, offset, timestamp_ms, key, value, original, dlq.read_dead_letter_headers(headers))


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def parse_time(text: str, now: datetime) -> int:
    """An operator's time as epoch ms: ISO-8601/RFC 3339 (no zone: UTC) or a duration before
    ``now`` (``90s``, ``15m``, ``24h``, ``7d``). Raises :class:`SelectionError`."""
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return int((now - timedelta(seconds=float(relative.group(1)) * _UNITS[relative.group(2)])).timestamp() * 1000)
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        raise SelectionError(f"{text!r} is neither an ISO-8601 time nor a duration such as 24h") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class SourceRange:
    """Source coordinates: a topic, optionally one partition, optionally an offset range (inclusive)."""

    topic: str
    partition: int | None = None
    first: int | None = None
    last: int | None = None

    @classmethod
    def parse(cls, text: str) -> SourceRange:
        """``TOPIC[:PARTITION[:OFFSET|FIRST-LAST|FIRST-]]``. Raises :class:`SelectionError`."""
        parts = text.split(":")
        try:
            if len(parts) > 3 or not parts[0]:
                raise ValueError
            partition = int(parts[1]) if len(parts) > 1 else None
            first = last = None
            if len(parts) == 3:
                low, dash, high = parts[2].partition("-")
                first = int(low)
                last = (int(high) if high else None) if dash else first
        except ValueError:
            raise SelectionError(f"source {text!r}: expected TOPIC[:PARTITION[:OFFSET|FIRST-LAST|FIRST-]]") from None
        return cls(parts[0], partition, first, last)

    def holds(self, letter: Letter) -> bool:
        if letter.source_topic != self.topic:
            return False
        if self.partition is not None and letter.source_partition != self.partition:
            return False
        offset = letter.source_offset
        if self.first is not None and (offset is None or offset < self.first):
            return False
        return not (self.last is not None and (offset is None or offset > self.last))


@dataclass(frozen=True)
class Selection:
    """Which letters a command works on; an empty field does not filter. Stages and classes are
    exact names; ``hops`` the stage's first part (``bridge``, ``sink``)."""

    hops: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()
    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive
    sources: tuple[SourceRange, ...] = ()

    def matches(self, letter: Letter) -> bool:
        return (
            (not self.hops or letter.hop in self.hops)
            and (not self.stages or letter.stage in self.stages)
            and (not self.classes or letter.error_class in self.classes)
            and (self.since_ms is None or letter.timestamp_ms >= self.since_ms)
            and (self.until_ms is None or letter.timestamp_ms < self.until_ms)
            and (not self.sources or any(s.holds(letter) for s in self.sources))
        )

    def select(self, letters: Iterable[Letter]) -> list[Letter]:
        return [letter for letter in letters if self.matches(letter)]


@dataclass(frozen=True)
class ClassStats:
    """The letters of one hop, stage and error class."""

    hop: str
    stage: str
    error_class: str
    count: int
    oldest_ms: int
    newest_ms: int
    newest_message: str

    def as_json(self) -> dict[str, Any]:
        return {
            "hop": self.hop,
            "stage": self.stage,
            "error_class": self.error_class,
            "count": self.count,
            "oldest": iso_ms(self.oldest_ms),
            "newest": iso_ms(self.newest_ms),
            "newest_message": self.newest_message,
        }


def stats_of(letters: Iterable[Letter]) -> list[ClassStats]:
    """Counts by (hop, stage, class) with the oldest and newest time, sorted by hop, stage, class."""
    rows: dict[tuple[str, str, str], ClassStats] = {}
    for letter in letters:
        key = (letter.hop, letter.stage, letter.error_class)
        row = rows.get(key)
        if row is None:
            rows[key] = ClassStats(*key, 1, letter.timestamp_ms, letter.timestamp_ms, letter.message)
            continue
        newest = letter.timestamp_ms >= row.newest_ms
        rows[key] = ClassStats(
            *key,
            row.count + 1,
            min(row.oldest_ms, letter.timestamp_ms),
            max(row.newest_ms, letter.timestamp_ms),
            letter.message if newest else row.newest_message,
        )
    return [rows[k] for k in sorted(rows)]


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decoded(data: bytes | None) -> dict[str, Any]:
    """Bytes as a reader wants them: ``{"json": …}`` when they are one JSON document, else
    ``{"text": …}`` when UTF-8, else ``{"base64": …}``; None stays ``{"null": true}``."""
    if data is None:
        return {"null": True}
    try:
        return {"json": orjson.loads(data)}
    except orjson.JSONDecodeError:
        pass
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def letter_json(letter: Letter) -> dict[str, Any]:
    """The letter as one JSON object (``show --json``, ``export``): where it is, why it is there,
    its key, value and original headers decoded, its ``dlq.*`` headers as they are."""
    return {
        "letter": letter.letter_id,
        "dead_lettered_at": iso_ms(letter.timestamp_ms),
        "stage": letter.stage,
        "error_class": letter.error_class,
        "message": letter.message,
        "source": {"topic": letter.source_topic, "partition": letter.source_partition, "offset": letter.source_offset},
        "replay_count": letter.replay_count,
        "key": decoded(letter.key),
        "value": decoded(letter.value),
        "headers": [[k, decoded(v)] for k, v in letter.headers],
        "dlq_headers": letter.dlq_headers,
    }
