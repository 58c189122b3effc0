"""The event contract between the hops (see README "Event contract").

Bridge output (a JSON object on the local topic), every field of the source kept, plus:
- ``event_id``: the source ``_id`` (24-hex ObjectId string) when present, else
  :func:`event_id_from_coordinates`; the source ``_id`` key itself is removed (MongoDB's
  ``_id`` becomes ``event_id`` in the sink).
- ``collection``: the event type; the seed's simplified shape has none and gets
  ``SEED_COLLECTION``; ``source_shape``: ``"glamira"`` or ``"seed"``.
- ``event_time``: UTC ISO-8601 with milliseconds and ``Z`` (from ``time_stamp`` unix seconds or
  the seed's ``timestamp``); ``local_time`` zero-padded ``YYYY-MM-DD HH:MM:SS[.ffffff]``.
- ids as strings: ``product_id``, ``store_id``, ``device_id``, ``user_id_db``, ``order_id``.
- ``source_topic``, ``source_partition``, ``source_offset``, ``bridged_at`` (UTC ISO-8601).

Sink additions (MongoDB document): ``_id = event_id``, ``ingested_at`` (UTC ISO-8601 string),
``ingest_hour`` (``YYYY-MM-DDTHH``), ``event_date`` (``YYYY-MM-DD`` of ``event_time``) and
``part`` (:func:`part_of`), so the ETL reads with equality filters only (FerretDB pushes down
nothing else): new events by ``{ingest_hour, part}``, a date's events by ``{event_date, part}``.
"""

from __future__ import annotations

import hashlib

SEED_COLLECTION = "view_product_detail"

# Event types that are about one product and must carry a product_id.
PRODUCT_EVENT_TYPES = frozenset(
    {
        "view_product_detail",
        "select_product_option",
        "select_product_option_quality",
        "add_to_cart_action",
    }
)

# Default of the ETL setting "which collections count as a product view".
DEFAULT_PRODUCT_VIEW_TYPES = ("view_product_detail",)

PARTS = 16  # parallel read partitions of the raw store; fixed: changing it re-buckets old data


def event_id_from_coordinates(topic: str, partition: int, offset: int) -> str:
    """A stable id for a source record that has no ``_id``: same coordinates, same id."""
    return hashlib.sha256(f"{topic}/{partition}/{offset}".encode()).hexdigest()[:32]


def part_of(event_id: str, parts: int = PARTS) -> int:
    """The read partition of an event: stable across processes and Python versions."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") % parts


# ---- validation rules the bridge applies (the generator's bad kinds are built to break them) ----

# Ids normalized to strings: str kept (stripped), int and integral float → str(int); anything
# else (dict, list, bool, non-integral float) is a wrong type → dead letter.
STRING_ID_FIELDS = ("product_id", "store_id", "device_id", "user_id_db", "order_id", "viewing_product_id", "recommendation_product_id")

# A record must be a JSON object of at most MAX_EVENT_BYTES UTF-8 bytes, with an event time:
# ``time_stamp`` (unix seconds: int, float or numeric string) for the Glamira shape, or
# ``timestamp`` (ISO-8601) for the seed's shape. Product events (PRODUCT_EVENT_TYPES, and every
# seed-shape event) must carry a non-empty ``product_id``.
MAX_EVENT_BYTES = 1_000_000

# Kinds of malformed records the generator makes; each must end in the DLQ with its reason.
BAD_KINDS = ("not_json", "not_utf8", "json_array", "missing_product_id", "wrong_types", "oversized", "empty")
