"""shared.logs: LOG_FORMAT=text (the readable default) and json (one object per line)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import ConfigError
from shared.logs import RepeatLimit, setup_logging

CREATED = 1_780_000_000.25  # 2026-05-28T20:26:40.250Z


@pytest.fixture(autouse=True)
def keep_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(capsys: pytest.CaptureFixture[str], logger: str, level: int, msg: str, *args: object, **kw: object) -> list[str]:
    """Logs one record through the root handler (its stream re-pointed at the captured stderr)."""
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(sys.stderr)
    log = logging.getLogger(logger)
    record = log.makeRecord(logger, level, "f.py", 1, msg, args, kw.pop("exc_info", None), extra=kw.pop("extra", None))  # type: ignore[arg-type]
    record.created = CREATED
    log.handle(record)
    return capsys.readouterr().err.splitlines()


def test_json_lines_carry_fixed_keys_and_fields(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    setup_logging("sink")
    lines = emit(
        capsys,
        "sink.app",
        logging.WARNING,
        "mongodb refused %d document(s)",
        2,
        extra={"hop": "sink", "topic": "t", "partition": 3, "offsets": [10, 11], "run_id": None},
    )
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "ts": "2026-05-28T20:26:40.250Z",
        "level": "WARNING",
        "logger": "sink.app",
        "message": "mongodb refused 2 document(s)",
        "service": "sink",
        "hop": "sink",
        "topic": "t",
        "partition": 3,
        "offsets": [10, 11],
        "run_id": None,
    }
    assert list(json.loads(lines[0]))[:5] == ["ts", "level", "logger", "message", "service"]


def test_json_exception_is_one_string_field_and_the_line_stays_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("etl-job", log_format="json")
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        lines = emit(capsys, "etl_api.job", logging.ERROR, "run %s failed", "r1", exc_info=sys.exc_info(), extra={"run_id": "r1"})
    assert len(lines) == 1
    out = json.loads(lines[0])
    exception = out.pop("exception")
    assert out == {
        "ts": "2026-05-28T20:26:40.250Z",
        "level": "ERROR",
        "logger": "etl_api.job",
        "message": "run r1 failed",
        "service": "etl-job",
        "run_id": "r1",
    }
    assert exception.startswith("Traceback (most recent call last):\n")
    assert exception.endswith("\nValueError: bad\nvalue")


def test_json_values_that_are_not_json_become_strings_and_fixed_keys_are_not_overwritten(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("bridge", log_format="json")

    class Incident:
        def __str__(self) -> str:
            return "incident(kind=trimmed)"

    lines = emit(capsys, "bridge.x", logging.INFO, "é", extra={"incident": Incident(), "service": "other", "level": "x"})
    assert json.loads(lines[0]) == {
        "ts": "2026-05-28T20:26:40.250Z",
        "level": "INFO",
        "logger": "bridge.x",
        "message": "é",
        "service": "bridge",
        "incident": "incident(kind=trimmed)",
        "extra_service": "other",
        "extra_level": "x",
    }


def test_text_is_the_default_with_fields_as_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("sink")
    assert emit(capsys, "sink.app", logging.INFO, "partitions assigned: %s", "t-0") == [
        "2026-05-28T20:26:40.250Z INFO sink sink.app: partitions assigned: t-0"
    ]
    assert emit(capsys, "sink.app", logging.WARNING, "refused", extra={"hop": "sink", "partition": 3}) == [
        "2026-05-28T20:26:40.250Z WARNING sink sink.app: refused hop=sink partition=3"
    ]


def test_text_keeps_the_traceback_on_the_following_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("sink", log_format="text")
    try:
        raise KeyError("k")
    except KeyError:
        lines = emit(capsys, "sink.app", logging.ERROR, "boom", exc_info=sys.exc_info())
    assert lines[0] == "2026-05-28T20:26:40.250Z ERROR sink sink.app: boom"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "KeyError: 'k'"


@pytest.mark.parametrize("value", ["JSON", " json "])
def test_log_format_is_case_insensitive(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str) -> None:
    monkeypatch.setenv("LOG_FORMAT", value)
    setup_logging("live")
    assert json.loads(emit(capsys, "live", logging.INFO, "m")[0])["service"] == "live"


def test_an_unknown_log_format_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "logfmt")
    with pytest.raises(ConfigError) as err:
        setup_logging("sink")
    assert str(err.value) == "LOG_FORMAT='logfmt': use one of text, json"


def test_the_level_applies() -> None:
    setup_logging("sink", "warning", log_format="json")
    logging.getLogger("sink.app").info("hidden")
    assert logging.getLogger().level == logging.WARNING


def test_process_fields_are_on_every_record_unless_the_call_sets_them(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("etl-job", log_format="json", fields={"hop": "etl", "run_id": "r7"})
    first = emit(capsys, "etl_api.job", logging.INFO, "claimed")
    second = emit(capsys, "etl_api.load", logging.INFO, "loaded", extra={"run_id": "other", "count": 3})
    base = {"ts": "2026-05-28T20:26:40.250Z", "level": "INFO", "service": "etl-job"}
    assert json.loads(first[0]) == {**base, "logger": "etl_api.job", "message": "claimed", "hop": "etl", "run_id": "r7"}
    assert json.loads(second[0]) == {**base, "logger": "etl_api.load", "message": "loaded", "run_id": "other", "count": 3, "hop": "etl"}


def test_aiokafka_connection_info_is_quiet_unless_debugging() -> None:
    setup_logging("sink", "INFO", log_format="text")
    assert logging.getLogger("aiokafka.conn").level == logging.WARNING  # "Authenticated as … via PLAIN" on every connection
    setup_logging("sink", "DEBUG", log_format="text")
    assert logging.getLogger("aiokafka.conn").level == logging.NOTSET


# ---------------------------------------------------------------------- repeats of a library's failure


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


TEMPLATES = ("Unable connect to node with id %s: %s", "Unable to update metadata from %s")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 30, allow_nan=False),  # seconds since the previous record
            st.sampled_from(["aiokafka", "aiokafka.consumer.fetcher", "sink.app"]),
            st.sampled_from(TEMPLATES),
            st.sampled_from([logging.WARNING, logging.ERROR]),
        ),
        max_size=60,
    )
)
def test_repeat_limit_passes_one_record_per_template_and_window_and_counts_the_rest(
    stream: list[tuple[float, str, str, int]],
) -> None:
    clock = Clock()
    limit = RepeatLimit(("aiokafka",), window_s=10.0, clock=clock)
    last_passed: dict[tuple[str, int, str], float] = {}
    dropped_since: dict[tuple[str, int, str], int] = {}
    for gap, name, template, level in stream:
        clock.now += gap
        record = logging.LogRecord(name, level, __file__, 1, template, ("1", "refused"), None)
        passed = limit.filter(record)
        if not name.startswith("aiokafka"):  # our own loggers are never limited
            assert passed and not hasattr(record, "repeated")
            continue
        key = (name, level, template)
        expect = key not in last_passed or clock.now - last_passed[key] >= 10.0
        assert passed == expect, (key, clock.now, last_passed.get(key))
        if passed:
            assert getattr(record, "repeated", 0) == dropped_since.get(key, 0)
            last_passed[key], dropped_since[key] = clock.now, 0
        else:
            dropped_since[key] = dropped_since.get(key, 0) + 1


def test_a_flood_of_one_aiokafka_failure_is_one_line_then_one_with_its_count(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr("shared.logs.time.monotonic", clock)
    setup_logging("bridge", log_format="json")
    for node in range(1000):
        emit(capsys, "aiokafka", logging.ERROR, "Unable connect to node with id %s: %s", node % 3, "refused")
    clock.now = 10.0
    lines = emit(capsys, "aiokafka", logging.ERROR, "Unable connect to node with id %s: %s", 1, "refused")
    assert len(lines) == 1 and json.loads(lines[0])["repeated"] == 999
    assert len(emit(capsys, "bridge.app", logging.ERROR, "copy failed %s", 1)) == 1
