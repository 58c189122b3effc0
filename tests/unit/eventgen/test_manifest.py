"""Manifest bookkeeping and serialization (no Kafka: coordinates are made up here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from eventgen import KINDS, Manifest, generate

from shared.event import BAD_KINDS, event_id_from_coordinates


def filled_manifest() -> tuple[Manifest, list]:
    recs = list(generate(700, seed=3, bad_fraction=0.1))
    manifest = Manifest(topic="t_manifest", args={"count": 700, "seed": 3})
    next_offset = [0, 0, 0]
    for i, record in enumerate(recs):
        partition = i % 3
        manifest.add(record, partition, next_offset[partition])
        next_offset[partition] += 1
    return manifest, recs


def test_add_files_kinds_ids_and_collections() -> None:
    manifest, recs = filled_manifest()
    assert manifest.total == 700
    assert manifest.counts == {"glamira": 567, "seed": 63, **dict.fromkeys(BAD_KINDS, 10)}
    assert list(manifest.counts) == list(KINDS)
    assert sum(manifest.collections.values()) == 567
    expected_ids = []
    for i, (record, entry) in enumerate(zip(recs, manifest.records, strict=True)):
        assert (entry.partition, entry.offset, entry.kind) == (i % 3, i // 3, record.kind)
        if record.kind == "glamira":
            expected_ids.append(record.event_id)
        elif record.kind == "seed":
            expected_ids.append(event_id_from_coordinates("t_manifest", i % 3, i // 3))
    assert manifest.valid_event_ids() == expected_ids
    assert len(set(expected_ids)) == 630
    bad = manifest.bad_coordinates()
    assert len(bad) == 70
    assert bad == {(i % 3, i // 3): r.kind for i, r in enumerate(recs) if r.kind in BAD_KINDS}
    assert manifest.end_offsets() == {0: 234, 1: 233, 2: 233}


def test_json_and_file_round_trip(tmp_path: Path) -> None:
    manifest, _ = filled_manifest()
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    path = tmp_path / "manifest.json"
    manifest.write(path)
    assert Manifest.read(path) == manifest
    assert not (tmp_path / "manifest.json.tmp").exists()


def test_inconsistent_manifest_is_refused() -> None:
    manifest, _ = filled_manifest()
    data = manifest.to_dict()
    data["counts"]["glamira"] += 1
    with pytest.raises(ValueError):
        Manifest.from_dict(data)
