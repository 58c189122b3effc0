"""What the bridge's readiness concludes from its periodic remote check (pure: no Kafka, no clock).

When nothing was fetched since the previous check, the check first opens a TCP connection to
the remote bootstrap servers (:func:`shared.kafka.refused_connections`). When none accepts, the
cluster is gone: not ready at once, whatever the bridge has queued. A Kafka
request to a stopped cluster does not fail, it retries until its timeout, so without this probe
an outage looked like a busy cluster for as long as the queues took to drain (23 s in the
40-minute soak), and 13 s even with the probe when the offsets request was sent anyway. Records
still arriving (even with a bootstrap load balancer down and the brokers fine) mean the cluster
answers: no probe then. An idle bridge probes at every check: one TCP connection, closed
before any byte (a TLS listener may log it as a failed handshake).

Else the check reads the remote end and start offsets with a bound (10 s each). A connection or
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


def remote_gone(refused: str | None, before: Mapping[TopicPartition, int | None], now: Mapping[TopicPartition, int | None]) -> bool:
    """Whether the TCP probe's refusal (``refused``: why no bootstrap server accepted, or None)
    means "not ready": only when nothing was fetched from the remote since the previous check."""
    return refused is not None and not fetched_since(before, now)


def remote_unanswered(
    error: BaseException, before: Mapping[TopicPartition, int | None], now: Mapping[TopicPartition, int | None], *, throttled: bool = False
) -> bool:
    """Whether a failed remote check means "not ready": any error but a timeout; a timeout only
    when nothing was fetched from the remote since the previous check and no partition is paused
    for back-pressure (``throttled``)."""
    return not isinstance(error, TimeoutError) or not (throttled or fetched_since(before, now))
