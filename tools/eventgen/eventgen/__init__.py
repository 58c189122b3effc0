"""Realistic, deterministic events for the remote ``product_views`` topic.

Library API (used by tests and benchmarks)::

    from eventgen import generate, produce, Manifest
    records = list(generate(2000, seed=7, bad_fraction=0.05))
    manifest = await produce(records, remote_kafka, "product_views")

- :func:`generate` → :class:`GeneratedRecord` (kind, key, value, event_id, collection, event);
- :func:`produce` → :class:`Manifest` (every record's partition/offset/kind/event_id);
- :data:`eventgen.stores.STORES`: store_id → (domain, country, region, …), reused by the ETL.

CLI: ``python -m eventgen --help``.
"""

from eventgen.generate import GLAMIRA, KINDS, SEED, VALID_KINDS, GeneratedRecord, generate, plan_counts
from eventgen.manifest import Manifest, ManifestRecord
from eventgen.produce import produce
from eventgen.stores import STORES, Store

__all__ = [
    "GLAMIRA",
    "KINDS",
    "SEED",
    "STORES",
    "VALID_KINDS",
    "GeneratedRecord",
    "Manifest",
    "ManifestRecord",
    "Store",
    "generate",
    "plan_counts",
    "produce",
]
