"""Each hop's validation as the code and settings are now, as a replay :data:`Validator`.

A ``bridge.*`` letter holds the source record as it arrived: it goes through
:func:`bridge.records.copy_record` with the bridge's rules from ``BRIDGE_*`` (e.g. a widened
``BRIDGE_EVENT_TIME_MAX_AHEAD_S``) and its source coordinates, so a record that passes gets the
``event_id`` and key the bridge would have given it. The bridge's package is only in the bridge's
image (and the repository's virtualenv): elsewhere bridge letters are refused with ``NoValidator``.
A ``sink.*`` letter is a normalized event: it goes back as it is (:func:`replay.as_is`).
"""

from __future__ import annotations

from datetime import datetime

from shared import dlq
from shared.dlqtool.letters import Letter
from shared.dlqtool.replay import STAGE_REPLAY, Refused, Validator, as_is
from shared.kafka import KafkaConnection


def bridge_validator(bridged_at: datetime) -> Validator | None:
    """The bridge's validation with ``BRIDGE_*`` settings; None without the bridge's package."""
    try:
        from bridge.records import copy_record
        from bridge.settings import BridgeSettings
    except ImportError:
        return None
    # The remote cluster is never contacted: only the rules and the size limit are read.
    settings = BridgeSettings(remote_kafka=KafkaConnection(bootstrap_servers="unused"))
    rules, max_value_bytes = settings.event_rules(), settings.max_request_bytes - dlq.HEADROOM_BYTES

    def validate(letter: Letter) -> tuple[bytes | None, bytes] | dlq.Reason:
        topic, partition, offset = letter.source_topic, letter.source_partition, letter.source_offset
        if topic is None or partition is None or offset is None:
            return Refused(STAGE_REPLAY, "NoSourceCoordinates", "the letter has no dlq.source.* headers: its event_id cannot be derived")
        return copy_record(
            letter.value,
            letter.key,
            topic=topic,
            partition=partition,
            offset=offset,
            bridged_at=bridged_at,
            rules=rules,
            max_value_bytes=max_value_bytes,
            source_epoch=letter.source_epoch,
        )

    return validate


def validators(bridged_at: datetime) -> dict[str, Validator]:
    """The validators available in this process, by hop."""
    found: dict[str, Validator] = {"sink": as_is}
    bridge = bridge_validator(bridged_at)
    if bridge is not None:
        found["bridge"] = bridge
    return found
