"""SINK_READ_INDEXES: which servers get the ETL's read indexes."""

from __future__ import annotations

from sink.mongo import wants_read_indexes


def test_auto_creates_them_on_mongodb_only_and_the_explicit_settings_win() -> None:
    assert [wants_read_indexes(setting, server) for setting in ("auto", "create", "skip") for server in (None, "v1.24.2")] == [
        True,  # auto, MongoDB
        False,  # auto, FerretDB
        True,
        True,  # create
        False,
        False,  # skip
    ]
