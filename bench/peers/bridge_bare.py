"""The bridge without its per-record work, for ``bench/bridge_vs_mirrormaker.py --copiers bridge-bare``:
an upper bound of what any cut of ``bridge.records.copy_record`` can give.

    python -m bench.peers.bridge_bare      # the bridge's own settings from the environment

Everything else is the bridge's: its consumer, fencing, pipelined transactions, offsets topic,
batching and settings. Only ``copy_record`` (decode, validate, normalize, encode) is replaced by
one that passes the source value on with ``source_partition`` and ``source_offset`` appended
(what the benchmark's measuring consumer matches records by), refusing nothing. Never a way to
run the pipeline: its local events are not normalized events.
"""

from __future__ import annotations

from typing import Any

import bridge.copier
from bridge.__main__ import main


def passthrough(value: bytes | None, key: bytes | None, *, partition: int, offset: int, **_: Any) -> tuple[bytes, bytes]:
    body = (value or b"{}").rstrip()[:-1].rstrip()
    separator = b"" if body.endswith(b"{") else b","
    return key or b"-", body + separator + b'"source_partition":%d,"source_offset":%d}' % (partition, offset)


if __name__ == "__main__":
    bridge.copier.copy_record = passthrough  # type: ignore[assignment]
    main()
