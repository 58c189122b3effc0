"""The changelog view's snapshot file: round trip, and refused when it does not match."""

from __future__ import annotations

from pathlib import Path

from live.recovery import key_partition, read_snapshot, snapshot_meta, write_snapshot


def test_snapshot_round_trip_and_refusals(tmp_path: Path) -> None:
    meta = snapshot_meta({"views_per_product": "a-views_per_product-changelog"}, 6, 60)
    tables = {"views_per_product": {("3/p1", (60.0, 120.0)): [2, 17], ("0/p2", (0.0, 60.0)): [1, 4]}}
    positions = {("a-views_per_product-changelog", p): 10 * p for p in range(6)}
    path = tmp_path / "snap.json"
    assert write_snapshot(path, meta, positions, tables) == path.stat().st_size
    assert read_snapshot(path, meta) == (positions, tables)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed
    assert read_snapshot(path, snapshot_meta({"views_per_product": "a-views_per_product-changelog"}, 12, 60)) is None
    assert read_snapshot(path, meta | {"window_s": 30}) is None
    assert read_snapshot(tmp_path / "missing.json", meta) is None
    path.write_bytes(b'{"version": 1, "tab')  # torn (cannot happen through rename, but never trusted)
    assert read_snapshot(path, meta) is None


def test_key_partition_is_the_scope_of_the_key() -> None:
    assert key_partition("5/product/with/slashes") == 5
