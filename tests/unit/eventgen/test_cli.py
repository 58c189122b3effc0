"""The CLI without Kafka: argument handling and the dry-run summary."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_credentials_without_a_security_protocol_refuse_to_produce(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("REMOTE_KAFKA_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("REMOTE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never contacted
    monkeypatch.setenv("REMOTE_KAFKA_SASL_USERNAME", "source")
    monkeypatch.setenv("REMOTE_KAFKA_SASL_PASSWORD", "pw")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    assert main(["--count", "1", "--no-progress", "--env-file", str(empty)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1].endswith(
        " ERROR eventgen eventgen: REMOTE_KAFKA_SASL_USERNAME and REMOTE_KAFKA_SASL_PASSWORD set but REMOTE_KAFKA_SECURITY_PROTOCOL "
        "is not: set it to SASL_SSL (or SASL_PLAINTEXT on a trusted network); without it the client would connect with PLAINTEXT "
        "and never send the credentials"
    )
