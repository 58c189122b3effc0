"""The remote offsets the bridge has copied, stored on the local cluster: see :mod:`shared.offsets`
(shared: the ETL API reads the bridge's counts from it for ``GET /reconciliation/kafka``)."""

from shared.offsets import (
    StoredOffset,
    offset_key,
    offset_value,
    parse_offset_record,
    parse_offset_state,
    parse_offset_value,
    read_stored_offsets,
    read_stored_states,
)

__all__ = [
    "StoredOffset",
    "offset_key",
    "offset_value",
    "parse_offset_record",
    "parse_offset_state",
    "parse_offset_value",
    "read_stored_offsets",
    "read_stored_states",
]
