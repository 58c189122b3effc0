"""One remote record → the local record's bytes, or the reason it is refused. Never raises.

This is the bridge's isolation boundary per record (issue 14): whatever the bytes hold, the
result is either the local ``(key, value)`` or a :class:`Refusal` for the dead-letter topic, so
no single record can end a session (only cluster errors do). Pure: no clients, no clock, no
environment; the caller passes ``bridged_at``, the :class:`~bridge.event_times.EventRules` and the
size limit.

Steps and their DLQ stages:

- ``bridge.decode`` / ``bridge.validate``: :func:`bridge.transform.normalize` refused the record
  (its :class:`~shared.errors.InvalidEventError` keeps its stage and error class);
- ``bridge.normalize``: ``normalize`` raised anything else (a bug: the record is dead-lettered
  with the exception's type name instead of ending the session);
A copied record whose known fields the bridge could not normalize (``shared.event.KEPT_AS_CAME_FIELDS``:
they are kept as they came, issue 29) counts each such field in
``bridge_events_with_field_kept_as_came_total{field}`` (:data:`bridge.metrics.KEPT_AS_CAME`), once per copy
(a record copied again after an aborted transaction counts again), the one side effect here.

- ``bridge.encode``: the key or the JSON could not be built (exception type name), or the local
  record's key and value together are larger than ``max_value_bytes`` (``OversizedEvent``;
  normalizing can grow an event, e.g. ``1E5`` → ``100000.0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson

from bridge.event_times import EventRules
from bridge.metrics import KEPT_AS_CAME
from bridge.transform import normalize, output_key
from shared.dlq import DEFAULT_MAX_REQUEST_BYTES, HEADROOM_BYTES, header_text
from shared.errors import InvalidEventError

STAGE_PREFIX = "bridge."
STAGE_NORMALIZE = STAGE_PREFIX + "normalize"
STAGE_ENCODE = STAGE_PREFIX + "encode"
# The default of ``max_value_bytes``: what the local brokers take (BRIDGE_MAX_REQUEST_BYTES's
# default) minus the part of a local record kept free for the key, the dead-letter headers and the
# record batch's overhead (``shared.dlq.HEADROOM_BYTES``); :class:`bridge.copier.Copier` derives
# it from its settings.
DEFAULT_MAX_VALUE_BYTES = DEFAULT_MAX_REQUEST_BYTES - HEADROOM_BYTES
_DEFAULT_RULES = EventRules()


@dataclass(frozen=True)
class Refusal:
    """Why a record is not copied; the three fields become the ``dlq.*`` headers."""

    stage: str  # the full DLQ stage: "bridge.decode" | "bridge.validate" | "bridge.encode" | "bridge.normalize"
    error_class: str  # the broken rule ("NotJSON", "TooDeep", "OversizedEvent", …) or an exception's type name
    message: str


def copy_record(
    value: bytes | None,
    key: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    bridged_at: datetime,
    rules: EventRules = _DEFAULT_RULES,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    source_epoch: int = 0,
) -> tuple[bytes, bytes] | Refusal:
    """The local record ``(key, value)`` of one remote record, or the :class:`Refusal` saying why
    there is none. Never raises an ``Exception``. ``source_epoch``: the remote partition's reset
    epoch (see :func:`shared.event.event_id_from_coordinates`)."""
    stage = STAGE_NORMALIZE
    kept_as_came: list[str] = []
    try:
        event = normalize(
            value,
            key,
            topic=topic,
            partition=partition,
            offset=offset,
            bridged_at=bridged_at,
            rules=rules,
            source_epoch=source_epoch,
            kept_as_came=kept_as_came,
        )
        stage = STAGE_ENCODE
        local_key = output_key(event)
        local_value = orjson.dumps(event)
    except InvalidEventError as exc:
        return Refusal(STAGE_PREFIX + exc.stage, exc.error_class, header_text(exc.reason) or exc.error_class)
    except Exception as exc:  # the isolation boundary: a surprise dead-letters this record only
        return Refusal(stage, type(exc).__name__, _describe(exc))
    size = len(local_key) + len(local_value)
    if size > max_value_bytes:
        return Refusal(
            STAGE_ENCODE,
            "OversizedEvent",
            f"the normalized event is {size} bytes (key {len(local_key)}, value {len(local_value)}),"
            f" more than the {max_value_bytes} a local record may hold",
        )
    for field in kept_as_came:
        KEPT_AS_CAME.labels(field).inc()
    return local_key, local_value


def _describe(exc: BaseException) -> str:
    try:
        text = header_text(str(exc))
    except Exception:  # a broken __str__ must not escape either
        text = ""
    return text or type(exc).__name__
