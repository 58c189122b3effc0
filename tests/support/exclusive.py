"""Parallel workers and the tests that fault what every test shares (a pytest plugin).

Under pytest-xdist (``./pipeline test`` runs ``-n``), most tests run side by side: each makes its
own topics, groups, collections and schemas. A test marked ``exclusive`` stops or starves
something all of them use (a local broker, FerretDB's PostgreSQL tables, most of the machine's
CPU for a timing bound): it runs with no other test running, on any worker.

One readers-writer lock over the whole run, two ``flock`` files next to each other:
1. every test takes ``gate`` exclusively for a moment, then ``stack`` shared (a reader);
2. an ``exclusive`` test takes ``gate`` exclusively and keeps it while it waits for ``stack``
   exclusively: no new reader gets in meanwhile (a waiting writer is not starved), the readers
   already running finish, and it runs alone; it releases both at the end.
Locks are taken around the whole test protocol (setup, call, teardown), outside
pytest-timeout's clock (``tryfirst``): waiting for the lock is not the test's own time.
A test whose fault is only a part of it (the rest: services starting, Spark runs, a DAG run) is
not marked; it wraps that part in :func:`exclusive_section` instead, and only that part runs alone.
Without xdist (a plain ``pytest`` run, one process) nothing is locked.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
import time
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

MARKER = "exclusive"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: faults or starves something every test shares; runs with no other test running")


def _lock_dir() -> Path | None:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # set in every worker of one xdist run
    if run is None:
        return None
    path = Path(tempfile.gettempdir()) / f"pipeline-tests-{run}"
    path.mkdir(exist_ok=True)
    return path


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def run_lock(exclusive: bool) -> Iterator[float]:
    """Holds the run's lock for one test (see the module docstring); yields the seconds waited."""
    where = _lock_dir()
    if where is None:
        yield 0.0
        return
    started = time.monotonic()
    gate, stack = where / "gate", where / "stack"
    if exclusive:
        with _flock(gate, fcntl.LOCK_EX), _flock(stack, fcntl.LOCK_EX):
            yield time.monotonic() - started
        return
    with _flock(gate, fcntl.LOCK_EX):
        fd = os.open(stack, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
    _reading.append(fd)
    try:
        yield time.monotonic() - started
    finally:
        _reading.remove(fd)
        os.close(fd)


_reading: list[int] = []  # the shared hold of the test this worker runs (one at a time)


@contextmanager
def exclusive_section() -> Iterator[float]:
    """Inside a test that is not marked exclusive: the part of it that faults what every test shares
    runs alone, the rest of it side by side with other tests. The test gives up its shared hold,
    takes the lock as an exclusive test does (while it waits no new test starts), and takes its
    shared hold back at the end. Yields the seconds waited; unlike an exclusive test's, that wait
    is inside the test's timeout. Without xdist, or outside a shared hold, nothing is locked."""
    where = _lock_dir()
    if where is None or not _reading:
        yield 0.0
        return
    held = list(_reading)
    for fd in held:
        fcntl.flock(fd, fcntl.LOCK_UN)
    try:
        with run_lock(True) as waited:
            yield waited
    finally:
        with _flock(where / "gate", fcntl.LOCK_EX):
            for fd in held:
                fcntl.flock(fd, fcntl.LOCK_SH)


@asynccontextmanager
async def async_exclusive_section() -> AsyncIterator[float]:
    """:func:`exclusive_section` for an async test: the locks are waited for in a thread, not in the event loop."""
    section = exclusive_section()
    waited = await asyncio.to_thread(section.__enter__)
    try:
        yield waited
    finally:
        await asyncio.to_thread(section.__exit__, None, None, None)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    with run_lock(item.get_closest_marker(MARKER) is not None) as waited:
        if waited >= 1.0:
            item.user_properties.append(("run_lock_wait_s", round(waited, 1)))
        return (yield)
