"""The dead-letter tool's pure core: letters, filters, stats, the replay plan, the ledger, the CLI's parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import dlq
from shared.dlqtool.cli import build_parser, format_stats, selection_of
from shared.dlqtool.hops import bridge_validator, validators
from shared.dlqtool.letters import Letter, Selection, SelectionError, SourceRange, decoded, letter_of, parse_time, stats_of
from shared.dlqtool.replay import (
    AlreadyPresent,
    Ledger,
    Parked,
    Publish,
    Refused,
    RefusedAgain,
    as_is,
    ledger_of,
    ledger_record,
    plan_replay,
    summary_of,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
STAGES = ["bridge.decode", "bridge.validate", "sink.validate", "sink.write", "sink.conflict"]
CLASSES = ["NotJSON", "WrongType", "ImplausibleEventTime", "DocumentTooLarge"]


def make_letter(
    offset: int = 0,
    *,
    stage: str = "sink.write",
    error_class: str = "WriteError",
    value: bytes | None = b'{"event_id":"e0"}',
    ts: int = NOW_MS,
    source: tuple[str, int, int] = ("product_views", 0, 0),
    extra: list[tuple[str, bytes]] | None = None,
    partition: int = 0,
) -> Letter:
    record = dlq.dead_letter_record(
        b"k",
        value,
        [("trace", b"t1"), *(extra or [])],
        source_topic=source[0],
        source_partition=source[1],
        source_offset=source[2],
        stage=stage,
        error_class=error_class,
        error_message=f"because {error_class}",
    )
    return letter_of("dlq", partition, offset, ts, record.key, record.value, record.headers)


letters_st = st.builds(
    lambda off, stage, cls, ts, part, src_off, eid: make_letter(
        off,
        stage=stage,
        error_class=cls,
        ts=NOW_MS + ts,
        partition=part,
        source=("product_views", part, src_off),
        value=orjson.dumps({"event_id": f"e{eid}"}),
    ),
    st.integers(0, 10_000),
    st.sampled_from(STAGES),
    st.sampled_from(CLASSES),
    st.integers(-100_000, 100_000),
    st.integers(0, 2),
    st.integers(0, 50),
    st.integers(0, 20),
)


def test_letter_of_splits_original_and_dlq_headers() -> None:
    letter = make_letter(7, stage="bridge.validate", error_class="WrongType", source=("product_views", 2, 41))
    assert (letter.hop, letter.stage, letter.error_class, letter.message) == ("bridge", "bridge.validate", "WrongType", "because WrongType")
    assert (letter.source_topic, letter.source_partition, letter.source_offset, letter.source_epoch) == ("product_views", 2, 41, 0)
    assert letter.headers == (("trace", b"t1"),)
    assert letter.letter_id == "dlq/0/7" and letter.replay_count == 0 and not letter.truncated
    bare = letter_of("dlq", 0, 1, 5, None, b"x", [])
    assert (bare.stage, bare.hop, bare.error_class, bare.source_offset) == ("unknown", "unknown", "unknown", None)


def test_parse_time_and_source_range() -> None:
    assert parse_time("24h", NOW) == NOW_MS - 86_400_000
    assert parse_time("90s", NOW) == NOW_MS - 90_000
    assert parse_time("2026-12-06t11:00:00z", NOW) == NOW_MS - 3_600_000
    assert parse_time("2026-12-06T13:00:00+02:00", NOW) == NOW_MS - 3_600_000
    assert parse_time("2026-12-06 11:00", NOW) == NOW_MS - 3_600_000  # no zone: UTC
    with pytest.raises(SelectionError):
        parse_time("yesterday", NOW)
    assert SourceRange.parse("t") == SourceRange("t")
    assert SourceRange.parse("t:2") == SourceRange("t", 2)
    assert SourceRange.parse("t:2:5") == SourceRange("t", 2, 5, 5)
    assert SourceRange.parse("t:2:5-9") == SourceRange("t", 2, 5, 9)
    assert SourceRange.parse("t:2:5-") == SourceRange("t", 2, 5, None)
    for bad in ("", "t:x", "t:1:a-b", "t:1:2:3"):
        with pytest.raises(SelectionError):
            SourceRange.parse(bad)


def test_selection_from_command_line() -> None:
    args = build_parser().parse_args(
        [
            "replay",
            "--stage",
            "bridge.validate",
            "--class",
            "ImplausibleEventTime",
            "--since",
            "1h",
            "--source",
            "product_views:1:10-20",
            "--dry-run",
        ]
    )
    assert args.dry_run
    assert selection_of(args, NOW) == Selection(
        stages=frozenset({"bridge.validate"}),
        classes=frozenset({"ImplausibleEventTime"}),
        since_ms=NOW_MS - 3_600_000,
        sources=(SourceRange("product_views", 1, 10, 20),),
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(letters_st, max_size=30),
    st.sets(st.sampled_from(STAGES), max_size=2),
    st.sets(st.sampled_from(CLASSES), max_size=2),
    st.one_of(st.none(), st.integers(-100_000, 100_000)),
    st.one_of(st.none(), st.integers(-100_000, 100_000)),
    st.one_of(st.none(), st.tuples(st.integers(0, 2), st.integers(0, 50), st.integers(0, 50))),
)
def test_selection_is_the_conjunction_of_its_filters(letters, stages, classes, since, until, source) -> None:
    sources = (SourceRange("product_views", source[0], min(source[1:]), max(source[1:])),) if source else ()
    selection = Selection(
        stages=frozenset(stages),
        classes=frozenset(classes),
        since_ms=None if since is None else NOW_MS + since,
        until_ms=None if until is None else NOW_MS + until,
        sources=sources,
    )
    chosen = selection.select(letters)
    expected = [
        x
        for x in letters
        if (not stages or x.stage in stages)
        and (not classes or x.error_class in classes)
        and (since is None or x.timestamp_ms >= NOW_MS + since)
        and (until is None or x.timestamp_ms < NOW_MS + until)
        and (not source or (x.source_partition == source[0] and min(source[1:]) <= x.source_offset <= max(source[1:])))
    ]
    assert chosen == expected
    # Filters only narrow: the empty selection takes everything, one more filter never adds.
    assert Selection().select(letters) == letters
    assert set(map(id, Selection(stages=frozenset(stages)).select(chosen))) == set(map(id, chosen))


@settings(max_examples=100, deadline=None)
@given(st.lists(letters_st, max_size=40))
def test_stats_count_every_letter_once(letters) -> None:
    rows = stats_of(letters)
    assert sum(r.count for r in rows) == len(letters)
    for r in rows:
        mine = [x for x in letters if (x.hop, x.stage, x.error_class) == (r.hop, r.stage, r.error_class)]
        assert r.count == len(mine)
        assert (r.oldest_ms, r.newest_ms) == (min(x.timestamp_ms for x in mine), max(x.timestamp_ms for x in mine))


def test_format_stats() -> None:
    text = format_stats(
        [make_letter(0, stage="sink.write", error_class="WriteError"), make_letter(1, stage="sink.write", error_class="WriteError")]
    )
    assert text.splitlines()[1].split() == ["sink", "sink.write", "WriteError", "2", "2026-12-06T12:00:00.000Z", "2026-12-06T12:00:00.000Z"]
    assert text.splitlines()[-1] == "2 dead letters"


def test_decoded() -> None:
    assert decoded(b'{"a":1}') == {"json": {"a": 1}}
    assert decoded(b"plain") == {"text": "plain"}
    assert decoded(b"\xff") == {"base64": "/w=="}
    assert decoded(None) == {"null": True}


def _plan(letters, ledger=None, max_replays=3, extra=None):
    return plan_replay(letters, ledger=ledger or Ledger(), validators={"sink": as_is, **(extra or {})}, max_replays=max_replays)


def test_plan_each_outcome() -> None:
    fresh = make_letter(0, value=b'{"event_id":"a"}')
    twin = make_letter(1, value=b'{"event_id":"a"}')  # the same event dead-lettered twice
    done = make_letter(2, value=b'{"event_id":"b"}')
    tired = make_letter(3, value=b'{"event_id":"c"}', extra=[(dlq.HEADER_REPLAY_COUNT, b"3")])
    conflict = make_letter(4, stage="sink.conflict", error_class="ConflictingDuplicate")
    bridge = make_letter(5, stage="bridge.validate", error_class="WrongType")
    steps = _plan([fresh, twin, done, tired, conflict, bridge], ledger=Ledger({"dlq/0/2": "b"}))
    assert steps[0] == Publish(
        fresh, b"k", b'{"event_id":"a"}', (("trace", b"t1"), ("dlq.replay.count", b"1"), ("dlq.replay.of", b"dlq/0/0")), "a"
    )
    assert steps[1] == AlreadyPresent(twin, "a", "dlq/0/0")
    assert steps[2] == AlreadyPresent(done, "b", "dlq/0/2")
    assert steps[3] == Parked(tired)
    assert isinstance(steps[4], RefusedAgain) and steps[4].reason.error_class == "NeedsDecision"
    assert isinstance(steps[5], RefusedAgain) and steps[5].reason.error_class == "NoValidator"
    assert summary_of(steps) == {
        "replayed": 1,
        "refused_again": 2,
        "already_present": 2,
        "parked": 1,
        "refused_reasons": [
            {"stage": "dlq.replay", "error_class": "NeedsDecision", "count": 1, "message": steps[4].reason.message},
            {"stage": "dlq.replay", "error_class": "NoValidator", "count": 1, "message": steps[5].reason.message},
        ],
    }


def test_plan_keeps_the_count_travelling() -> None:
    again = make_letter(0, extra=[(dlq.HEADER_REPLAY_COUNT, b"1"), (dlq.HEADER_REPLAY_OF, b"dlq/0/0")])
    (step,) = _plan([again])
    assert isinstance(step, Publish)
    assert step.headers == (("trace", b"t1"), ("dlq.replay.count", b"2"), ("dlq.replay.of", b"dlq/0/0"))


def test_truncated_letters_are_not_replayed() -> None:
    letter = make_letter(0, extra=[], value=b"x" * 10)
    cut = letter_of(
        "dlq",
        0,
        0,
        NOW_MS,
        letter.key,
        letter.value,
        [*letter.headers, (dlq.HEADER_STAGE, b"sink.write"), (dlq.HEADER_VALUE_TRUNCATED_FROM, b"99")],
    )
    (step,) = _plan([cut])
    assert isinstance(step, RefusedAgain) and step.reason.error_class == "TruncatedLetter"


def test_bridge_validator_runs_the_bridge_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    ahead = datetime(2026, 12, 8, 12, 0, tzinfo=UTC).timestamp()  # two days ahead of NOW
    value = orjson.dumps({"time_stamp": int(ahead), "collection": "view_product_detail", "product_id": "1"})
    letter = make_letter(0, stage="bridge.validate", error_class="ImplausibleEventTime", value=value, source=("product_views", 1, 7))
    monkeypatch.delenv("BRIDGE_EVENT_TIME_MAX_AHEAD_S", raising=False)
    (step,) = plan_replay([letter], ledger=Ledger(), validators=validators(NOW), max_replays=3)
    assert isinstance(step, RefusedAgain) and (step.reason.stage, step.reason.error_class) == ("bridge.validate", "ImplausibleEventTime")
    monkeypatch.setenv("BRIDGE_EVENT_TIME_MAX_AHEAD_S", str(3 * 86_400))
    validate = bridge_validator(NOW)
    assert validate is not None
    (step,) = plan_replay([letter], ledger=Ledger(), validators={"bridge": validate}, max_replays=3)
    assert isinstance(step, Publish)
    event = orjson.loads(step.value)
    # The id the bridge gives a record without _id: its source coordinates.
    from shared.event import event_id_from_coordinates

    assert step.event_id == event["event_id"] == event_id_from_coordinates("product_views", 1, 7)
    assert (event["source_topic"], event["source_partition"], event["source_offset"]) == ("product_views", 1, 7)


def test_ledger_round_trip() -> None:
    steps = _plan([make_letter(0, value=b'{"event_id":"a"}'), make_letter(1, value=b'{"event_id":"b"}')])
    records = [ledger_record(s) for s in steps if isinstance(s, Publish)]
    ledger = ledger_of([*records, (b"dlq/0/1", None), (None, b"x"), (b"dlq/0/9", b"not json")])
    assert ledger == Ledger({"dlq/0/0": "a", "dlq/0/9": ""})


@settings(max_examples=150, deadline=None)
@given(st.lists(letters_st, max_size=30), st.integers(1, 4), st.lists(st.integers(0, 20), max_size=5))
def test_replaying_the_plan_twice_changes_nothing(letters, max_replays, fail_ids) -> None:
    """Property: after the first plan's publications are in the ledger, a second plan of the same
    selection publishes nothing; every letter keeps one outcome class across the runs, except the
    published ones, which become already present; no event_id is published twice."""
    refuse = {f"e{i}" for i in fail_ids}

    def picky(letter: Letter):
        result = as_is(letter)
        if isinstance(result, tuple) and orjson.loads(result[1])["event_id"] in refuse:
            return Refused("sink.validate", "Picky", "no")
        return result

    # unique letter ids (hypothesis may repeat partition/offset)
    unique = list({x.letter_id: x for x in letters}.values())
    first = plan_replay(unique, ledger=Ledger(), validators={"sink": picky}, max_replays=max_replays)
    published = [s for s in first if isinstance(s, Publish)]
    assert len({s.event_id for s in published}) == len(published)
    ledger = ledger_of(ledger_record(s) for s in published)
    second = plan_replay(unique, ledger=ledger, validators={"sink": picky}, max_replays=max_replays)
    assert not any(isinstance(s, Publish) for s in second)
    for a, b in zip(first, second, strict=True):
        assert type(b) is (AlreadyPresent if isinstance(a, Publish) else type(a))
    one, two = summary_of(first), summary_of(second)
    assert two["already_present"] == one["already_present"] + one["replayed"]
    assert (two["refused_again"], two["parked"]) == (one["refused_again"], one["parked"])
