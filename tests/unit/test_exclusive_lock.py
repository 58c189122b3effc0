"""The run lock of parallel test workers (tests/support/exclusive.py), with real processes and
real ``flock``: readers run side by side, an exclusive test runs alone, and a waiting exclusive
test lets no new reader in (it is not starved); an exclusive section of a test runs alone, and the
test is a reader again after it."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time
import uuid
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from tests.support.exclusive import _lock_dir, exclusive_section, run_lock

CTX = multiprocessing.get_context("fork")


def _hold(exclusive: bool, seconds: float, log: Path, name: str, inside: Event | None = None) -> None:
    with run_lock(exclusive):
        start = time.monotonic()
        if inside is not None:
            inside.set()
        time.sleep(seconds)
        end = time.monotonic()
    with log.open("a") as f:
        f.write(f"{name} {start} {end}\n")


def _gate_taken(gate: Path) -> bool:
    fd = os.open(gate, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_readers_share_a_writer_runs_alone_and_is_not_starved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", uuid.uuid4().hex)
    where = _lock_dir()
    assert where is not None
    log = tmp_path / "intervals"
    in1, in2 = CTX.Event(), CTX.Event()
    readers = [CTX.Process(target=_hold, args=(False, 1.0, log, f"r{i}", ev)) for i, ev in ((1, in1), (2, in2))]
    for p in readers:
        p.start()
    assert in1.wait(10) and in2.wait(10)
    writer = CTX.Process(target=_hold, args=(True, 0.5, log, "w"))
    writer.start()
    deadline = time.monotonic() + 10
    while not _gate_taken(where / "gate"):  # the writer now holds the gate, waiting for the readers
        assert time.monotonic() < deadline, "the exclusive test never took the gate"
        time.sleep(0.01)
    late = CTX.Process(target=_hold, args=(False, 0.1, log, "r3"))
    late.start()
    for p in (*readers, writer, late):
        p.join(20)
        assert p.exitcode == 0
    spans = {name: (float(a), float(b)) for name, a, b in (line.split() for line in log.read_text().splitlines())}
    assert set(spans) == {"r1", "r2", "w", "r3"}
    (r1s, r1e), (r2s, r2e), (ws, we), (r3s, _) = spans["r1"], spans["r2"], spans["w"], spans["r3"]
    assert max(r1s, r2s) < min(r1e, r2e)  # the two readers overlapped
    assert ws >= max(r1e, r2e)  # the writer waited for both
    assert r3s >= we  # the reader that came while the writer waited went after it


def _with_section(log: Path, before: float, section: float, after: float, waiting: Event) -> None:
    with run_lock(False):
        start = time.monotonic()
        time.sleep(before)
        waiting.set()
        with exclusive_section():
            s_start = time.monotonic()
            time.sleep(section)
            s_end = time.monotonic()
        time.sleep(after)
        end = time.monotonic()
    with log.open("a") as f:
        f.write(f"t {start} {end}\nsection {s_start} {s_end}\n")


def test_a_section_runs_alone_and_the_test_is_a_reader_again_after_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", uuid.uuid4().hex)
    where = _lock_dir()
    assert where is not None
    log = tmp_path / "intervals"
    inside, waiting = CTX.Event(), CTX.Event()
    reader = CTX.Process(target=_hold, args=(False, 1.0, log, "r1", inside))
    reader.start()
    assert inside.wait(10)
    test = CTX.Process(target=_with_section, args=(log, 0.1, 0.5, 1.0, waiting))
    test.start()
    assert waiting.wait(10)
    deadline = time.monotonic() + 10
    while not _gate_taken(where / "gate"):  # the section holds the gate, waiting for r1
        assert time.monotonic() < deadline, "the section never took the gate"
        time.sleep(0.01)
    late = CTX.Process(target=_hold, args=(False, 0.1, log, "r2"))
    late.start()
    late.join(20)
    writer = CTX.Process(target=_hold, args=(True, 0.1, log, "w"))  # comes while the test runs on after its section
    writer.start()
    for p in (reader, test, writer):
        p.join(20)
        assert p.exitcode == 0
    spans = {name: (float(a), float(b)) for name, a, b in (line.split() for line in log.read_text().splitlines())}
    assert set(spans) == {"r1", "t", "section", "r2", "w"}
    (_, r1e), (ts, te), (ss, se), (r2s, _), (ws, _) = (spans[k] for k in ("r1", "t", "section", "r2", "w"))
    assert ts < r1e  # the test ran beside r1 until its section
    assert ss >= r1e  # the section waited for r1
    assert r2s >= se and r2s < te  # r2 came while the section waited: after the section, beside the test
    assert ws >= te  # the test held its shared lock again after the section


def test_without_xdist_nothing_is_locked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_TESTRUNUID", raising=False)
    assert _lock_dir() is None
    with run_lock(True) as waited, run_lock(True) as again:  # would deadlock if it locked
        assert (waited, again) == (0.0, 0.0)
    with run_lock(False), exclusive_section() as section:
        assert section == 0.0
