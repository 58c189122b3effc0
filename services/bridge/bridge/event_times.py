"""An event's time, judged and written: the bridge's event-time rules (:class:`EventRules`), its
``time_stamp`` / ``timestamp`` / ``local_time`` forms, and how a refusal is worded.

Pure, like :mod:`bridge.transform`, which calls these for every record: no clock of its own
(``bridged_at`` is passed in). A refusal raises :class:`~shared.errors.InvalidEventError` at
stage ``"validate"`` (:func:`invalid`); the message shows the value (:func:`short`).

An integer ``time_stamp`` from 1970 to 9999 takes a cheaper way than a ``datetime``
(:func:`event_time_of_seconds`): ``time.gmtime`` and ``strftime`` write it, and float bounds with a
second of margin judge it, so the exact ``datetime`` check runs only near or past a bound.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from shared.errors import InvalidEventError
from shared.event import EVENT_TIME_FLOOR, EVENT_TIME_MAX_AHEAD_S
from shared.isotime import parse_iso_instant

STAGE_VALIDATE = "validate"

_LOCAL_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[ Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?")
# Zero-padded with the hour, minute and second in range: only the date is left to check.
_PADDED_LOCAL_TIME = re.compile(r"\d{4}-\d\d-\d\d (?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{6})?")
_NUMERIC = re.compile(r"[+-]?\d+(?:\.\d*)?")
DEFAULT_EVENT_TIME_FLOOR = datetime.fromisoformat(EVENT_TIME_FLOOR)


@dataclass(frozen=True)
class EventRules:
    """Which event times are plausible: none before ``event_time_floor`` (an aware datetime), none
    later than ``event_time_max_ahead_s`` seconds after the record's ``bridged_at``."""

    event_time_floor: datetime = DEFAULT_EVENT_TIME_FLOOR
    event_time_max_ahead_s: float = EVENT_TIME_MAX_AHEAD_S
    # Integer unix seconds from here on are past the floor (a second of margin: the float
    # cannot misjudge one); derived, for the per-record check of an integer time_stamp.
    plainly_after_floor: float = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.event_time_floor.tzinfo is None:
            raise ValueError("event_time_floor must be timezone-aware")
        if not self.event_time_max_ahead_s >= 0:
            raise ValueError("event_time_max_ahead_s must be >= 0")
        object.__setattr__(self, "plainly_after_floor", self.event_time_floor.timestamp() + 1)


def invalid(reason: str, error_class: str, stage: str = STAGE_VALIDATE) -> InvalidEventError:
    return InvalidEventError(reason, stage=stage, error_class=error_class)


def format_utc(moment: datetime) -> str:
    """UTC ISO-8601 with milliseconds and ``Z``: ``2020-05-17T16:34:33.000Z``."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" → "Z"


@lru_cache(maxsize=8)
def format_bridged_at(moment: datetime) -> str:
    return format_utc(moment)  # one value per batch: formatted once, not per event


@lru_cache(maxsize=8)
def _latest_plausible(bridged_at: datetime, max_ahead_s: float) -> datetime:
    try:  # one value per batch, like bridged_at's text
        return bridged_at + timedelta(seconds=max_ahead_s)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


# Up to 9999-12-31T23:59:59Z ``%Y`` is four digits, so strftime writes what format_utc would.
MAX_STRFTIME_STAMP = 253_402_300_799


@lru_cache(maxsize=8)
def _plainly_before_latest(bridged_at: datetime, max_ahead_s: float) -> float:
    """Integer unix seconds up to here are not too far ahead of ``bridged_at`` (a second of
    margin, like :attr:`EventRules.plainly_after_floor`); one value per batch."""
    return _latest_plausible(bridged_at, max_ahead_s).timestamp() - 1


def check_event_time(moment: datetime, bridged_at: datetime, rules: EventRules) -> None:
    """:class:`InvalidEventError` ``ImplausibleEventTime`` for a time before the floor or later
    than ``bridged_at`` plus the tolerance; the message names the time and the bound it broke."""
    if moment < rules.event_time_floor:
        raise invalid(f"event time {format_utc(moment)} is before the floor {format_utc(rules.event_time_floor)}", "ImplausibleEventTime")
    latest = _latest_plausible(bridged_at, rules.event_time_max_ahead_s)
    if moment > latest:
        raise invalid(
            f"event time {format_utc(moment)} is after {format_utc(latest)}"
            f" ({rules.event_time_max_ahead_s:g}s after bridged_at {format_utc(bridged_at)})",
            "ImplausibleEventTime",
        )


def moment_from_unix(raw: Any) -> datetime:
    """``time_stamp`` → an aware UTC datetime: unix seconds (int, float or numeric string), or a
    string in any ISO-8601 / RFC 3339 form (naive means UTC)."""
    if type(raw) is str:
        text = raw.strip()
        if not _NUMERIC.fullmatch(text):
            try:
                return _utc(parse_iso_instant(text))
            except ValueError:
                raise invalid(f"time_stamp is str {short(raw)}, not unix seconds nor ISO-8601", "WrongType") from None
        try:
            raw = float(text) if "." in text else int(text)
        except ValueError:  # more than 4 300 digits
            raise invalid(f"time_stamp {short(raw)} is out of range", "WrongType") from None
    elif type(raw) is not int and type(raw) is not float:
        raise invalid(f"time_stamp is {type(raw).__name__} {short(raw)}, not unix seconds", "WrongType")
    try:
        # A float is rounded to the microsecond (half-even) first, then cut to the millisecond.
        return datetime.fromtimestamp(raw, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise invalid(f"time_stamp {short(raw)} is out of range: {exc}", "WrongType") from None


def moment_from_iso(raw: Any) -> datetime:
    """The seed's ``timestamp`` (any ISO-8601 / RFC 3339 form; naive means UTC) → an aware UTC datetime."""
    if not isinstance(raw, str):
        raise invalid(f"timestamp is {type(raw).__name__} {short(raw)}, not ISO-8601", "WrongType")
    try:
        moment = parse_iso_instant(raw)
    except ValueError:
        raise invalid(f"timestamp {short(raw)} is not ISO-8601", "WrongType") from None
    try:
        return _utc(moment)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise invalid(f"timestamp {short(raw)} is out of range", "WrongType") from None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@lru_cache(maxsize=4096)
def _is_date(text: str) -> bool:
    """``YYYY-MM-DD`` (digits already checked) is a calendar date; a stream holds few dates."""
    try:
        date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


def normalize_local_time(raw: Any) -> str | None:
    """``2020-06-04 9:05:11`` or ``2020-06-04T09:05:11.5`` → ``YYYY-MM-DD HH:MM:SS[.ffffff]``;
    None when ``raw`` is not a local time in one of those forms (the caller keeps it as it came)."""
    if type(raw) is not str:
        return None
    if _PADDED_LOCAL_TIME.fullmatch(raw):  # the common case, already normalized
        return raw if _is_date(raw[:10]) else None
    match = _LOCAL_TIME.fullmatch(raw.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7)
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    text = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{fraction.ljust(6, '0')}" if fraction else text


def short(raw: Any, limit: int = 60) -> str:
    text = repr(raw)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_time_of_seconds(seconds: int, bridged_at: datetime, rules: EventRules | None) -> str:
    """The ``event_time`` of an integer ``time_stamp`` from 0 to :data:`MAX_STRFTIME_STAMP`,
    refused by ``rules`` as :func:`check_event_time` would (outside the plain bounds it decides)."""
    if rules is not None and not rules.plainly_after_floor <= seconds <= _plainly_before_latest(bridged_at, rules.event_time_max_ahead_s):
        check_event_time(datetime.fromtimestamp(seconds, UTC), bridged_at, rules)
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))
