"""The CLI without Kafka: argument handling and the dry-run summary."""

from __future__ import annotations

import json

import pytest
from eventgen.cli import build_parser, main

from shared.event import BAD_KINDS


def test_dry_run_prints_exact_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dry-run", "--count", "700", "--bad-fraction", "0.1", "--seed", "3", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == 700
    assert summary["counts"] == {"glamira": 567, "seed": 63, **dict.fromkeys(BAD_KINDS, 10)}
    assert summary["args"] == {"count": 700, "seed": 3, "bad_fraction": 0.1, "seed_shape_fraction": 0.1, "start": "2020-06-01", "days": 3}
    assert summary["bytes"] > 10 * 1_000_000  # ten oversized records alone are > 10 MB


@pytest.mark.parametrize("argv", [["--bad-fraction", "1.5"], ["--days", "0"], ["--start", "June"], ["--partitions", "0"]])
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
