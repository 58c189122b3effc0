"""The pure parts of run ownership: why a run may not commit, the messages, the public error
summary, the job's environment (never the API token) and the heartbeat's budget."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

import pytest
from etl_api.ownership import (
    COMMIT_REFUSED,
    Ownership,
    heartbeat_budget,
    lost_ownership_message,
    new_owner_token,
    ownership_problems,
    run_problems,
)
from etl_api.settings import EtlSettings
from etl_api.views import error_summary

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
T1 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
RUN_A = "aaaaaaaa-0000-0000-0000-000000000001"
RUN_B = "bbbbbbbb-0000-0000-0000-000000000002"
TOKEN = "host:123:0123456789abcdef"
MINE = Ownership(TOKEN, T0, RUN_A, 7)


def running(**kw: object) -> dict[str, object]:
    return {"status": "running", "owner_token": TOKEN, "finished_at": None, "error": None, **kw}


WM = {"ingested_high": T0, "run_id": RUN_A}
GEN = {"generation": 7, "run_id": RUN_A, "mode": "incremental", "committed_at": T0}


def test_an_owned_run_with_an_unchanged_window_may_commit() -> None:
    assert ownership_problems(MINE, running(), WM, GEN) == []
    # the first run: no watermark yet, generation 0
    first = Ownership(TOKEN, None, None, 0)
    assert ownership_problems(first, running(), None, {"generation": 0, "run_id": None, "mode": None, "committed_at": None}) == []


def test_a_reaped_run_may_not_commit_and_says_when_and_why() -> None:
    reaped = running(status="failed", finished_at=T1, error="orphaned: no heartbeat for 7s\nmore")
    assert ownership_problems(MINE, reaped, WM, GEN) == ["run was reaped at 2026-12-02T10:00:00+00:00 (orphaned: no heartbeat for 7s)"]
    assert run_problems(TOKEN, running(status="succeeded")) == ["run is succeeded"]
    assert run_problems(TOKEN, None) == ["the run's etl_runs row is gone"]


def test_another_owner_token_refuses() -> None:
    assert ownership_problems(MINE, running(owner_token="other:1:ff"), WM, GEN) == [
        f"run is owned by other:1:ff, not by this process ({TOKEN})"
    ]
    assert run_problems(TOKEN, running(owner_token=None)) == [f"run is owned by nobody, not by this process ({TOKEN})"]


def test_a_moved_watermark_refuses_and_names_the_run_that_moved_it() -> None:
    moved = {"ingested_high": T1, "run_id": RUN_B}
    gen = {"generation": 8, "run_id": RUN_B, "mode": "incremental", "committed_at": T1}
    problems = ownership_problems(MINE, running(), moved, gen)
    assert problems == [
        f"watermark moved from 2026-12-02T09:00:00+00:00 to 2026-12-02T10:00:00+00:00 by run {RUN_B}",
        f"run {RUN_B} (incremental) at 2026-12-02T10:00:00+00:00 committed a load since this run started (load generation 7 → 8)",
    ]
    # same instant, other run: still moved
    assert ownership_problems(MINE, running(), {"ingested_high": T0, "run_id": RUN_B}, GEN)[0].startswith("watermark moved")
    # a watermark appeared where there was none
    assert ownership_problems(Ownership(TOKEN, None, None, 7), running(), WM, GEN) == [
        f"watermark moved from none to 2026-12-02T09:00:00+00:00 by run {RUN_A}"
    ]


def test_a_range_run_in_between_is_caught_by_the_load_generation() -> None:
    """Range runs do not move the watermark: the generation is what shows they loaded."""
    gen = {"generation": 8, "run_id": RUN_B, "mode": "range", "committed_at": T1}
    assert ownership_problems(MINE, running(), WM, gen) == [
        f"run {RUN_B} (range) at 2026-12-02T10:00:00+00:00 committed a load since this run started (load generation 7 → 8)"
    ]


def test_lost_ownership_message() -> None:
    assert lost_ownership_message(["a", "b"]) == f"lost ownership: a; b; {COMMIT_REFUSED}"
    assert lost_ownership_message(["a"], "the job stopped") == "lost ownership: a; the job stopped"


@pytest.mark.parametrize(
    ("error", "summary"),
    [
        (None, None),
        ("job process exited with code -9\nTraceback ... postgresql://etl:secret@db/x", "job process exited with code -9"),
        ("job process exited 0 without finishing the run", "job process exited 0 without finishing the run"),
        ("orphaned: job process 4242 is gone (API restarted or job crashed)", "orphaned: job process 4242 is gone"),
        ("orphaned: no heartbeat for 75s", "orphaned: no heartbeat for 75s"),
        ("heartbeat could not be written for 31s (OSError: [Errno 111] connect 10.0.0.5:5432)", "heartbeat could not be written for 31s"),
        (
            f"lost ownership: run was reaped at x; run is owned by {TOKEN}; {COMMIT_REFUSED}\nearlier: orphaned",
            "lost ownership: commit refused",
        ),
        ("lost ownership: run was reaped at x; the job stopped", "lost ownership: the job stopped"),
        ("ReconciliationError: sum(view_count) written 3 - before 0 != 4", "failed: ReconciliationError"),
        ("Py4JJavaError: An error occurred while calling o123 /home/etl/secret", "failed: Py4JJavaError"),
        ("something with a password=hunter2 in it", "failed"),
        ("", "failed"),
    ],
)
def test_error_summary_is_a_fixed_form_without_details(error: str | None, summary: str | None) -> None:
    got = error_summary(error)
    assert got == (None if summary is None else f"{summary} (details with the bearer token)")
    if got:
        assert "secret" not in got and "hunter2" not in got and "\n" not in got and TOKEN not in got


def settings(**kw: object) -> EtlSettings:
    return EtlSettings(postgres_dsn="postgresql://u:p@h/db", **kw)  # type: ignore[arg-type]


def test_the_job_process_never_inherits_the_api_token() -> None:
    s = settings(api_token="tok-123", heartbeat_seconds=2)
    base = {"PATH": "/usr/bin", "ETL_API_TOKEN": "tok-123", "etl_api_token": "tok-123", "OTHER": "x"}
    env = s.job_process_environment(base)
    assert "tok-123" not in env.values()
    assert not any(k.upper() == "ETL_API_TOKEN" for k in env)
    assert env["PATH"] == "/usr/bin" and env["OTHER"] == "x"
    assert env["ETL_HEARTBEAT_SECONDS"] == "2.0" and "POSTGRES_DSN" in env
    assert env["ETL_EVENT_TIME_FLOOR"] == "2000-01-01T00:00:00Z" and env["ETL_EVENT_TIME_MAX_AHEAD_S"] == "86400.0"


def test_job_settings_round_trip_without_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(api_token="tok-123", event_time_max_ahead_s=60, event_time_floor="2010-01-01T00:00:00+00:00")
    for k in list(os.environ):
        if k.startswith("ETL_"):
            monkeypatch.delenv(k)
    for k, v in s.job_process_environment({}).items():
        monkeypatch.setenv(k, v)
    job = EtlSettings()  # type: ignore[call-arg]
    assert job.api_token is None
    assert job.event_time_max_ahead_s == 60 and job.event_time_floor_ms == 1262304000000


def test_event_time_floor_setting() -> None:
    assert settings().event_time_floor_ms == 946684800000  # 2000-01-01Z, shared.event's default
    assert settings(event_time_floor="2000-01-01T00:00:00").event_time_floor_ms == 946684800000  # naive = UTC
    with pytest.raises(ValueError, match="ETL_EVENT_TIME_FLOOR"):
        settings(event_time_floor="last year")


def test_heartbeat_budget_is_half_the_reap_timeout_and_at_least_one_interval() -> None:
    assert heartbeat_budget(settings()) == 30.0
    assert heartbeat_budget(settings(heartbeat_seconds=5, heartbeat_timeout_seconds=6)) == 5.0


def test_owner_token_form() -> None:
    a, b = new_owner_token(), new_owner_token()
    assert a != b
    assert re.fullmatch(rf".+:{os.getpid()}:[0-9a-f]{{16}}", a)
