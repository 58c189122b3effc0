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
Without xdist (a plain ``pytest`` run, one process) nothing is locked.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
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
    try:
        yield time.monotonic() - started
    finally:
        os.close(fd)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    with run_lock(item.get_closest_marker(MARKER) is not None) as waited:
        if waited >= 1.0:
            item.user_properties.append(("run_lock_wait_s", round(waited, 1)))
        return (yield)
