"""The order under xdist: recorded tests first, by module and longest first, the rest as shuffled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.support.longest_first import DURATIONS, longest_first, recorded_durations


@dataclass
class Item:
    nodeid: str
    exclusive: bool = False

    def get_closest_marker(self, name: str) -> Any:
        return object() if name == "exclusive" and self.exclusive else None


def test_durations_lines_are_summed_per_test_and_comments_ignored() -> None:
    text = """# a comment
214.00s call     tests/a.py::test_x
2.11s teardown tests/a.py::test_x
0.50s setup    tests/b.py::test_y[3]  # trailing comment
(1 durations < 0.005s hidden.  Use -vv to show these durations.)
"""
    assert recorded_durations(text) == {"tests/a.py::test_x": 216.11, "tests/b.py::test_y[3]": 0.5}


def test_recorded_first_by_module_longest_first_the_rest_and_exclusive_tests_keep_their_order() -> None:
    items = [
        Item("u.py::test_1"),
        Item("a.py::test_short"),
        Item("e.py::test_faults", exclusive=True),
        Item("b.py::test_long"),
        Item("u.py::test_2"),
        Item("a.py::test_longest"),
        Item("b.py::test_unrecorded"),
    ]
    seconds = {"a.py::test_short": 60, "a.py::test_longest": 200, "b.py::test_long": 150, "e.py::test_faults": 300}
    longest_first(items, seconds)  # type: ignore[arg-type]
    assert [i.nodeid for i in items] == [
        "a.py::test_longest",
        "a.py::test_short",
        "b.py::test_long",
        "u.py::test_1",
        "e.py::test_faults",
        "u.py::test_2",
        "b.py::test_unrecorded",
    ]


def test_the_recorded_list_parses() -> None:
    seconds = recorded_durations(DURATIONS.read_text())
    assert len(seconds) >= 20 and all(nodeid.startswith("tests/integration/") for nodeid in seconds)
