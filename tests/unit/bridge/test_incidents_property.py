"""Properties of the one incident decision (``find_incident``) and of the take-over's position
plan (``plan_positions``): pure, so checked against a plain restatement of the rules over
generated positions, log bounds and stored values."""

from __future__ import annotations

from aiokafka import TopicPartition
from bridge.incidents import ABOVE_END, BELOW_START, OUT_OF_RANGE, SourceIncident, StartPosition, find_incident, plan_positions
from hypothesis import given
from hypothesis import strategies as st

from shared.offsets import StoredOffset

AT = "2026-12-06T14:00:00.000Z"
offsets = st.integers(min_value=0, max_value=2**40)
kinds = st.sampled_from([ABOVE_END, BELOW_START, OUT_OF_RANGE, "recorded", ""])
recorded_incidents = st.none() | st.fixed_dictionaries(
    {}, optional={"kind": kinds, "at": st.sampled_from(["2026-01-01T00:00:00.000Z", ""])}
)


def outside(position: int, log_start: int, log_end: int) -> str | None:
    return ABOVE_END if position > log_end else BELOW_START if position < log_start else None


@st.composite
def logs(draw: st.DrawFn) -> tuple[int, int]:
    start = draw(offsets)
    return start, start + draw(st.integers(min_value=0, max_value=10_000))


@given(stored=offsets, log=logs(), epoch=st.integers(0, 5), recorded=recorded_incidents)
def test_a_committed_position_is_in_incident_exactly_when_recorded_or_outside_the_log(
    stored: int, log: tuple[int, int], epoch: int, recorded: dict[str, str] | None
) -> None:
    start, end = log
    got = find_incident("t", 3, stored=stored, log_start=start, log_end=end, at=AT, source_epoch=epoch, recorded=recorded)
    if recorded is None:
        kind = outside(stored, start, end)
        assert got == (None if kind is None else SourceIncident("t", 3, kind, stored, start, end, AT, None, epoch))
        return
    # A recorded incident stays, whatever the log looks like now; its own kind and time win.
    kind = recorded.get("kind") or outside(stored, start, end) or "recorded"
    assert got == SourceIncident("t", 3, kind, stored, start, end, recorded.get("at") or AT, None, epoch)


@given(stored=offsets, fetched=offsets, log=logs(), unexplained=st.sampled_from([None, OUT_OF_RANGE, ABOVE_END]))
def test_a_copying_partition_is_judged_by_its_fetch_position(
    stored: int, fetched: int, log: tuple[int, int], unexplained: str | None
) -> None:
    start, end = log
    got = find_incident("t", 0, stored=stored, log_start=start, log_end=end, at=AT, fetch_offset=fetched, unexplained=unexplained)
    kind = outside(fetched, start, end) or unexplained
    assert got == (None if kind is None else SourceIncident("t", 0, kind, stored, start, end, AT, fetched, 0))


@given(
    parts=st.dictionaries(
        st.integers(0, 11),
        st.tuples(st.none() | st.tuples(offsets, st.integers(0, 3), recorded_incidents), offsets, logs()),
        max_size=8,
    )
)
def test_the_plan_starts_stored_partitions_at_their_position_and_new_ones_at_the_first_offset(
    parts: dict[int, tuple[tuple[int, int, dict[str, str] | None] | None, int, tuple[int, int]]],
) -> None:
    tps = [TopicPartition("t", p) for p in parts]
    states = {("t", p): StoredOffset(s[0], s[1], None, s[2]) for p, (s, _, _) in parts.items() if s is not None}
    first = {TopicPartition("t", p): f for p, (s, f, _) in parts.items() if s is None}
    bounds = {TopicPartition("t", p): log for p, (s, _, log) in parts.items() if s is not None}
    plan = plan_positions(tps, states, first, {tp: b[0] for tp, b in bounds.items()}, {tp: b[1] for tp, b in bounds.items()}, AT)
    assert list(plan) == tps
    for tp in tps:
        state = states.get((tp.topic, tp.partition))
        if state is None:
            assert plan[tp] == StartPosition(first[tp])
            continue
        start, end = bounds[tp]
        expected = find_incident(
            "t",
            tp.partition,
            stored=state.next_offset,
            log_start=start,
            log_end=end,
            at=AT,
            source_epoch=state.source_epoch,
            recorded=state.incident,
        )
        assert plan[tp] == StartPosition(state.next_offset, expected)
        assert (plan[tp].incident is None) == (state.incident is None and start <= state.next_offset <= end)
