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
``ingest_hour`` (``YYYY-MM-DDTHH``), ``ingest_second`` (``YYYY-MM-DDTHH:MM:SS``, the first 19
characters of ``ingested_at``), ``event_date`` (``YYYY-MM-DD`` of ``event_time``) and ``part``
(:func:`part_of`), so the ETL reads with equality filters only (FerretDB pushes down nothing
else): new events by ``{ingest_hour, part}`` (or second by second, ``ingest_second``), a date's
events by ``{event_date, part}``.
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


def event_id_from_coordinates(topic: str, partition: int, offset: int, source_epoch: int = 0) -> str:
    """A stable id for a source record that has no ``_id``: same coordinates, same id.

    ``source_epoch`` counts the resets of the source partition the bridge resumed after (the
    topic deleted and recreated, or retention past its position: offsets start over, so the
    coordinates alone would repeat old ids). Epoch 0 is the id as it always was; a later epoch
    hashes ``topic/partition/offset/epoch``, which no epoch-0 text can equal (a topic name has no
    ``/``)."""
    text = f"{topic}/{partition}/{offset}" if not source_epoch else f"{topic}/{partition}/{offset}/{source_epoch}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def part_of(event_id: str, parts: int = PARTS) -> int:
    """The read partition of an event: stable across processes and Python versions."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") % parts


# ---- validation rules the bridge applies (the generator's bad kinds are built to break them) ----

# Ids normalized to strings: str kept (stripped), int and integral float → str(int). Anything
# else (dict, list, bool, non-integral float) is not an id: the product id of a product event is
# then a wrong type (dead letter); in every other id field it is kept as it came and counted
# (see KEPT_AS_CAME_FIELDS).
STRING_ID_FIELDS = ("product_id", "store_id", "device_id", "user_id_db", "order_id", "viewing_product_id", "recommendation_product_id")

# ---- liberal where the analytics does not read (issue 29) ----

# Only what a view cannot be counted without may refuse an event: the event time (``time_stamp``,
# or the seed's ``timestamp``), the event type (``collection``), the product id of a product event,
# and the event's own id (``_id``; ids must still be ids). Every other known field in a form the
# bridge cannot normalize is kept as it came, never refused, and counted by the bridge
# (``bridge_events_with_field_kept_as_came_total{field}``); the ETL counts such a view against the
# dimension's unknown member. Fields, and the JSON types in which they are usable (null or absent
# is always fine): ids (STRING_ID_FIELDS but product_id of a product event) as ids,
# ``local_time`` as a local time the bridge can zero-pad, the rest as below.
DESCRIPTIVE_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "user_agent": (str,),
    "referrer_url": (str,),
    "current_url": (str,),
    "resolution": (str,),
    "option": (list, dict),
}
KEPT_AS_CAME_FIELDS = (*STRING_ID_FIELDS, "local_time", *DESCRIPTIVE_FIELD_TYPES)

# A record must be a JSON object of at most MAX_EVENT_BYTES UTF-8 bytes, with an event time:
# ``time_stamp`` (unix seconds: int, float or numeric string) for the Glamira shape, or
# ``timestamp`` (ISO-8601) for the seed's shape. Product events (PRODUCT_EVENT_TYPES, and every
# seed-shape event) must carry a non-empty ``product_id``.
MAX_EVENT_BYTES = 1_000_000

# Kinds of malformed records the generator makes; each must end in the DLQ with its reason.
BAD_KINDS = ("not_json", "not_utf8", "json_array", "missing_product_id", "wrong_types", "oversized", "empty")


# ---- names the pipeline owns (issue 14: a source field never overwrites or is overwritten) ----

# Fields the bridge adds to every event (``collection`` is not here: a Glamira event's own
# ``collection`` *is* the event type, kept stripped; a seed-shape event has none by definition).
BRIDGE_FIELDS = ("event_id", "event_time", "source_shape", "source_topic", "source_partition", "source_offset", "bridged_at")
# Fields the sink adds to the MongoDB document (``_id`` aside).
SINK_FIELDS = ("ingested_at", "ingest_hour", "ingest_second", "event_date", "part")
RESERVED_FIELDS = frozenset((*BRIDGE_FIELDS, *SINK_FIELDS))
# A source field whose name is reserved, or already starts with the prefix, is kept under the
# prefix: ``event_id`` → ``orig_event_id``, ``orig_x`` → ``orig_orig_x``. The rule is injective
# (no two source fields can end up with one name) and reversible: :func:`original_field_name`.
SOURCE_FIELD_PREFIX = "orig_"


def kept_field_name(name: str) -> str:
    """The name a top-level source field is stored under (see ``SOURCE_FIELD_PREFIX``)."""
    return SOURCE_FIELD_PREFIX + name if name in RESERVED_FIELDS or name.startswith(SOURCE_FIELD_PREFIX) else name


def original_field_name(name: str) -> str:
    """The inverse of :func:`kept_field_name` for a field of a stored event that the pipeline did not add."""
    return name[len(SOURCE_FIELD_PREFIX) :] if name.startswith(SOURCE_FIELD_PREFIX) else name


# Fields that say *when and where from* a copy was made, not what the event is: two documents
# with one ``event_id`` that differ only here are the same event (a duplicate), otherwise they
# conflict (the newcomer is dead-lettered with stage ``sink.conflict``).
DELIVERY_FIELDS = frozenset(
    {"source_topic", "source_partition", "source_offset", "bridged_at", "ingested_at", "ingest_hour", "ingest_second"}
)

# ---- structure limits (checked by the bridge; the sink checks again for other producers) ----

# Objects and arrays nested deeper than this are refused (the event object itself is level 1).
# MongoDB stores at most 100 levels; orjson reads 1 024 but encodes only 254 (the bridge crashed at 255); real events use 3.
MAX_EVENT_DEPTH = 64
# BSON's integer is signed 64-bit: an integer outside this range fits no BSON type. In the id
# fields (STRING_ID_FIELDS) it is kept exactly, as a string; anywhere else it is refused.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# ---- plausible event times (defaults of the bridge's and the ETL's settings) ----

# An event time before the floor, or later than its bridging (resp. ingestion) time by more than
# the tolerance, is refused by the bridge (``ImplausibleEventTime``) and skipped by the ETL
# (``skip_reason = 'implausible_event_time'``): never counted, never a dimension's newest evidence.
EVENT_TIME_FLOOR = "2000-01-01T00:00:00Z"
EVENT_TIME_MAX_AHEAD_S = 86_400.0
