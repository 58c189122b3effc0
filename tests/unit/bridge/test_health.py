"""bridge.health: when a failed remote check makes the bridge not ready."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError
from bridge.health import fetched_since, remote_gone, remote_unanswered
from hypothesis import given
from hypothesis import strategies as st

TPS = [TopicPartition("t", p) for p in range(3)]
Offsets = dict[TopicPartition, int | None]
offsets = st.dictionaries(st.sampled_from(TPS), st.none() | st.integers(0, 50))


@given(offsets, offsets)
def test_a_timeout_is_not_ready_only_when_no_partition_moved(
    before: dict[TopicPartition, int | None], now: dict[TopicPartition, int | None]
) -> None:
    moved = [tp for tp, o in now.items() if o is not None and (before.get(tp) is None or o > before[tp])]  # type: ignore[operator]
    assert fetched_since(before, now) == bool(moved)
    assert remote_unanswered(TimeoutError(), before, now) == (not moved)
    assert not remote_unanswered(TimeoutError(), before, now, throttled=True)  # paused by its own back-pressure
    # an error that is not a timeout says the remote does not answer, whatever was fetched
    assert remote_unanswered(KafkaConnectionError("refused"), before, now, throttled=True)
    assert remote_unanswered(NodeNotReadyError("down"), before, now)


def test_examples() -> None:
    tp = TPS[0]
    assert not remote_unanswered(TimeoutError(), {tp: 10}, {tp: 11})  # busy: records arrived
    assert remote_unanswered(TimeoutError(), {tp: 10}, {tp: 10})  # nothing arrived: not ready
    assert not remote_unanswered(TimeoutError(), {}, {tp: 0})  # a partition that started copying
    assert remote_unanswered(TimeoutError(), {tp: 5}, {tp: None})  # taken over, nothing fetched


@given(offsets, offsets, st.none() | st.just("no bootstrap server accepts a connection: 127.0.0.1:1 ConnectionRefusedError"))
def test_refused_connections_are_not_ready_unless_records_arrive(
    before: dict[TopicPartition, int | None], now: dict[TopicPartition, int | None], refused: str | None
) -> None:
    """Queued or paused, a refused probe with nothing fetched is gone; records still arriving
    (a bootstrap address down, the brokers fine) are a cluster that answers."""
    moved = [tp for tp, o in now.items() if o is not None and (before.get(tp) is None or o > before[tp])]  # type: ignore[operator]
    assert remote_gone(refused, before, now) == (refused is not None and not moved)
