"""Under pytest-xdist, the tests known to be long start first (a pytest plugin).

``./pipeline test`` runs ``-n 3 --dist loadgroup``: xdist hands the tests out in collection order
(after the largest ``xdist_group`` units), one or two ahead per worker. pytest-randomly shuffles
that order, so a 3-minute test can start in the last minutes while the other two workers have
nothing left: the run waits for it alone. Here the tests listed in ``durations.txt`` move to the
front, longest first (a greedy longest-processing-time schedule, by module); every other test keeps its
random place after them. Exclusive tests (``tests/support/exclusive.py``) are not moved: one at
the front would wait for the longest tests to drain with every worker held idle.

``durations.txt`` holds lines of pytest's ``--durations`` report (``214.00s call     tests/…::test_x``;
setup, call and teardown of one test add up); ``#`` starts a comment. Paste a CI run's
``slowest durations`` block there to refresh it: a missing or renamed test is only not moved.
Without xdist (one process) nothing is reordered.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.txt")
LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s+(?:setup|call|teardown)\s+(\S+)")


def recorded_durations(text: str) -> dict[str, float]:
    """Seconds per test id from ``--durations`` lines (setup, call and teardown summed)."""
    seconds: dict[str, float] = {}
    for line in text.splitlines():
        match = LINE.match(line.split("#", 1)[0])
        if match:
            seconds[match.group(2)] = seconds.get(match.group(2), 0.0) + float(match.group(1))
    return seconds


def longest_first(items: list[pytest.Item], seconds: dict[str, float]) -> None:
    """Recorded tests first, by module (its longest test first), longest first within it; the rest
    (and exclusive tests) keep their order after them. A module's recorded tests stay together: a
    module-scoped fixture (``airflow/test_dag_runs.py``'s services) then starts about once per
    worker, as in a shuffled run, not once per interleaved test."""

    def recorded(item: pytest.Item) -> float:
        return 0.0 if item.get_closest_marker("exclusive") is not None else seconds.get(item.nodeid, 0.0)

    module_longest: dict[str, float] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        module_longest[module] = max(module_longest.get(module, 0.0), recorded(item))

    def key(item: pytest.Item) -> tuple[float, str, float]:
        own = recorded(item)
        if not own:
            return (0.0, "", 0.0)
        module = item.nodeid.split("::", 1)[0]
        return (-module_longest[module], module, -own)

    items.sort(key=key)  # stable: equal keys keep pytest-randomly's order


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # runs after pytest-randomly's shuffle (a tryfirst wrapper); every worker sorts alike, as xdist requires
    if os.environ.get("PYTEST_XDIST_WORKER") and DURATIONS.exists():
        longest_first(items, recorded_durations(DURATIONS.read_text()))
