"""What the bridge's readiness concludes from its periodic remote check (pure: no Kafka, no clock).

The check reads the remote end and start offsets with a bound (10 s each). A connection or
protocol error there says the remote cluster does not answer: not ready. A bound that ran out
says less: under load (a large backlog being fetched, a starved CPU) the offsets request waits
behind the fetches on the same connections. If records kept arriving from the remote since the
previous check, the remote cluster answers — it is busy, not gone — and the bridge stays ready.
So it does while a partition is paused for back-pressure (its queue full): the bridge stopped
asking the remote itself, and its silence proves nothing until the queue drains. Else not ready.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import TopicPartition


def fetched_since(before: Mapping[TopicPartition, int | None], now: Mapping[TopicPartition, int | None]) -> bool:
    """Whether any partition's next expected offset moved forward between two checks."""
    return any(offset is not None and (before.get(tp) is None or offset > before[tp]) for tp, offset in now.items())  # type: ignore[operator]


def remote_unanswered(
    error: BaseException, before: Mapping[TopicPartition, int | None], now: Mapping[TopicPartition, int | None], *, throttled: bool = False
) -> bool:
    """Whether a failed remote check means "not ready": any error but a timeout; a timeout only
    when nothing was fetched from the remote since the previous check and no partition is paused
    for back-pressure (``throttled``)."""
    return not isinstance(error, TimeoutError) or not (throttled or fetched_since(before, now))
